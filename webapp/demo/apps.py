from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo data of a fresh install (``manage.py seed_demo``). An app of its own, above all the others: it
    calls every app's demo module, so no app it seeds has to import the others'."""

    name = "webapp.demo"
    label = "demo"
