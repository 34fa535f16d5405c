"""`lavida-prepare` on a tiny fake source, and the lazy source registry."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lavida.cli import prepare
from lavida.cli.prepare import main
from lavida.data.sources import SOURCES, get_source, source_class
from lavida.data.sources.base import (
    DatasetFormatError,
    SegmentationSource,
    SegRecord,
    SegTarget,
    check_manifest_options,
    read_manifest,
)

SEEN: dict[str, object] = {}


class TinySource(SegmentationSource):
    """Three images; the third has no target. ``index`` takes ``artifacts`` like the real sources."""

    name = "tiny"
    is_video = False

    def __init__(
        self, root, *, split="train", min_pixels: int = 1, keep_void: bool = False, label: str | None = None
    ):
        super().__init__(root, split=split)
        SEEN["options"] = (min_pixels, keep_void, label)

    def index(self, *, artifacts=None):
        SEEN["artifacts"] = artifacts
        texts = [["dog", "a red car"], ["Dog", "tree"], []]
        for i, names in enumerate(texts):
            yield SegRecord(
                source=self.name,
                key=f"img{i}",
                group=f"img{i}",
                frames=(f"images/{i}.jpg",),
                targets=tuple(SegTarget(text, {"class_id": k}) for k, text in enumerate(names)),
                present=tuple(names),
                is_video=False,
            )

    def load_masks(self, record, target, positions):
        raise NotImplementedError


class OldStyleSource(TinySource):
    """A source whose ``index`` takes no arguments."""

    name = "oldstyle"

    def index(self):
        yield from TinySource.index(self)


def test_prepare_writes_the_manifest_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "manifests"
    main(["test_prepare:TinySource", f"root={tmp_path}", f"out={out}", f"artifacts={tmp_path / 'art'}"])
    assert SEEN["options"] == (1, False, None)
    manifest = out / "tiny_train.jsonl"
    records = read_manifest(manifest)
    assert [record.key for record in records] == ["img0", "img1", "img2"]
    assert SEEN["artifacts"] == tmp_path / "art"
    printed = capsys.readouterr().out
    assert f"wrote {manifest}" in printed
    summary = dict(line.split(None, 1) for line in printed.splitlines()[1:])
    assert (
        summary["entries"] == "3" and summary["targets"] == "4" and summary["entries_without_targets"] == "1"
    )
    assert summary["text_pool"] == "4" and summary["distinct_texts"] == "3"  # "dog" = "Dog"


def test_prepare_default_location_and_sources_without_artifacts(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        main(["test_prepare:OldStyleSource", f"root={tmp_path}", "artifacts=/x", "split=val"])
    assert "takes no 'artifacts'" in caplog.text
    assert len(read_manifest(tmp_path / ".lavida" / "oldstyle_val.jsonl")) == 3
    main(["test_prepare:TinySource", f"root={tmp_path}", f"out={tmp_path / 'm.jsonl'}"])
    assert len(read_manifest(tmp_path / "m.jsonl")) == 3
    capsys.readouterr()


class RecordedOptionsSource(TinySource):
    """TinySource whose min_pixels and label change what it indexes, so its manifest records them."""

    name = "recorded"
    record_options = ("min_pixels", "label")

    def __init__(self, root, *, min_pixels: int = 1, label: str | None = None, **options):
        super().__init__(root, min_pixels=min_pixels, label=label, **options)
        self.min_pixels, self.label = min_pixels, label


def test_the_manifest_records_the_options_it_was_indexed_with(tmp_path, capsys):
    """Its first line holds the source's record_options as given, which training checks the configured
    source against (check_manifest_options): other options are refused, the same ones accepted."""
    main(["test_prepare:RecordedOptionsSource", f"root={tmp_path}", "min_pixels=5", "label=abc"])
    manifest = tmp_path / ".lavida" / "recorded_train.jsonl"
    header = manifest.read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(header) == {"manifest_options": {"min_pixels": 5, "label": "abc"}}
    assert [record.key for record in read_manifest(manifest)] == ["img0", "img1", "img2"]
    check_manifest_options(manifest, RecordedOptionsSource(tmp_path, min_pixels=5, label="abc"), setting="s")
    with pytest.raises(ValueError, match="indexed with the options"):
        check_manifest_options(
            manifest, RecordedOptionsSource(tmp_path, min_pixels=6, label="abc"), setting="s"
        )
    capsys.readouterr()


def test_prepare_passes_typed_constructor_options(tmp_path, capsys):
    main(["test_prepare:TinySource", f"root={tmp_path}", "min_pixels=5", "keep_void=true", "label=abc"])
    assert SEEN["options"] == (5, True, "abc")
    main(["test_prepare:TinySource", f"root={tmp_path}", "label=null"])
    assert SEEN["options"] == (1, False, None)
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["ade20k"], "root=DIR is required"),
        (["test_prepare:TinySource", "root=/x", "roots=/y"], "'roots' is not a setting of TinySource"),
        (["ade20k", "root=/x", "noequals"], "expected key=value"),
        (["test_prepare:TinySource", "root=/x", "min_pixels=many"], "min_pixels must be an integer"),
        (["test_prepare:TinySource", "root=/x", "keep_void=maybe"], "keep_void must be true or false"),
        (["nosuchdataset", "root=/x"], "unknown dataset"),
        (["ade20k", "root=/x", "skip_errors=maybe"], "skip_errors must be"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_missing_root_is_reported_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["test_prepare:TinySource", f"root={tmp_path / 'absent'}"])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_a_refused_dataset_exits_2_through_the_console_script(tmp_path):
    """``lavida-prepare ade20k root=/nothere`` exited with 1, while its usage errors exit with 2 and
    lavida/cli/errors.py says that lavida-prepare, like the other tools, ends a refusal with 2."""
    command = [str(Path(sys.executable).parent / "lavida-prepare"), "ade20k", f"root={tmp_path / 'nothere'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"lavida-prepare ade20k: ade20k: dataset root '{tmp_path / 'nothere'}' does not exist. See "
        "data/README.md for what to download.\n"
    )


class ChattySource(TinySource):
    """TinySource that says, at INFO, what it leaves out, as the real sources do."""

    name = "chatty"

    def index(self, *, artifacts=None):
        logging.getLogger(__name__).info("chatty: 1 image has no target and is left out.")
        yield from TinySource.index(self, artifacts=artifacts)


def test_the_console_script_shows_the_sources_info_lines_with_their_level_and_logger(tmp_path):
    """What a source reports at INFO (entries left out, skipped files) reaches the user's terminal as
    ``LEVEL logger: message``; Python's default (WARNING, bare) would hide it."""
    command = [
        str(Path(sys.executable).parent / "lavida-prepare"),
        "test_prepare:ChattySource",
        f"root={tmp_path}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        ),
    }
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "INFO test_prepare: chatty: 1 image has no target and is left out.\n" in done.stderr
    assert "wrote " in done.stdout


