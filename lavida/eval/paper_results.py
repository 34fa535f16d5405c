"""The numbers the LAVIDA paper reports, for side-by-side comparison in reports and tables.

Main paper Tab. 1 (frame level, zero-shot) and Tab. 2 (UCSD Ped2 pixel level), in percent.
"""

from __future__ import annotations

# benchmark -> (metric key in metrics.json, reported value in %)
PAPER_RESULTS: dict[str, tuple[str, float]] = {
    "ubnormal": ("frame_auc_micro", 76.45),
    "shanghaitech": ("frame_auc_micro", 85.28),
    "ucf_crime": ("frame_auc_micro", 82.18),
    "xd_violence": ("frame_ap", 90.62),
    "ucsd_ped2": ("pixel_auc", 87.68),
}
