"""The package boundary: an installed `chtn` works from any folder, and the core never imports the dashboard."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import chtn

ROOT = Path(chtn.__file__).parent.parent
CORE = sorted(p.stem for p in Path(chtn.__file__).parent.glob("*.py") if p.stem != "__main__")


def test_the_core_package_never_imports_the_dashboard_layer():
    """Every core module imports without `analysis`; the CLI then loads only the plugged-in command modules."""
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}: importlib.import_module('chtn.' + name if name != '__init__' else 'chtn')\n"
        "layer = lambda: sorted(m for m in sys.modules if m.split('.')[0] in ('analysis', 'views', 'streamlit'))\n"
        "print(layer())\n"
        "from chtn.cli import build_parser\nbuild_parser()\nprint(layer())"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = found.stdout.split("\n")[:2]
    assert before == "[]", found.stdout
    clis = ["analysis.bias.cli", "analysis.compare.cli", "analysis.projection.cli", "analysis.review.cli"]
    assert set(ast.literal_eval(after)) == {"analysis", "analysis.bias", "analysis.compare", "analysis.projection"} | {
        "analysis.review",
        *clis,
    }, found.stdout  # the packages' __init__ and their cli modules, nothing heavier


def test_the_cli_runs_from_any_folder_with_the_plugged_in_commands(tmp_path):
    """The console script and `python -m chtn` both work outside the checkout; `project` comes from analysis/."""
    script = Path(sys.executable).with_name("chtn")
    for command in ([str(script)], [sys.executable, "-m", "chtn"]):
        shown = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert all(name in shown.stdout for name in ("validate", "train", "evaluate", "embed", "search", "project"))
    refused = subprocess.run(
        [sys.executable, "-m", "chtn", "train", "--preset", "huge", "--data", "x", "--out", "y"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "invalid choice: 'huge'" in refused.stderr


@pytest.mark.parametrize("command", ["compare", "bias", "review", "project"])
def test_a_dashboard_command_without_the_installed_package_says_how_to_install_it(command, monkeypatch, capsys):
    """Run from a checkout without `pip install -e .` (no chtn.commands entry points): not "invalid choice" and
    exit 2 (a CI gate would read a bad rule file), but exit 3 and how to install."""
    from chtn import cli

    assert command in cli.installed_plugins()  # this test environment has it installed; a bare checkout would not
    monkeypatch.setattr(cli, "installed_plugins", set)
    assert cli.main([command, "--data", "x"]) == 3
    err = capsys.readouterr().err
    assert f"`chtn {command}` comes from the installed CHTN package" in err and 'pip install -e ".[test]"' in err


def test_a_checkout_that_was_not_installed_runs_the_core_and_says_how_to_install_the_rest(tmp_path):
    """The same without monkeypatching: a Python that sees the checkout's packages and the dependencies but no
    installed CHTN (no metadata, so no chtn.commands entry points), as `python -m chtn` in a fresh clone. The core's
    commands work; a dashboard command exits 3 with the install line, never 2 (invalid choice) or 1."""
    path = tmp_path / "path"
    path.mkdir()
    for site in {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}:
        for entry in site.iterdir():
            installed_chtn = entry.name.startswith(("chtn", "__editable__")) or entry.name in ("analysis", "views")
            if not (installed_chtn or entry.suffix == ".pth" or (path / entry.name).exists()):
                (path / entry.name).symlink_to(entry)
    for package in ("chtn", "analysis"):  # the checkout's own folder may hold chtn.egg-info: link the packages only
        (path / package).symlink_to(ROOT / package)

    def run(*argv: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-S", "-m", "chtn", *argv]  # -S: no site-packages, no .pth, no editable finder
        env = {**os.environ, "PYTHONPATH": str(path)}
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)

    shown = run("--help")
    assert shown.returncode == 0 and "validate" in shown.stdout and "compare" not in shown.stdout, shown.stderr
    refused = run("compare", "--baseline", "a.safetensors", "--candidate", "b.safetensors", "--data", "x", "--out", "o")
    assert refused.returncode == 3, refused.stderr
    assert "`chtn compare` comes from the installed CHTN package" in refused.stderr
    assert 'pip install -e ".[test]"' in refused.stderr


def test_every_shared_option_is_declared_once_by_the_plugin_contract():
    """--data, --checkpoint, --out ... come from `chtn.cli`'s add_*_option(s) functions, for the core's commands and
    the plug-ins alike: no command declares one by hand. Every installed plug-in is named in PLUGIN_COMMANDS, so a
    checkout without it says how to install it."""
    from chtn import cli

    shared = ("--data", "--skip-invalid", "--cache-dir", "--split", "--checkpoint", "--out", "--device", "--review-db")
    declared = {
        str(module.relative_to(ROOT)): re.findall(r'add_argument\(\s*"(--[\w-]+)"', module.read_text())
        for module in [*ROOT.glob("chtn/*.py"), *ROOT.glob("analysis/**/*.py")]
    }
    for flag in shared:
        assert [m for m, flags in declared.items() for f in flags if f == flag] == ["chtn/cli.py"], flag
    assert cli.installed_plugins() == set(cli.PLUGIN_COMMANDS)
