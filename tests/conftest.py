"""Shared fixtures: the embedded sample (real data, real checkpoints) and a private feature cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
PAIRS = SAMPLE / "fashion" / "pairs.csv"
SOURCE = SAMPLE / "fashion" / "source.csv"
CIFAR = SAMPLE / "cifar10"
CHECKPOINTS = SAMPLE / "checkpoints"

# One feature cache per test session, shared by all tests (and by CLI subprocesses they start),
# so real features are extracted once per run and never read from a developer's own cache.
os.environ.setdefault("CHTN_CACHE_DIR", tempfile.mkdtemp(prefix="chtn-test-cache-"))


@pytest.fixture(scope="session")
def pairs():
    from chtn.data import load_pairs

    return load_pairs(PAIRS)


@pytest.fixture(scope="session")
def cache():
    from chtn.features import FeatureCache

    return FeatureCache()


# Tests that take from ~5 s to minutes on a 2-core CPU (pytest --durations; README, "Run the tests"). One table,
# by file and test name (a parametrised id picks one case), so the fast tier is kept up to date in one place:
# `python -m pytest -q -m "not slow and not browser"`. The real-browser tests carry `browser` themselves.
SLOW: dict[str, set[str] | str] = {
    "test_train.py": "*",  # every test trains on real sample features or starts `python -m chtn` / torchrun
    "test_finetune.py": {  # prefix maps of the sample, and training with a trunk unit
        "test_prefix_maps_are_float16_and_cached",
        "test_optimizer_gives_the_tail_a_smaller_learning_rate",
        "test_fine_tuning_trains_the_tail_keeps_bn_statistics_and_learns",
        "test_embedder_and_attribution_use_the_fine_tuned_units",
        "test_trunk_tensors_must_match_the_config",
        "test_finetune_preset_trains_the_trunks_head_unit_and_otherwise_trains_like_ensemble",
    },
    "test_workspace.py": {
        "test_second_open_reads_embeddings_from_disk_without_encoding",
        "test_pair_score_is_the_score_the_explorer_ranks_by",
    },
    "test_domain.py": {"test_catalogue_is_relevant_and_cifar_is_not", "test_identical_sets_are_fully_relevant"},
    "test_app.py": {
        "test_overview_shows_card_metrics_chart_and_table",
        "test_shared_space_page_projects_everything_and_says_when_it_samples",
        "test_attribution_page_explains_a_mis_retrieval_from_a_shared_link",
    },
    "test_projection.py": {
        "test_cli_precomputes_what_the_page_reads",
        "test_two_checkpoints_share_coordinates_and_identical_ones_match",
    },
    "test_attribution.py": {
        "test_randomised_chtn_weights_change_the_image_map",
        "test_contrastive_mode_attributes_the_difference",
    },
    "test_retrieval.py": {"test_million_row_gallery_matches_brute_force_with_bounded_memory[64]"},
    "test_text_choice.py": {"test_validation_choice_scores_every_candidate_on_pairs_carved_from_training"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = SLOW.get(item.path.name, set())
        if names == "*" or item.name in names or getattr(item, "originalname", None) in names:
            item.add_marker(pytest.mark.slow)
