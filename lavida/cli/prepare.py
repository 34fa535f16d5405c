"""``lavida-prepare <dataset> root=DIR [artifacts=DIR] [out=DIR|FILE.jsonl] [split=train] [skip_errors=false] [option=value ...]``

Indexes one training dataset in its official layout (slow: walks the folders, parses annotations) and
writes its manifest, which training reads instead of the raw layout. Prints a summary: entries,
targets, text-pool size (one description per target, Eq. 1) and distinct descriptions.

- ``root``: the dataset folder as downloaded (data/README.md).
- ``artifacts``: where the source writes derived files (e.g. RLE shards), for sources that take it.
- ``out``: the manifest's folder (default ``<root>/.lavida/``) or a ``.jsonl`` file path.
- ``split``: the split to index (default ``train``).
- ``skip_errors``: let the source skip unreadable entries, for sources that support it.
- any other ``key=value``: a keyword argument of the source's constructor, e.g. ``classes=train19``
  (cityscapes), ``ytvos_root=DIR`` (refvos), ``split_by=umd`` (refer family). ``true``/``false`` and
  numbers are converted when the argument's default is a bool or a number; ``null`` means None. Pass
  the same options to training (``data.sources.<name>.options``), since they can change the records.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lavida.cli.errors import USER_ERROR_STATUS, is_user_error
from lavida.data.exposure import TextPool
from lavida.data.sources import SOURCES, get_source, source_class
from lavida.data.sources.base import SegRecord, write_manifest

log = logging.getLogger("lavida.prepare")

KEYS = ("root", "artifacts", "out", "split", "skip_errors")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(argv: Sequence[str] | None) -> tuple[str, dict[str, str], dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="lavida-prepare",
        description="Index a training dataset and write its manifest (see data/README.md).",
        epilog="Example: lavida-prepare ade20k root=$LAVIDA_DATA_ROOT/ADEChallengeData2016",
    )
    parser.add_argument("dataset", help=f"one of: {', '.join(SOURCES)} (or module:Class)")
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="key=value",
        help=f"keys: {', '.join(KEYS)}, or a source constructor option",
    )
    args = parser.parse_args(argv)
    if args.dataset not in SOURCES and ":" not in args.dataset:
        parser.error(f"unknown dataset '{args.dataset}'; choose one of {', '.join(SOURCES)}.")
    settings: dict[str, str] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"expected key=value, got '{item}'.")
        settings[key] = value
    if "root" not in settings:
        parser.error("root=DIR is required: the dataset folder as downloaded (data/README.md).")
    skip = settings.get("skip_errors", "false").lower()
    if skip not in _TRUE | _FALSE:
        parser.error(f"skip_errors must be true or false, got '{settings['skip_errors']}'.")
    extra = {key: value for key, value in settings.items() if key not in KEYS}
    try:
        options = _constructor_options(source_class(args.dataset), extra)
    except (ImportError, TypeError, KeyError) as error:
        parser.error(str(error))
    return args.dataset, settings, options


def _constructor_options(cls: type, raw: dict[str, str]) -> dict[str, object]:
    """``key=value`` strings → keyword arguments of ``cls``, typed by the parameters' defaults."""
    parameters = {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "split"
    }
    options: dict[str, object] = {}
    for key, value in raw.items():
        if key not in parameters:
            valid = sorted([*KEYS, *parameters])
            raise TypeError(f"'{key}' is not a setting of {cls.__name__}; valid keys: {', '.join(valid)}.")
        default = parameters[key].default
        if value.lower() in ("null", "none"):
            options[key] = None
        elif isinstance(default, bool):
            if value.lower() not in _TRUE | _FALSE:
                raise TypeError(f"{key} must be true or false, got '{value}'.")
            options[key] = value.lower() in _TRUE
        elif isinstance(default, int | float):
            try:
                options[key] = type(default)(value)
            except ValueError as error:
                kind = "an integer" if isinstance(default, int) else "a number"
                raise TypeError(f"{key} must be {kind}, got '{value}'.") from error
        else:
            options[key] = value
    return options


