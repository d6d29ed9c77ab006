"""The launch contracts: each launch's settings are rlcore's settings model, so the OpenAPI schema, the launch page
and the spec file offer the same settings with the same descriptions and defaults, and a launcher's field is
refused everywhere by name."""

import json

import pytest
from pydantic_core import PydanticUndefined
from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings
from rlcore.generation.spec import GenerationSettings
from rlcore.training.specs import GRPOSettings, GRPOTrainSpec, PRMSettings, RewardModelSettings

pytestmark = pytest.mark.django_db

# (path, the body field holding the settings, the settings model)
LAUNCHES = [
    ("/api/v1/projects/{project_id}/training/reward-model", "spec", RewardModelSettings),
    ("/api/v1/projects/{project_id}/training/prm", "spec", PRMSettings),
    ("/api/v1/projects/{project_id}/training/grpo", "spec", GRPOSettings),
    ("/api/v1/projects/{project_id}/generation", "spec", GenerationSettings),
    ("/api/v1/projects/{project_id}/overoptimization/scoring-jobs", "params", OveroptScoreSettings),
]


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node or len(node.get("allOf", ())) == 1:  # a described reference is wrapped in allOf
        node = node["allOf"][0] if "allOf" in node else schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


@pytest.mark.parametrize("path,body_field,model", LAUNCHES, ids=[m.__name__ for _, _, m in LAUNCHES])
def test_the_openapi_schema_documents_every_setting_with_its_description_and_default(client, path, body_field,
                                                                                       model):
    schema = client.get("/api/v1/openapi.json").json()
    body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    settings = _resolve(schema, _resolve(schema, body)["properties"][body_field])
    assert set(settings["properties"]) == set(model.model_fields)
    for name, field in model.model_fields.items():
        documented = settings["properties"][name]
        assert documented.get("description") == field.description, name
        if field.default is not PydanticUndefined:  # a default_factory's value depends on the machine
            assert documented.get("default") == json.loads(json.dumps(field.default, default=str)), name


def test_the_grpo_page_offers_every_setting_and_nothing_the_launch_provides(client, people):
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/training/grpo/new/").content.decode()
    for name in GRPOSettings.model_fields:
        assert f'name="{name}"' in page or f'name="{name}__' in page, name
    for name in set(GRPOTrainSpec.model_fields) - set(GRPOSettings.model_fields) - {"policy"}:
        assert f'name="{name}"' not in page, name  # policy is the page's own field, not a setting


def test_a_launchers_field_is_refused_by_name_wherever_it_comes_from(client, people):
    from tests.conftest import token_for

    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    # eval_snapshot is a server path the trainer reads: a launch's, never a user's
    r = client.post(f"/api/v1/projects/{people.project.pk}/training/reward-model", content_type="application/json",
                    data=json.dumps({"name": "rm", "spec": {"eval_snapshot": "/etc/passwd", "seed": "x"}}),
                    headers=headers)
    assert r.status_code == 422
    assert sorted((e["field"], e["message"].split(":")[0]) for e in r.json()["detail"]) == [
        ("spec.eval_snapshot", "eval_snapshot is filled in by whoever launches the run, not a setting"),
        ("spec.seed", "Input should be a valid integer, unable to parse string as an integer")]
    with pytest.raises(ValueError, match="prompt_snapshot is filled in by whoever launches the run"):
        GRPOSettings.model_validate({"prompt_snapshot": "/etc/passwd"})
