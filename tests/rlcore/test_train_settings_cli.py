"""``python -m rlcore train settings KIND``: the JSON Schema of a run's settings, the one the webapp's API shows."""

import json
import subprocess
import sys

import pytest

from rlcore.training.specs import GRPOSettings, PRMSettings, RewardModelSettings, load_spec

KINDS = {"reward-model": RewardModelSettings, "grpo": GRPOSettings, "prm": PRMSettings}


def _settings_schema(kind: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "settings", kind], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("kind", KINDS)
def test_it_prints_every_setting_with_its_description(kind):
    schema = _settings_schema(kind)
    assert set(schema["properties"]) == set(KINDS[kind].model_fields)
    assert all(field.get("description") for field in schema["properties"].values())
    assert schema["additionalProperties"] is False


def test_a_spec_file_of_the_printed_defaults_and_the_launchers_fields_loads_with_those_values(tmp_path):
    schema = _settings_schema("grpo")
    defaults = {name: field["default"] for name, field in schema["properties"].items() if "default" in field}
    assert {"preset", "beta", "num_generations", "learning_rate"} <= set(defaults)
    spec_file = tmp_path / "grpo.json"
    spec_file.write_text(json.dumps({**defaults, "output_dir": str(tmp_path / "run"), "policy": "p",
                                     "prompt_snapshot": "prompts.jsonl", "reward_spec": {"name": "r", "components": [
                                         {"kind": "length_penalty", "name": "long", "max_length": 64,
                                          "cache_length": 16}]}}))
    spec = load_spec(spec_file, "grpo")
    assert {name: getattr(spec, name) for name in ("preset", "beta", "num_generations")} == {
        name: defaults[name] for name in ("preset", "beta", "num_generations")}
