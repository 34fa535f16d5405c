"""LAVIDA: zero-shot video anomaly detection with an MLLM, trained only on pseudo-anomalies.

Importing ``lavida`` is cheap: heavy modules (transformers, open_clip, hydra) are imported by the
submodules that need them.
"""

__version__ = "0.1.0"
