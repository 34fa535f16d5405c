"""Collect evaluation runs into the paper's Tab. 1 (frame level) and Tab. 2 (Ped2 pixel level).

Each run directory holds the ``metrics.json`` and ``report.md`` written by ``lavida-eval``; the
benchmark and protocol are read from the report's title line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lavida.atomic import read_json
from lavida.eval.paper_results import PAPER_RESULTS

TABLE1 = ("ubnormal", "shanghaitech", "ucf_crime", "xd_violence")
TABLE2 = ("ucsd_ped2",)
TITLES = {
    "ubnormal": "UBnormal AUC",
    "shanghaitech": "ShanghaiTech AUC",
    "ucf_crime": "UCF-Crime AUC",
    "xd_violence": "XD-Violence AP",
    "ucsd_ped2": "UCSD Ped2 pixel AUC",
}


@dataclass(frozen=True)
class RunResult:
    """One evaluation run: where it is, what it evaluated, and its metrics."""

    path: Path
    benchmark: str
    protocol: str
    metrics: dict

    @property
    def shortfall(self) -> str | None:
        """Why the run is not the paper's whole test split, or None when it is (runs written before
        the split was recorded count as whole test runs)."""
        reasons = []
        if self.metrics.get("split", "test") != "test":
            reasons.append(f"the {self.metrics['split']} split")
        if self.metrics.get("videos_left_out", 0):
            reasons.append(f"{self.metrics['videos_left_out']} test videos left out")
        return " and ".join(reasons) or None


def read_run(path: str | Path) -> RunResult:
    """Read a run directory written by ``lavida-eval``.

    Raises:
        FileNotFoundError: no ``metrics.json`` in ``path``.
        ValueError: the benchmark or protocol cannot be determined.
    """
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json — is this a lavida-eval output directory?")
    metrics = read_json(metrics_file, expected="the metrics lavida-eval writes")
    report = path / "report.md"
    if not report.is_file():
        raise FileNotFoundError(
            f"{path}: no report.md beside metrics.json — is this a lavida-eval output directory?"
        )
    title = (report.read_text().splitlines() or [""])[0]
    match = re.match(r"# (\S+) — (\S+) protocol", title)
    if not match:
        raise ValueError(f"{report}: cannot read the benchmark and protocol from its title line {title!r}.")
    return RunResult(path=path, benchmark=match.group(1), protocol=match.group(2), metrics=metrics)


def build_tables(
    runs: Sequence[RunResult], *, label: str = "ours", allow_partial: bool = False
) -> tuple[str, str]:
    """Markdown and CSV of Tab. 1 and Tab. 2, our numbers beside the paper's (percent).

    Protocols are separate rows. Two runs of one benchmark and protocol are refused: which one belongs
    in the table (a newer checkpoint, a full run rather than a ``max_videos`` smoke run) is the
    caller's choice, and picking by argument order would hide it. The paper's numbers are on whole test
    splits, so a run of another split or with videos left out is refused too, unless ``allow_partial``:
    then its number is marked † and explained below the tables.

    Raises:
        ValueError: two runs share a benchmark and protocol, or a run is not a whole test split (the
            message names the runs).
    """
    partial = [run for run in runs if run.shortfall]
    if partial and not allow_partial:
        listed = "; ".join(f"{run.path} ({run.shortfall})" for run in partial)
        raise ValueError(
            f"Not whole test splits, unlike the paper's numbers: {listed}. Evaluate the whole test split, "
            "or pass --allow-partial (allow_partial=True) to show them marked †."
        )
    by_protocol: dict[str, dict[str, RunResult]] = {}
    for run in runs:
        found = by_protocol.setdefault(run.protocol, {})
        if run.benchmark in found:
            raise ValueError(
                f"{found[run.benchmark].path} and {run.path} both evaluate {run.benchmark} under the "
                f"{run.protocol} protocol; pass only the run that belongs in the table."
            )
        found[run.benchmark] = run

    rows = [["table", "row"] + [TITLES[b] for b in TABLE1 + TABLE2]]
    rows.append(["paper", "LAVIDA (paper)"] + [f"{PAPER_RESULTS[b][1]:.2f}" for b in TABLE1 + TABLE2])
    for protocol, found in sorted(by_protocol.items()):
        values = []
        for benchmark in TABLE1 + TABLE2:
            key = PAPER_RESULTS[benchmark][0]
            run = found.get(benchmark)
            if run and key in run.metrics:
                values.append(f"{100 * run.metrics[key]:.2f}" + (" †" if run.shortfall else ""))
            else:
                values.append("–")
        rows.append(["ours", f"{label} ({protocol} protocol)"] + values)

    markdown = ["## Tab. 1 — frame level, zero-shot", ""]
    markdown += _markdown_table(rows, columns=range(2, 2 + len(TABLE1)))
    markdown += ["", "## Tab. 2 — UCSD Ped2, pixel level, zero-shot", ""]
    markdown += _markdown_table(rows, columns=range(2 + len(TABLE1), 2 + len(TABLE1) + len(TABLE2)))
    if partial:
        markdown += ["", "† not the whole test split:"]
        markdown += [
            f"- {run.benchmark} ({run.protocol} protocol, {run.path}): {run.shortfall}" for run in partial
        ]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return "\n".join(markdown) + "\n", buffer.getvalue()


def _markdown_table(rows: list[list[str]], *, columns: range) -> list[str]:
    header = ["method"] + [rows[0][c] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * len(columns)]
    for row in rows[1:]:
        lines.append("| " + " | ".join([row[1]] + [row[c] for c in columns]) + " |")
    return lines