class BuggySource(TinySource):
    """Fails the way a bug does: a ValueError the interpreter raised (``int("x")``), not one of our checks."""

    name = "buggy"

    def index(self, *, artifacts=None):
        yield from ()
        int("x")


def test_a_bug_keeps_its_traceback(tmp_path):
    """Only refusals end with one line and status 2; a ValueError the interpreter raised is a bug."""
    with pytest.raises(ValueError, match="invalid literal for int"):
        main(["test_prepare:BuggySource", f"root={tmp_path}"])


class SystemFailures(TinySource):
    """Raises the OSError or ModuleNotFoundError it is told to, from indexing."""

    name = "system_failures"
    error: Exception = OSError()

    def index(self, *, artifacts=None):
        yield from ()
        raise type(self).error


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (PermissionError(13, "Permission denied", "refclef/refs.json"), True),  # names its file
        (ModuleNotFoundError("No module named 'pycocotools'", name="pycocotools"), True),
        (IsADirectoryError(21, "Is a directory"), False),  # no file named: a path we built wrongly
        (
            ModuleNotFoundError(
                "No module named 'lavida.data.sources.nosuch'", name="lavida.data.sources.nosuch"
            ),
            False,
        ),
    ],
)
def test_system_errors_are_refusals_only_when_the_user_can_fix_them(
    tmp_path, monkeypatch, capsys, error, refused
):
    """A file the system refused, or a package to install, is one line and status 2; an OSError that names
    no file, or a lavida module that does not import, is a bug whose traceback must stay (there is no log)."""
    monkeypatch.setattr(SystemFailures, "error", error)
    arguments = ["test_prepare:SystemFailures", f"root={tmp_path}"]
    if refused:
        with pytest.raises(SystemExit) as stop:
            main(arguments)
        last = capsys.readouterr().err.splitlines()[-1]  # after tqdm's progress line
        assert stop.value.code == 2 and last == f"lavida-prepare test_prepare:SystemFailures: {error}"
    else:
        with pytest.raises(type(error)):
            main(arguments)


