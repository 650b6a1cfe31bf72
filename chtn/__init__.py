"""CHTN: Cross-modal Hybrid Transfer Network for image<->text retrieval, with offline encoders."""

import os

# Never the network at run time: the model hubs' libraries (huggingface_hub, used by timm and transformers)
# read these when imported, so they are set before any CHTN module can import them. A user's own value wins.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
