"""``lavida-detect``: anomalies of named categories in any video (see lavida/configs/detect.yaml).

A folder of videos is processed one by one; a video that cannot be read is skipped with its reason
logged, and the run goes on. Each video's files go to ``<output_dir>/<name>/`` (its stem; inputs that
would share a name keep their suffix, ``a.mp4`` → ``a_mp4``: see ``lavida.detect.stream.output_names``).
``<output_dir>/index.json`` lists what happened to every input; it is rewritten after every video.

A rerun into the same ``output_dir`` (after a kill, or with more videos) reuses every video whose folder
was finished with the same checkpoint (its bytes and ``checkpoint_overrides``), categories, settings
and input file (size and time); ``resume=false`` recomputes them all. Live streams are never reused.
The model is loaded at the first input that is not reused, so a rerun that reuses every video skips it.

A live stream runs until ``max_frames``, or until stopped with Ctrl-C, which ends it as the end of a file
would: its folder is finished and listed in index.json, and the run goes on to the next input.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from lavida.atomic import write_json
from lavida.cli.checkpoints import TRAINED, check_checkpoint
from lavida.cli.errors import user_errors
from lavida.cli.keys import reject_unknown_keys
from lavida.data.prompts import parse_categories
from lavida.data.video import VideoReadError
from lavida.detect.checks import (
    check_fps,
    check_intervals,
    check_max_frames,
    check_output_dir,
    check_output_options,
    check_output_place,
    check_threshold,
    distinct_categories,
)
from lavida.detect.detector import Detector, default_device
from lavida.detect.outputs import interval_records
from lavida.detect.stream import expand_inputs, is_live, output_names
from lavida.detect.window import check_window
from lavida.file_state import file_state
from lavida.inference import load_dtype
from lavida.models.checkpoint import (
    check_base_model_check,
    checkpoint_digest,
    loaded_base_fingerprints,
    trained_clip_length,
)
from lavida.settings_diff import changed_settings

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Detect on every input; returns the index written to ``<output_dir>/index.json``."""
    reject_unknown_keys(cfg, config_name="detect")
    # Each category once: the index, the run key and every video's search agree on the list.
    categories = distinct_categories(parse_categories(cfg.categories))
    check_output_options(overlay=cfg.overlay, save=cfg.save)  # before the model loads
    check_threshold(cfg.threshold)
    check_fps(cfg.fps)
    check_max_frames(cfg.max_frames)
    check_intervals(min_interval=cfg.min_interval, merge_gap=cfg.merge_gap)
    check_window(
        clip_length=cfg.clip_length, interval=cfg.interval, stride=cfg.stride, aggregation=cfg.aggregation
    )
    # Before any input is read or folder made, as lavida-eval does: the model itself loads only at the
    # first input that is not reused.
    check_checkpoint(cfg.checkpoint)
    check_base_model_check(cfg.base_model_check)
    inputs = expand_inputs(cfg.input)
    # Before anything is written: each video's folder is replaced whole when it is done.
    check_output_dir(cfg.input, cfg.output_dir)
    names = output_names(inputs)
    for source, name in zip(inputs, names, strict=True):
        check_output_place(source, Path(cfg.output_dir) / name)
    # What the model will be, known without loading it (the run key of reused videos records it).
    device = default_device(cfg.device)
    overrides = OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {}
    dtype = load_dtype(device, dtype=cfg.dtype, config_overrides=overrides)
    clip_length = cfg.clip_length if cfg.clip_length is not None else trained_clip_length(cfg.checkpoint)
    # clip_length=null takes the checkpoint's training clip length: only now can stride be compared with it.
    check_window(
        clip_length=clip_length, interval=cfg.interval, stride=cfg.stride, aggregation=cfg.aggregation
    )
    index: dict = {"categories": categories, "videos": []}
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_key = _run_key(cfg, categories, clip_length=clip_length, dtype=dtype, device=device)
    detector = None  # loaded at the first input that is not reused (minutes for the paper's model)
    for source, name in zip(inputs, names, strict=True):
        # fps only changes the outputs of frame folders (files keep their own rate).
        settings = {**run_key["settings"], "fps": cfg.fps if Path(source).is_dir() else None}
        key = {**run_key, "settings": settings, "input": _input_state(source)}
        key = json.loads(json.dumps(key))  # as it reads back
        marker = output_dir / name / RUN_FILE
        made = None
        if cfg.resume and key["input"] is not None and marker.is_file():
            made = _made_with(marker)
            # A finished video is redone, possibly for hours with the paper's model: each branch says why (a
            # run.json of an older lavida lacks what it did not record, such as the base models' fingerprints).
            if not isinstance(made, dict):
                log.info("Redoing %s: %s is unreadable or not a record of settings.", source, marker)
            elif made != key:
                log.info(
                    "Redoing %s: its outputs were made otherwise (%s).",
                    source,
                    "; ".join(changed_settings(made, key)),
                )
        if made == key:
            summary = _read(output_dir / name / "summary.json")
            if summary is None:
                log.info("Redoing %s: its summary.json is missing or unreadable.", source)
            else:
                log.info("Reusing %s: its outputs were made with the same checkpoint and settings.", source)
                index["videos"].append(
                    _entry(source, output_dir / name, summary["frames"], summary["intervals"])
                )
                write_json(output_dir / "index.json", index, indent=1)
                continue
        if detector is None:
            detector = _load_detector(cfg, run_key, device=device)
        try:
            result = detector.detect(
                source,
                categories,
                output_dir=cfg.output_dir,
                overlay=cfg.overlay,
                save=cfg.save,
                explain=cfg.explain,
                max_frames=cfg.max_frames,
                fps=cfg.fps,
                name=name,
            )
        # Only what one input can cause: a file that cannot be read (VideoReadError), or frames the model
        # cannot take (ValueError naming the video: no frames, an aspect ratio over 200). The settings were
        # checked above, so a bad one cannot turn into "Skipping" for every video; anything else is a bug
        # and stops the run.
        except (VideoReadError, ValueError) as error:
            log.error("Skipping %s: %s", source, error)
            index["videos"].append({"input": source, "status": "skipped", "reason": str(error)})
        else:
            # As summary.json lists them, so that a rerun reusing this video writes the same entry.
            intervals = interval_records(result.intervals, fps=result.fps, explanations=result.explanations)
            index["videos"].append(_entry(source, result.output_dir, int(result.scores.size), intervals))
            # Written last, once the folder is complete: a kill before this only costs this video.
            write_json(marker, key, indent=1)
        write_json(output_dir / "index.json", index, indent=1)
    done = sum(entry["status"] == "done" for entry in index["videos"])
    log.info("Processed %d of %d input(s); see %s/index.json", done, len(inputs), cfg.output_dir)
    if done == 0:
        raise SystemExit(f"No input could be processed; see {cfg.output_dir}/index.json for the reasons.")
    return index


