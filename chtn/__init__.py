"""CHTN: Cross-modal Hybrid Transfer Network for image<->text retrieval, with offline encoders."""

__version__ = "0.1.0"
