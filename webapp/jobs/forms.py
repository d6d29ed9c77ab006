from django import forms

from webapp.jobs.models import Queue


class SelfcheckForm(forms.Form):
    steps = forms.IntegerField(min_value=1, max_value=10_000, initial=20)
    interval = forms.FloatField(min_value=0, max_value=60, initial=0.5, label="Seconds between steps")
    fail_at = forms.IntegerField(min_value=1, required=False, label="Fail at step (optional)")
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.DEFAULT)
