from django import forms

from webapp.projects.models import Role


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class MemberForm(forms.Form):
    user = forms.CharField(label="Username or e-mail", max_length=150)
    role = forms.ChoiceField(choices=Role.choices)


class ProjectSettingsForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    guidelines = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), required=False,
                                 help_text="Shown to annotators (key g in the workbench); Markdown.")
    is_closed = forms.BooleanField(required=False, label="Closed: take no new labels")
    gold_rate = forms.FloatField(min_value=0.0, max_value=0.5, required=False, initial=0.0,
                                 label="Gold item rate",
                                 help_text="Share of each annotator's items drawn from gold items (0 to 0.5).")
