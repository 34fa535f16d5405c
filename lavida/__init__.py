"""LAVIDA: zero-shot video anomaly detection with an MLLM, trained only on pseudo-anomalies.

Importing ``lavida`` is cheap: heavy modules (transformers, open_clip, hydra) are imported by the
submodules that need them.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from lavida import Detector` without importing torch and transformers on `import lavida`.
    if name in ("Detector", "Detection"):
        from lavida.detect import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'lavida' has no attribute {name!r}")
