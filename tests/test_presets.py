"""Every named preset loads; the benchmark preset is the same in `train --help`, the README and the benchmarks."""

from __future__ import annotations

import dataclasses
import re

import pytest

from chtn.cli import build_parser
from chtn.config import PRESETS, CHTNConfig, load_config
from tests.conftest import ROOT


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_and_round_trips(name):
    config = load_config(name)
    assert CHTNConfig.from_dict(config.to_dict()) == config


def test_finetune2_is_finetune_with_the_last_block_stage_trained_too():
    finetune, finetune2 = load_config("finetune"), load_config("finetune2")
    assert finetune2.encoder.finetune_stages == 2 and finetune.encoder.finetune_stages == 1
    assert dataclasses.replace(finetune2, encoder=dataclasses.replace(finetune2.encoder, finetune_stages=1)) == finetune


def _train_help() -> str:
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    return " ".join(train.format_help().split())


def test_help_and_readme_name_the_same_benchmark_preset_the_benchmarks_chose():
    help_text = _train_help()
    in_help = re.findall(r"(\w+) \([^()]*; the benchmark preset\)", help_text)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    in_readme = set(re.findall(r"--preset (\w+) .*\(benchmark preset\)", readme))
    in_readme |= set(re.findall(r"`(\w+)` \([^()]*; the benchmark preset\)", readme))
    assert in_help == ["finetune2"] and in_readme == {"finetune2"}
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "**Chosen: `finetune` with `encoder.finetune_stages=2`**" in benchmarks
    assert load_config("finetune2") == load_config("finetune", overrides={"encoder": {"finetune_stages": 2}})


def test_train_help_lists_the_text_options():
    help_text = _train_help()
    for option in ("encoder.text=", "tfidf_analyzer", "tfidf_ngram", "tfidf_max_features", "text_choice="):
        assert option in help_text
    assert all(name in help_text for name in PRESETS)
