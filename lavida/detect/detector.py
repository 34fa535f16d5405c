"""Open-world detection on any video (§4.2, Fig. 5): ``from lavida import Detector``.

    detector = Detector.from_checkpoint("runs/lavida/final")
    result = detector.detect("street.mp4", ["fire", "fighting"], output_dir="out/")
    result.scores          # (F,) float64 anomaly probability per frame
    result.intervals       # anomalous intervals (start, end, peak score)
    json.dumps(result.to_dict())

    for frame in detector.stream("rtsp://camera/stream", ["fire"]):   # live, bounded memory
        ...

Frames are scored clip by clip with a sliding window (``lavida.detect.window``); results are written as
they become final (``lavida.detect.outputs``: into a hidden staging folder that becomes
``<output_dir>/<name>/`` when the video is done), so a long video or an endless stream never accumulates
in memory. With ``explain=True`` the same MLLM, with token compression, answers "Is there any abnormal
event in this video? Answer yes or no and explain" for each detected interval (supplement D.1.4), as
soon as that interval is final.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lavida.atomic import atomic_dir
from lavida.data.exposure import normalize_text as comparison_key
from lavida.data.processor import LavidaProcessor, check_frames
from lavida.data.prompts import clean_categories
from lavida.data.types import ClipSample
from lavida.detect.intervals import Interval, anomalous_intervals
from lavida.detect.outputs import (
    MaskWriter,
    ScoreWriter,
    VideoWriter,
    cut_segments,
    interval_records,
    overlay_frame,
    write_summary,
)
from lavida.detect.stream import is_live, open_stream
from lavida.detect.window import Aggregation, FrameResult, SlidingWindow, check_window
from lavida.inference import load_dtype, upsample_mask_logits
from lavida.models.lavida import LavidaModel
from lavida.number_checks import is_real, is_whole

log = logging.getLogger(__name__)

EXPLAIN_QUESTION = "Is there any abnormal event in this video? Answer yes or no and explain."


@dataclass
class Detection:
    """The result of :meth:`Detector.detect` on one video.

    Attributes:
        name: The video's name (its output folder's name).
        scores: (F,) float64 per-frame anomaly probabilities in [0, 1], F = frames read (frame numbers count
            from 0 in decode order).
        intervals: Detected anomalous intervals, in frame order: inclusive frame numbers ``start``..``end``
            whose scores reach the threshold (:class:`~lavida.detect.intervals.Interval`).
        fps: The video's average frame rate, or None (a frame folder without ``fps``; a stream that does
            not say).
        categories: The categories searched for (each once).
        explanations: Interval number (index into ``intervals``) → the MLLM's answer (with ``explain``).
        output_dir: The folder the files were written to, ``<output_dir>/<name>`` (or None).

    ``dataclasses.asdict`` keeps ``scores`` an array and ``output_dir`` a Path; :meth:`to_dict` gives plain
    JSON types.
    """

    name: str
    scores: np.ndarray
    intervals: list[Interval]
    fps: float | None
    categories: list[str]
    explanations: dict[int, str] = field(default_factory=dict)
    output_dir: Path | None = None

    def to_dict(self) -> dict:
        """The result in JSON types (``json.dumps`` takes it): ``scores`` as a list of floats,
        ``output_dir`` as a string or None, and ``intervals`` as summary.json lists them
        (:meth:`Interval.to_dict <lavida.detect.intervals.Interval.to_dict>` with ``start_time`` and
        ``end_time`` when ``fps`` is known, and ``explanation`` on the intervals that have one)."""
        return {
            "name": self.name,
            "fps": None if self.fps is None else float(self.fps),
            "categories": list(self.categories),
            "scores": np.asarray(self.scores, dtype=np.float64).tolist(),
            "intervals": interval_records(self.intervals, fps=self.fps, explanations=self.explanations),
            "output_dir": None if self.output_dir is None else str(self.output_dir),
        }


class Detector:
    """Detects anomalies of named categories in videos, frame by frame and pixel by pixel.

    Args:
        model: A trained LAVIDA model (evaluation mode is set here).
        processor: Its input processor (test-time pixel budget).
        clip_length: Frames per clip (T = 8, B.3).
        interval: Score every ``interval``-th frame; the frames between hold its score.
        stride: Sampled frames between clip starts (< ``clip_length`` overlaps clips; default no overlap).
        aggregation: How overlapping clips combine a frame's scores and masks: ``mean`` or ``max``.
        threshold: Frame-score threshold for anomalous intervals (and the pixel-mask threshold), in [0, 1].
        min_interval: Drop intervals shorter than this many frames.
        merge_gap: Join intervals separated by at most this many frames.
        gate_masks: Empty masks on frames whose object score is ≤ 0 (SAM2's convention).

    Raises:
        ValueError: ``threshold`` outside [0, 1], or window settings ``SlidingWindow`` refuses.
    """

    def __init__(
        self,
        *,
        model: LavidaModel,
        processor: LavidaProcessor,
        clip_length: int = 8,
        interval: int = 1,
        stride: int | None = None,
        aggregation: Aggregation = "mean",
        threshold: float = 0.5,
        min_interval: int = 1,
        merge_gap: int = 0,
        gate_masks: bool = True,
    ) -> None:
        check_threshold(threshold)
        check_intervals(min_interval=min_interval, merge_gap=merge_gap)
        if clip_length is None:  # None means "the checkpoint's" only to from_checkpoint and lavida-detect
            raise ValueError(
                "clip_length must be a whole number of frames ≥ 1, got None; Detector.from_checkpoint "
                "takes the clip length the checkpoint was trained on."
            )
        # Here rather than at the first video, where a bad setting would surface only once a file or a
        # stream has been opened.
        check_window(
            clip_length=clip_length,
            interval=interval,
            stride=stride,
            aggregation=aggregation,
            clip_length_nullable=False,
        )
        self.model = model.eval()
        self.processor = processor
        self.clip_length, self.interval, self.stride = clip_length, interval, stride
        self.aggregation = aggregation
        self.threshold, self.min_interval, self.merge_gap = threshold, min_interval, merge_gap
        self.gate_masks = gate_masks
        parameter = next(model.projector.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: str | None = None,
        config_overrides: dict | None = None,
        base_model_check: Literal["strict", "warn"] = "strict",
        **kwargs,
    ) -> Detector:
        """Load a LAVIDA checkpoint (bf16 on GPU, fp32 on CPU unless ``dtype`` says otherwise).

        Args:
            checkpoint: A directory written by :func:`lavida.models.checkpoint.save_checkpoint`, e.g.
                ``outputs/train/<run_name>/final``.
            device: Where to run (default: ``cuda`` when available, else ``cpu``).
            dtype: ``float32``, ``bfloat16`` or ``float16`` (default: bfloat16 on GPU, float32 on CPU).
            config_overrides: Nested values replacing the checkpoint's saved config, e.g. base-model paths
                on another machine: ``{"mllm": {"pretrained": "/models/Qwen2-VL-7B-Instruct"}}``.
            base_model_check: ``strict`` refuses base models whose files are not the ones the checkpoint
                was trained on; ``warn`` logs it and loads them (:func:`~lavida.models.checkpoint.load_checkpoint`).
            **kwargs: The :class:`Detector` settings (``threshold``, ``interval``, ...). ``clip_length``
                defaults to the clip length the checkpoint was trained on (its meta.json; supplement
                Tab. 7 tests each model at its own), else 8.

        Raises:
            lavida.models.weights.WeightsNotFoundError: not a checkpoint directory, or base models or
                weights missing or not matching (the message lists what is expected where).
            ValueError: a setting :class:`Detector` refuses.
        """
        from lavida.models.checkpoint import load_checkpoint, trained_clip_length

        # Before the (possibly 7B) model loads; clip_length=None is valid here (the checkpoint's).
        check_window(
            clip_length=kwargs.get("clip_length"),
            interval=kwargs.get("interval", 1),
            stride=kwargs.get("stride"),
            aggregation=kwargs.get("aggregation", "mean"),
        )
        device = default_device(device)
        overrides = dict(config_overrides or {})
        overrides["dtype"] = load_dtype(device, dtype=dtype, config_overrides=overrides)
        model, config = load_checkpoint(
            checkpoint, config_overrides=overrides, device=device, base_model_check=base_model_check
        )
        if kwargs.get("clip_length") is None:
            kwargs["clip_length"] = trained_clip_length(checkpoint)
        return cls(model=model, processor=LavidaProcessor.for_model(model, config.inputs), **kwargs)

    # -- one clip ----------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_clip(
        self, frames: np.ndarray | torch.Tensor, categories: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score one clip.

        Args:
            frames: (T, H, W, 3) uint8 RGB frames (numpy or torch); T = 1 is scored as an image.
            categories: The anomaly categories to look for, a list of strings (each searched once).

        Returns:
            (T,) float64 anomaly probabilities in [0, 1], and (T, h, w) float64 pixel probabilities in
            [0, 1] at the mask decoder's resolution (h = w = S/4; 0 on frames whose object score is ≤ 0
            when ``gate_masks``). float64, so that the logits stay recoverable for the resize to the
            frame (a float32 sigmoid is exactly 1.0 above a logit of ~16.6).

        Raises:
            TypeError: ``categories`` is one string, or ``frames`` is not an array.
            ValueError: ``frames`` of another shape or dtype (the message says how to convert them), or no
                category.
        """
        check_frames(frames)
        categories = distinct_categories(categories)
        sample = ClipSample(frames=frames, categories=categories, is_video=frames.shape[0] > 1)
        batch = self.processor([sample], train=False).to(self.device, dtype=self.dtype)
        prediction = self.model.predict(batch, gate_masks=self.gate_masks)
        scores = prediction.frame_scores.cpu().numpy()
        masks = torch.sigmoid(prediction.mask_logits.double()).cpu().numpy()
        return scores, masks

    # -- streams -----------------------------------------------------------------------------------

    def stream(
        self,
        source: str | Path,
        categories: Sequence[str],
        *,
        max_frames: int | None = None,
        fps: float | None = None,
    ) -> Iterator[FrameResult]:
        """Yield every frame's result as soon as it is final, in frame order.

        Each is a :class:`~lavida.detect.window.FrameResult`: ``index``, ``frame`` ((H, W, 3) uint8),
        ``score`` (a float in [0, 1]), ``mask`` ((h, w) float64 pixel probabilities at the decoder's
        resolution) and ``sampled_from``. ``fps`` is the frame rate of a frame folder (video files store
        their own). Categories named more than once are searched once (:func:`distinct_categories`).

        The arguments are checked when this is called; the source is opened at the first ``next()``.

        Raises:
            TypeError: ``source`` is not a path, URL or device name, or ``categories`` is one string.
            ValueError: empty category list, ``max_frames`` or ``fps`` not valid, or frames the model
                cannot take (the message names the source).
            lavida.data.video.VideoReadError: unreadable, empty or undecodable video (at the first
                ``next()``).
        """
        check_source(source)
        categories = distinct_categories(categories)
        check_fps(fps)
        check_max_frames(max_frames)
        return self._stream(source, categories, max_frames=max_frames, fps=fps)

    def _stream(
        self, source: str | Path, categories: list[str], *, max_frames: int | None, fps: float | None
    ) -> Iterator[FrameResult]:
        frames = open_stream(source, fps=fps, max_frames=max_frames).frames
        yield from self._window(categories, source).run(frames)

    def _window(self, categories: list[str], source: str | Path) -> SlidingWindow:
        def predict(clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            try:
                return self.predict_clip(clip, categories)
            except ValueError as error:
                # The processor's errors (Qwen2-VL refuses an aspect ratio over 200) do not say which
                # video; lavida-detect logs this and goes on with the next one.
                height, width = clip.shape[1:3]
                hint = ""
                if max(height, width) > _MAX_ASPECT_RATIO * min(height, width):
                    hint = f"; crop or pad them to an aspect ratio of at most {_MAX_ASPECT_RATIO}"
                raise ValueError(
                    f"{source}: cannot score its {height}x{width} (HxW) frames ({error}){hint}."
                ) from error

        return SlidingWindow(
            predict,
            clip_length=self.clip_length,
            interval=self.interval,
            stride=self.stride,
            aggregation=self.aggregation,
        )

    def detect(
        self,
        source: str | Path,
        categories: Sequence[str],
        *,
        output_dir: str | Path | None = None,
        overlay: bool = True,
        save: str = "all",
        explain: bool = False,
        max_frames: int | None = None,
        fps: float | None = None,
        progress: bool = True,
        name: str | None = None,
    ) -> Detection:
        """Score a whole video (or a stream, up to ``max_frames``) and write its outputs.

        Args:
            source: Video file, frame folder, URL or device.
            categories: Anomaly categories to look for.
            output_dir: Write the files of ``lavida.detect.outputs`` to ``<output_dir>/<name>/``, replacing
                that folder as a whole once the video is done (nothing is left of an earlier run); until
                then they are written into a hidden staging folder beside it,
                ``<output_dir>/.<name>.<host>.<pid>.<random>.tmp/``.
            overlay: Write the overlay video.
            save: ``all`` (one overlay video) or ``anomalous`` (``segments/segment_<k>.mp4``: the overlay
                of reported interval k only).
            explain: Ask the MLLM to explain each detected interval (as soon as it is final).
            max_frames: Stop after this many frames. A live stream (``lavida.detect.stream.is_live``)
                otherwise runs until stopped with Ctrl-C, which ends it as the end of a file would: the
                frames written by then are summarised and the folder is committed (frames read but not
                yet final, at most about one clip's, are dropped). A second Ctrl-C while the summary or
                the last explanation is written aborts with nothing kept.
            fps: Frame rate of a frame folder, which stores none: it gives the intervals' times and
                the overlay's rate (without it: no times, and 25 fps). Video files keep their own.
            progress: Show a progress bar.
            name: The output folder's name (default: ``lavida.detect.stream.stream_name``; a run over
                many inputs passes ``output_names`` so that no two share a folder): one folder name, not
                ``.`` or ``..``.

        Categories named more than once are searched once (:func:`distinct_categories`).

        Returns:
            A :class:`Detection`: (F,) float64 ``scores``, ``intervals``, ``fps``; ``to_dict()`` for JSON.

        Raises:
            TypeError: ``source`` is not a path, URL or device name, or ``categories`` is one string.
            ValueError: empty category list, a setting not valid (``max_frames``, ``fps``, ``save``,
                ``name``), no frames, or frames the model cannot take (the message names the source).
            lavida.data.video.VideoReadError: unreadable, empty or undecodable video.
            KeyboardInterrupt: Ctrl-C on a source that is not live (its earlier folder is kept as it was).
        """
        from tqdm import tqdm

        check_source(source)
        check_output_options(overlay=overlay, save=save)
        check_fps(fps)
        check_max_frames(max_frames)
        if name is not None:
            check_name(name)
        categories = distinct_categories(categories)
        stream = open_stream(source, fps=fps, max_frames=max_frames)
        name = name or stream.name
        live = is_live(str(source))
        target = None if output_dir is None else Path(output_dir) / name
        # Files are written into a staging folder that takes the place of <output_dir>/<name> as a
        # whole when the video is done: a rerun leaves no file of an earlier one (old segments, an
        # overlay no longer asked for), and a run killed midway leaves the earlier folder untouched.
        with atomic_dir(target) if target is not None else nullcontext() as folder:
            writers = _Writers(folder, fps=stream.fps, threshold=self.threshold, overlay=overlay, save=save)
            results = self._window(categories, source).run(stream.frames)
            scores: list[float] = []
            keeper = None
            if explain:
                keeper = _ExplanationFrames(
                    self.explain, merge_gap=self.merge_gap, min_length=self.min_interval
                )
            bar = tqdm(total=stream.num_frames, desc=name, unit="frame", disable=not progress)
            writing = False  # True while a frame's files are half written
            try:
                for result in results:
                    # Ctrl-C while a frame is written would leave it in some files and not in others:
                    # it is held until the frame is complete, then ends the stream.
                    with _HeldInterrupt(enabled=live) as held:
                        writing = True
                        scores.append(result.score)
                        writers.write(result, scores)
                        bar.update(1)
                        writing = False
                    if held.pending:
                        raise KeyboardInterrupt
                    if keeper is not None:  # may ask the MLLM: Ctrl-C may stop it (not held)
                        keeper.add(result.index, result.frame, anomalous=result.score >= self.threshold)
            except KeyboardInterrupt:
                # Ctrl-C anywhere in the loop but inside a frame's writing (where it is held). A live
                # stream without max_frames ends no other way, so it ends the stream, with every frame
                # written so far complete; a file's run is aborted (its earlier folder kept).
                if not live or writing:
                    raise
                _log_stop(name, len(scores))
            finally:
                bar.close()
                writers.close()
                results.close()
                if hasattr(stream.frames, "close"):  # a stopped live stream's connection
                    stream.frames.close()
            if not scores:
                raise ValueError(f"{source}: no frames were read.")
            values = np.asarray(scores, dtype=np.float64)
            intervals = anomalous_intervals(
                values, threshold=self.threshold, min_length=self.min_interval, merge_gap=self.merge_gap
            )
            writers.finish(intervals)
            explanations = keeper.finish() if keeper is not None else {}
            if folder is not None:
                settings = {
                    "threshold": self.threshold,
                    "clip_length": self.clip_length,
                    "interval": self.interval,
                    "stride": self.stride or self.clip_length,
                    "aggregation": self.aggregation,
                    # They decide which runs of frames above the threshold become the listed intervals.
                    "min_interval": self.min_interval,
                    "merge_gap": self.merge_gap,
                }
                write_summary(
                    folder,
                    video=name,
                    scores=values,
                    intervals=intervals,
                    categories=categories,
                    fps=stream.fps,
                    settings=settings,
                    explanations=explanations,
                )
        log.info("%s: %d frames, %d anomalous interval(s)", name, values.size, len(intervals))
        return Detection(name, values, intervals, stream.fps, categories, explanations, target)

    # -- explanations ------------------------------------------------------------------------------

    @torch.no_grad()
    def explain(
        self, frames: np.ndarray, *, question: str = EXPLAIN_QUESTION, max_new_tokens: int = 64
    ) -> str:
        """The MLLM's answer to ``question`` about (T, H, W, 3) uint8 RGB frames, with token compression.

        Raises:
            TypeError, ValueError: ``frames`` the model cannot take, as :meth:`predict_clip`.
        """
        check_frames(frames)
        batch = self.processor.question_batch(frames, question).to(self.device, dtype=self.dtype)
        tokens = self.model.mllm.generate(batch, max_new_tokens=max_new_tokens)
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        return text.strip()


# Qwen2-VL's smart_resize refuses frames whose long side exceeds 200 times the short one.
_MAX_ASPECT_RATIO = 200


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, by default ``cuda`` when available, else ``cpu`` (where :meth:`Detector.from_checkpoint`
    loads the model)."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def check_source(source: object) -> None:
    """A video file, frame folder, URL or device, as a ``str`` or a path.

    Raises:
        TypeError: anything else, e.g. an array of frames (which ``Path()`` would have turned into a file
            name thousands of characters long).
    """
    if isinstance(source, (str, os.PathLike)):
        return
    kind = f"{type(source).__module__}.{type(source).__qualname__}".removeprefix("builtins.")
    hint = ""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        hint = (
            "; to detect in frames held in memory, write them to a file first "
            "(lavida.data.video.write_video(path, frames, fps=...)), or score (T, H, W, 3) uint8 clips "
            "with Detector.predict_clip"
        )
    elif isinstance(source, int):
        hint = f"; a capture device is named 'device:{source}' or '/dev/video{source}'"
    raise TypeError(
        f"source must be a video file, frame folder, URL or device (a str or a Path), got {kind}{hint}."
    )


def check_threshold(threshold: float) -> None:
    """``threshold`` is compared with frame scores, which are probabilities: it must lie in [0, 1].

    Raises:
        ValueError: naming the setting.
    """
    number = is_real(threshold)
    if not number or not 0.0 <= float(threshold) <= 1.0:  # NaN fails too
        raise ValueError(
            f"threshold must be a number in [0, 1], got {threshold!r}: frame scores are probabilities; "
            "set e.g. threshold=0.5."
        )


def check_fps(fps: float | None) -> None:
    """A frame folder's frame rate: None (unknown) or a positive number of frames per second.

    Raises:
        ValueError: naming the setting.
    """
    if fps is None:
        return
    number = is_real(fps)
    if not number or not 0.0 < float(fps) < float("inf"):  # NaN fails too
        raise ValueError(
            f"fps must be a positive number of frames per second or null, got {fps!r}; it is the frame "
            "rate of frame folders, e.g. fps=25."
        )


def check_max_frames(max_frames: int | None) -> None:
    """None (every frame; a live stream until Ctrl-C) or a whole number of frames ≥ 1.

    Raises:
        ValueError: naming the setting (0 or a negative number would read no frame of any video).
    """
    if max_frames is None:
        return
    if not is_whole(max_frames) or max_frames < 1:
        raise ValueError(
            f"max_frames must be a whole number of frames ≥ 1 or null (every frame), got {max_frames!r}; "
            "e.g. max_frames=3000."
        )


def check_name(name: str) -> None:
    """An output folder's name: one plain folder name inside ``output_dir``.

    Raises:
        ValueError: a path (``a/b``), or ``.``/``..``, which name ``output_dir`` itself (its whole contents
            would be replaced by this video's folder) or its parent.
    """
    separators = {"/", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or not name.strip(".") or any(sep in name for sep in separators):
        raise ValueError(
            f"name must be one folder name inside output_dir, without path separators and not . or .., "
            f"got {name!r}; e.g. name='street'."
        )


def distinct_categories(categories: Sequence[str]) -> list[str]:
    """:func:`~lavida.data.prompts.clean_categories`, then each category once, in the order first named.

    Names that differ only in case or spacing (``fire``, ``Fire``, ``fire  ``) are one category; a warning
    names the ones dropped. The Anomaly Exposure Sampler shows the model distinct categories only (Eq.
    1–2), and a repeated one would weigh twice in the prompt and in the projector's attention over the
    category features (Eq. 7), changing the scores of a search that is meant to be the same.

    Raises:
        TypeError: one string instead of a list of them.
        ValueError: no category is left.
    """
    kept, seen, dropped = [], set(), []
    for category in clean_categories(categories):
        key = comparison_key(category)  # the sampler's: whitespace collapsed, case folded
        if key in seen:
            dropped.append(category)
        else:
            seen.add(key)
            kept.append(category)
    if dropped:
        log.warning(
            "Categories named more than once are searched once: dropping %s; searching %s.",
            ", ".join(repr(category) for category in dropped),
            ", ".join(repr(category) for category in kept),
        )
    return kept


def check_intervals(*, min_interval: int, merge_gap: int) -> None:
    """``min_interval`` ≥ 1 and ``merge_gap`` ≥ 0 frames, whole numbers.

    Raises:
        ValueError: naming the setting.
    """
    for setting, value, least in (("min_interval", min_interval, 1), ("merge_gap", merge_gap, 0)):
        if not is_whole(value) or value < least:
            raise ValueError(f"{setting} must be a whole number of frames ≥ {least}, got {value!r}.")


def _log_stop(name: str, frames: int) -> None:
    log.warning(
        "%s: stopped (Ctrl-C) after %d frame(s); finishing its outputs (Ctrl-C again aborts and keeps "
        "nothing).",
        name,
        frames,
    )


class _HeldInterrupt:
    """Holds Ctrl-C (SIGINT) back during the block; ``pending`` then says whether it came.

    Only when ``enabled``, in the main thread (the only one SIGINT reaches) and while SIGINT has
    Python's default handler: a program that installed its own keeps it.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.pending = False
        self._previous = None

    def __enter__(self) -> _HeldInterrupt:
        if (
            self.enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.pending = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def check_output_options(*, overlay: bool, save: str) -> None:
    """``save`` is ``all`` or ``anomalous``; ``anomalous`` cuts the overlay video, so it needs ``overlay``.

    Raises:
        ValueError: naming the setting to change.
    """
    if save not in ("all", "anomalous"):
        raise ValueError(f"save must be 'all' or 'anomalous', got {save!r}.")
    if save == "anomalous" and not overlay:
        raise ValueError(
            "save=anomalous writes the overlay video of each anomalous interval (segments/segment_000.mp4, "
            "...), but overlay is off: set overlay=true, or save=all for scores and masks without videos."
        )


class _Writers:
    """The per-frame writers of one video (none without a folder)."""

    # save="anomalous" cuts segment k from interval k, and min_interval and merge_gap settle the
    # intervals only once every score is known. Holding overlay frames until then would grow with the
    # video, so the whole overlay goes to this temporary file (near-lossless, as it is encoded twice),
    # which ``finish`` cuts into segments with one sequential decode and then deletes.
    FULL_OVERLAY = ".overlay.full.mp4"

    def __init__(
        self, folder: Path | None, *, fps: float | None, threshold: float, overlay: bool, save: str
    ) -> None:
        self.folder, self.fps, self.threshold, self.save = folder, fps, threshold, save
        self.scores = ScoreWriter(folder, fps=fps, threshold=threshold) if folder else None
        self.masks = MaskWriter(folder) if folder else None
        self.overlay = None
        if folder is not None and overlay:
            if save == "all":
                self.overlay = VideoWriter(folder / "overlay.mp4", fps=fps)
            else:
                self.overlay = VideoWriter(folder / self.FULL_OVERLAY, fps=fps, codec="mpeg4")

    def write(self, result: FrameResult, history: list[float]) -> None:
        if self.folder is None:
            return
        height, width = result.frame.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        if result.mask is not None:
            mask = upsample_mask_logits_from_probabilities(result.mask, (height, width)) >= self.threshold
        self.scores.write(result.index, result.score)
        self.masks.write(result.index, mask)
        if self.overlay is not None:
            self.overlay.write(overlay_frame(result.frame, mask, history, self.threshold))

    def close(self) -> None:
        for writer in (self.scores, self.masks, self.overlay):
            if writer is not None:
                writer.close()

    def finish(self, intervals: list[Interval]) -> None:
        """After :meth:`close`: with save="anomalous", cut ``segments/segment_<k>.mp4`` for each interval."""
        if self.overlay is None or self.save != "anomalous":
            return
        if self.overlay.path.exists():
            cut_segments(self.overlay.path, intervals, self.folder / "segments", fps=self.fps)
        self.overlay.path.unlink(missing_ok=True)


# Bounds of a float64 probability turned back into a logit: down to float64's smallest normal number
# (logit −708) and up to 1 − 1e-16 (+36.7; a float64 sigmoid of anything above is 1.0 exactly).
_PROBABILITY_RANGE = (float(np.finfo(np.float64).tiny), 1 - 1e-16)


def upsample_mask_logits_from_probabilities(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) probabilities → (H, W) float64 probabilities: back to logits, bilinear, sigmoid (SAM2's order).

    The border of a thresholded mask lies where the interpolated logits cross the threshold's logit, so
    the logits must come back whole: the detector's float64 probabilities keep them from −708 to +36.7.
    (A clip at 1e-6 used to cap them at ±13.8 and moved the borders of masks with stronger logits.) A
    logit above +36.7 comes back as +36.7, which moves a border next to it by less than a decoder pixel.
    """
    probabilities = np.clip(np.asarray(mask, dtype=np.float64), *_PROBABILITY_RANGE)
    logits = np.log(probabilities) - np.log1p(-probabilities)
    return upsample_mask_logits(logits[None], size, dtype=np.float64)[0]


@dataclass
class _OpenRun:
    start: int
    end: int
    frames: list[np.ndarray] = field(default_factory=list)  # every ``step``-th anomalous frame
    step: int = 1
    count: int = 0  # anomalous frames in the run


class _ExplanationFrames:
    """Explains each reported interval as soon as it is final, holding frames of the open one only.

    Runs of anomalous frames are merged as :func:`~lavida.detect.intervals.anomalous_intervals` merges
    them (at most ``merge_gap`` frames apart). A merged run is final once the ``merge_gap + 1`` frames
    after it are all below the threshold (no later run can join it), or at the end of the stream; it is
    then dropped (shorter than ``min_length``) or explained at once and only the answer kept, under its
    number among the reported intervals. A run is final before the next one starts, so one is open at a
    time, holding an evenly spread sample of at most ``2 · per_run + 1`` of its anomalous frames:
    memory does not grow with the video, however often the score crosses the threshold.

    Args:
        explain: (T, H, W, 3) uint8 frames, T ≤ ``per_run`` → the MLLM's answer.
        merge_gap: As ``anomalous_intervals``'s.
        min_length: As ``anomalous_intervals``'s.
        per_run: Frames shown to ``explain`` per interval (at most).
    """

    def __init__(
        self, explain: Callable[[np.ndarray], str], *, merge_gap: int, min_length: int, per_run: int = 8
    ) -> None:
        self.explain = explain
        self.merge_gap, self.min_length, self.per_run = merge_gap, min_length, per_run
        self.explanations: dict[int, str] = {}  # reported interval number → answer
        self._reported = 0
        self._run: _OpenRun | None = None

    @property
    def held(self) -> int:
        """Frames held now."""
        return 0 if self._run is None else len(self._run.frames)

    def add(self, index: int, frame: np.ndarray, *, anomalous: bool) -> None:
        """The next frame (``index`` counts up from 0) and whether its score reaches the threshold."""
        run = self._run
        if run is not None:
            below = index - run.end - (1 if anomalous else 0)  # frames below the threshold since the run
            if below > self.merge_gap:
                self._close()
        if not anomalous:
            return
        if self._run is None:
            self._run = _OpenRun(start=index, end=index)
        run = self._run
        run.end = index
        if run.count % run.step == 0:
            # A copy: the frame may be a view of a whole decoded batch, which it would keep alive.
            run.frames.append(np.array(frame, copy=True))
        run.count += 1
        if len(run.frames) > 2 * self.per_run:  # keep every other one
            run.frames = run.frames[::2]
            run.step *= 2

    def finish(self) -> dict[int, str]:
        """At the end of the stream: settle the open run; returns interval number → answer."""
        if self._run is not None:
            self._close()
        return self.explanations

    def _close(self) -> None:
        run, self._run = self._run, None
        if run.end - run.start + 1 < self.min_length:
            return
        picks = np.linspace(0, len(run.frames) - 1, min(self.per_run, len(run.frames))).round().astype(int)
        # The number is taken first: an explanation stopped by Ctrl-C leaves its interval without an
        # answer, never the later ones under the wrong number.
        number, self._reported = self._reported, self._reported + 1
        self.explanations[number] = self.explain(np.stack([run.frames[i] for i in picks]))
