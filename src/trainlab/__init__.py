"""trainlab: config-driven PyTorch training with one readable loop."""

__version__ = "0.1.0"
