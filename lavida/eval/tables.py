"""Collect evaluation runs into the paper's Tab. 1 (frame level) and Tab. 2 (Ped2 pixel level).

Each run directory holds the ``metrics.json`` and ``report.md`` written by ``lavida-eval``; the
benchmark and protocol are read from the report's title line, what produced the numbers (mode,
checkpoint, prediction folder, categories) from ``metrics.json``'s ``source``, and whether they are on the
whole test split from its ``split``, ``videos_left_out`` and ``num_videos`` (against
:data:`OFFICIAL_TEST_VIDEOS`).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from lavida.atomic import read_json
from lavida.eval.benchmarks import shanghaitech, ubnormal, ucf_crime, ucsd_ped2, xd_violence
from lavida.eval.paper_results import PAPER_RESULTS
from lavida.eval.result_cache import without_weight_paths
from lavida.run_outputs import RECORD_DIR

log = logging.getLogger(__name__)

# benchmark -> protocol -> videos a run over the whole official test split evaluates (metrics.json's
# ``num_videos``), from the sizes each loader checks a dataset copy against (research/vad_eval.md §1).
# ``lavida_official`` evaluates what the release does: UBnormal's abnormal test videos only
# (``only_anomaly_video=True``, vad_eval.md §0 finding 3), every test video elsewhere (videos shorter than one
# window count in ``num_videos``, with no frame scored).
_UBNORMAL_ABNORMAL, _UBNORMAL_NORMAL = ubnormal.OFFICIAL_SIZES["test"]
OFFICIAL_TEST_VIDEOS: dict[str, dict[str, int]] = {
    "ubnormal": {"standard": _UBNORMAL_ABNORMAL + _UBNORMAL_NORMAL, "lavida_official": _UBNORMAL_ABNORMAL},
    **{
        name: dict.fromkeys(("standard", "lavida_official"), count)
        for name, count in (
            ("shanghaitech", shanghaitech.OFFICIAL_TEST_VIDEOS),
            ("ucf_crime", ucf_crime.OFFICIAL_ANOMALOUS + ucf_crime.OFFICIAL_NORMAL),
            ("xd_violence", xd_violence.OFFICIAL_VIOLENT + xd_violence.OFFICIAL_NORMAL),
            ("ucsd_ped2", ucsd_ped2.OFFICIAL_TEST_CLIPS),
        )
    },
}

TABLE1 = ("ubnormal", "shanghaitech", "ucf_crime", "xd_violence")
TABLE2 = ("ucsd_ped2",)
TITLES = {
    "ubnormal": "UBnormal AUC",
    "shanghaitech": "ShanghaiTech AUC",
    "ucf_crime": "UCF-Crime AUC",
    "xd_violence": "XD-Violence AP",
    "ucsd_ped2": "UCSD Ped2 pixel AUC",
}


class NoResultsError(FileNotFoundError):
    """A folder that holds no results, only logs: a lavida-eval run that was refused or did not finish
    (Hydra creates the output folder and its log before the command's checks run)."""


class OverridableRefusal(ValueError):
    """A refusal of runs that the caller may override with an option of :func:`build_tables`.

    ``problem`` says what is wrong; ``remedy`` says what to do, naming the options as ``{allow_partial}``,
    ``{allow_mixed}`` and ``{label}``, so that the message names them as Python keywords (``str(error)``)
    or as lavida-tables' flags (:meth:`message` with the command line's spellings).
    """

    KEYWORDS = {"allow_partial": "allow_partial=True", "allow_mixed": "allow_mixed=True", "label": "label="}

    def __init__(self, problem: str, remedy: str) -> None:
        self.problem, self.remedy = problem, remedy
        super().__init__(self.message(self.KEYWORDS))

    def message(self, options: Mapping[str, str]) -> str:
        """The message with each option spelt as ``options`` says (option name -> spelling)."""
        return f"{self.problem} {self.remedy.format_map(options)}"


@dataclass(frozen=True)
class RunResult:
    """One evaluation run: where it is, what it evaluated, and its metrics."""

    path: Path
    benchmark: str
    protocol: str
    metrics: dict

    @property
    def shortfall(self) -> str | None:
        """Why the run is not the paper's whole test split, or None when it is.

        A test run is whole when it left no video out (``max_videos``, ``skip_missing``) and evaluated as
        many videos as its protocol evaluates on the official test split (:data:`OFFICIAL_TEST_VIDEOS`):
        a run on other split lists, another annotation file or part of a dataset copy leaves nothing out
        of what it was given, and only its count shows it. Runs written before the split was recorded
        count as test runs with nothing left out; ``num_videos`` has been recorded by every lavida-eval.
        """
        split = self.metrics.get("split", "test")
        left_out = self.metrics.get("videos_left_out", 0)
        expected = OFFICIAL_TEST_VIDEOS.get(self.benchmark, {}).get(self.protocol)
        evaluated = self.metrics.get("num_videos")
        if split != "test" or expected is None:  # no official count to hold the run to
            reasons = [f"the {split} split"] if split != "test" else []
            reasons += [f"{left_out} test videos left out"] if left_out else []
            return " and ".join(reasons) or None
        if not isinstance(evaluated, int) or isinstance(evaluated, bool):
            return (
                f"the number of videos evaluated not recorded (no num_videos in metrics.json), so not known "
                f"to be the {expected} of the official test split under the {self.protocol} protocol"
            )
        if evaluated == expected and not left_out:
            return None
        counted = f"{evaluated} videos evaluated where the official test split has {expected}"
        if evaluated < expected:
            counted = f"{evaluated} of the official test split's {expected} videos evaluated"
        counted += f" under the {self.protocol} protocol"
        if left_out:
            counted += f", {left_out} left out (missing on disk, or beyond max_videos)"
        if evaluated + left_out != expected:
            counted += (
                f"; the split lists, annotation file or dataset folder given hold {evaluated + left_out}"
            )
        return counted

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
    ratio, ...; base-weight paths only where a run records no fingerprints of the weights), the dtype and
    the mask gating, where both runs record them. Categories agree when both runs use their own
    benchmark's list (each benchmark has its own) or both were given the same list.
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
        if "base_models" in settings_a and "base_models" in settings_b:
            # The weights are compared by their fingerprints: another path to the same weights agrees.
            for settings in (settings_a, settings_b):
                if "checkpoint_overrides" in settings:
                    settings["checkpoint_overrides"] = without_weight_paths(settings["checkpoint_overrides"])
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
        NoResultsError: ``path`` holds nothing but ``*.log`` files (and perhaps an empty ``.hydra``): a run
            that was refused or did not finish.
        FileNotFoundError: otherwise no ``metrics.json`` in ``path`` (the message suggests ``path/*``
            when ``path``'s subfolders hold runs).
        ValueError: the benchmark or protocol cannot be determined.
    """
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        _no_metrics(path)
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


def _no_metrics(path: Path) -> NoReturn:
    """Raise the error for a folder without ``metrics.json``: what it is, and what to pass instead."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; expected a lavida-eval output directory.")
    entries = sorted(path.iterdir())
    # Hydra creates the folder and its log before lavida-eval's checks run; lavida-eval writes .hydra/
    # only with its results (lavida/cli/record.py). Anything else (a predictions/ cache, ...) is refused.
    if all(_is_log_or_empty_record(entry) for entry in entries):
        held = ", ".join(entry.name for entry in entries) or "nothing"
        raise NoResultsError(
            f"{path}: no results: a run that did not finish or was refused (it holds {held})."
        )
    runs = sorted(entry.name for entry in entries if (entry / "metrics.json").is_file())
    if runs:
        listed = ", ".join(runs[:3]) + (", ..." if len(runs) > 3 else "")
        raise FileNotFoundError(
            f"{path}: no metrics.json, but its subfolders {listed} hold lavida-eval runs; pass the runs, "
            f"e.g. {path / '*'}"
        )
    raise FileNotFoundError(f"{path}: no metrics.json — is this a lavida-eval output directory?")


def _is_log_or_empty_record(entry: Path) -> bool:
    if entry.is_dir():
        return entry.name == RECORD_DIR and not any(entry.iterdir())
    return entry.is_file() and entry.suffix == ".log"


def read_runs(paths: Iterable[str | Path]) -> list[RunResult]:
    """Read run directories (:func:`read_run`), skipping, with a warning, folders that hold no results
    (only logs: a run that was refused or did not finish), as ``lavida-tables outputs/eval/*`` passes them.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_run`; and ValueError when every folder was skipped.
    """
    runs, skipped = [], []
    for path in paths:
        try:
            runs.append(read_run(path))
        except NoResultsError as error:
            log.warning("Skipping %s", error)
            skipped.append(str(path))
    if skipped and not runs:
        raise ValueError(f"None of the folders given holds results: {', '.join(skipped)}.")
    return runs


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
    splits, so a run of another split, with videos left out, or of another number of videos than its
    protocol evaluates on the official test split (:attr:`RunResult.shortfall`) is refused too, unless
    ``allow_partial``: then its number is marked † and explained below the tables.

    Every run is labelled ``label``, so the runs must be one model's: runs of different checkpoints, of
    the model beside saved predictions (scores-only), or prompted with other categories are refused
    (:func:`source_differences`), unless ``allow_mixed``. Runs written before lavida-eval recorded their
    source are taken with any other, with a warning. Each run's source is listed below the tables.

    Raises:
        OverridableRefusal: a run is not a whole test split, or the runs come from different sources (the
            message names the runs and what differs, and the option that overrides the refusal).
        ValueError: two runs share a benchmark and protocol.
    """
    partial = [run for run in runs if run.shortfall]
    if partial and not allow_partial:
        listed = "; ".join(f"{run.path} ({run.shortfall})" for run in partial)
        raise OverridableRefusal(
            f"Not whole test splits, unlike the paper's numbers: {listed}.",
            "Evaluate the whole test split, or pass {allow_partial} to show them marked †.",
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
        raise OverridableRefusal(
            f"These runs would share the row '{label}' as if one model made them, but {'; '.join(mixed)}.",
            "Pass one model's runs per call ({label} names the row), or {allow_mixed} to put them in one "
            "row anyway, each run's source listed below the tables.",
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
