"""Benchmark reverse-attention token compression (paper §3.4) against a naive version.

Times ``reverse_attention_compress`` (chunked, vectorised) and an obvious unchunked
implementation (full L×L ``torch.cdist``, a Python loop over clusters for Eq. 4) on random
tokens, and prints a markdown table with wall time, extra peak memory and whether both picked the
same background tokens and clusters.

Peak memory: on CPU the process's resident-set high-water mark (reset through
``/proc/self/clear_refs`` before each call, Linux only) minus the resident set before the call,
with glibc told to map every allocation of 64 KiB or more separately (``mallopt``) so that freed
tensors leave the resident set and each call's peak is counted afresh; on CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.

Run from the repository root after ``pip install -e .`` (or with ``PYTHONPATH=.``).

Examples::

    python benchmarks/compression.py                       # CPU, L in {1296, 5184, 10368}
    python benchmarks/compression.py --sizes 1296 --repeats 3
    python benchmarks/compression.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import ctypes
import math
import time
from collections.abc import Callable

import torch

from lavida.models.compression import CompressionResult, num_kept, reverse_attention_compress

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def naive_compress(
    tokens: torch.Tensor, ratio: float, k: int = 8, density: str = "paper"
) -> CompressionResult:
    """The obvious implementation: whole L×L distance matrix, one Python iteration per cluster."""
    x = tokens.float()
    n, dim = x.shape
    r = num_kept(n, ratio)
    kk = min(k, n - 1)
    dist = torch.cdist(x, x)  # (L, L), matmul-based
    dist.fill_diagonal_(math.inf)
    knn_d, knn_i = dist.topk(kk, dim=1, largest=False)
    if density == "paper":
        rho = kk / knn_d.square().sum(dim=1)
    else:
        d = knn_d / math.sqrt(dim)
        reach = torch.maximum(d[:, -1][knn_i], d)
        rho = kk / (reach.sum(dim=1) + 1e-10)
    keep = torch.sort(torch.sort(rho, descending=True, stable=True).indices[:r]).values
    assignment = torch.cdist(x, x[keep]).argmin(dim=1)
    assignment[keep] = torch.arange(r, device=x.device)
    out = torch.empty(r, dim, device=x.device)
    for i in range(r):
        members = x[assignment == i]
        w = torch.softmax(-(x[keep[i]] @ members.T) / math.sqrt(dim), dim=0)
        out[i] = w @ members
    return CompressionResult(tokens=out.to(tokens.dtype), keep=keep, assignment=assignment, density=rho)


def _exact_rss_accounting() -> None:
    """Make glibc return freed tensors to the OS, so the resident set tracks live memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold = -3  # glibc's mallopt parameter id; a fixed value also stops its dynamic growth
    libc.mallopt(m_mmap_threshold, 64 * 1024)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(
    fn: Callable[[], CompressionResult], device: torch.device
) -> tuple[float, float, float, CompressionResult]:
    """Returns (wall seconds, process CPU seconds, extra peak memory in MiB or NaN, result) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start, cpu = time.perf_counter(), time.process_time()
        res = fn()
        torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return wall, cpu, (torch.cuda.max_memory_allocated(device) - base) / 2**20, res
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # reset the peak resident set size (VmHWM)
        base = _rss_kib("VmRSS")
    except OSError:
        base = None
    start, cpu = time.perf_counter(), time.process_time()
    res = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = math.nan if base is None else (_rss_kib("VmHWM") - base) / 1024
    return wall, cpu, peak, res


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1296, 5184, 10368], help="token counts L")
    parser.add_argument("--dim", type=int, default=3584, help="token width D (Qwen2-VL-7B: 3584)")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("--densities", nargs="+", default=["paper", "lof"], choices=["paper", "lof"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--repeats", type=int, default=1, help="calls per row, interleaved across implementations; best kept"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="rows per distance block (default: auto)"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive implementation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        _exact_rss_accounting()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    # Warm-up: first-call kernel selection and allocator set-up are not part of the figures.
    warm = torch.randn(256, args.dim, device=device, generator=gen)
    reverse_attention_compress(warm, args.ratio, args.k)
    if not args.no_naive:
        naive_compress(warm, args.ratio, args.k)

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"reverse_attention_compress on {name}; D = {args.dim}, ratio = {args.ratio}, k = {args.k}, "
        f"torch {torch.__version__}; best of {args.repeats}\n"
    )
    print(
        "| L | R | input | density | implementation | wall (s) | CPU (s) | extra peak mem (MiB) "
        "| same keep / clusters |"
    )
    print("|---:|---:|---|---|---|---:|---:|---:|---|")
    for n in args.sizes:
        for dtype_name in args.dtypes:
            x = torch.randn(n, args.dim, device=device, generator=gen).to(DTYPES[dtype_name])
            for density in args.densities:
                impls: dict[str, Callable[[], CompressionResult]] = {
                    "chunked (ours)": lambda x=x, d=density: reverse_attention_compress(
                        x, args.ratio, args.k, d, chunk_size=args.chunk_size
                    )
                }
                if not args.no_naive and dtype_name == "float32":
                    impls["naive unchunked"] = lambda x=x, d=density: naive_compress(x, args.ratio, args.k, d)
                # Interleave the implementations so that load changes on the machine hit both alike.
                runs: dict[str, list] = {impl: [] for impl in impls}
                results: dict[str, CompressionResult] = {}
                for _ in range(args.repeats):
                    for impl, fn in impls.items():
                        wall, cpu, peak, results[impl] = measure(fn, device)
                        runs[impl].append((wall, cpu, peak))
                ours = results["chunked (ours)"]
                for impl, res in results.items():
                    agree = "—"
                    if res is not ours:
                        same_keep = torch.equal(res.keep, ours.keep)
                        same_clusters = torch.equal(res.assignment, ours.assignment)
                        agree = f"{'yes' if same_keep else 'no'} / {'yes' if same_clusters else 'no'}"
                    wall = min(r[0] for r in runs[impl])
                    cpu = min(r[1] for r in runs[impl])
                    peak = max(r[2] for r in runs[impl])
                    print(
                        f"| {n} | {res.keep.numel()} | {dtype_name} | {density} | {impl} | {wall:.2f} | "
                        f"{cpu:.2f} | {peak:.0f} | {agree} |",
                        flush=True,
                    )
                del results, runs


if __name__ == "__main__":
    main()
