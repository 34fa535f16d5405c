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
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lavida.atomic import atomic_dir
from lavida.data.processor import LavidaProcessor, check_frames
from lavida.data.types import ClipSample
from lavida.detect.checks import (
    check_fps,
    check_intervals,
    check_max_frames,
    check_name,
    check_output_options,
    check_output_place,
    check_source,
    check_threshold,
    distinct_categories,
)
from lavida.detect.explanations import ExplanationFrames
from lavida.detect.frame_writers import FrameWriters
from lavida.detect.interrupt import HeldInterrupt
from lavida.detect.intervals import Interval, anomalous_intervals
from lavida.detect.outputs import interval_records, write_summary
from lavida.detect.stream import is_live, open_stream, stream_name
from lavida.detect.window import Aggregation, FrameResult, SlidingWindow, check_window
from lavida.inference import load_dtype
from lavida.models.lavida import LavidaModel

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
        their own). Categories named more than once are searched once
        (:func:`~lavida.detect.checks.distinct_categories`).

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

        Categories named more than once are searched once
        (:func:`~lavida.detect.checks.distinct_categories`).

        Returns:
            A :class:`Detection`: (F,) float64 ``scores``, ``intervals``, ``fps``; ``to_dict()`` for JSON.

        Raises:
            TypeError: ``source`` is not a path, URL or device name, or ``categories`` is one string.
            ValueError: empty category list, a setting not valid (``max_frames``, ``fps``, ``save``,
                ``name``), no frames (or a live stream stopped before its first frame was scored), or frames
                the model cannot take (the message names the source).
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
        name = name or stream_name(source)
        target = None if output_dir is None else Path(output_dir) / name
        if target is not None:
            check_output_place(source, target)  # before the video opens: it may be the folder replaced
        stream = open_stream(source, fps=fps, max_frames=max_frames)
        live = is_live(str(source))
        # Files are written into a staging folder that takes the place of <output_dir>/<name> as a
        # whole when the video is done: a rerun leaves no file of an earlier one (old segments, an
        # overlay no longer asked for), and a run killed midway leaves the earlier folder untouched.
        with atomic_dir(target) if target is not None else nullcontext() as folder:
            writers = FrameWriters(
                folder=folder, fps=stream.fps, threshold=self.threshold, overlay=overlay, save=save
            )
            results = self._window(categories, source).run(stream.frames)
            scores: list[float] = []
            keeper = None
            if explain:
                keeper = ExplanationFrames(
                    self.explain, merge_gap=self.merge_gap, min_length=self.min_interval
                )
            bar = tqdm(total=stream.num_frames, desc=name, unit="frame", disable=not progress)
            writing = False  # True while a frame's files are half written
            stopped = False
            try:
                for result in results:
                    # Ctrl-C while a frame is written would leave it in some files and not in others:
                    # it is held until the frame is complete, then ends the stream.
                    with HeldInterrupt(enabled=live) as held:
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
                stopped = True
                _log_stop(name, len(scores))
            finally:
                bar.close()
                writers.close()
                results.close()
                if hasattr(stream.frames, "close"):  # a stopped live stream's connection
                    stream.frames.close()
            if not scores and stopped:
                # Frames are scored a clip at a time, so a stream stopped early may have read frames.
                raise ValueError(
                    f"{source}: stopped (Ctrl-C) before its first frame was scored; nothing was written."
                )
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


def _log_stop(name: str, frames: int) -> None:
    log.warning(
        "%s: stopped (Ctrl-C) after %d frame(s); finishing its outputs (Ctrl-C again aborts and keeps "
        "nothing).",
        name,
        frames,
    )
