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
