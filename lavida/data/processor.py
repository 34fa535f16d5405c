"""Turn :class:`ClipSample` s into a :class:`LavidaBatch`: one frame set, two branches, one prompt.

- MLLM branch: uint8 frames resized by torchvision (bicubic, antialiased, aspect kept; the release's
  ``qwen_resize_video``) so each frame holds between ``min_pixels`` and ``max_pixels`` pixels in
  multiples of 28 (Qwen's ``smart_resize``), then patchified by the Qwen processor. Budgets per frame
  as in the official code: training videos 200,704–401,408 px, test videos 1,003,520–1,204,224 px,
  images 25,088–802,816 px.
- SAM2 branch: uint8 frames stretched to S×S (1024²; bilinear, antialiased, as the release's
  ``sam2_transform`` and transformers' ``Sam2ImageProcessor``), scaled to [0, 1] and ImageNet-normalised;
  target masks resized with nearest-exact (pixel centres).
- Categories: CLIP-tokenised, truncated to CLIP's 77-token context.

``encode`` works on one sample (run it in dataloader workers); ``collate`` pads and stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lavida.data.prompts import PromptTemplates
from lavida.data.types import IGNORE_INDEX, ClipSample, LavidaBatch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PixelBudget:
    """Per-frame pixel range for the MLLM branch."""

    min_pixels: int
    max_pixels: int

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"PixelBudget needs 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}."
            )


# The official release's budgets (lavida_official.md §2): 32–64 and 160–192 × 28²·8 px per video
# frame; 32–1024 × 28² px per image.
TRAIN_VIDEO_BUDGET = PixelBudget(200_704, 401_408)
TEST_VIDEO_BUDGET = PixelBudget(1_003_520, 1_204_224)
IMAGE_BUDGET = PixelBudget(25_088, 802_816)


@dataclass
class EncodedSample:
    """One processed sample (see :class:`LavidaBatch` for the meaning of each field)."""

    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor | None  # (L,)
    mm_token_type_ids: torch.Tensor  # (L,)
    is_video: bool
    pixel_values: torch.Tensor  # (P, C·t·p·p)
    grid_thw: torch.Tensor  # (1, 3)
    sam_pixel_values: torch.Tensor  # (T, 3, S, S)
    category_tokens: torch.Tensor  # (K, 77)
    target_masks: torch.Tensor | None  # (T, S, S)
    frame_labels: torch.Tensor | None  # (T,)
    second_per_grid_ts: torch.Tensor | None = None


def smart_resize(height: int, width: int, *, factor: int, budget: PixelBudget) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides in multiples of ``factor``, area within the budget, aspect kept."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as qwen_smart_resize

    return qwen_smart_resize(
        height, width, factor=factor, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
    )


class LavidaProcessor:
    """Builds model inputs from raw frames, categories and (for training) masks.

    Args:
        qwen_processor: The MLLM's processor (``lavida.models.qwen_processor.load_processor``).
        clip_tokenizer: The category encoder's tokenizer (list[str] → (K, 77) int64).
        sam_image_size: SAM2's input side S.
        templates: Prompt templates.
        train_video_budget, test_video_budget, image_budget: Per-frame pixel budgets of the MLLM branch.
    """

    def __init__(
        self,
        *,
        qwen_processor,
        clip_tokenizer,
        sam_image_size: int,
        templates: PromptTemplates | None = None,
        train_video_budget: PixelBudget = TRAIN_VIDEO_BUDGET,
        test_video_budget: PixelBudget = TEST_VIDEO_BUDGET,
        image_budget: PixelBudget = IMAGE_BUDGET,
    ) -> None:
        self.qwen = qwen_processor
        self.tokenizer = qwen_processor.tokenizer
        self.clip_tokenizer = clip_tokenizer
        self.sam_image_size = sam_image_size
        self.templates = templates or PromptTemplates.load()
        self.budgets = {"train": train_video_budget, "test": test_video_budget, "image": image_budget}
        image_processor = qwen_processor.image_processor
        self.factor = image_processor.patch_size * image_processor.merge_size
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                "The MLLM tokenizer has no pad token; set tokenizer.pad_token before building batches."
            )

    # -- one sample --------------------------------------------------------------------------------

    def encode(
        self, sample: ClipSample, *, train: bool, rng: np.random.Generator | None = None
    ) -> EncodedSample:
        """Process one sample.

        Args:
            sample: Frames (T, H, W, 3) uint8, categories, and masks for training.
            train: Training mode: training pixel budget, answer labels, random templates (with ``rng``).
            rng: Generator for the template draw; None → the fixed inference templates.

        Raises:
            ValueError: frames that are not (T, H, W, 3) uint8, an image sample (``is_video=False``) with
                T ≠ 1, or masks / frame labels whose count is not T.
        """
        frames = _as_uint8_frames(sample.frames)  # (T, 3, H, W) uint8
        if not sample.is_video and frames.shape[0] != 1:
            # The MLLM takes an image as one frame; SAM2 would decode all T, with no error anywhere.
            raise ValueError(
                f"An image sample (is_video=False) has one frame, but got {frames.shape[0]} frames; set "
                "is_video=True for a clip, or pass the image alone as frames of shape (1, H, W, 3)."
            )
        is_video = bool(sample.is_video) and frames.shape[0] > 1
        chat = self.templates.render(
            sample.categories,
            is_video=is_video,
            user_index=sample.prompt_template,
            answer_index=sample.answer_template,
            rng=rng if train else None,
        )
        budget = self.budgets["image"] if not is_video else self.budgets["train" if train else "test"]
        height, width = smart_resize(frames.shape[-2], frames.shape[-1], factor=self.factor, budget=budget)
        mllm_frames = _resize_uint8(frames, (height, width))
        encoded = self.qwen(
            text=[chat.prompt + chat.answer], **_visual_inputs(mllm_frames, is_video), return_tensors="pt"
        )
        input_ids = encoded["input_ids"][0]
        labels = self._answer_labels(input_ids, chat.answer) if train else None

        masks = presence = None
        if sample.masks is not None:
            source_masks = _as_tensor(sample.masks)
            # Presence at the source resolution: a target the resize shrinks away is still present.
            presence = (source_masks.flatten(1) > 0).any(dim=1).float()
            masks = _resize_masks(source_masks, self.sam_image_size)
            if masks.shape[0] != frames.shape[0]:
                raise ValueError(f"The sample has {frames.shape[0]} frames but {masks.shape[0]} masks.")
        frame_labels = None
        if sample.frame_labels is not None:
            frame_labels = _as_tensor(sample.frame_labels).float().reshape(-1)
            if frame_labels.shape[0] != frames.shape[0]:
                # One presence label per frame supervises that frame's object score (L_seg).
                raise ValueError(
                    f"The sample has {frames.shape[0]} frames but {frame_labels.shape[0]} frame labels; "
                    "give one label per frame."
                )
        elif presence is not None:
            frame_labels = presence  # per-frame mask presence (docs/fidelity.md)
        return EncodedSample(
            input_ids=input_ids,
            labels=labels,
            mm_token_type_ids=encoded["mm_token_type_ids"][0],
            is_video=is_video,
            pixel_values=encoded["pixel_values_videos" if is_video else "pixel_values"],
            grid_thw=encoded["video_grid_thw" if is_video else "image_grid_thw"],
            sam_pixel_values=sam_pixel_values(frames, self.sam_image_size),
            category_tokens=self.clip_tokenizer(list(_clean(sample.categories))),
            target_masks=masks,
            frame_labels=frame_labels,
            second_per_grid_ts=_seconds(encoded) if is_video else None,
        )

    def _answer_labels(self, input_ids: torch.Tensor, answer: str) -> torch.Tensor:
        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        tail = input_ids[-len(answer_ids) :].tolist()
        if tail != answer_ids:
            raise ValueError(
                "The tokenised answer is not the tail of the tokenised conversation; the tokenizer merges "
                "across the assistant header. Labels cannot be masked safely."
            )
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[-len(answer_ids) :] = input_ids[-len(answer_ids) :]
        return labels

    # -- a batch -----------------------------------------------------------------------------------

    def collate(self, samples: Sequence[EncodedSample]) -> LavidaBatch:
        """Right-pad token sequences and concatenate frames, patches and categories in sample order."""
        if not samples:
            raise ValueError("collate() got an empty list of samples.")
        length = max(s.input_ids.shape[0] for s in samples)
        batch_size = len(samples)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        mm_types = torch.zeros((batch_size, length), dtype=samples[0].mm_token_type_ids.dtype)
        with_labels = [s.labels is not None for s in samples]
        if any(with_labels) and not all(with_labels):
            raise ValueError(
                "Some samples have answer labels and others not; encode them all with the same `train`."
            )
        labels = (
            torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long) if all(with_labels) else None
        )
        for row, sample in enumerate(samples):
            n = sample.input_ids.shape[0]
            input_ids[row, :n] = sample.input_ids
            attention_mask[row, :n] = 1
            mm_types[row, :n] = sample.mm_token_type_ids
            if labels is not None:
                labels[row, :n] = sample.labels

        images = [s for s in samples if not s.is_video]
        videos = [s for s in samples if s.is_video]
        frames_per_sample = torch.tensor([s.sam_pixel_values.shape[0] for s in samples])
        categories_per_sample = torch.tensor([s.category_tokens.shape[0] for s in samples])
        return LavidaBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=mm_types,
            labels=labels,
            pixel_values=torch.cat([s.pixel_values for s in images]) if images else None,
            image_grid_thw=torch.cat([s.grid_thw for s in images]) if images else None,
            pixel_values_videos=torch.cat([s.pixel_values for s in videos]) if videos else None,
            video_grid_thw=torch.cat([s.grid_thw for s in videos]) if videos else None,
            second_per_grid_ts=_cat_optional(
                [s.second_per_grid_ts for s in videos],
                what="video timings (Qwen2.5-VL's second_per_grid_ts: samples of two processors?)",
            ),
            sam_pixel_values=torch.cat([s.sam_pixel_values for s in samples]),
            frame_to_sample=torch.repeat_interleave(torch.arange(batch_size), frames_per_sample),
            category_tokens=torch.cat([s.category_tokens for s in samples]),
            category_to_sample=torch.repeat_interleave(torch.arange(batch_size), categories_per_sample),
            target_masks=_cat_optional([s.target_masks for s in samples], what="target masks"),
            frame_labels=_cat_optional([s.frame_labels for s in samples], what="frame labels"),
        )

    def question_batch(self, frames: np.ndarray | torch.Tensor, question: str) -> LavidaBatch:
        """A one-sample MLLM-only batch asking ``question`` about the frames (prompt ends at the assistant
        header, for ``SemanticExtractor.generate``). The SAM2 and category fields are empty."""
        frames = _as_uint8_frames(frames)
        is_video = frames.shape[0] > 1
        visual = "<|vision_start|>" + ("<|video_pad|>" if is_video else "<|image_pad|>") + "<|vision_end|>"
        prompt = (
            f"<|im_start|>system\n{self.templates.system}<|im_end|>\n"
            f"<|im_start|>user\n{visual}{question}<|im_end|>\n<|im_start|>assistant\n"
        )
        budget = self.budgets["test" if is_video else "image"]
        height, width = smart_resize(frames.shape[-2], frames.shape[-1], factor=self.factor, budget=budget)
        resized = _resize_uint8(frames, (height, width))
        encoded = self.qwen(text=[prompt], **_visual_inputs(resized, is_video), return_tensors="pt")
        side = self.sam_image_size
        return LavidaBatch(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            mm_token_type_ids=encoded["mm_token_type_ids"],
            pixel_values=None if is_video else encoded["pixel_values"],
            image_grid_thw=None if is_video else encoded["image_grid_thw"],
            pixel_values_videos=encoded["pixel_values_videos"] if is_video else None,
            video_grid_thw=encoded["video_grid_thw"] if is_video else None,
            second_per_grid_ts=_seconds(encoded) if is_video else None,
            sam_pixel_values=torch.zeros(0, 3, side, side),
            frame_to_sample=torch.zeros(0, dtype=torch.long),
            category_tokens=torch.zeros(0, 77, dtype=torch.long),
            category_to_sample=torch.zeros(0, dtype=torch.long),
        )

    @classmethod
    def for_model(cls, model, inputs=None, *, templates: PromptTemplates | None = None) -> LavidaProcessor:
        """The processor matching a built model and its ``model.inputs`` config (``InputConfig``)."""
        from lavida.models.config import InputConfig

        inputs = inputs or InputConfig()
        return cls(
            qwen_processor=model.mllm.processor,
            clip_tokenizer=model.text_encoder.tokenizer,
            sam_image_size=model.mask_decoder.image_size,
            templates=templates,
            train_video_budget=PixelBudget(*inputs.train_video_budget),
            test_video_budget=PixelBudget(*inputs.test_video_budget),
            image_budget=PixelBudget(*inputs.image_budget),
        )

    def __call__(
        self, samples: Sequence[ClipSample], *, train: bool, rng: np.random.Generator | None = None
    ) -> LavidaBatch:
        """``encode`` every sample, then ``collate``."""
        return self.collate([self.encode(sample, train=train, rng=rng) for sample in samples])


# -- helpers ----------------------------------------------------------------------------------------


def _clean(categories: Sequence[str]) -> list[str]:
    from lavida.data.prompts import clean_categories

    return clean_categories(categories)


def _as_tensor(array) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))


def check_frames(frames: object) -> None:
    """A clip the model takes: a (T, H, W, 3) uint8 RGB array (numpy or torch), T ≥ 1.

    Raises:
        TypeError: not an array (a list of frames, say).
        ValueError: another shape or dtype; the message says how to convert the frames.
    """
    expected = "frames must be a (T, H, W, 3) uint8 RGB array (numpy or torch)"
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        hint = ""
        if isinstance(frames, (list, tuple)):
            hint = "; stack a list of (H, W, 3) frames into one array with np.stack(frames)"
        raise TypeError(f"{expected}, got {type(frames).__name__}{hint}.")
    shape = tuple(frames.shape)
    is_numpy = isinstance(frames, np.ndarray)
    cast = ".astype(np.uint8)" if is_numpy else ".to(torch.uint8)"
    got = f"got shape {shape} and dtype {frames.dtype}"
    if len(shape) == 5:
        hint = "pass one clip at a time, e.g. frames[0]"
    elif len(shape) == 3 and shape[-1] == 3:
        hint = "for one frame (H, W, 3), add the time axis: frames[None]"
    elif len(shape) == 4 and shape[1] == 3 and shape[-1] != 3:
        order = "transpose" if is_numpy else "permute"
        hint = f"the colour channels go last: frames.{order}(0, 2, 3, 1)"
    elif len(shape) != 4 or shape[-1] != 3:
        hint = (
            "RGB frames with the 3 colour channels last (grey frames: repeat them 3 times on the last axis)"
        )
    elif 0 in shape[:3]:
        hint = "a clip needs at least one frame of at least one pixel"
    elif frames.dtype in (np.uint8, torch.uint8):
        return
    elif frames.dtype in (np.bool_, torch.bool):
        hint = f"convert them with (frames * 255){cast}"
    elif frames.dtype.is_floating_point if not is_numpy else np.issubdtype(frames.dtype, np.floating):
        if float(frames.max()) <= 1.0:
            hint = f"values in [0, 1] look like floats scaled to 1: convert them with (frames * 255).round(){cast}"
        else:
            hint = f"convert float values in [0, 255] with frames.round().clip(0, 255){cast}"
    else:
        hint = f"convert them with frames.clip(0, 255){cast}"
    raise ValueError(f"{expected}; {got}: {hint}.")


def _as_uint8_frames(frames) -> torch.Tensor:
    """(T, H, W, 3) uint8 (numpy or torch) → (T, 3, H, W) uint8 (:func:`check_frames` first)."""
    check_frames(frames)
    return _as_tensor(frames).permute(0, 3, 1, 2).contiguous()


def _resize_uint8(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, H, W) uint8 → (T, 3, h, w) uint8, bicubic, antialiased: the release's ``qwen_resize_video`` /
    ``qwen_resize_image`` and qwen-vl-utils' video path (torchvision ``resize`` of the uint8 frames).

    On CPU torchvision runs its native uint8 kernel, which rounds and clamps between the horizontal and the
    vertical pass as PIL's bicubic does (what Qwen2-VL met in training, within 2 grey levels). A float
    bicubic rounded once at the end keeps the overshoot of the first pass: up to 26 grey levels apart on
    textured frames.
    """
    if tuple(frames.shape[-2:]) == size:
        return frames
    return _resize(frames, size, "bicubic")