def _index_kwargs(source, settings: dict[str, str]) -> dict[str, object]:
    """``artifacts`` / ``skip_errors`` for the source's ``index``, where its signature takes them."""
    parameters = inspect.signature(source.index).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs: dict[str, object] = {}
    wanted = {}
    if "artifacts" in settings:
        wanted["artifacts"] = Path(settings["artifacts"]).expanduser()
    if settings.get("skip_errors", "false").lower() in _TRUE:
        wanted["skip_errors"] = True
    for key, value in wanted.items():
        if key in parameters or takes_any:
            kwargs[key] = value
        else:
            log.warning(
                "%s.index() takes no '%s'; ignoring %s=%s.", type(source).__name__, key, key, settings[key]
            )
    return kwargs


def run(
    dataset: str, settings: dict[str, str], options: dict[str, object] | None = None
) -> dict[str, object]:
    """Index ``dataset``, write its manifest, print and return the summary.

    Args:
        dataset: Source name (or ``module:Class``).
        settings: ``root``, and optionally ``artifacts``, ``out``, ``split``, ``skip_errors`` (strings).
        options: Keyword arguments of the source's constructor.
    """
    from tqdm import tqdm

    source = get_source(dataset, settings["root"], split=settings.get("split", "train"), **(options or {}))
    out = settings.get("out")
    if out is not None and out.endswith(".jsonl"):
        manifest = Path(out).expanduser()
    else:
        manifest = source.manifest_path(Path(out).expanduser() if out is not None else None)
    started = time.perf_counter()
    records: list[SegRecord] = []

    def progress():
        for record in tqdm(source.index(**_index_kwargs(source, settings)), desc=dataset, unit=" entries"):
            records.append(record)
            yield record

    # A failed run removes the folders it made (the default <root>/.lavida/ among them) where they hold no
    # file. Only folders that did not exist before are looked at: an existing one (a shared artifacts
    # folder, or out=. ) is never walked, and nothing in it is touched.
    default = source.manifest_path().parent  # the sources' default artifacts folder too
    artifacts = Path(settings["artifacts"]).expanduser() if "artifacts" in settings else default
    new_tops = {top for top in map(_first_missing, (manifest.parent, artifacts)) if top is not None}
    try:
        count = write_manifest(progress(), manifest, options=source.index_options())
    except BaseException:
        for top in new_tops:
            _remove_empty_folders(top)
        raise
    pool = TextPool.from_records(records)
    summary: dict[str, object] = {
        "dataset": dataset,
        "split": source.split,
        "manifest": str(manifest),
        "entries": count,
        "videos": sum(record.is_video for record in records),
        "frames": sum(len(record.frames) for record in records),
        "targets": sum(len(record.targets) for record in records),
        "entries_without_targets": sum(not record.targets for record in records),
        "text_pool": len(pool),
        "distinct_texts": len(pool.distinct),
        "seconds": round(time.perf_counter() - started, 1),
    }
    width = max(len(key) for key in summary)
    print(f"lavida-prepare {dataset}: wrote {manifest}")
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
    if count == 0:
        print(
            f"warning: no entries found under {source.root}; check the layout in data/README.md.",
            file=sys.stderr,
        )
    return summary


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself or an ancestor) that does not exist yet; None if it does."""
    path = path.absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _remove_empty_folders(top: Path) -> None:
    """Remove ``top`` and the folders in it that hold nothing, deepest first (files and their folders stay)."""
    for folder, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):  # not empty: it keeps what was written into it
            os.rmdir(folder)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; a refused dataset or setting exits with status 2, like a usage error.

    A refusal (:func:`lavida.cli.errors.is_user_error`: a DatasetFormatError, or a check of ours that
    raised ValueError, ...) already names the file and what was expected, so it is printed as one line;
    so is an OSError about a file (permissions, a full disk: the system's message names the path) and a
    missing third-party package. Anything else is a bug and keeps its traceback (status 1): there is no
    log file to keep it in.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset, settings, options = _parse(argv)
    try:
        run(dataset, settings, options)
    except Exception as error:
        if not (is_user_error(error) or _system_refusal(error)):
            raise
        print(f"lavida-prepare {dataset}: {error}", file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from error


def _system_refusal(error: Exception) -> bool:
    """An OSError that names its file, or a missing package other than lavida's own modules."""
    if isinstance(error, ModuleNotFoundError):
        return not (error.name or "lavida").startswith("lavida")
    return isinstance(error, OSError) and error.filename is not None


if __name__ == "__main__":
    main()
