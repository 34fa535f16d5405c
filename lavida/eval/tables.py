"""Collect evaluation runs into the paper's Tab. 1 (frame level) and Tab. 2 (Ped2 pixel level).

Each run directory holds the ``metrics.json`` and ``report.md`` written by ``lavida-eval``; the
benchmark and protocol are read from the report's title line, and what produced the numbers (mode,
checkpoint, prediction folder, categories) from ``metrics.json``'s ``source``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lavida.atomic import read_json
from lavida.eval.paper_results import PAPER_RESULTS

log = logging.getLogger(__name__)

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

    @property
    def source(self) -> dict | None:
        """What produced the numbers (``metrics.json``'s ``source``: mode, checkpoint and its digest,
        prediction folder, categories), or None for runs written before lavida-eval recorded it."""
        source = self.metrics.get("source")
        return source if isinstance(source, dict) else None

    def describe_source(self) -> str:
        """The source in words, as listed below the tables."""
        source = self.source
        if source is None:
            return "source not recorded (written before lavida-eval recorded it)"
        if source.get("mode") == "scores-only":
            made_by = f"scores-only, predictions `{source.get('predictions')}`"
        else:
            made_by = f"{source.get('mode')}, checkpoint {_checkpoint(source)}"
            settings = _model_settings(source)
            made_by += "".join(f", {key} {value}" for key, value in settings.items() if value != {})
        if source.get("default_categories", True):
            return f"{made_by}, the benchmark's categories"
        return f"{made_by}, categories {_categories(source)}"


def source_differences(a: dict, b: dict) -> list[str]:
    """How two recorded sources show different models, in words; [] when they may be one model.

    A checkpoint is known by its digest where both runs have one (the same weights moved elsewhere are
    one model), else by its path; an unrecorded one agrees with any. Model runs of one checkpoint must
    also share the clip length (supplement Tab. 7 ablates it), the checkpoint overrides (a compression
    ratio, ...), the dtype and the mask gating, where both runs record them. Categories agree when both
    runs use their own benchmark's list (each benchmark has its own) or both were given the same list.
    Prediction folders are not compared: one method's predictions are usually saved in a folder per
    benchmark, so different folders say nothing; they are listed below the tables instead.
    """
    differences = []
    if a.get("mode") != b.get("mode"):
        differences.append(f"mode: {a.get('mode')} vs {b.get('mode')}")
    elif a.get("mode") == "model":
        if _checkpoints_differ(a, b):
            differences.append(f"checkpoint: {_checkpoint(a)} vs {_checkpoint(b)}")
        settings_a, settings_b = _model_settings(a), _model_settings(b)
        for key in settings_a:
            if key in settings_b and settings_a[key] != settings_b[key]:
                differences.append(f"{key}: {settings_a[key]} vs {settings_b[key]}")
    if _categories(a) != _categories(b):
        differences.append(f"categories: {_categories(a)} vs {_categories(b)}")
    return differences


def _model_settings(source: dict) -> dict:
    """A model run's recorded clip length and settings (lavida.eval.runner's ``_source``), in a fixed
    order; runs written before they were recorded have none, and agree with any."""
    settings = {"clip_length": source.get("clip_length"), **(source.get("settings") or {})}
    return {key: settings[key] for key in sorted(settings) if settings[key] is not None}


def _checkpoints_differ(a: dict, b: dict) -> bool:
    if a.get("checkpoint_sha256") and b.get("checkpoint_sha256"):
        return a["checkpoint_sha256"] != b["checkpoint_sha256"]
    return bool(a.get("checkpoint") and b.get("checkpoint")) and a["checkpoint"] != b["checkpoint"]


def _checkpoint(source: dict) -> str:
    path = f"`{source['checkpoint']}`" if source.get("checkpoint") else "not recorded"
    digest = source.get("checkpoint_sha256")
    return f"{path} (sha256 {digest})" if digest else path


def _categories(source: dict) -> str:
    if source.get("default_categories", True):
        return "the benchmark's"
    return repr(", ".join(source.get("categories") or []))


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
    title = (report.read_text(encoding="utf-8").splitlines() or [""])[0]
    match = re.match(r"# (\S+) — (\S+) protocol", title)
    if not match:
        raise ValueError(f"{report}: cannot read the benchmark and protocol from its title line {title!r}.")
    return RunResult(path=path, benchmark=match.group(1), protocol=match.group(2), metrics=metrics)


def build_tables(
    runs: Sequence[RunResult],
    *,
    label: str = "ours",
    allow_partial: bool = False,
    allow_mixed: bool = False,
) -> tuple[str, str]:
    """Markdown and CSV of Tab. 1 and Tab. 2, our numbers beside the paper's (percent).

    Protocols are separate rows. Two runs of one benchmark and protocol are refused: which one belongs
    in the table (a newer checkpoint, a full run rather than a ``max_videos`` smoke run) is the
    caller's choice, and picking by argument order would hide it. The paper's numbers are on whole test
    splits, so a run of another split or with videos left out is refused too, unless ``allow_partial``:
    then its number is marked † and explained below the tables.

    Every run is labelled ``label``, so the runs must be one model's: runs of different checkpoints, of
    the model beside saved predictions (scores-only), or prompted with other categories are refused
    (:func:`source_differences`), unless ``allow_mixed``. Runs written before lavida-eval recorded their
    source are taken with any other, with a warning. Each run's source is listed below the tables.

    Raises:
        ValueError: two runs share a benchmark and protocol, a run is not a whole test split, or the runs
            come from different sources (the message names the runs and what differs).
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
    mixed = _mixed_sources(runs)
    if mixed and not allow_mixed:
        raise ValueError(
            f"These runs would share the row '{label}' as if one model made them, but "
            f"{'; '.join(mixed)}. Pass one model's runs per call (--label names the row), or "
            "--allow-mixed (allow_mixed=True) to put them in one row anyway, each run's source listed below "
            "the tables."
        )
    unknown = [str(run.path) for run in runs if run.source is None]
    if unknown:
        log.warning(
            "%s: no source in metrics.json (written before lavida-eval recorded it), so not checked to be "
            "the same model as the other runs.",
            ", ".join(unknown),
        )

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
    markdown += ["", "Runs, not one model's (--allow-mixed):" if mixed else "Runs:"]
    markdown += [
        f"- {run.benchmark} ({run.protocol} protocol), `{run.path}`: {run.describe_source()}" for run in runs
    ]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return "\n".join(markdown) + "\n", buffer.getvalue()


def _mixed_sources(runs: Sequence[RunResult]) -> list[str]:
    """For each run whose recorded source differs from an earlier run's, the first such pair in words."""
    mixed = []
    recorded = [run for run in runs if run.source is not None]
    for i, run in enumerate(recorded):
        for earlier in recorded[:i]:
            differences = source_differences(earlier.source, run.source)
            if differences:
                mixed.append(f"{earlier.path} and {run.path} differ in {', '.join(differences)}")
                break
    return mixed


def _markdown_table(rows: list[list[str]], *, columns: range) -> list[str]:
    header = ["method"] + [rows[0][c] for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * len(columns)]
    for row in rows[1:]:
        lines.append("| " + " | ".join([row[1]] + [row[c] for c in columns]) + " |")
    return lines
