"""Launch forms whose hyper-parameter fields are derived from rlcore's spec models: the label,
default and help text come from the pydantic field, so the form and the CLI cannot drift apart."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from django import forms

from webapp.jobs.models import Job, Queue

REWARD_MODEL_FIELDS = [
    "backbone", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "max_length",
    "eval_fraction", "split_by", "use_margin", "label_smoothing", "ensemble_size", "seed", "save_steps",
    "report_to",
]
GRPO_FIELDS = [
    "preset", "beta", "num_generations", "max_completion_length", "temperature", "learning_rate", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "num_iterations",
    "sample_every", "seed", "save_steps", "report_to",
    # objectives: blank keeps the preset's value (each help text lists the presets'); a__b is field b of block a
    "loss_type", "scale_rewards", "importance_sampling_level", "mask_truncated_completions", "epsilon", "epsilon_high",
    "delta", "top_entropy_quantile", "entropy_coef", "off_policy_mask_threshold", "dhpo__mixing", "divergence__kind",
    "divergence__coef",
    # speed
    "generation_backend", "use_liger_kernel", "load_in_training_precision",
]


def _unwrap_optional(annotation) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _preset_values(model, name: str) -> str:
    """' Presets: grpo 0.04, dr_grpo 0.0, ...' for a field a GRPO preset fixes, so a blank field says what it takes."""
    from rlcore.training.presets import OVERRIDABLE, PRESETS

    if getattr(model, "__name__", "") != "GRPOTrainSpec" or name not in OVERRIDABLE:
        return ""
    return " Presets: " + ", ".join(f"{preset} {values[name]}" for preset, values in PRESETS.items()) + "."


def spec_form_field(model, name: str) -> forms.Field:
    label = name.replace("__", " ").replace("_", " ").capitalize()
    block_optional = False
    if "__" in name:  # a field of a nested block (dhpo__mixing): blank leaves the whole block out
        block, name = name.split("__", 1)
        model, block_optional = _unwrap_optional(model.model_fields[block].annotation)
    info = model.model_fields[name]
    annotation, optional = _unwrap_optional(info.annotation)
    optional = optional or block_optional
    default = info.get_default(call_default_factory=True)
    kwargs = {"required": False, "help_text": (info.description or "") + _preset_values(model, name), "label": label}
    if default is not None and not isinstance(default, type(...)) and not block_optional:
        kwargs["initial"] = default
    if optional and typing.get_origin(annotation) is Literal:
        return forms.ChoiceField(choices=[("", "(preset's)" if not block_optional else "(off)")]
                                 + [(v, v) for v in typing.get_args(annotation)], **kwargs)
    if optional and annotation is bool:
        return forms.NullBooleanField(widget=forms.Select(choices=[("unknown", "(preset's)"), ("true", "yes"),
                                                                   ("false", "no")]), **kwargs)
    if typing.get_origin(annotation) is list and typing.get_origin(typing.get_args(annotation)[0]) is Literal:
        choices = typing.get_args(typing.get_args(annotation)[0])  # e.g. report_to: list[Literal[...]]
        return forms.MultipleChoiceField(choices=[(v, v) for v in choices], widget=forms.CheckboxSelectMultiple,
                                         **kwargs)
    if typing.get_origin(annotation) is Literal:
        return forms.ChoiceField(choices=[(v, v) for v in typing.get_args(annotation)], **kwargs)
    if annotation is bool:
        return forms.BooleanField(**kwargs)
    if annotation is int:
        return forms.IntegerField(**kwargs)
    if annotation is float:
        return forms.FloatField(**kwargs)
    return forms.CharField(**kwargs)


def spec_params(form: forms.Form, names: list[str]) -> dict[str, Any]:
    """The spec fields the user filled in; blanks fall back to the spec's defaults. ``block__field`` names fill a
    nested block, which is sent only when one of its fields is filled in."""
    params: dict[str, Any] = {}
    for name in names:
        if name in form.cleaned_data and form.cleaned_data[name] not in (None, ""):
            block, _, field = name.rpartition("__")
            (params.setdefault(block, {}) if block else params)[field] = form.cleaned_data[name]
    return params


class RewardModelLaunchForm(forms.Form):
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from rlcore.training.specs import RewardModelTrainSpec

        from webapp.training.services import default_backbone

        for name in REWARD_MODEL_FIELDS:
            self.fields[name] = spec_form_field(RewardModelTrainSpec, name)
        self.fields["backbone"].initial = default_backbone()
        self.fields["backbone"].help_text = "Sequence-classification backbone: a local directory or a hub id."


PRM_FIELDS = [
    "backbone", "step_separator", "add_separator_token", "train_on_last_step_only", "learning_rate",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "max_length", "eval_fraction", "seed",
    "save_steps", "report_to",
]


class PRMLaunchForm(forms.Form):
    """Train a process reward model on the project's step labels (fields from rlcore's PRMTrainSpec)."""

    name = forms.CharField(max_length=150)
    source = forms.ChoiceField(choices=[("", "people's and LM step labels"),
                                        ("human", "people's labels only (reviewed LM suggestions included)"),
                                        ("lm", "LM pre-labels only")], required=False)
    queue = forms.ChoiceField(choices=Queue.choices, initial=Queue.GPU)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from rlcore.training.specs import PRMTrainSpec

        for name in PRM_FIELDS:
            self.fields[name] = spec_form_field(PRMTrainSpec, name)
        # no default: the shipped MiniLM's tokenizer drops "\n", and a PRM wants a causal LM or encoder chosen here
        self.fields["backbone"].required = True


class GRPOLaunchForm(forms.Form):
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
        super().__init__(*args, **kwargs)
        from rlcore.training.specs import GRPOTrainSpec

        from webapp.datasets.models import Dataset, DatasetStatus
        from webapp.rubrics.models import RewardSpecVersion
        from webapp.training.selectors import known_policies

        self.fields["dataset"].queryset = Dataset.objects.filter(project=project, status=DatasetStatus.READY)
        # the prompt count beside each set: the launch refuses a set smaller than one rollout
        self.fields["dataset"].label_from_instance = lambda d: f"{d.name} ({d.row_count} prompts)"
        self.fields["reward_spec_version"].queryset = (
            RewardSpecVersion.objects.filter(spec__project=project).select_related("spec").order_by("spec__name", "-number"))
        for name in GRPO_FIELDS:
            self.fields[name] = spec_form_field(GRPOTrainSpec, name)
        self.policy_choices = known_policies(project=project)
        if self.policy_choices and not self.initial.get("policy"):
            self.initial["policy"] = self.policy_choices[0][0]
        self._initial_demo_choices(project)

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
        from rlcore.training.specs import GRPOTrainSpec

        spec = GRPOTrainSpec.model_construct()  # the declared defaults; the formulas are the spec's own
        return (f"With the defaults (preset {spec.preset}: per-device batch size {spec.per_device_train_batch_size} x "
                f"{spec.rollout_steps} steps per generation / {spec.num_generations} generations) one rollout needs "
                f"{spec.prompts_per_rollout()} prompts; a smaller prompt set is refused. Lower the batch size or the "
                "steps per generation for a smaller set.")


GENERATION_FIELDS = ["samples_per_prompt", "temperature", "top_p", "max_new_tokens", "seed", "batch_size",
                     "prompt_overflow"]


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
        from webapp.training.services import GRPO_KIND

        self.fields["job"].queryset = Job.objects.filter(project=project, kind=GRPO_KIND).order_by("-pk")
        self.fields["job"].label_from_instance = lambda job: f"#{job.pk} {job.title} ({job.state})"


class GenerationLaunchForm(forms.Form):
    """Sampling fields come from rlcore's GenerationSpec (label, default, help), like the training forms."""

    dataset = forms.ModelChoiceField(queryset=None, label="Prompt set")
    policies = forms.ModelMultipleChoiceField(queryset=None, widget=forms.CheckboxSelectMultiple,
                                              help_text="Registered policies; each answers every prompt.")
    round = forms.IntegerField(required=False, min_value=1, help_text="Round number these responses belong to.")

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        from rlcore.generation.spec import GenerationSpec

        from webapp.datasets.models import Dataset, DatasetStatus
        from webapp.training.selectors import policy_label, policy_list

        self.fields["dataset"].queryset = Dataset.objects.filter(project=project, status=DatasetStatus.READY)
        self.fields["dataset"].label_from_instance = lambda d: f"{d} ({d.row_count} prompts)"
        self.fields["policies"].queryset = policy_list(project=project)
        self.fields["policies"].label_from_instance = policy_label
        for name in GENERATION_FIELDS:
            self.fields[name] = spec_form_field(GenerationSpec, name)
