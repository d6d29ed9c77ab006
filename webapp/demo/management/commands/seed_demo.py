"""Create a demo user and project so a fresh install has something to look at. Idempotent."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from webapp.annotation.demo import seed_demo_comparisons
from webapp.projects import services
from webapp.projects.models import Membership, Project, Role
from webapp.rubrics.demo import seed_demo_rubrics
from webapp.training.demo import seed_demo_policy, seed_demo_prompts
from webapp.training.services import demo_policy_register

DEMO_PROJECT = "Demo: helpful assistant preferences"
DEMO_MEMBERS = [("demo-annotator", Role.ANNOTATOR), ("demo-viewer", Role.VIEWER)]


class Command(BaseCommand):
    help = ("Create the demo user (login printed), a demo project with demo data, and a demo GRPO policy "
            "(random weights, built locally).")

    def handle(self, *args, **options):
        # Built outside the transaction (a few seconds of torch), once: later runs reuse the folder.
        policy = seed_demo_policy()
        self._seed_database()
        from rlcore.training.demo_policy import DEMO_POLICY_LABEL

        if policy is None:
            self.stdout.write("No demo GRPO policy: the training libraries are not installed (the 'train' extra).")
        else:
            self.stdout.write(f"GRPO policy ({DEMO_POLICY_LABEL}): {policy}")

    @transaction.atomic
    def _seed_database(self):
        User = get_user_model()
        password = os.environ.get("DEMO_PASSWORD", "demo-password")
        demo, created = User.objects.get_or_create(username="demo", defaults={"email": "demo@example.com"})
        if created:
            demo.set_password(password)
            demo.save()
        for username, _ in DEMO_MEMBERS:
            user, made = User.objects.get_or_create(username=username)
            if made:
                user.set_password(password)
                user.save()
        project = Project.objects.filter(name=DEMO_PROJECT).first()
        if project is None:
            project = services.project_create(
                user=demo, name=DEMO_PROJECT,
                description="Pairwise preferences between assistant answers, with a helpfulness rubric.",
                guidelines="Prefer the answer that is correct, complete and concise. Penalise made-up facts.",
            )
        for username, role in DEMO_MEMBERS:
            Membership.objects.get_or_create(project=project, user=User.objects.get(username=username),
                                             defaults={"role": role})
        seed_demo_rubrics(project=project, user=demo)
        seed_demo_comparisons(project=project, user=demo)
        seed_demo_prompts(project=project, user=demo)
        demo_policy_register(project=project)  # in the registry, labelled "demo policy: random weights"
        if created:
            self.stdout.write(self.style.SUCCESS(f"Demo login: username 'demo', password '{password}'"))
        else:
            self.stdout.write(self.style.SUCCESS(
                "Demo login: username 'demo' (password as set on the first run; default 'demo-password')"
            ))
