"""Benchmark: streaming PixelAUC against sklearn's roc_auc_score on tens of millions of pixels.

Pixels are synthetic 240x360 probability maps (Ped2 size): float32 sigmoids of Gaussian logits, ~2 %
anomalous, so most scores crowd near 0 as real mask maps do. PixelAUC sees them in chunks of
``--frames-per-update`` frames, like an evaluation loop; sklearn gets the whole concatenation.

    python benchmarks/metrics.py                       # 10M and 50M pixels
    python benchmarks/metrics.py --sizes 1 10 --sklearn-max 10

Prints a markdown table: seconds, speed-up, |difference|, PixelAUC's own error bound, and the peak
memory PixelAUC allocates on top of the input (tracemalloc, measured in a separate run).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from sklearn.metrics import roc_auc_score

from lavida.metrics import PixelAUC

FRAME = 240 * 360


def make_pixels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n, dtype=np.float32) < 0.02
    logits = rng.standard_normal(n, dtype=np.float32) * 3.0 - 6.0
    logits += 7.0 * labels
    scores = 1.0 / (1.0 + np.exp(-logits))
    return scores.astype(np.float32, copy=False), labels


def run_pixel_auc(scores: np.ndarray, labels: np.ndarray, step: int) -> PixelAUC:
    metric = PixelAUC()
    for start in range(0, scores.size, step):
        metric.update(scores[start : start + step], labels[start : start + step])
    return metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[10, 50], help="millions of pixels")
    parser.add_argument(
        "--sklearn-max", type=float, default=50, help="run sklearn only up to this many million pixels"
    )
    parser.add_argument("--frames-per-update", type=int, default=64, help="240x360 frames per update()")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    step = args.frames_per_update * FRAME

    print("| pixels | PixelAUC s | sklearn s | speed-up | abs diff | error bound | PixelAUC peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for millions in args.sizes:
        n = int(millions * 1e6)
        scores, labels = make_pixels(n, args.seed)

        t0 = time.perf_counter()
        metric = run_pixel_auc(scores, labels, step)
        ours = metric.compute()
        t_ours = time.perf_counter() - t0
        bound = metric.error_bound()

        # Peak memory in a separate run: tracemalloc slows allocation-heavy code down.
        tracemalloc.start()
        run_pixel_auc(scores, labels, step).compute()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        if millions <= args.sklearn_max:
            t0 = time.perf_counter()
            ref = roc_auc_score(labels, scores)
            t_ref = time.perf_counter() - t0
            cells = [f"{t_ref:.2f}", f"{t_ref / t_ours:.0f}x", f"{abs(ours - ref):.1e}"]
        else:
            cells = ["-", "-", "-"]
        print(
            f"| {millions:g}M | {t_ours:.2f} | "
            + " | ".join(cells)
            + f" | {bound:.1e} | {peak / 2**20:.0f} |"
        )
        del scores, labels


if __name__ == "__main__":
    main()
