"""LAVIDA: zero-shot video anomaly detection with an MLLM, trained only on pseudo-anomalies.

    from lavida import Detector
    result = Detector.from_checkpoint("outputs/train/paper_main/final").detect("v.mp4", ["fire"])

Importing ``lavida`` is cheap: heavy modules (transformers, open_clip, hydra) are imported by the
submodules that need them, and :class:`Detector` / :class:`Detection` on first use.
"""

__version__ = "0.1.0"

__all__ = ["Detection", "Detector"]


def __getattr__(name: str):
    # `from lavida import Detector` without importing torch and transformers on `import lavida`.
    if name in __all__:
        from lavida.detect import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'lavida' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, for dir(), tab completion and `from lavida import *`.
    return sorted({*globals(), *__all__})
