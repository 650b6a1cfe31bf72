"""torch's CPU threads come from the cores this process may use (chtn/cpus.py), or from what the user set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from chtn.cpus import cgroup_quota, set_torch_threads, thread_count, usable_cores
from chtn.errors import CHTNError


def _cgroup(root, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (root / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return root


@pytest.mark.parametrize(
    ("v2", "v1", "quota"),
    [
        ("150000 100000", None, 1.5),  # cgroup v2: a docker --cpus=1.5 container
        ("max 100000", None, None),  # v2, no quota
        (None, ("50000", "100000"), 0.5),  # cgroup v1
        (None, ("-1", "100000"), None),  # v1, no quota
        (None, None, None),  # no cgroup file at all (macOS, a sandbox)
        ("garbage", None, None),
    ],
)
def test_the_cgroup_quota_is_read_from_v2_or_v1_files(tmp_path, v2, v1, quota):
    assert cgroup_quota(_cgroup(tmp_path, v2, v1)) == quota


def test_a_quota_below_the_affinity_caps_the_cores(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    cores, why = usable_cores(_cgroup(tmp_path, "50000 100000"))
    assert cores == 1
    if affinity > 1:
        assert "cgroup CPU quota of 0.5" in why
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    assert usable_cores(unlimited)[0] == affinity


def test_the_thread_count_prefers_the_option_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CHTN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    root = _cgroup(tmp_path, "50000 100000")
    threads, why = thread_count(None, root)
    assert threads == 1 and why.startswith("this process may use")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_count(None, root) == (3, "set by $OMP_NUM_THREADS")
    monkeypatch.setenv("CHTN_THREADS", "2")
    assert thread_count(None, root) == (2, "set by $CHTN_THREADS")
    assert thread_count(4, root) == (4, "set by --threads")
    monkeypatch.setenv("CHTN_THREADS", "two")
    with pytest.raises(CHTNError, match=r"\$CHTN_THREADS 'two' is not a number of threads; give a whole number"):
        thread_count(None, root)


def test_setting_the_threads_sizes_torch_and_says_so(monkeypatch):
    monkeypatch.delenv("CHTN_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        line = set_torch_threads(1)
        assert torch.get_num_threads() == 1 and line.startswith("torch uses 1 CPU thread (set by --threads")
    finally:
        torch.set_num_threads(before)


def test_threads_set_before_torch_is_imported_size_its_pool_when_it_is():
    """The dashboard's server sizes the pool at start and imports torch later (its first answers do not need it)."""
    script = (
        "import sys; from chtn.cpus import set_torch_threads; line = set_torch_threads(1); "
        "assert 'torch' not in sys.modules; import torch; print(torch.get_num_threads(), line)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CHTN_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("1 torch uses 1 CPU thread (set by --threads")
