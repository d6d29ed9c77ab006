"""The demo policy seed_demo builds: reused when whole, rebuilt when its folder lacks weights."""

import json

from rlcore.training.demo_policy import DEMO_POLICY_LABEL, MARKER_FILE, build_demo_policy, demo_policy_label


def test_it_rebuilds_a_folder_under_the_demo_name_that_has_no_weights_and_then_reuses_it(tmp_path):
    folder = tmp_path / "demo-policy"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / MARKER_FILE).write_text(json.dumps({"label": DEMO_POLICY_LABEL}))  # looks like one, holds nothing
    built = build_demo_policy(folder, ["a few words of local text"])
    assert (built / "model.safetensors").is_file() and json.loads((built / "config.json").read_text())["vocab_size"]
    assert demo_policy_label(built) == DEMO_POLICY_LABEL
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert build_demo_policy(folder, ["other text"]) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp  # whole: reused, not rebuilt
