"""The GRPO launch form's objective and speed fields: derived from rlcore's GRPOSettings, checked by it."""

import pytest
from pydantic import ValidationError
from rlcore.training.specs import GRPOTrainSpec

from webapp.training.forms import GRPOLaunchForm

REWARD_SPEC = {"name": "r", "components": [{"kind": "length_penalty", "name": "long", "max_length": 8,
                                            "cache_length": 4}]}
LAUNCHED = {"output_dir": "/x", "policy": "p", "prompt_snapshot": "s.jsonl", "reward_spec": REWARD_SPEC}


def _form(people, **data):
    form = GRPOLaunchForm(data, project=people.project)
    form.is_valid()  # dataset and spec version are missing; the settings still clean
    return form


def _settings(people, **data):
    return _form(people, **data).cleaned_data["settings"]


def _spec(settings):
    return GRPOTrainSpec.model_validate({**settings.model_dump(), **LAUNCHED})


def test_the_page_offers_every_loss_and_shows_the_presets_values(client, people):
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/training/grpo/new/").content.decode()
    for loss in ("bnpo", "cispo", "sapo", "luspo", "vespo", "dhpo"):
        assert f'<option value="{loss}">{loss}</option>' in page
    assert "Presets: grpo grpo, dr_grpo dr_grpo, dapo dapo, gspo grpo." in page  # loss_type's help
    assert "Presets: grpo group, dr_grpo none, dapo group, gspo group." in page  # scale_rewards's help
    assert 'name="divergence__kind"' in page and 'name="generation_backend"' in page


def test_blank_objective_fields_keep_the_preset_and_blocks_stay_out(people):
    settings = _settings(people, preset="gspo")
    assert not {"loss_type", "scale_rewards", "dhpo", "divergence", "mask_truncated_completions"} & settings.model_fields_set
    assert settings.dhpo is None and settings.divergence is None and settings.lora is None
    assert _spec(settings).objective_settings()["importance_sampling_level"] == "sequence"


def test_filled_objective_fields_reach_the_spec_and_its_nested_blocks(people):
    settings = _settings(people, preset="dapo", loss_type="dhpo", dhpo__mixing="entropy", divergence__kind="js",
                         divergence__coef="0.1", scale_rewards="batch", mask_truncated_completions="false")
    spec = _spec(settings)
    assert spec.dhpo.mixing == "entropy" and (spec.divergence.kind, spec.divergence.coef) == ("js", 0.1)
    assert spec.objective_settings()["scale_rewards"] == "batch"
    assert spec.objective_settings()["mask_truncated_completions"] is False


def test_the_form_refuses_what_the_cli_refuses_with_the_same_sentence(people):
    form = _form(people, preset="grpo", loss_type="luspo")
    [refusal] = form.non_field_errors()
    assert "luspo" in refusal and "importance_sampling_level 'sequence'" in refusal
    with pytest.raises(ValidationError, match="luspo.*importance_sampling_level 'sequence'"):
        GRPOTrainSpec(preset="grpo", loss_type="luspo", **LAUNCHED)
    if __import__("importlib.util").util.find_spec("vllm") is None:
        [refusal] = _form(people, generation_backend="vllm").errors["generation_backend"]
        assert "vLLM, which is not installed" in refusal
        with pytest.raises(ValidationError, match="vLLM, which is not installed"):
            GRPOTrainSpec(generation_backend="vllm", **LAUNCHED)


def test_a_clone_prefills_the_nested_objective_fields(client, people):
    from webapp.jobs.models import Job

    job = Job.objects.create(project=people.project, kind="train_grpo", created_by=people.users["alice"],
                             title="GRPO: mixed", spec={"loss_type": "dhpo", "dhpo": {"mixing": "entropy"},
                                                        "divergence": {"kind": "js", "coef": 0.1}})
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/training/grpo/new/?clone={job.pk}").content.decode()
    assert '<option value="entropy" selected>' in page
    assert '<option value="js" selected>' in page
    assert 'name="divergence__coef" value="0.1"' in page
