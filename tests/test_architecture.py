"""The import rules of pyproject.toml ([tool.importlinter]: views -> analysis -> chtn, no Streamlit below the pages)
hold, and the linter that checks them in CI does find a broken rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", *args], capture_output=True, text=True, cwd=ROOT)


def test_every_import_rule_is_kept():
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "Layers: views -> analysis -> chtn KEPT" in done.stdout


def test_a_rule_the_code_breaks_is_reported(tmp_path):
    """The pages do import the core (allowed by the layers); forbidding it must be reported as broken."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["chtn", "analysis", "views"]\n\n'
        '[[tool.importlinter.contracts]]\nname = "pages never import the core"\ntype = "forbidden"\n'
        'source_modules = ["views"]\nforbidden_modules = ["chtn"]\n',
        encoding="utf-8",
    )
    done = _lint(str(config))
    assert done.returncode == 1 and "pages never import the core BROKEN" in done.stdout, done.stdout
