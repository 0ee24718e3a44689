"""Bastion: a self-hosted, security-first hub for ML models and datasets.

Speaks the Hugging Face Hub API (huggingface_hub, hf CLI), git + git-lfs and HTML.
"""

__version__ = "0.1.0"
