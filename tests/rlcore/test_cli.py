"""`python -m rlcore` stands alone: no Django, no Celery, no torch needed for --help."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Make any import of these fail, as on a machine that lacks them.
BLOCK = ("import sys; [sys.modules.__setitem__(m, None) for m in ('django', 'celery', 'torch', 'transformers', 'trl')];"
         "import runpy; sys.argv = ['rlcore', '--help']; runpy.run_module('rlcore', run_name='__main__')")


def test_it_shows_every_command_group_without_django_celery_or_torch():
    done = subprocess.run([sys.executable, "-c", BLOCK], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    for command in ("selfcheck", "reward", "train", "judge", "agreement", "routing", "analysis"):
        assert command in done.stdout


def test_it_explains_a_user_error_without_a_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ncomponents: []\n")
    done = subprocess.run([sys.executable, "-m", "rlcore", "reward", "check", "--spec", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {spec}, line 2: field 'components':")


def test_it_prints_each_command_help_as_written():
    # argparse %-formats help strings: a bare "%" garbled the agreement line with a dict dump.
    from rlcore.cli import build_parser

    text = build_parser().format_help()
    assert "agreement statistics (kappa, alpha, % agreement) split human/LM" in " ".join(text.split())
    assert "option_strings" not in text
