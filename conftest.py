"""Collection rules for the whole repository (tests/conftest.py has the fixtures)."""

from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Library modules that import an optional extra when imported. Their docstring examples are collected
# only where the extra is installed; where it is, an import error is a real one and fails collection.
NEEDS_EXTRA = {
    "rlcore/training/objectives.py": ("torch", "the train extra"),
    "rlcore/training/reporting.py": ("transformers", "the train extra"),
}


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    package = NEEDS_EXTRA.get(collection_path.relative_to(ROOT).as_posix() if collection_path.is_relative_to(ROOT)
                              else "", (None,))[0]
    if package is not None and find_spec(package) is None:
        return True
    return None
