"""The launch pages' forms: the run's settings come from rlcore's settings models (webapp/settings_forms.py), the
rest (what to train on, the queue) is each page's own."""

from __future__ import annotations

from django import forms
from rlcore.generation.spec import GenerationSettings
from rlcore.training.specs import GRPOSettings, PRMSettings, RewardModelSettings

from webapp.jobs.kinds import GRPO_KIND
from webapp.jobs.models import Job, Queue
from webapp.settings_forms import SettingsForm, spec_form_field


def _preset_values(name: str) -> str:
    """' Presets: grpo 0.04, dr_grpo 0.0, ...' for a field a GRPO preset fixes, so a blank field says what it takes."""
    from rlcore.training.presets import OVERRIDABLE, PRESETS

    if name not in OVERRIDABLE:
        return ""
    return " Presets: " + ", ".join(f"{preset} {values[name]}" for preset, values in PRESETS.items()) + "."


class RewardModelLaunchForm(SettingsForm):
    settings_model = RewardModelSettings
    name = forms.CharField(max_length=150)
    tie_policy = forms.ChoiceField(
        choices=[("drop", "drop ties"),
                 ("keep", "keep ties: one row each, trained toward equal rewards (Bradley-Terry target ½)"),
                 ("split", "split ties into both orders (the same tie loss, counted twice)")], initial="drop",
        help_text="A tie row is scored by −½ log σ(d) − ½ log σ(−d), never as a win; held-out accuracy leaves ties out.")
    conversational = forms.BooleanField(required=False, help_text="Export chat messages instead of plain text.")
    source = forms.ChoiceField(choices=[("", "human and LM labels"), ("human", "human labels only"),
                                        ("lm", "LM labels only")], required=False)
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.GPU)


class PRMLaunchForm(SettingsForm):
    """Train a process reward model on the project's step labels (fields from rlcore's PRMSettings)."""

    settings_model = PRMSettings
    name = forms.CharField(max_length=150)
    source = forms.ChoiceField(choices=[("", "people's and LM step labels"),
                                        ("human", "people's labels only (reviewed LM suggestions included)"),
                                        ("lm", "LM pre-labels only")], required=False)
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.GPU)


class GRPOLaunchForm(SettingsForm):
    settings_model = GRPOSettings
    name = forms.CharField(max_length=150, required=False)
    dataset = forms.ModelChoiceField(queryset=None, label="Prompt set")
    reward_spec_version = forms.ModelChoiceField(queryset=None, label="Reward spec version")
    policy = forms.CharField(
        max_length=500, widget=forms.TextInput(attrs={"list": "policy-choices", "autocomplete": "off"}),
        help_text=("Causal LM to train: pick a known policy (list below), a saved Hugging Face model folder under "
                   "MODEL_ROOTS, or a hub id such as Qwen/Qwen2.5-0.5B-Instruct. A hub id is downloaded by the "
                   "workers, so they must reach the Hugging Face Hub; an offline machine can only use folders. "
                   "The demo policy (random weights) runs the whole path in seconds but learns nothing useful."))
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.GPU)

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, project=project, **kwargs)
        from webapp.datasets.models import Dataset, DatasetStatus
        from webapp.rubrics.models import RewardSpecVersion
        from webapp.training.selectors import known_policies

        self.fields["dataset"].queryset = Dataset.objects.filter(project=project, status=DatasetStatus.READY)
        # the prompt count beside each set: the launch refuses a set smaller than one rollout
        self.fields["dataset"].label_from_instance = lambda d: f"{d.name} ({d.row_count} prompts)"
        self.fields["reward_spec_version"].queryset = (
            RewardSpecVersion.objects.filter(spec__project=project).select_related("spec").order_by("spec__name", "-number"))
        self.policy_choices = known_policies(project=project)
        if self.policy_choices and not self.initial.get("policy"):
            self.initial["policy"] = self.policy_choices[0][0]
        self._initial_demo_choices(project)

    def setting_field(self, name: str) -> forms.Field:
        presets = _preset_values(name)
        return spec_form_field(self.settings_model, name, note=presets, blank="(preset's)" if presets else "(default)")

    def _initial_demo_choices(self, project) -> None:
        """In a project seeded with the demo prompt set, preselect it and the demo reward spec: with the
        defaults and the demo policy that launch runs (see webapp.training.demo)."""
        from webapp.rubrics.demo import DEMO_SPEC
        from webapp.training.demo import DEMO_PROMPTS

        if self.initial.get("dataset") is None:
            demo = self.fields["dataset"].queryset.filter(name=DEMO_PROMPTS).first()
            if demo is not None:
                self.initial["dataset"] = demo.pk
        if self.initial.get("reward_spec_version") is None:
            version = self.fields["reward_spec_version"].queryset.filter(spec__name=DEMO_SPEC["name"]).first()
            if version is not None:
                self.initial["reward_spec_version"] = version.pk

    def rollout_note(self) -> str:
        """How many prompts one rollout needs with the default settings (the launch refuses fewer)."""
        spec = GRPOSettings()  # the declared defaults; the formulas are the settings' own
        return (f"With the defaults (preset {spec.preset}: per-device batch size {spec.per_device_train_batch_size} x "
                f"{spec.rollout_steps} steps per generation / {spec.num_generations} generations) one rollout needs "
                f"{spec.prompts_per_rollout()} prompts; a smaller prompt set is refused. Lower the batch size or the "
                "steps per generation for a smaller set.")


