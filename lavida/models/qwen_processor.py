"""The Qwen2-VL / Qwen2.5-VL processor: from a local model directory, or built offline for random models.

The processor turns frames into vision patches and text into token ids. LAVIDA resizes frames itself
(under the per-frame pixel budget, see ``lavida.data.processor``), so the processor's own resizing is
switched off here; it only patchifies and normalises.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from lavida.models.weights import check_pretrained_dir

log = logging.getLogger(__name__)

SEG_TOKEN = "<SEG>"  # §3.5: the token whose last-layer hidden state is f_sem
QwenFamily = Literal["qwen2_vl", "qwen2_5_vl"]

# Qwen's chat-format and vision special tokens, in the order the real tokenizer defines them.
QWEN_SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

QWEN_REQUIRED_FILES = (
    ("config.json",),
    ("model.safetensors", "model.safetensors.index.json"),
    ("tokenizer.json", "vocab.json"),
    ("preprocessor_config.json", "processor_config.json"),
)
QWEN_HINT = (
    "Download the model once (e.g. `hf download Qwen/Qwen2-VL-7B-Instruct --local-dir DIR` "
    "on a machine with network) and point `model.mllm.pretrained` (or LAVIDA_QWEN2VL_PATH) at DIR."
)


def byte_level_tokenizer():
    """A tiny offline Qwen2 tokenizer: the 256 byte symbols plus Qwen's special tokens, no merges.

    Used for randomly initialised models (tests, tiny configs, runtime benchmarks) where no real
    tokenizer is available. It tokenises any text (one token per byte) and knows every special token
    the Qwen2-VL processor and chat format need.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {"<|endoftext|>": 0}
    vocab.update({symbol: index + 1 for index, symbol in enumerate(sorted(ByteLevel.alphabet()))})
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS),
    )


def build_processor(
    *,
    tokenizer,
    family: QwenFamily = "qwen2_vl",
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
):
    """Assemble a Qwen2-VL (or Qwen2.5-VL) processor around ``tokenizer`` with resizing disabled."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    vision = dict(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size)
    image_processor = Qwen2VLImageProcessor(do_resize=False, **vision)
    video_processor = Qwen2VLVideoProcessor(do_resize=False, cap_pixels_per_frame=False, **vision)
    if family == "qwen2_vl":
        from transformers import Qwen2VLProcessor as processor_class
    elif family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor as processor_class
    else:
        raise ValueError(f"Unknown MLLM family '{family}'; expected 'qwen2_vl' or 'qwen2_5_vl'.")
    return processor_class(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )


def load_processor(
    pretrained: str | Path | None, *, family: QwenFamily = "qwen2_vl", vision: dict | None = None
):
    """The processor of a local model directory, or a byte-level one for a random model.

    ``<SEG>`` is added to the tokenizer and the processor's own resizing and frame sampling are switched
    off (frames arrive already sampled and resized to multiples of ``patch_size * merge_size``).

    Args:
        pretrained: Local model directory, or ``None`` for the offline byte-level processor.
        family: ``"qwen2_vl"`` or ``"qwen2_5_vl"``.
        vision: For ``pretrained=None``: ``patch_size``, ``spatial_merge_size``, ``temporal_patch_size``
            of the model's vision config.

    Returns:
        The processor, with ``processor.tokenizer`` holding ``<SEG>``.
    """
    if pretrained is None:
        vision = vision or {}
        processor = build_processor(
            tokenizer=byte_level_tokenizer(),
            family=family,
            patch_size=vision.get("patch_size", 14),
            merge_size=vision.get("spatial_merge_size", 2),
            temporal_patch_size=vision.get("temporal_patch_size", 2),
        )
    else:
        from transformers import AutoProcessor

        directory = check_pretrained_dir(
            pretrained, what=f"{family} processor", required=QWEN_REQUIRED_FILES, hint=QWEN_HINT
        )
        processor = AutoProcessor.from_pretrained(str(directory), local_files_only=True)
    _frames_as_given(processor)
    add_seg_token(processor.tokenizer)
    return processor


def _frames_as_given(processor) -> None:
    """Make a folder's processor take the frames exactly as LAVIDA hands them over.

    The clip is sampled and resized by ``lavida.data.processor`` (8 frames, the per-frame pixel budget);
    a folder's ``video_preprocessor_config.json`` may turn on frame sampling (``do_sample_frames`` with
    ``fps``/``num_frames``), which would silently drop frames of the clip, and its resize caps would
    shrink our frames. Neither may apply. The per-frame pixel cap (``cap_pixels_per_frame``) only acts
    inside the resize; it is set explicitly so transformers does not warn about its default on every run.
    """
    processor.image_processor.do_resize = False
    video = processor.video_processor
    video.do_resize = False
    video.do_sample_frames = False
    if hasattr(video, "cap_pixels_per_frame"):
        video.cap_pixels_per_frame = False


def add_seg_token(tokenizer) -> int:
    """Add ``<SEG>`` as a special (never split) token if absent; return its id."""
    if SEG_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([SEG_TOKEN], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(SEG_TOKEN)
