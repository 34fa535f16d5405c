"""The five test benchmarks, each in its official on-disk layout, and a registry to build them by name.

- ``ubnormal``: :class:`~.ubnormal.UBnormal`, 211 test (or 64 validation) videos;
- ``shanghaitech``: :class:`~.shanghaitech.ShanghaiTech`, 107 test videos;
- ``ucf_crime``: :class:`~.ucf_crime.UCFCrime`, 290 test videos;
- ``xd_violence``: :class:`~.xd_violence.XDViolence`, 800 test videos (primary metric AP);
- ``ucsd_ped2``: :class:`~.ucsd_ped2.UCSDPed2`, 12 test clips (primary metric pixel AUC).

Modules are imported on first use, so ``import lavida.eval.benchmarks`` stays cheap. Layouts, ground-truth
conventions and the two protocols: ``docs/evaluation.md``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lavida.eval.benchmark import VadBenchmark

__all__ = ["BENCHMARKS", "benchmark_class", "get_benchmark"]

# name -> "module:Class"; resolved lazily by benchmark_class().
BENCHMARKS: dict[str, str] = {
    "ubnormal": "lavida.eval.benchmarks.ubnormal:UBnormal",
    "shanghaitech": "lavida.eval.benchmarks.shanghaitech:ShanghaiTech",
    "ucf_crime": "lavida.eval.benchmarks.ucf_crime:UCFCrime",
    "xd_violence": "lavida.eval.benchmarks.xd_violence:XDViolence",
    "ucsd_ped2": "lavida.eval.benchmarks.ucsd_ped2:UCSDPed2",
}

# The release's keys (train/train_para.yaml test_sets) and other spellings people type.
_ALIASES = {"ucfcrime": "ucf_crime", "xdviolence": "xd_violence", "ucsdped": "ucsd_ped2", "ped2": "ucsd_ped2"}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key.replace("_", ""), key)


def benchmark_class(name: str) -> type[VadBenchmark]:
    """The :class:`VadBenchmark` subclass registered as ``name`` (aliases such as ``ucfcrime`` accepted).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    key = _canonical(name)
    if key not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark '{name}'; expected one of: {', '.join(BENCHMARKS)}.")
    module, attribute = BENCHMARKS[key].split(":")
    return getattr(importlib.import_module(module), attribute)


def get_benchmark(name: str, root: str | Path, **kwargs: Any) -> VadBenchmark:
    """Build benchmark ``name`` over the dataset at ``root``; ``kwargs`` go to its constructor.

    Example:
        >>> bench = get_benchmark("ucsd_ped2", "/data/UCSD_Anomaly_Dataset.v1p2")  # doctest: +SKIP
        >>> plan = bench.protocol("standard")                                   # doctest: +SKIP

    Raises:
        ValueError: unknown name (lists the valid ones).
        FileNotFoundError: ``root`` does not exist.
    """
    return benchmark_class(name)(root, **kwargs)
