"""Open-world detection on any video (§4.2, Fig. 5): ``from lavida import Detector``.

    detector = Detector.from_checkpoint("runs/lavida/final")
    result = detector.detect("street.mp4", ["fire", "fighting"], output_dir="out/")
    result.scores          # (F,) anomaly probability per frame
    result.intervals       # anomalous intervals (start, end, peak score)

    for frame in detector.stream("rtsp://camera/stream", ["fire"]):   # live, bounded memory
        ...

Frames are scored clip by clip with a sliding window (``lavida.detect.window``); results are written as
they become final (``lavida.detect.outputs``), so a long video or an endless stream never accumulates
in memory. With ``explain=True`` the same MLLM, with token compression, answers "Is there any abnormal
event in this video? Answer yes or no and explain" for each detected interval (supplement D.1.4).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lavida.atomic import atomic_dir
from lavida.data.processor import LavidaProcessor
from lavida.data.prompts import clean_categories
from lavida.data.types import ClipSample
from lavida.detect.intervals import Interval, anomalous_intervals
from lavida.detect.outputs import (
    MaskWriter,
    ScoreWriter,
    VideoWriter,
    cut_segments,
    overlay_frame,
    write_summary,
)
from lavida.detect.stream import open_stream
from lavida.detect.window import Aggregation, FrameResult, SlidingWindow
from lavida.inference import upsample_mask_logits
from lavida.models.lavida import LavidaModel

log = logging.getLogger(__name__)

EXPLAIN_QUESTION = "Is there any abnormal event in this video? Answer yes or no and explain."


@dataclass
class Detection:
    """The result of :meth:`Detector.detect` on one video.

    Attributes:
        name: The video's name (its output folder's name).
        scores: (F,) per-frame anomaly probabilities.
        intervals: Detected anomalous intervals.
        fps: Frame rate if known.
        categories: The categories searched for.
        explanations: Interval number → the MLLM's answer (with ``explain``).
        output_dir: Where the files were written (or None).
    """

    name: str
    scores: np.ndarray
    intervals: list[Interval]
    fps: float | None
    categories: list[str]
    explanations: dict[int, str] = field(default_factory=dict)
    output_dir: Path | None = None


class Detector:
    """Detects anomalies of named categories in videos, frame by frame and pixel by pixel.

    Args:
        model: A trained LAVIDA model (evaluation mode is set here).
        processor: Its input processor (test-time pixel budget).
        clip_length: Frames per clip (T = 8, B.3).
        interval: Score every ``interval``-th frame; the frames between hold its score.
        stride: Sampled frames between clip starts (< ``clip_length`` overlaps clips; default no overlap).
        aggregation: How overlapping clips combine a frame's scores and masks: ``mean`` or ``max``.
        threshold: Frame-score threshold for anomalous intervals (and the pixel-mask threshold).
        min_interval: Drop intervals shorter than this many frames.
        merge_gap: Join intervals separated by at most this many frames.
        gate_masks: Empty masks on frames whose object score is ≤ 0 (SAM2's convention).
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
        **kwargs,
    ) -> Detector:
        """Load a LAVIDA checkpoint (bf16 on GPU, fp32 on CPU unless ``dtype`` says otherwise).

        ``clip_length`` (in ``kwargs``) defaults to the clip length the checkpoint was trained on
        (its meta.json; supplement Tab. 7 tests each model at its own), else 8.
        """
        from lavida.models.checkpoint import load_checkpoint, trained_clip_length

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        overrides = dict(config_overrides or {})
        overrides.setdefault("dtype", dtype or ("bfloat16" if device.type == "cuda" else "float32"))
        model, config = load_checkpoint(checkpoint, config_overrides=overrides, device=device)
        if kwargs.get("clip_length") is None:
            kwargs["clip_length"] = trained_clip_length(checkpoint)
        return cls(model=model, processor=LavidaProcessor.for_model(model, config.inputs), **kwargs)

    # -- one clip ----------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_clip(self, frames: np.ndarray, categories: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(T, H, W, 3) uint8 frames → (T,) anomaly probabilities and (T, h, w) pixel probabilities."""
        sample = ClipSample(frames=frames, categories=list(categories), is_video=frames.shape[0] > 1)
        batch = self.processor([sample], train=False).to(self.device, dtype=self.dtype)
        prediction = self.model.predict(batch, gate_masks=self.gate_masks)
        scores = prediction.frame_scores.cpu().numpy()
        masks = torch.sigmoid(prediction.mask_logits.float()).cpu().numpy()
        return scores, masks

    # -- streams -----------------------------------------------------------------------------------

    def stream(
        self, source: str | Path, categories: Sequence[str], *, max_frames: int | None = None
    ) -> Iterator[FrameResult]:
        """Yield every frame's result (score, low-resolution mask, the frame) as soon as it is final."""
        categories = clean_categories(categories)
        frames = open_stream(source, max_frames=max_frames).frames
        yield from self._window(categories).run(frames)

    def _window(self, categories: list[str]) -> SlidingWindow:
        return SlidingWindow(
            lambda clip: self.predict_clip(clip, categories),
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
        progress: bool = True,
        name: str | None = None,
    ) -> Detection:
        """Score a whole video (or a stream, up to ``max_frames``) and write its outputs.

        Args:
            source: Video file, frame folder, URL or device.
            categories: Anomaly categories to look for.
            output_dir: Write the files of ``lavida.detect.outputs`` to ``<output_dir>/<name>/``, replacing
                that folder as a whole once the video is done (nothing is left of an earlier run).
            overlay: Write the overlay video.
            save: ``all`` (one overlay video) or ``anomalous`` (``segments/segment_<k>.mp4``: the overlay
                of reported interval k only).
            explain: Ask the MLLM to explain each detected interval.
            max_frames: Stop after this many frames.
            progress: Show a progress bar.
            name: The output folder's name (default: ``lavida.detect.stream.stream_name``; a run over
                many inputs passes ``output_names`` so that no two share a folder).

        Raises:
            ValueError: empty category list.
            lavida.data.video.VideoReadError: unreadable, empty or undecodable video.
        """
        from tqdm import tqdm

        check_output_options(overlay=overlay, save=save)
        categories = clean_categories(categories)
        stream = open_stream(source, max_frames=max_frames)
        name = name or stream.name
        target = None if output_dir is None else Path(output_dir) / name
        # Files are written into a staging folder that takes the place of <output_dir>/<name> as a
        # whole when the video is done: a rerun leaves no file of an earlier one (old segments, an
        # overlay no longer asked for), and a run killed midway leaves the earlier folder untouched.
        with atomic_dir(target) if target is not None else nullcontext() as folder:
            writers = _Writers(folder, fps=stream.fps, threshold=self.threshold, overlay=overlay, save=save)
            window = self._window(categories)
            scores: list[float] = []
            keeper = _ExplanationFrames() if explain else None
            bar = tqdm(total=stream.num_frames, desc=name, unit="frame", disable=not progress)
            try:
                for result in window.run(stream.frames):
                    scores.append(result.score)
                    writers.write(result, scores)
                    if keeper is not None:
                        keeper.add(result, anomalous=result.score >= self.threshold)
                    bar.update(1)
            finally:
                bar.close()
                writers.close()
            if not scores:
                raise ValueError(f"{source}: no frames were read.")
            values = np.asarray(scores, dtype=np.float64)
            intervals = anomalous_intervals(
                values, threshold=self.threshold, min_length=self.min_interval, merge_gap=self.merge_gap
            )
            writers.finish(intervals)
            explanations = {}
            if keeper is not None:
                for number, interval in enumerate(intervals):
                    frames = keeper.frames_for(interval)
                    if frames is not None:
                        explanations[number] = self.explain(frames)
            if folder is not None:
                settings = {
                    "threshold": self.threshold,
                    "clip_length": self.clip_length,
                    "interval": self.interval,
                    "stride": self.stride or self.clip_length,
                    "aggregation": self.aggregation,
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
        """The MLLM's answer to ``question`` about (T, H, W, 3) frames, with token compression."""
        batch = self.processor.question_batch(frames, question).to(self.device, dtype=self.dtype)
        tokens = self.model.mllm.generate(batch, max_new_tokens=max_new_tokens)
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        return text.strip()


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
                self.overlay = VideoWriter(folder / self.FULL_OVERLAY, fps=fps, options={"qscale": "2"})

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


def upsample_mask_logits_from_probabilities(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) probabilities → (H, W) probabilities (bilinear on the logits, as SAM2 upsamples)."""
    logits = np.log(np.clip(mask, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(mask, 1e-6, 1 - 1e-6))
    return upsample_mask_logits(logits[None].astype(np.float32), size)[0]


class _ExplanationFrames:
    """Keeps a bounded, evenly spread set of frames of each anomalous run for explanations."""

    def __init__(self, per_run: int = 8) -> None:
        self.per_run = per_run
        self.runs: list[tuple[int, int, list[np.ndarray], int]] = []  # (start, end, frames, step)
        self._open = False

    def add(self, result: FrameResult, *, anomalous: bool) -> None:
        if not anomalous:
            self._open = False
            return
        if not self._open:
            self.runs.append((result.index, result.index, [], 1))
            self._open = True
        start, _, frames, step = self.runs[-1]
        if (result.index - start) % step == 0:
            frames.append(result.frame)
        if len(frames) > 2 * self.per_run:  # keep every other frame: memory stays bounded
            frames[:] = frames[::2]
            step *= 2
        self.runs[-1] = (start, result.index, frames, step)

    def frames_for(self, interval: Interval) -> np.ndarray | None:
        chosen = [
            frames for start, end, frames, _ in self.runs if start <= interval.end and end >= interval.start
        ]
        pool = [frame for frames in chosen for frame in frames]
        if not pool:
            return None
        picks = np.linspace(0, len(pool) - 1, min(self.per_run, len(pool))).round().astype(int)
        return np.stack([pool[i] for i in picks])