def sam_pixel_values(frames: torch.Tensor, side: int) -> torch.Tensor:
    """(T, 3, H, W) uint8 frames → (T, 3, S, S) SAM2 input: stretched to S×S, [0, 1], ImageNet-normalised.

    The resize (bilinear, antialiased) runs on the uint8 frames, as the release's ``sam2_transform``
    (``v2.Resize((S, S))`` before ``ConvertImageDtype``) and transformers' ``Sam2ImageProcessor`` do; Meta's
    ``SAM2Transforms`` resizes the [0, 1] floats instead (at most one grey level apart).
    """
    if frames.dtype != torch.uint8:
        raise ValueError(f"sam_pixel_values expects uint8 frames, got {frames.dtype}.")
    if tuple(frames.shape[-2:]) != (side, side):
        frames = _resize(frames, (side, side), "bilinear")
    pixels = frames.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (pixels - mean) / std


def _resize(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """torchvision's antialiased resize of (T, 3, H, W) uint8 frames (uint8 out, rounded and clamped)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    return resize(frames, list(size), interpolation=InterpolationMode(mode), antialias=True)


def _resize_masks(masks: torch.Tensor, side: int) -> torch.Tensor:
    if masks.ndim != 3:
        raise ValueError(f"Masks must be (T, H, W); got shape {tuple(masks.shape)}.")
    masks = (masks > 0).float().unsqueeze(1)
    if tuple(masks.shape[-2:]) != (side, side):
        masks = F.interpolate(masks, size=(side, side), mode="nearest-exact")
    return masks[:, 0]


# The frames of a clip reach Qwen as a list of sampled frames, with no timestamps. Qwen2.5-VL spaces the
# temporal positions of its 2-frame groups by tokens_per_second × seconds per group; without a rate
# transformers assumes 24 fps (1/12 s per group), and with tokens_per_second 2 every group of a clip
# then gets the same temporal position. 2 fps is what qwen-vl-utils assigns to frame lists (one group
# per second, groups 2 positions apart). Qwen2-VL (the paper's MLLM) ignores it.
SAMPLED_FPS = 2.0


def _visual_inputs(frames: torch.Tensor, is_video: bool) -> dict:
    """Keyword arguments of the Qwen processor for (T, 3, H, W) frames: one video, or one image."""
    if not is_video:
        return {"images": [frames[0]]}
    return {
        "videos": [frames],
        "video_metadata": [{"fps": SAMPLED_FPS, "total_num_frames": int(frames.shape[0])}],
    }


def _seconds(encoded) -> torch.Tensor | None:
    value = encoded.get("second_per_grid_ts")
    return None if value is None else torch.as_tensor(value, dtype=torch.float32).reshape(-1)


def _cat_optional(parts: list[torch.Tensor | None], *, what: str) -> torch.Tensor | None:
    present = [part is not None for part in parts]
    if not any(present):
        return None
    if not all(present):
        # Dropping them for the whole batch would lose the samples' own (Qwen2.5-VL's timings silently).
        raise ValueError(f"Some samples have {what} and others not; a batch needs them for all or none.")
    return torch.cat(parts)