RUN_FILE = "run.json"  # in each video's folder: what its outputs were made with (for reruns)


def _run_key(
    cfg: DictConfig, categories: list[str], *, clip_length: int, dtype: str, device: torch.device
) -> dict:
    """Everything besides the input that shapes a video's outputs (``dtype``: the model's, e.g. ``float32``)."""
    outputs = ("overlay", "save", "explain", "max_frames")
    scoring = ("threshold", "interval", "stride", "aggregation", "min_interval", "merge_gap")
    overrides = OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or {}
    return {
        "checkpoint_sha256": checkpoint_digest(cfg.checkpoint),
        # They change the model (its pixel budget, its dtype, even its weights' source), so its outputs.
        "checkpoint_overrides": overrides,
        # The frozen weights it builds on: other files at the same paths must not be served old outputs.
        "base_models": loaded_base_fingerprints(cfg.checkpoint, config_overrides=overrides),
        "categories": categories,
        "settings": {key: cfg[key] for key in outputs + scoring},
        "clip_length": clip_length,
        "dtype": str(getattr(torch, dtype)),  # "torch.float32", as the loaded model's
        "device": device.type,
    }


def _load_detector(cfg: DictConfig, run_key: dict, *, device: torch.device) -> Detector:
    """Load the checkpoint as ``run_key`` describes it (its dtype, device and clip length)."""
    # run() checked the folder; a failure here names a missing base model (the loader's message).
    detector = Detector.from_checkpoint(
        cfg.checkpoint,
        device=device,
        dtype=cfg.dtype,
        config_overrides=OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or None,
        base_model_check=cfg.base_model_check,
        clip_length=run_key["clip_length"],
        interval=cfg.interval,
        stride=cfg.stride,
        aggregation=cfg.aggregation,
        threshold=cfg.threshold,
        min_interval=cfg.min_interval,
        merge_gap=cfg.merge_gap,
    )
    loaded = {
        "clip_length": detector.clip_length,
        "dtype": str(detector.dtype),
        "device": detector.device.type,
    }
    # The run key, written beside every video's outputs, recorded these before the load.
    expected = {key: run_key[key] for key in loaded}
    if loaded != expected:
        raise RuntimeError(f"{cfg.checkpoint} loaded as {loaded}, not as recorded: {expected}.")
    return detector


def _input_state(source: str) -> dict | None:
    """The input's fingerprint, its path made absolute: ``street.mp4``, ``$PWD/street.mp4`` and
    ``../work/street.mp4`` from another folder are one input. None for a live stream (it changes with
    every read, so its outputs are never reused)."""
    return None if is_live(source) else file_state(os.path.abspath(source))


def _made_with(marker: Path) -> dict | None:
    """A video folder's run.json; one written before ``fps`` was a setting had none (null), and one
    written before input paths were made absolute holds the path as typed (taken from this folder)."""
    made = _read(marker)
    if isinstance(made, dict) and isinstance(made.get("settings"), dict):
        made["settings"].setdefault("fps", None)
    if isinstance(made, dict) and isinstance(made.get("input"), dict):
        path = made["input"].get("path")
        if isinstance(path, str):
            made["input"]["path"] = os.path.abspath(path)
    return made


def _read(path: Path):
    """A JSON file written by this command, or None if it is missing or unreadable (then redo the video)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _entry(source: str, folder: Path, frames: int, intervals: list[dict]) -> dict:
    return {
        "input": source,
        "status": "done",
        "output": str(folder),
        "frames": frames,
        "intervals": intervals,
    }


# Shown when input, categories or checkpoint (``???`` in detect.yaml) is left out.
EXAMPLE = (
    f"lavida-detect input=street.mp4 'categories=\"fire, fighting\"' checkpoint={TRAINED}\n"
    "(the single quotes keep the double quotes from the shell: Hydra reads an unquoted comma as a sweep)"
)


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="detect")
def main(cfg: DictConfig) -> None:
    with user_errors("lavida-detect", cfg, example=EXAMPLE):
        run(cfg)


if __name__ == "__main__":
    main()