class PolicyRegisterForm(forms.Form):
    """One form for every registration kind; services.policy_register says which fields each kind needs and names
    the one that is wrong. Run policies register themselves when the run succeeds."""

    source = forms.ChoiceField(choices=[("checkpoint", "Checkpoint of a GRPO run"), ("folder", "Local model folder"),
                                        ("hub", "Hugging Face hub id"), ("endpoint", "OpenAI-compatible endpoint")])
    name = forms.CharField(max_length=200, required=False, help_text="Blank: named after what it loads.")
    job = forms.ModelChoiceField(queryset=None, required=False, label="GRPO run",
                                 help_text="Checkpoint: the run; its saved checkpoints are under checkpoints/.")
    step = forms.IntegerField(required=False, min_value=0, help_text="Checkpoint: its step (checkpoint-<step>).")
    location = forms.CharField(max_length=1000, required=False, help_text=(
        "Folder: an absolute model folder under MODEL_ROOTS; hub: an id such as Qwen/Qwen2.5-0.5B-Instruct; "
        "endpoint: the model name it serves."))
    endpoint_url = forms.CharField(max_length=500, required=False, label="Endpoint URL",
                                   help_text="Endpoint: the API root, e.g. http://127.0.0.1:8000/v1")
    api_key = forms.CharField(max_length=500, required=False, label="API key", widget=forms.PasswordInput,
                              help_text="Endpoint: stored encrypted, never shown back.")
    api_key_env = forms.CharField(max_length=100, required=False, label="API key variable",
                                  help_text="Endpoint: or an environment variable the operator allowed "
                                            "(JUDGE_KEY_ENV_ALLOWLIST).")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["job"].queryset = Job.objects.filter(project=project, kind=GRPO_KIND).order_by("-pk")
        self.fields["job"].label_from_instance = lambda job: f"#{job.pk} {job.title} ({job.state})"


class GenerationLaunchForm(SettingsForm):
    """Sampling fields come from rlcore's GenerationSettings (label, default, help), like the training forms."""

    settings_model = GenerationSettings

    dataset = forms.ModelChoiceField(queryset=None, label="Prompt set")
    policies = forms.ModelMultipleChoiceField(queryset=None, widget=forms.CheckboxSelectMultiple,
                                              help_text="Registered policies; each answers every prompt.")
    round = forms.IntegerField(required=False, min_value=1, help_text="Round number these responses belong to.")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, project=project, **kwargs)
        from webapp.datasets.models import Dataset, DatasetStatus
        from webapp.training.selectors import policy_label, policy_list

        self.fields["dataset"].queryset = Dataset.objects.filter(project=project, status=DatasetStatus.READY)
        self.fields["dataset"].label_from_instance = lambda d: f"{d} ({d.row_count} prompts)"
        self.fields["policies"].queryset = policy_list(project=project)
        self.fields["policies"].label_from_instance = policy_label
