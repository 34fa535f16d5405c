"""Running a LAVIDA model over the clips of a video: decoding in workers, batched forward passes.

Shared by the benchmark evaluation (``lavida.eval.runner``) and open-world detection
(``lavida.detect``). A video's clips come from a plan (``lavida.eval.benchmark.plan_clips``); each
clip's frames are decoded in one call and processed for the model by a dataloader worker, while the
main process runs the model on batches of clips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from lavida.data.processor import EncodedSample, LavidaProcessor
from lavida.data.prompts import clean_categories
from lavida.data.types import ClipSample, LavidaBatch
from lavida.data.video import FrameSource, open_video
from lavida.models.config import DTYPES
from lavida.models.lavida import LavidaModel
from lavida.models.outputs import LavidaPrediction
from lavida.number_checks import is_whole

log = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """The clips of one video, decoded and encoded for the model.

    Args:
        path: Video file or frame folder (opened on the first read where no source is given).
        clips: (C, T) frame indices per clip.
        categories: The anomaly categories of the prompt.
        processor: Builds model inputs (test-time pixel budget, fixed prompt template).
        source: An already opened frame source of ``path``. The main process reads it (``num_workers=0``);
            each dataloader worker reads its own copy where the source makes one (PyAV videos, frame
            folders: see :meth:`~lavida.data.video.FrameSource.for_worker`), and otherwise opens ``path``
            itself (decord readers).
    """

    def __init__(
        self,
        *,
        path: str | Path,
        clips: np.ndarray,
        categories: Sequence[str],
        processor: LavidaProcessor,
        source: FrameSource | None = None,
    ) -> None:
        self.path = Path(path)
        self.clips = np.asarray(clips, dtype=np.int64)
        self.categories = list(categories)
        self.processor = processor
        self._source = source  # read only in the process that made the dataset
        # Made here, before any worker starts: a forked worker inherits the dataset as it is, without
        # __getstate__, and each worker then has its own copy of this one.
        self._worker_source = None if source is None else source.for_worker()

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def _frame_source(self) -> FrameSource:
        if get_worker_info() is None:
            if self._source is None:
                self._source = open_video(self.path)
            return self._source
        # A dataloader worker never touches self._source. Forked, it holds the main process's reader as it
        # was: a decord reader or an open PyAV decoder shares its file offset with the parent and the other
        # workers and lacks its decoding threads (they stayed in the parent), so reading it, or even
        # closing it, can return wrong frames or hang.
        if self._worker_source is None:
            self._worker_source = open_video(self.path)
        return self._worker_source

    def __getitem__(self, index: int) -> tuple[int, EncodedSample]:
        frames = self._frame_source().get_frames(self.clips[index])  # one batched decode per clip
        sample = ClipSample(frames=frames, categories=self.categories, is_video=frames.shape[0] > 1)
        try:
            return index, self.processor.encode(sample, train=False)
        except ValueError as error:
            # The processor's errors (Qwen2-VL refuses an aspect ratio over 200) do not say which video.
            height, width = frames.shape[1:3]
            hint = ""
            if max(height, width) > _MAX_ASPECT_RATIO * min(height, width):
                hint = f"; crop or pad such frames to an aspect ratio of at most {_MAX_ASPECT_RATIO} first"
            raise ValueError(
                f"{self.path}: cannot encode clip {index} of its {height}x{width} (HxW) frames ({error}){hint}."
            ) from error

    def __getstate__(self) -> dict:
        # A spawned worker gets _worker_source (a copy without open decoders, or None); _source may be a
        # decord reader, which does not pickle, and workers do not read it anyway.
        state = dict(self.__dict__)
        state["_source"] = None
        return state


# Qwen2-VL's smart_resize refuses frames whose long side exceeds 200 times the short one.
_MAX_ASPECT_RATIO = 200


def check_clips(clips: np.ndarray) -> np.ndarray:
    """A clip plan: a (C, T) array of whole-number frame indices, T ≥ 1 (C may be 0); returned as int64.

    Raises:
        TypeError: not an array or nested list of numbers.
        ValueError: another number of dimensions, or indices that are not whole numbers.
    """
    expected = "clips must be a (C, T) array of frame indices (C clips of T frames)"
    if isinstance(clips, (str, bytes)):
        raise TypeError(f"{expected}, got str {clips!r}; e.g. clips=np.arange(16).reshape(2, 8).")
    array = np.asarray(clips)
    if array.ndim != 2 or array.shape[1] == 0:
        hint = "; one clip is clips[None]" if array.ndim == 1 else ""
        raise ValueError(
            f"{expected}, got shape {array.shape}{hint}; lavida.eval.benchmark.plan_clips makes a plan."
        )
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind != "f" or not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise ValueError(f"{expected}: they must be whole numbers, got dtype {array.dtype}.")
    return array.astype(np.int64)


class ClipCollator:
    """``collate_fn`` of the clip loader: ``(clip index, encoded clip)`` items → (indices, batch).

    It holds the processor only. Under the spawn and forkserver start methods (macOS, Windows, and Linux
    from Python 3.14) a DataLoader pickles its ``collate_fn`` into every worker it starts; a bound method
    of :class:`Predictor` would carry the whole model along, once per worker and video.

    Args:
        processor: Collates the encoded clips into one :class:`~lavida.data.types.LavidaBatch`.
    """

    def __init__(self, *, processor: LavidaProcessor) -> None:
        self.processor = processor

    def __call__(self, items: Sequence[tuple[int, EncodedSample]]) -> tuple[list[int], LavidaBatch]:
        indices = [index for index, _ in items]
        return indices, self.processor.collate([sample for _, sample in items])


@dataclass
class ClipBatchPrediction:
    """Predictions for a batch of clips.

    Attributes:
        clip_indices: (b,) which clips of the plan these are.
        frame_scores: (b, T) float64 anomaly probability per sampled frame.
        mask_logits: (b, T, h, w) float16 logits of the best mask (gated by the object score), or None.
    """

    clip_indices: np.ndarray
    frame_scores: np.ndarray
    mask_logits: np.ndarray | None


@dataclass
class VideoPrediction:
    """All clips of a video, flattened in plan order (C·T sampled slots).

    Attributes:
        frame_scores: (C·T,) float64 anomaly probabilities.
        mask_logits: (C·T, h, w) float16 mask logits, or None when masks were not kept.
    """

    frame_scores: np.ndarray
    mask_logits: np.ndarray | None


def load_dtype(
    device: torch.device, *, dtype: str | None = None, config_overrides: dict | None = None
) -> str:
    """The dtype a checkpoint is loaded in on ``device``, known before it loads.

    ``config_overrides["dtype"]`` wins, then ``dtype``; by default bfloat16 on a GPU and float32 otherwise.
    lavida-eval and lavida-detect key their cached results on it, so a rerun that finds every result
    cached never has to load the model to learn it.

    Raises:
        ValueError: a dtype other than float32, bfloat16 or float16.
    """
    overrides = config_overrides or {}
    if "dtype" in overrides:
        name, where = overrides["dtype"], "checkpoint_overrides.dtype"
    else:
        name, where = dtype or ("bfloat16" if device.type == "cuda" else "float32"), "dtype"
    if name not in DTYPES:
        raise ValueError(f"{where} must be one of {', '.join(DTYPES)}; got {name!r}.")
    return name


class Predictor:
    """Runs a model over clip plans.

    Args:
        model: A LAVIDA model (moved to its device and put in eval mode by the caller or here).
        processor: Its input processor.
        batch_size: Clips per forward pass.
        num_workers: Dataloader workers decoding and encoding clips.
        keep_masks: Return the low-resolution mask logits (needed for pixel metrics and overlays).
        gate_masks: Set masks of frames whose object score is ≤ 0 to −1024 (SAM2's convention).

    Raises:
        ValueError: ``batch_size`` not a whole number ≥ 1, or ``num_workers`` not one ≥ 0.
    """

    def __init__(
        self,
        *,
        model: LavidaModel,
        processor: LavidaProcessor,
        batch_size: int = 1,
        num_workers: int = 0,
        keep_masks: bool = True,
        gate_masks: bool = True,
    ) -> None:
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not is_whole(value) or value < least:
                raise ValueError(f"{name} must be a whole number ≥ {least}, got {value!r}.")
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.keep_masks = keep_masks
        self.gate_masks = gate_masks
        parameter = next(model.projector.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def iter_clips(
        self,
        path: str | Path,
        clips: np.ndarray,
        categories: Sequence[str],
        *,
        source: FrameSource | None = None,
        keep_masks: bool | None = None,
    ) -> Iterator[ClipBatchPrediction]:
        """Predict the clips of one video, one batch at a time, in plan order.

        Args:
            path: Video file or frame folder.
            clips: (C, T) frame indices (whole numbers).
            categories: Prompt categories, a list of strings.
            source: ``path`` already opened, to reuse. Dataloader workers read copies of a PyAV video or a
                frame folder, so that none of them decodes the whole video again to count its frames; they
                open a decord video themselves (its reader cannot be shared with them).
            keep_masks: Override the predictor's ``keep_masks`` for this video.

        Returns:
            An iterator of :class:`ClipBatchPrediction` (the arguments are checked when this is called).

        Raises:
            TypeError: ``categories`` is one string, or ``clips`` is not an array.
            ValueError: ``clips`` not (C, T) whole numbers, or no category.
        """
        clips = check_clips(clips)
        categories = clean_categories(categories)
        keep_masks = self.keep_masks if keep_masks is None else keep_masks
        return self._iter_clips(path, clips, categories, source=source, keep_masks=keep_masks)

    def _iter_clips(
        self,
        path: str | Path,
        clips: np.ndarray,
        categories: list[str],
        *,
        source: FrameSource | None,
        keep_masks: bool,
    ) -> Iterator[ClipBatchPrediction]:
        dataset = ClipDataset(
            path=path, clips=clips, categories=categories, processor=self.processor, source=source
        )
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=ClipCollator(processor=self.processor),
            persistent_workers=False,
        )
        for indices, batch in loader:
            with torch.inference_mode():
                prediction = LavidaPrediction.from_output(
                    self.model(batch.to(self.device, dtype=self.dtype)), gate_masks=self.gate_masks
                )
            steps = clips.shape[1]
            scores = prediction.frame_scores.cpu().numpy().reshape(len(indices), steps)
            masks = None
            if keep_masks:
                logits = prediction.mask_logits.to(torch.float16).cpu().numpy()
                masks = logits.reshape(len(indices), steps, *logits.shape[1:])
            yield ClipBatchPrediction(np.asarray(indices, dtype=np.int64), scores, masks)

    def predict_video(
        self,
        path: str | Path,
        clips: np.ndarray,
        categories: Sequence[str],
        *,
        source: FrameSource | None = None,
        keep_masks: bool | None = None,
    ) -> VideoPrediction:
        """Predict every clip of a video and return them flattened in plan order (args as :meth:`iter_clips`)."""
        batches = self.iter_clips(path, clips, categories, source=source, keep_masks=keep_masks)
        num_clips, steps = np.shape(clips)
        scores = np.zeros((num_clips, steps), dtype=np.float64)
        masks = None
        for batch in batches:
            scores[batch.clip_indices] = batch.frame_scores
            if batch.mask_logits is not None:
                if masks is None:
                    masks = np.zeros((num_clips, steps, *batch.mask_logits.shape[2:]), dtype=np.float16)
                masks[batch.clip_indices] = batch.mask_logits
        flat_masks = None if masks is None else masks.reshape(num_clips * steps, *masks.shape[2:])
        return VideoPrediction(frame_scores=scores.reshape(-1), mask_logits=flat_masks)


def upsample_mask_logits(
    logits: np.ndarray, size: tuple[int, int], *, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """(n, h, w) low-resolution logits → (n, H, W) probabilities of ``dtype`` (bilinear, then sigmoid).

    SAM2 predicts masks for a frame stretched to S×S; its S/4 × S/4 logits stretch back to any frame
    size the same way. The sigmoid runs in ``dtype``: in float32 every logit above ~16.6 comes out as
    exactly 1.0, so metrics that rank pixels ask for float64.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(logits)).float().unsqueeze(1)
    resized = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    precision = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    return torch.sigmoid(resized[:, 0].to(precision)).numpy()
