"""Each webapp app imports (at module level or inside a function) only the apps listed before it in
settings.INSTALLED_APPS, so no two import each other: each dependency points one way, as docs/architecture.md
("App dependencies") draws it. A read the other way goes through webapp/readers.py."""

import ast
from collections import defaultdict
from pathlib import Path

WEBAPP = Path(__file__).resolve().parents[2] / "webapp"


def app_imports(root: Path = WEBAPP) -> dict[tuple[str, str], list[str]]:
    """{(importing app, imported app): ["file:line module", ...]} over every import statement of the apps' code,
    and every ``apps.get_model("<app>", ...)`` (an import by name), migrations left out: they name the models
    they were written against."""
    apps = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) < 2 or parts[0] not in apps or "migrations" in parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_model"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                modules = [f"webapp.{node.args[0].value.split('.')[0]}"]
            else:
                continue
            for module in modules:
                dotted = module.split(".")
                if dotted[0] == "webapp" and len(dotted) > 1 and dotted[1] in apps and dotted[1] != parts[0]:
                    where[(parts[0], dotted[1])].append(f"{path.relative_to(root.parent)}:{node.lineno} {module}")
    return where


def test_no_two_apps_import_each_other():
    where = app_imports()
    both_ways = sorted((a, b) for a, b in where if a < b and (b, a) in where)
    report = "\n".join(f"{a} <-> {b}:\n    " + "\n    ".join(where[(a, b)] + where[(b, a)]) for a, b in both_ways)
    assert not both_ways, f"{len(both_ways)} pairs of apps import each other both ways:\n{report}"


def app_order() -> list[str]:
    """The webapp apps, lowest first: INSTALLED_APPS's order, then ``api``. api is no installed app (it has no
    models): it mounts every app's router (webapp/api/api.py) and turns annotation's LabelConflict into a 409,
    so it sits on top, above demo too; no app imports it."""
    from django.conf import settings

    return [name.removeprefix("webapp.") for name in settings.INSTALLED_APPS if name.startswith("webapp.")] + ["api"]


def test_every_app_imports_only_the_apps_before_it_in_installed_apps():
    order = {app: rank for rank, app in enumerate(app_order())}
    where = app_imports()
    unplaced = sorted({app for pair in where for app in pair} - set(order))
    assert not unplaced, f"apps missing from settings.INSTALLED_APPS (so from the order): {unplaced}"
    upward = sorted((a, b) for a, b in where if order[b] > order[a])
    report = "\n".join(f"{a} -> {b}, listed after it:\n    " + "\n    ".join(where[(a, b)]) for a, b in upward)
    assert not upward, (f"{len(upward)} apps import an app listed after them in INSTALLED_APPS (read it through "
                        f"webapp/readers.py instead):\n{report}")


def test_every_reader_is_filled_by_the_app_that_owns_its_data():
    from dataclasses import fields

    from webapp.readers import Readers, readers

    assert [f.name for f in fields(Readers) if getattr(readers, f.name) is None] == []