class FailingSource(TinySource):
    """Makes a folder for its artifacts, then finds the dataset malformed."""

    name = "failing"

    def index(self, *, artifacts=None):
        (artifacts or self.root / ".lavida").joinpath("shards", "train").mkdir(parents=True)
        yield from ()
        raise DatasetFormatError(f"{self.root}/refs.json: malformed")


class FailingAfterAFile(TinySource):
    """Writes one finished video's artifact into a new folder, then finds the next malformed."""

    name = "failing_after_a_file"

    def index(self, *, artifacts=None):
        done = (artifacts or self.root / ".lavida").joinpath("videos", "v0")
        done.mkdir(parents=True)
        (done / "meta.json").write_text("{}")
        (artifacts or self.root / ".lavida").joinpath("videos", "v1").mkdir()
        yield from ()
        raise DatasetFormatError(f"{self.root}/v1: malformed")


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_failed_prepare_leaves_no_new_empty_folders(tmp_path, capsys):
    """A real source on an empty root, and one that made artifact folders: no `.lavida/` left behind."""
    (tmp_path / "ADE").mkdir()
    for argv in (["ade20k", f"root={tmp_path / 'ADE'}"], ["test_prepare:FailingSource", f"root={tmp_path}"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert tree(tmp_path) == ["ADE"]
    with pytest.raises(SystemExit):
        main(
            [
                "test_prepare:FailingSource",
                f"root={tmp_path}",
                f"out={tmp_path / 'a/b'}",
                f"artifacts={tmp_path / 'c'}",
            ]
        )
    assert tree(tmp_path) == ["ADE"]
    capsys.readouterr()


def test_a_failed_prepare_keeps_what_was_there(tmp_path, capsys):
    """Folders that existed before are not looked into: their files and folders (even empty ones, even
    one the failed run made there) stay; only folders the run made outside them are removed."""
    (tmp_path / ".lavida" / "empty").mkdir(parents=True)
    (tmp_path / ".lavida" / "refcoco_train.jsonl").write_text("{}\n")
    before = tree(tmp_path)
    with pytest.raises(SystemExit):
        main(["test_prepare:FailingSource", f"root={tmp_path}", f"out={tmp_path / 'out' / 'm'}"])
    after = tree(tmp_path)
    assert set(before) <= set(after) and not any(path.startswith("out") for path in after)
    assert ".lavida/shards/train" in after  # the run's own folder inside the existing .lavida/ stays
    assert all(path.startswith(".lavida") for path in after)


def test_a_failed_prepare_keeps_the_files_it_wrote(tmp_path, capsys):
    """In a folder the failed run made, written files (and their folders) stay; empty folders go."""
    with pytest.raises(SystemExit):
        main(["test_prepare:FailingAfterAFile", f"root={tmp_path}"])
    assert tree(tmp_path) == [".lavida", ".lavida/videos", ".lavida/videos/v0", ".lavida/videos/v0/meta.json"]
    capsys.readouterr()
    capsys.readouterr()


def test_registry_names_and_lazy_import(tmp_path):
    assert set(SOURCES) == {
        "ade20k", "mapillary", "cityscapes", "refclef", "refcoco", "refcoco+", "refcocog",
        "vos", "refvos", "mevis", "refdavis", "synthetic",
    }  # fmt: skip
    assert all(spec.startswith("lavida.data.sources.") and ":" in spec for spec in SOURCES.values())
    assert isinstance(get_source("test_prepare:TinySource", tmp_path, split="val"), TinySource)
    with pytest.raises(KeyError, match="known sources: ade20k"):
        source_class("ade21k")


def test_unimportable_or_wrong_sources(tmp_path):
    with pytest.raises(ImportError, match="cannot import lavida.data.sources.no_such_module"):
        source_class("lavida.data.sources.no_such_module:X")
    with pytest.raises(TypeError, match="not a SegmentationSource"):
        source_class("lavida.data.sources.base:SegRecord")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        get_source("test_prepare:TinySource", tmp_path / "absent")


def test_an_unknown_setting_lists_the_valid_keys(capsys):
    """The valid keys are prepare's own and the source's keyword-only options (not ``self``, ``root`` or
    ``split``, which prepare sets itself), each once, sorted."""
    with pytest.raises(SystemExit):
        main(["test_prepare:TinySource", "root=/x", "roots=/y"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "lavida-prepare: error: 'roots' is not a setting of TinySource; valid keys: artifacts, keep_void, "
        "label, min_pixels, out, root, skip_errors, split."
    )


class OptionsSource(TinySource):
    """A source whose ``index`` takes any keyword (``**options``), and records what it was given."""

    name = "options"

    def index(self, **options):
        SEEN["index"] = options
        yield from TinySource.index(self)


def test_index_options_reach_a_source_that_takes_any_keyword(tmp_path, capsys):
    """``artifacts=`` and ``skip_errors=true`` are handed to an ``index(**options)``; ``skip_errors=false``
    (the default) is not handed over at all."""
    main(
        ["test_prepare:OptionsSource", f"root={tmp_path}", f"artifacts={tmp_path / 'art'}", "skip_errors=yes"]
    )
    assert SEEN["index"] == {"artifacts": tmp_path / "art", "skip_errors": True}
    main(["test_prepare:OptionsSource", f"root={tmp_path}", "skip_errors=false"])
    assert SEEN["index"] == {}
    capsys.readouterr()


def test_the_summary_printed_and_returned(tmp_path, capsys, monkeypatch):
    """Every count of the summary, and the time taken to one decimal (102.34 - 100.0 s -> 2.3)."""
    clock = iter([100.0, 102.34])
    monkeypatch.setattr(prepare, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    manifest = tmp_path / "m.jsonl"
    summary = prepare.run("test_prepare:TinySource", {"root": str(tmp_path), "out": str(manifest)})
    # TinySource: 3 images (one frame each), targets 2 + 2 + 0; texts dog, a red car, Dog, tree: 4 in the
    # pool, 3 distinct (dog = Dog).
    expected = {
        "dataset": "test_prepare:TinySource",
        "split": "train",
        "manifest": str(manifest),
        "entries": 3,
        "videos": 0,
        "frames": 3,
        "targets": 4,
        "entries_without_targets": 1,
        "text_pool": 4,
        "distinct_texts": 3,
        "seconds": 2.3,
    }
    assert summary == expected
    width = len("entries_without_targets")
    lines = [f"lavida-prepare test_prepare:TinySource: wrote {manifest}"]
    lines += [f"  {key.ljust(width)}  {value}" for key, value in expected.items()]
    printed = capsys.readouterr()
    assert printed.out == "\n".join(lines) + "\n"
    assert "warning" not in printed.err  # 3 entries


class EmptySource(TinySource):
    """A root whose layout yields no entry."""

    name = "empty"

    def index(self, *, artifacts=None):
        yield from ()


def test_an_empty_index_warns_with_the_root(tmp_path, capsys):
    main(["test_prepare:EmptySource", f"root={tmp_path}"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"warning: no entries found under {tmp_path}; check the layout in data/README.md."
    )
