"""The workbench's keys are the view's one map: the page carries it and lists it, and workbench.js only
has the actions it names (the browser tests press the keys)."""

import json
import re
from pathlib import Path

import pytest

from webapp.annotation.views import WORKBENCH_KEYS

WORKBENCH_JS = (Path(__file__).resolve().parents[2] / "static" / "js" / "workbench.js").read_text()


def _js_without_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", source)


def test_it_leaves_no_key_of_its_own_in_the_script():
    code = _js_without_comments(WORKBENCH_JS)
    strings = set(re.findall(r'"([^"\n]*)"|\'([^\'\n]*)\'', code))
    literals = {a or b for a, b in strings}
    keys = {key for keymap in WORKBENCH_KEYS.values() for key in keymap}
    assert keys & literals == set(), "workbench.js names keys itself: they belong in WORKBENCH_KEYS"
    assert "event.key ===" not in code and "[1-9]" not in code


def test_it_has_an_action_in_the_script_for_every_key_in_the_map():
    body = re.search(r"const ACTIONS = \{(.*?)\n  \};", WORKBENCH_JS, re.S).group(1)
    actions = set(re.findall(r"^    (\w+):", body, re.M))
    named = {action for keymap in WORKBENCH_KEYS.values() for action, _, _ in keymap.values()}
    assert named <= actions, f"no action in workbench.js for {named - actions}"


@pytest.mark.django_db
@pytest.mark.parametrize("path, shown", [
    ("annotate/", ["<kbd>1</kbd> A much better", "<kbd>u</kbd> undo", "<kbd>c</kbd> scores"]),
    ("annotate/steps/", ["<kbd>j</kbd>/<kbd>↓</kbd> next step", "<kbd>g</kbd> good", "<kbd>Enter</kbd> submit"]),
])
def test_it_serves_the_map_and_lists_it_on_the_help_line(client, people, path, shown):
    client.force_login(people.users["carol"])
    page = client.get(f"/projects/{people.project.pk}/{path}").content.decode()
    data = re.search(r'<script id="workbench-keys" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data) == json.loads(json.dumps(WORKBENCH_KEYS))
    help_line = page.split('class="muted wb-keys">')[1].split("</p>")[0]
    assert all(text in help_line for text in shown), help_line
    assert "<kbd>a</kbd>" not in help_line  # an alias works but is not listed
