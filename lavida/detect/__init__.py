"""Open-world detection: :class:`~lavida.detect.detector.Detector` and the ``lavida-detect`` outputs."""

from lavida.detect.detector import Detection, Detector

__all__ = ["Detection", "Detector"]
