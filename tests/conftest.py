"""Shared fixtures: the embedded sample (real data, real checkpoints) and a private feature cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures: a throwaway PostgreSQL server)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
PAIRS = SAMPLE / "fashion" / "pairs.csv"
SOURCE = SAMPLE / "fashion" / "source.csv"
CIFAR = SAMPLE / "cifar10"
CHECKPOINTS = SAMPLE / "checkpoints"


def recipe_runs(name: str) -> list[str]:
    """The sample's three training runs of a recipe (seed 0, then the replicates with seeds 1 and 2), as paths."""
    return [str(CHECKPOINTS / f"{name}.safetensors")] + [
        str(CHECKPOINTS / "replicates" / f"{name}_s{seed}.safetensors") for seed in (1, 2)
    ]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core this process may use (pyproject caps it at 4). A third worker on 2 cores was
    slower once the browser tests grew (each starts a Streamlit server and chromium beside its worker): measured on
    2 cores, the whole suite took 505 s with 2 workers and 614 s with 3."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# One cache folder per test session, shared by all its tests and by the CLI subprocesses and servers they start,
# so real features are extracted once per session and never read from a developer's own cache. Under pytest-xdist
# each worker gets its own (a sub-folder of the controller's), so no test sees another worker's cache warm or cold.
if "CHTN_CACHE_DIR" not in os.environ:
    os.environ["CHTN_CACHE_DIR"] = tempfile.mkdtemp(prefix="chtn-test-cache-")
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["CHTN_CACHE_DIR"] = os.path.join(os.environ["CHTN_CACHE_DIR"], worker)
    os.makedirs(os.environ["CHTN_CACHE_DIR"], exist_ok=True)

# Under pytest-xdist the workers share the cores: torch, BLAS and numba each start one thread per core, so N
# workers would run N threads each on N cores and spend the difference switching. Each worker, and every process
# it starts (the variables are inherited), gets its share. Set before any test module imports torch.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _WORKERS > 1:
    _SHARE = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_variable, _SHARE)

# app.py warms every new server up in a background thread (encoders, an attribution; UMAP's numba code in its worker):
# in each worker that runs a browser test, up to a minute of CPU taken from the other tests. Off for the session;
# the tests of the warm-up itself (test_app, test_projection's probe) turn it on or run it directly.
os.environ["CHTN_WARM_UP"] = "0"


@pytest.fixture(scope="session")
def pairs():
    from chtn.data import load_pairs

    return load_pairs(PAIRS)


@pytest.fixture
def review_db(tmp_path, monkeypatch):
    """A fresh review database for the dashboard's pages, given as a team would configure it ($CHTN_REVIEW_DB)."""
    path = tmp_path / "review.sqlite"
    monkeypatch.setenv("CHTN_REVIEW_DB", str(path))
    return path


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
        "test_warm_up_opens_the_defaults_through_the_shared_caches_and_leaves_no_attribution",
    },
    "test_projection.py": {
        "test_cli_precomputes_what_the_page_reads",
        "test_two_checkpoints_share_coordinates_and_identical_ones_match",
        "test_warm_up_compiles_all_the_numba_code_a_sample_umap_needs",  # a fresh process compiles umap-learn
    },
    "test_attribution.py": {
        "test_randomised_chtn_weights_change_the_image_map",
        "test_contrastive_mode_attributes_the_difference",
    },
    "test_validation.py": {  # real features of the flawed copy's rows, and a 1-epoch training run
        "test_split_commands_stop_or_skip_the_same_way",
        "test_train_skip_invalid_trains_on_the_valid_rows",
        "test_sidebar_skip_invalid_rows_opens_the_rest_and_says_what_was_skipped",
    },
    "test_retrieval.py": {"test_million_row_gallery_matches_brute_force_with_bounded_memory[16]"},
    "test_robustness.py": {  # the first dashboard run embeds the sample's test split; CLI runs embed a few images
        "test_app_nul_byte_in_a_link_or_the_sidebar_is_a_clear_error",
        "test_app_confined_to_configured_folders",
        "test_app_failed_embedding_leaves_no_progress_bar",
        "test_app_says_when_a_long_free_text_query_was_cut",
        "test_app_explorer_link_with_an_odd_k_opens_with_a_valid_k",
        "test_app_shows_each_class_of_bad_file_as_an_error_box_and_keeps_working",
        "test_search_uses_the_device_it_is_given",
        "test_the_cli_reports_a_truncated_image_without_a_traceback",
        "test_any_damaged_header_or_tensor_is_a_checkpoint_or_a_clean_error",
    },
    "test_offline.py": {  # each starts `python -m chtn` in a fresh process
        "test_evaluate_runs_with_the_network_blocked",
        "test_a_hub_model_id_is_an_error_without_a_connection",
    },
    "test_baseline.py": {  # `chtn baseline` on the sample, then the baselines' evaluations and pages
        "test_baseline_checkpoints_open_like_any_other_and_say_what_validation_chose",
        "test_every_page_opens_a_baseline_checkpoint",
        "test_the_card_margin_is_the_comparisons_figure",
        "test_overview_card_shows_the_margin_over_a_baseline_beside_the_checkpoint",
    },
    "test_text_choice.py": {"test_validation_choice_scores_every_candidate_on_pairs_carved_from_training"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = SLOW.get(item.path.name, set())
        if names == "*" or item.name in names or getattr(item, "originalname", None) in names:
            item.add_marker(pytest.mark.slow)
