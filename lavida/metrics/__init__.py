"""Evaluation metrics for video anomaly detection (numpy / scipy / scikit-learn only, no torch).

Frame level:
    :func:`frame_auc` (micro / macro ROC-AUC), :func:`frame_ap` (sklearn AP or trapezoidal PR-AUC).
Pixel level:
    :class:`PixelAUC` (pooled pixel ROC-AUC, streaming, constant memory; LAVIDA's number),
    :class:`PerFramePixelAUC` / :func:`per_frame_pixel_auc` (TAO's per-frame mean),
    :class:`PixelCriterion` / :func:`pixel_criterion` (Mahadevan's 40 % rule: ROC, AUC, EER).
Region and track level:
    :func:`rbdc_tbdc` / :func:`rbdc_tbdc_curves` (Ramachandra & Jones), with
    :func:`extract_regions` (pixel maps to scored boxes) and :func:`tracks_from_id_maps`
    (UBnormal ground-truth tracks).

Definitions, sources and edge cases: ``docs/metrics.md``.
"""

from lavida.metrics.frame import frame_ap, frame_auc
from lavida.metrics.pixel import PixelAUC
from lavida.metrics.pixel_criterion import PixelCriterion, PixelCriterionResult, pixel_criterion
from lavida.metrics.pixel_per_frame import PerFramePixelAUC, per_frame_pixel_auc
from lavida.metrics.rbdc_tbdc import RegionTrackCurves, rbdc_tbdc, rbdc_tbdc_curves
from lavida.metrics.regions import extract_regions
from lavida.metrics.tracks import object_boxes, tracks_from_id_maps

__all__ = [
    "PerFramePixelAUC",
    "PixelAUC",
    "PixelCriterion",
    "PixelCriterionResult",
    "RegionTrackCurves",
    "extract_regions",
    "frame_ap",
    "frame_auc",
    "object_boxes",
    "per_frame_pixel_auc",
    "pixel_criterion",
    "rbdc_tbdc",
    "rbdc_tbdc_curves",
    "tracks_from_id_maps",
]
