from django import forms
from rlcore.judges.openai_compat import EndpointLimits

from webapp.judging.models import JudgeBackend, PromptMode
from webapp.settings_forms import spec_form_field


class JudgeConfigForm(forms.Form):
    name = forms.CharField(max_length=100)
    backend = forms.ChoiceField(choices=JudgeBackend.choices, initial=JudgeBackend.OPENAI)
    endpoint = forms.CharField(max_length=500, required=False, help_text="API root, e.g. http://127.0.0.1:8000/v1")
    model = forms.CharField(max_length=300, help_text="Model name at the endpoint, or a local model folder.")
    api_key = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                              help_text="Stored encrypted and never shown again. Leave empty to keep the stored key.")
    api_key_env = forms.CharField(max_length=100, required=False, label="API key environment variable",
                                  help_text="Or: the workers read the key from this variable.")
    clear_api_key = forms.BooleanField(required=False, label="Forget the stored key")
    # rlcore's EndpointLimits (default, help); blank keeps its default, the service checks the limits
    max_concurrency = spec_form_field(EndpointLimits, "max_concurrency")
    timeout_s = spec_form_field(EndpointLimits, "timeout_s")
    max_retries = spec_form_field(EndpointLimits, "max_retries")


class TemplateForm(forms.Form):
    name = forms.CharField(max_length=100)
    mode = forms.ChoiceField(choices=PromptMode.choices, initial=PromptMode.COMPARE)
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 14, "cols": 90}))
