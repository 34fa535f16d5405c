"""Runtime of LAVIDA per module, per compression ratio and per clip length (supplement C, Tab. 2/4/7).

Builds the model from its Hydra config with random weights directly on the target device (no
download: runtime does not depend on weight values), feeds a synthetic clip at the paper's test
setting and prints markdown tables beside the paper's numbers; ``--out`` also writes them as JSON
(atomically, after every configuration, so an interrupted run keeps what it measured).

Test setting (the official release's evaluation, research/lavida_official.md §2): a ShanghaiTech-like
856×480 clip; MLLM frames resized under the test budget of 1,003,520–1,204,224 px per frame, i.e.
1344×756 (5,184 visual tokens per 8 frames before compression); SAM2 frames stretched to 1024²;
batch 1; K = 18 categories (ShanghaiTech's test list). The frames are a synthetic street scene:
a static textured background with a few moving objects, like surveillance video.

Where the time goes. The paper splits the per-frame time into four parts (supplement Tab. 2) and
names token compression and the multi-scale projector as "other modules" (supplement C), so:

====================  =====================================================================
paper column          stages timed here
====================  =====================================================================
visual embedding      ``qwen_vit`` (Qwen2-VL ViT + 2×2 merger) + ``sam2_image_encoder``
                      (Hiera + FPN + conv_s0/s1); both frozen image encoders
LLM forward           ``language_model``: the Qwen2 decoder, plus token embedding, M-RoPE ids,
                      sequence packing and the ``<SEG>`` gather around it
mask decoding         ``mask_decoder``: prompt embedding, SAM2 prompt encoder + mask decoder,
                      best-mask selection
others                ``compression`` + ``projector`` + ``clip_text`` + ``glue`` (Python between
                      stages); data processing is timed apart (``processing``, CPU, runs in
                      dataloader workers during evaluation) and is not part of the FPS
====================  =====================================================================

The fine stages are all printed and stored, so other groupings can be derived from the JSON.

Two modes run in the same process on the same weights:

* ``reference`` (paper-faithful): the official code's structure. SAM2's mask decoder runs once per
  frame (the official ``track_step`` loop), attention is eager (HF ``eager``; every
  ``scaled_dot_product_attention`` call forced to the unfused math kernel), LoRA unmerged, no
  compilation, bf16 weights on GPU as the official release (fp32 on CPU; ``--reference-dtype``).
* ``fast``: all frames decoded in one batched call (the library's ``LavidaModel.forward``), bf16 on
  GPU, SDPA (flash / memory-efficient kernels) everywhere, LoRA merged into the base weights, and
  optionally ``torch.compile`` on the static-shape SAM2 image encoder, projector and mask decoder
  (``--compile``).

Token compression is the same in both modes: ``lavida.models.compression`` never ranks distances in
bf16 (its 8-bit mantissa cannot rank them); it searches neighbours in float64 and measures the
distances it keeps as fp32 differences summed in float64 (the official code ranked in fp32).

Timing: CUDA events around every stage with one synchronisation per forward on GPU,
``time.perf_counter`` on CPU; warm-up iterations, then the median of several repeats. Peak GPU memory
is ``torch.cuda.max_memory_allocated`` over warm-up and repeats. FLOPs are counted for every (mode,
ratio, clip length) with ``torch.utils.flop_counter.FlopCounterMode`` on one extra forward (matmuls,
convolutions and attention products, 2 FLOPs per multiply-add; attention as the full QKᵀ and AV
products, also where causal; elementwise ops not counted) and turned into achieved TFLOP/s and a
fraction of ``--peak-tflops`` (MFU).

Run from the repository root (``benchmarks/`` is not a package)::

    python benchmarks/runtime.py --tiny                                  # CPU, tiny model, seconds
    python benchmarks/runtime.py --model lavida --device cuda --out runtime.json   # one H100/H200

See docs/benchmarks.md for what every column means and the measured figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lavida.atomic import write_json
from lavida.data.processor import TEST_VIDEO_BUDGET, LavidaProcessor, PixelBudget, smart_resize
from lavida.data.types import ClipSample, LavidaBatch
from lavida.models.compression import TokenCompressor
from lavida.models.config import LavidaConfig
from lavida.models.lavida import LavidaModel, build_lavida
from lavida.models.mask_decoder import DecoderOutput, ImageFeatures
from lavida.models.outputs import LavidaOutput, LavidaPrediction
from lavida.number_checks import count_at_least

# -- the paper's numbers ------------------------------------------------------------------------------
# Supplement Tab. 2 (clip length 8, compression ratio 0.2; the GPU is not named, B.3 trains on an A800):
# FPS and ms per frame. Its four
# parts sum to 133.76 ms (7.48 FPS), not 1000 / 7.33 = 136.43 ms; Tab. 7's row for clip length 8 gives
# 45.31 + 91.10 = 136.41 ms, so the FPS matches Tab. 7 and the split is slightly off.
PAPER_TAB2_FPS = 7.33
PAPER_TAB2_MS = {"visual_embedding": 58.65, "llm_forward": 26.96, "mask_decoding": 44.08, "others": 4.07}
# Supplement Tab. 4: LLM forward time (ms per frame) vs compression ratio, clip length 8.
PAPER_TAB4_LLM_MS = {1.0: 31.71, 0.5: 29.33, 0.2: 26.96, 0.1: 26.78}
# Supplement Tab. 7: clip length -> (FPS, mask decoding ms/frame, "others" ms/frame). "Others" there
# is everything but mask decoding: 1000 / (mask + others) reproduces each FPS to ±0.01.
PAPER_TAB7 = {
    4: (4.78, 44.08, 165.27),
    8: (7.33, 45.31, 91.10),
    12: (8.80, 44.59, 69.02),
    16: (11.31, 45.16, 43.26),
}
# Main paper Fig. 7b: inference GPU memory at ratio 0.2 is 54.1 % of the uncompressed baseline.
PAPER_FIG7B_MEMORY_AT_0_2 = 0.541
PAPER_GPU = "GPU not stated (B.3 trains on an A800 80 GB)"

# ShanghaiTech's test categories (the official release, research/lavida_official.md §10): K = 18.
SHANGHAITECH_CATEGORIES = (
    "bicycle, fight, throw, pick, hand truck, run, skate, falling, jumping, motorcycle, tricycle, cart, "
    "waving stick, hurdle, vehicle, play, baby carriage, truck"
).split(", ")

# H100 SXM and H200 dense bf16 tensor-core peak (NVIDIA datasheets; 2× with 2:4 sparsity, which no
# layer here uses). H100 PCIe: 756, H100 NVL: 835, A100/A800: 312 — pass those with --peak-tflops.
DEFAULT_PEAK_TFLOPS_CUDA = 989.0

# -- stages -----------------------------------------------------------------------------------------
FINE_STAGES = (
    "qwen_vit",
    "sam2_image_encoder",
    "compression",
    "language_model",
    "clip_text",
    "projector",
    "mask_decoder",
    "glue",
)
GROUPS = {
    "visual_embedding": ("qwen_vit", "sam2_image_encoder"),
    "llm_forward": ("language_model",),
    "mask_decoding": ("mask_decoder",),
    "others": ("compression", "projector", "clip_text", "glue"),
}
GROUP_TITLES = {
    "visual_embedding": "visual embedding",
    "llm_forward": "LLM forward",
    "mask_decoding": "mask decoding",
    "others": "others",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Tolerance:
    """Agreement criterion between two modes' outputs.

    Attributes:
        rel_l2: Bound on ‖fast − reference‖₂ / ‖reference‖₂ of the object logits and of the mask logits.
        score_abs: Bound on max |Δ| of the frame scores (sigmoid of the object logits).
    """

    rel_l2: float
    score_abs: float


# fp32 both: only the kernels differ (eager vs SDPA, one decoder call vs one per frame), so the
# outputs agree to rounding, as in tests/models/test_lavida.py (1e-4; measured ~4e-7).
# bf16: 8 significant bits (eps 2^-8 = 3.9e-3), rounded anew in each of ~100 sequential layers
# (32 ViT blocks, 28 LLM layers, SAM2, 5 projector layers) by two different kernel sequences.
# Calibrated on CPU with the tiny model at the paper's depths (28 LLM layers, 32 ViT blocks,
# 5 projector layers): bf16 vs bf16 and bf16 vs fp32 gave rel. L2 ≤ 1.1e-2 on object logits and
# 2.3-2.9e-2 on mask logits, frame scores within 6e-6. 0.1 (≈ 25 eps) leaves ~3.5× headroom for
# the wider full-size model and GPU kernels, and still catches any real divergence (wrong frame,
# wrong prompt or mask: errors of order 1).
TOLERANCES = {
    torch.float32: Tolerance(rel_l2=1e-4, score_abs=1e-4),
    torch.float16: Tolerance(rel_l2=5e-2, score_abs=1e-2),
    torch.bfloat16: Tolerance(rel_l2=1e-1, score_abs=2e-2),
}


@dataclass(frozen=True)
class Preset:
    """Input geometry for a model config: raw frame size and the MLLM's per-frame pixel budget."""

    frame_size: tuple[int, int]  # (width, height) of the raw video
    budget: PixelBudget


PRESETS = {
    # ShanghaiTech frames at the official test budget -> 1344×756 MLLM frames.
    "lavida": Preset(frame_size=(856, 480), budget=TEST_VIDEO_BUDGET),
    # Same aspect ratio at toy size: 240×136 -> 196×112 MLLM frames, 28 tokens per frame pair.
    "tiny": Preset(frame_size=(240, 136), budget=PixelBudget(112 * 112, 32 * 28 * 28)),
}


@dataclass(frozen=True)
class Mode:
    """How one benchmark mode runs the model.

    Attributes:
        name: ``"reference"`` or ``"fast"``.
        dtype: Parameter and activation dtype.
        attn: transformers attention implementation for Qwen2-VL and SAM2.
        math_sdpa: Force every ``scaled_dot_product_attention`` onto the unfused math kernel.
        per_frame_decode: Call the SAM2 decoder once per frame (official) instead of once per clip.
        merge_lora: Merge the LoRA adapters into the base weights (inference-only optimisation).
        compile: ``torch.compile`` the static-shape SAM2 image encoder, projector and mask decoder.
    """

    name: str
    dtype: torch.dtype
    attn: str
    math_sdpa: bool
    per_frame_decode: bool
    merge_lora: bool
    compile: bool


# -- timing -------------------------------------------------------------------------------------------


class StageClock:
    """Wall time (and optionally FLOPs) of named stages within one forward pass.

    On CUDA every mark is an event recorded on the current stream, so timing adds no synchronisation
    inside the forward; :meth:`milliseconds` synchronises once. On CPU every op is synchronous and
    ``time.perf_counter`` is exact. A stage may be entered several times (e.g. once per sample); its
    intervals are summed.

    Args:
        device: The device the model runs on.
        flop_counter: If given, the FLOPs counted between a stage's start and stop are attributed to it.
    """

    def __init__(self, device: torch.device, flop_counter: Any | None = None) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.flop_counter = flop_counter
        self._open: dict[str, tuple[Any, int]] = {}
        self._intervals: list[tuple[str, Any, Any]] = []
        self.flops: dict[str, int] = defaultdict(int)
        self.kept: list[torch.Tensor] = []  # kept-token indices of every compression call, on device

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            # On the model's device: without it, the current device's stream (cuda:0 for cuda:1).
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def _total_flops(self) -> int:
        return self.flop_counter.get_total_flops() if self.flop_counter is not None else 0

    def start(self, name: str) -> None:
        """Open stage ``name``."""
        if name in self._open:
            raise RuntimeError(f"Stage '{name}' started twice without stopping.")
        self._open[name] = (self._mark(), self._total_flops())

    def stop(self, name: str) -> None:
        """Close stage ``name``."""
        begin, flops = self._open.pop(name)
        self._intervals.append((name, begin, self._mark()))
        self.flops[name] += self._total_flops() - flops

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def milliseconds(self) -> dict[str, float]:
        """Total milliseconds per stage (synchronises on CUDA)."""
        if self._open:
            raise RuntimeError(f"Stages still open: {sorted(self._open)}")
        if self.cuda:
            torch.cuda.synchronize(self.device)
        totals: dict[str, float] = defaultdict(float)
        for name, begin, end in self._intervals:
            totals[name] += begin.elapsed_time(end) if self.cuda else (end - begin) * 1e3
        return dict(totals)


class StageHooks:
    """Forward hooks that time the stages hidden inside ``SemanticExtractor.forward``.

    The vision tower and the compressor are called from inside the extractor, so they are timed by
    hooks on those modules rather than by copying the extractor's code; the language model is the
    rest of the extractor's time (see :func:`fine_stages`).

    Args:
        model: The LAVIDA model.
    """

    def __init__(self, model: LavidaModel) -> None:
        self.clock: StageClock | None = None
        self._compressor_handles: list[Any] = []
        self._attach(model.mllm.hf_model.model.visual, "qwen_vit")

    def _attach(self, module: torch.nn.Module, name: str) -> list[Any]:
        def before(_module, _args):
            if self.clock is not None:
                self.clock.start(name)

        def after(_module, _args, output):
            if self.clock is not None:
                self.clock.stop(name)
                if name == "compression":
                    self.clock.kept.append(output.keep)

        return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def watch_compressor(self, compressor: TokenCompressor | None) -> None:
        """Time ``compressor`` (replacing the previously watched one)."""
        for handle in self._compressor_handles:
            handle.remove()
        self._compressor_handles = [] if compressor is None else self._attach(compressor, "compression")


# -- the model, stage by stage -----------------------------------------------------------------------


def staged_forward(
    model: LavidaModel, batch: LavidaBatch, clock: StageClock, *, per_frame_decode: bool
) -> tuple[LavidaOutput, LavidaPrediction]:
    """``LavidaModel.forward`` + ``predict``'s post-processing, with every stage timed.

    Mirrors ``lavida/models/lavida.py`` call by call (a test checks that the batched path returns
    exactly ``model(batch)``). With ``per_frame_decode`` the SAM2 decoder is called once per frame,
    as the official code's ``track_step`` loop does (research/lavida_official.md §1, step 6).
    """
    with clock.stage("mllm"):  # qwen_vit and compression are timed inside by StageHooks
        semantic = model.mllm(batch)
    sam_dtype = model.mask_decoder.sam.no_memory_embedding.dtype
    with clock.stage("sam2_image_encoder"):
        features = model.mask_decoder.encode_images(batch.sam_pixel_values.to(sam_dtype))
        f_v, f_v_pos = features.tokens()
    with clock.stage("clip_text"):
        f_c, category_mask = model._category_features(batch)
    with clock.stage("projector"):
        dtype = model.projector_dtype
        f_proj = model.projector(
            f_sem=semantic.seg_features.to(dtype),
            f_c=f_c.to(dtype),
            category_mask=category_mask,
            f_v=f_v.to(dtype),
            f_v_pos=f_v_pos.to(dtype),
            frame_to_sample=batch.frame_to_sample,
        )
    with clock.stage("mask_decoder"):
        prompts = f_proj.to(sam_dtype)
        if per_frame_decode:
            decoded = _decode_frame_by_frame(model, features, prompts)
        else:
            decoded = model.mask_decoder(features, prompts)
        output = LavidaOutput(
            mask_logits=decoded.mask_logits,
            iou_pred=decoded.iou_pred,
            object_logits=decoded.object_logits,
            seg_features=semantic.seg_features,
            lm_loss=semantic.lm_loss,
            visual_tokens=semantic.visual_tokens,
            kept_tokens=semantic.kept_tokens,
        )
        prediction = LavidaPrediction.from_output(output)
    return output, prediction


def _decode_frame_by_frame(
    model: LavidaModel, features: ImageFeatures, prompts: torch.Tensor
) -> DecoderOutput:
    """The official per-frame decoding loop: one SAM2 prompt/mask-decoder call per frame."""
    parts = []
    for t in range(prompts.shape[0]):
        frame = ImageFeatures(
            top=features.top[t : t + 1],
            top_pos=features.top_pos[t : t + 1],
            high_res=[level[t : t + 1] for level in features.high_res],
        )
        parts.append(model.mask_decoder(frame, prompts[t : t + 1]))
    return DecoderOutput(
        mask_logits=torch.cat([p.mask_logits for p in parts]),
        iou_pred=torch.cat([p.iou_pred for p in parts]),
        object_logits=torch.cat([p.object_logits for p in parts]),
    )


def fine_stages(raw: dict[str, float]) -> dict[str, float]:
    """Turn clock totals into the disjoint :data:`FINE_STAGES` (works for ms and FLOPs alike).

    ``language_model`` is the extractor's time minus its vision tower and compression; ``glue`` is
    the forward's total minus every stage (Python between stages).
    """
    out = {name: float(raw.get(name, 0.0)) for name in FINE_STAGES}
    out["language_model"] = raw.get("mllm", 0.0) - out["qwen_vit"] - out["compression"]
    if "total" in raw:
        inside = raw.get("mllm", 0.0) + sum(
            out[name] for name in ("sam2_image_encoder", "clip_text", "projector", "mask_decoder")
        )
        out["glue"] = max(0.0, raw["total"] - inside)
    return out


def group_stages(fine: dict[str, float]) -> dict[str, float]:
    """Sum fine stages into the paper's four columns (:data:`GROUPS`)."""
    return {group: sum(fine[name] for name in names) for group, names in GROUPS.items()}


# -- building -----------------------------------------------------------------------------------------


def compose_config(name: str, overrides: Sequence[str] = ()) -> LavidaConfig:
    """Compose ``lavida/configs/model/<name>.yaml`` with Hydra overrides (the ``lavida-info`` way)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("info", overrides=[f"model={name}", *overrides])
    return LavidaConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))


def build_random_model(
    config: LavidaConfig, device: torch.device, dtype: torch.dtype, seed: int
) -> LavidaModel:
    """The model of ``config`` with random weights, allocated directly on ``device``.

    Built under ``torch.device(device)`` rather than on ``meta`` + ``to_empty``: the latter leaves
    non-persistent buffers uninitialised (Qwen's rotary ``inv_freq``, SAM2's random positional
    matrix, CLIP's causal mask), which no ``reset_parameters`` restores; initialising 8.5 B
    parameters on a GPU takes seconds. The processor, tokenizers and LoRA come out as in training,
    except that every LoRA ``B`` gets small random values (see below).
    """
    data = config.without_weights().to_dict()
    data["dtype"] = {v: k for k, v in DTYPES.items()}[dtype]
    torch.manual_seed(seed)
    with torch.device(device):
        model = build_lavida(LavidaConfig.from_dict(data))
    model.to(device)  # any buffer a constructor placed on the CPU explicitly
    # build_mask_decoder creates the prompt embedding after casting SAM2, so it stays fp32 in a bf16
    # model and the decoder would fail on bf16 prompts; give it SAM2's dtype (reported upstream).
    model.mask_decoder.prompt_embedding.to(dtype)
    # PEFT starts every lora_B at zero (a new adapter is the identity), so merging would change no
    # weight and the modes' agreement could not catch a wrong merge. Seeded values of the scale of
    # transformers' initializer_range (0.02) make the adapters change the outputs.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    model.eval().requires_grad_(False)  # inference only; FlopCounterMode needs grad-free parameters
    return model


def set_compression(model: LavidaModel, ratio: float, config: LavidaConfig, hooks: StageHooks) -> None:
    """Switch the compression ratio in place (ratio 1: no compressor, as ``build_lavida`` does)."""
    compression = config.compression
    compressor = None
    if ratio < 1.0:
        compressor = TokenCompressor(ratio=ratio, k=compression.k, density=compression.density)
    model.mllm.compressor = compressor
    hooks.watch_compressor(compressor)


@contextlib.contextmanager
def applied(model: LavidaModel, mode: Mode) -> Iterator[None]:
    """Put ``model`` into ``mode`` (dtype, attention, LoRA merge, compilation); undo all but the dtype on exit."""
    if model.projector_dtype != mode.dtype:
        # Modes run in order of increasing precision, so this is an exact up-cast (bf16 or fp16 ->
        # fp32; mode_specs refuses fp16 with bf16) and both modes see the same weight values.
        model.to(mode.dtype)
    model.mllm.hf_model.set_attn_implementation(mode.attn)
    model.mask_decoder.sam.set_attn_implementation(mode.attn)
    peft_model = model.mllm.model
    merged = mode.merge_lora and hasattr(peft_model, "merge_adapter")
    if merged:
        with torch.no_grad():
            peft_model.merge_adapter()
    compiled = []
    if mode.compile:
        # Static shapes per clip length: compiled once per clip length during warm-up.
        for module in (
            model.mask_decoder.sam.vision_encoder,
            model.projector,
            model.mask_decoder.sam.mask_decoder,
        ):
            module.forward = torch.compile(module.forward, dynamic=False)
            compiled.append(module)
    try:
        yield
    finally:
        for module in compiled:
            del module.forward  # back to the class's forward
        if merged:
            with torch.no_grad():
                peft_model.unmerge_adapter()


def mode_context(mode: Mode) -> contextlib.AbstractContextManager:
    """Kernel selection around every forward of ``mode``."""
    if not mode.math_sdpa:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


# -- inputs -------------------------------------------------------------------------------------------


def synthetic_clip(num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A surveillance-like clip: static textured background and three objects moving across it.

    Returns:
        (T, H, W, 3) uint8 frames.
    """
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    colour = np.array([0.45, 0.5, 0.55])
    background = 80 + 100 * colour * (0.6 * y + 0.4 * x)  # sky-to-street gradient
    background = background + 12 * np.sin(40 * x + 3 * y) * (y > 0.55)  # paving texture
    frames = np.repeat(background[None], num_frames, axis=0) + rng.normal(
        0.0, 3.0, (num_frames, height, width, 3)
    )
    for k in range(3):
        w, h = int(width * (0.04 + 0.02 * k)), int(height * (0.12 + 0.04 * k))
        top = int(height * (0.45 + 0.12 * k))
        tint = rng.uniform(30, 255, 3)
        for t in range(num_frames):
            left = int((0.1 + 0.25 * k) * width + t * width * 0.01 * (k + 1)) % max(1, width - w)
            frames[t, top : top + h, left : left + w] = tint
    return np.clip(frames, 0, 255).astype(np.uint8)


def make_processor(model: LavidaModel, budget: PixelBudget) -> LavidaProcessor:
    """The evaluation processor of ``model``, with the MLLM's test pixel budget ``budget``."""
    return LavidaProcessor(
        qwen_processor=model.mllm.processor,
        clip_tokenizer=model.text_encoder.tokenizer,
        sam_image_size=model.mask_decoder.image_size,
        test_video_budget=budget,
    )


def prepare_batch(
    processor: LavidaProcessor, frames: np.ndarray, device: torch.device, repeats: int
) -> tuple[LavidaBatch, float]:
    """Process one clip as evaluation does; return the batch on ``device`` and the median ms of doing so."""
    sample = ClipSample(frames=frames, categories=list(SHANGHAITECH_CATEGORIES), is_video=True)
    times = []
    batch = None
    for _ in range(max(1, repeats)):
        begin = time.perf_counter()
        batch = processor([sample], train=False).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - begin) * 1e3)
    return batch, statistics.median(times)


# -- measuring ----------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One (mode, ratio, clip length) configuration."""

    mode: str
    ratio: float
    clip_length: int
    text_tokens: int
    visual_tokens: int
    kept_tokens: int
    total_ms: float  # median over repeats, per clip
    stage_ms: dict[str, float]  # median per fine stage, per clip
    peak_memory_bytes: int | None  # CUDA only
    resident_memory_bytes: int | None  # allocated before the forward: weights and inputs
    outputs: dict[str, torch.Tensor] = field(repr=False)
    kept: list[torch.Tensor] = field(repr=False)


def count_flops(
    model: LavidaModel, batch: LavidaBatch, hooks: StageHooks, device: torch.device
) -> dict[str, float]:
    """FLOPs per fine stage for one clip, counted with ``FlopCounterMode``.

    Counted with every attention on the math kernel, so attention appears as the matmuls it is on any
    device (FlopCounterMode has no formula for CPU's fused SDPA), and with compiled functions run
    eagerly (the counter cannot see inside compiled kernels), and with any attention other than eager
    or SDPA (flash-attn's kernels are opaque to the counter) counted as SDPA. The modes differ only by
    the unmerged LoRA products of ``reference``.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    clock = StageClock(device, flop_counter=counter)
    hooks.clock = clock
    # Kernels outside aten (the flash-attn package's, for --fast-attn flash_attention_2) are opaque
    # to the counter: their attention products would be missing. Count them as SDPA (math kernel),
    # which computes the same products, and put the mode's attention back afterwards.
    switched = [
        (module, module.config._attn_implementation)
        for module in (model.mllm.hf_model, model.mask_decoder.sam)
        if module.config._attn_implementation not in ("eager", "sdpa")
    ]
    for module, _ in switched:
        module.set_attn_implementation("sdpa")
    try:
        with (
            torch.compiler.set_stance("force_eager"),
            sdpa_kernel([SDPBackend.MATH]),
            torch.inference_mode(),
            counter,
        ):
            staged_forward(model, batch, clock, per_frame_decode=False)
    finally:
        hooks.clock = None
        for module, attn in switched:
            module.set_attn_implementation(attn)
    return fine_stages({**clock.flops, "total": counter.get_total_flops()})


def measure(
    model: LavidaModel,
    batch: LavidaBatch,
    hooks: StageHooks,
    mode: Mode,
    *,
    ratio: float,
    clip_length: int,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> Measurement:
    """Warm up, then time ``repeats`` forwards of ``mode``; medians per stage and of the total."""
    cuda = device.type == "cuda"
    # Every CUDA call names ``device``: without it they act on the current device (cuda:0 for cuda:1).
    if cuda:
        torch.cuda.synchronize(device)
        with torch.cuda.device(device):  # empty_cache has no device argument
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device) if cuda else None
    runs: list[dict[str, float]] = []
    last: tuple[LavidaOutput, LavidaPrediction, StageClock] | None = None
    for i in range(warmup + repeats):
        clock = StageClock(device)
        hooks.clock = clock
        try:
            with mode_context(mode), torch.inference_mode():
                clock.start("total")
                output, prediction = staged_forward(
                    model, batch, clock, per_frame_decode=mode.per_frame_decode
                )
                clock.stop("total")
        finally:
            hooks.clock = None
        raw = clock.milliseconds()
        if i >= warmup:
            runs.append({**fine_stages(raw), "total": raw["total"]})
        last = (output, prediction, clock)
    output, prediction, clock = last
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    outputs = {
        "object_logits": output.object_logits.float().cpu(),
        "frame_scores": prediction.frame_scores.float().cpu(),
        "mask_logits": output.mask_logits.float().cpu(),
        "iou_pred": output.iou_pred.float().cpu(),
    }
    return Measurement(
        mode=mode.name,
        ratio=ratio,
        clip_length=clip_length,
        text_tokens=int(batch.attention_mask.sum()) - int(output.visual_tokens.sum()),
        visual_tokens=int(output.visual_tokens.sum()),
        kept_tokens=int(output.kept_tokens.sum()),
        total_ms=statistics.median(run["total"] for run in runs),
        stage_ms={name: statistics.median(run[name] for run in runs) for name in FINE_STAGES},
        peak_memory_bytes=peak,
        resident_memory_bytes=resident,
        outputs=outputs,
        kept=[keep.cpu() for keep in clock.kept],
    )


# -- agreement ------------------------------------------------------------------------------------------


def _rel_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = float(torch.linalg.vector_norm(want.double()))
    err = float(torch.linalg.vector_norm(got.double() - want.double()))
    return err / scale if scale > 0 else err


def _frame_shift(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``outputs`` with every per-frame tensor taken from the previous frame (cyclically): the outputs
    of a fast mode that decoded, or scored, the wrong frame."""
    return {name: torch.roll(value, 1, dims=0) for name, value in outputs.items()}


def _errors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> dict[str, float]:
    return {
        "object_logits_rel_l2": _rel_l2(got["object_logits"], want["object_logits"]),
        "mask_logits_rel_l2": _rel_l2(got["mask_logits"], want["mask_logits"]),
        "frame_scores_max_abs": float((got["frame_scores"] - want["frame_scores"]).abs().max()),
    }


def compare_outputs(reference: Measurement, fast: Measurement, tolerance: Tolerance) -> dict[str, Any]:
    """Agreement of two modes on one configuration.

    Compression's top-R selection is discontinuous: when the two modes' visual tokens differ by
    rounding, a near-tied token can swap in or out, and the outputs may then differ by more than
    rounding without either mode being wrong. A configuration that exceeds the tolerance while its
    kept tokens differ (``kept_overlap`` < 1) is therefore reported but left out of the verdict
    (``passed`` None).

    A pass is only evidence where the tolerance could have caught an error. With random weights the
    object logits are one bias for every frame up to a fraction of a percent, so shifting them by one
    frame moves their rel. L2 by ~1e-2 and the frame scores by ~1e-4, inside the bf16 tolerance (and
    inside bf16 rounding). The same errors are therefore computed for a control, the reference against
    itself shifted by one frame (``frame_shift_*``): an output whose control stays within the
    tolerance is not judged (``frame_scores_judged`` / ``masks_judged`` False), and a configuration in
    which neither is judged is not judged at all.
    """
    overlap = 1.0
    if reference.kept and fast.kept:
        shared = sum(
            np.intersect1d(a.numpy(), b.numpy()).size for a, b in zip(reference.kept, fast.kept, strict=True)
        )
        overlap = shared / max(1, sum(a.numel() for a in reference.kept))
    ro, fo = reference.outputs, fast.outputs
    errors = _errors(fo, ro)
    control = _errors(_frame_shift(ro), ro)
    result = {
        "ratio": reference.ratio,
        "clip_length": reference.clip_length,
        "kept_overlap": overlap,
        **errors,
        **{f"frame_shift_{name}": value for name, value in control.items()},
        "frame_scores_judged": control["object_logits_rel_l2"] > tolerance.rel_l2
        or control["frame_scores_max_abs"] > tolerance.score_abs,
        "masks_judged": control["mask_logits_rel_l2"] > tolerance.rel_l2,
        "finite": all(bool(torch.isfinite(t).all()) for t in (*ro.values(), *fo.values())),
    }
    within = bool(
        result["finite"]
        and result["object_logits_rel_l2"] <= tolerance.rel_l2
        and result["mask_logits_rel_l2"] <= tolerance.rel_l2
        and result["frame_scores_max_abs"] <= tolerance.score_abs
    )
    if within and not (result["frame_scores_judged"] or result["masks_judged"]):
        result["passed"] = None
        result["verdict"] = "within tolerance, but so is a one-frame shift: not judged"
    elif within:
        result["passed"], result["verdict"] = True, "pass"
        if not result["frame_scores_judged"]:
            result["verdict"] = "pass (masks; frame scores not judged: a one-frame shift is within tolerance)"
        elif not result["masks_judged"]:
            result["verdict"] = "pass (frame scores; masks not judged: a one-frame shift is within tolerance)"
    elif overlap < 1.0 and result["finite"]:
        result["passed"], result["verdict"] = None, "outside tolerance, kept tokens differ: not judged"
    else:
        result["passed"], result["verdict"] = False, "FAIL"
    return result


# -- reporting ------------------------------------------------------------------------------------------


def summarise(
    m: Measurement, flops: dict[str, float], peak_tflops: float | None, processing_ms: float
) -> dict:
    """JSON-ready record of one measurement: per-frame times, groups, FPS, memory, FLOPs, utilisation."""
    t = m.clip_length
    per_frame = {name: ms / t for name, ms in m.stage_ms.items()}
    total_flops = sum(flops[name] for name in FINE_STAGES)
    achieved = total_flops / (m.total_ms * 1e-3) / 1e12  # TFLOP/s
    gib = None if m.peak_memory_bytes is None else m.peak_memory_bytes / 2**30
    resident = None if m.resident_memory_bytes is None else m.resident_memory_bytes / 2**30
    return {
        "mode": m.mode,
        "ratio": m.ratio,
        "clip_length": t,
        "text_tokens": m.text_tokens,
        "visual_tokens": m.visual_tokens,
        "kept_tokens": m.kept_tokens,
        "ms_per_clip": m.total_ms,
        "ms_per_frame": m.total_ms / t,
        "fps": 1e3 * t / m.total_ms,
        "stages_ms_per_frame": per_frame,
        "groups_ms_per_frame": group_stages(per_frame),
        "processing_ms_per_frame": processing_ms / t,
        "peak_memory_gib": gib,
        "resident_memory_gib": resident,
        "activation_memory_gib": None if gib is None else gib - resident,
        "flops_per_frame": total_flops / t,
        "stage_flops_per_frame": {name: flops[name] / t for name in FINE_STAGES},
        "achieved_tflops": achieved,
        "mfu": None if not peak_tflops else achieved / peak_tflops,
    }


def agreement_report(measurements: Sequence[Measurement], modes: Sequence[Mode]) -> dict[str, Any]:
    """Speed-ups and output agreement of ``fast`` against ``reference`` on every shared configuration."""
    by_key = {(m.mode, m.ratio, m.clip_length): m for m in measurements}
    keys = [(m.ratio, m.clip_length) for m in measurements if m.mode == "reference"]
    keys = sorted((key for key in keys if ("fast", *key) in by_key), key=lambda k: (-k[0], k[1]))
    dtype = max((m.dtype for m in modes), key=lambda d: TOLERANCES[d].rel_l2)  # the least precise mode
    tolerance = TOLERANCES[dtype]
    agreement = [compare_outputs(by_key[("reference", *k)], by_key[("fast", *k)], tolerance) for k in keys]
    judged = [a for a in agreement if a["passed"] is not None]
    verdict = "no configuration could be judged"
    if judged:
        verdict = "pass" if all(a["passed"] for a in judged) else "FAIL"
        verdict += f" ({len(judged)} of {len(agreement)} configurations judged"
        scores = sum(bool(a["frame_scores_judged"]) for a in judged)
        if scores < len(judged):
            # Where a one-frame shift stays within the tolerance, a pass says nothing about the scores.
            verdict += f"; frame scores judged in {scores} of them, masks in "
            verdict += f"{sum(bool(a['masks_judged']) for a in judged)}"
        verdict += ")"
    speedups = [
        {
            "ratio": r,
            "clip_length": t,
            "speedup": by_key[("reference", r, t)].total_ms / by_key[("fast", r, t)].total_ms,
        }
        for r, t in keys
    ]
    return {
        "tolerance": {
            "dtype": _dtype_name(dtype),
            "rel_l2": tolerance.rel_l2,
            "score_abs": tolerance.score_abs,
        },
        "agreement": agreement,
        "agreement_verdict": verdict,
        "speedups": speedups,
    }


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def render_markdown(report: dict) -> str:
    """Every table of ``report`` as markdown: the paper's split, fine stages, ratio and clip-length
    sweeps beside the paper's numbers, all configurations with FLOPs, and the modes' agreement."""
    meta = report["meta"]
    rec = {(r["mode"], r["ratio"], r["clip_length"]): r for r in report["results"]}
    modes = [name for name in ("reference", "fast") if name in meta["modes"]]
    ratios, lengths = meta["ratios"], meta["clip_lengths"]
    h_ratio, h_len = meta["headline"]
    specs = "; ".join(
        f"`{m['name']}` {m['dtype']}, {m['attn']} attention"
        + (", per-frame decoding" if m["per_frame_decode"] else ", batched decoding")
        + (", compiled" if m["compile"] else "")
        for m in meta["mode_specs"]
    )
    lines = [
        f"## LAVIDA runtime: model `{meta['model']}` on {meta['device_name']}",
        "",
        f"{meta['parameters'] / 1e9:.3f} B parameters (random weights). Raw frames "
        f"{meta['frame_size'][0]}×{meta['frame_size'][1]}, MLLM frames {meta['mllm_frame_size'][0]}×"
        f"{meta['mllm_frame_size'][1]}, SAM2 {meta['sam_size']}², K = {meta['num_categories']} categories, "
        f"batch 1. Modes: {specs}. Median of {meta['repeats']} forwards after {meta['warmup']} warm-up. "
        f"Paper: {PAPER_GPU}.",
        "",
    ]
    if meta["device"] == "cpu":
        lines += ["**CPU run: these timings are not comparable with the paper's GPU figures.**", ""]
    if not meta.get("complete", True):
        lines += [
            f"**Partial: {len(report['results'])} configurations measured so far (run unfinished).**",
            "",
        ]

    # Supplement Tab. 2: the four-part split at the paper's setting.
    rows = [
        ["paper (Tab. 2)"]
        + [_fmt(PAPER_TAB2_MS[g]) for g in GROUPS]
        + [_fmt(sum(PAPER_TAB2_MS.values())), _fmt(PAPER_TAB2_FPS), "–", "–"]
    ]
    for mode in modes:
        if (r := rec.get((mode, h_ratio, h_len))) is not None:
            rows.append(
                [mode]
                + [_fmt(r["groups_ms_per_frame"][g], 3) for g in GROUPS]
                + [
                    _fmt(r["ms_per_frame"], 3),
                    _fmt(r["fps"]),
                    _fmt(r["peak_memory_gib"]),
                    _fmt(r["processing_ms_per_frame"], 3),
                ]
            )
    header = [""] + [GROUP_TITLES[g] for g in GROUPS]
    header += ["total", "FPS", "peak GPU GiB", "processing (CPU, not in FPS)"]
    lines += [f"### Per-module ms per frame (ratio {h_ratio:g}, clip length {h_len}; supplement Tab. 2)", ""]
    lines += _table(header, rows)

    # The fine stages behind those columns.
    header = ["stage, ms per frame"] + modes + (["reference / fast"] if len(modes) == 2 else [])
    rows = []
    for name in FINE_STAGES:
        values = [rec.get((m, h_ratio, h_len), {}).get("stages_ms_per_frame", {}).get(name) for m in modes]
        row = [name] + [_fmt(v, 3) for v in values]
        if len(modes) == 2:
            row.append(_fmt(values[0] / values[1]) + "×" if values[0] and values[1] else "n/a")
        rows.append(row)
    lines += [f"### Fine stages (ratio {h_ratio:g}, clip length {h_len})", ""] + _table(header, rows)

    # Supplement Tab. 4 and main Fig. 7b: the compression ratio.
    header = ["ratio", "text + visual → kept tokens", "paper LLM ms (Tab. 4)"]
    header += [f"{m} LLM ms" for m in modes] + [f"{m} FPS" for m in modes]
    header += [f"{m} peak GiB (vs ratio 1)" for m in modes] + ["paper memory vs ratio 1 (Fig. 7b)"]
    rows = []
    for ratio in ratios:
        recs = [rec.get((m, ratio, h_len)) for m in modes]
        if any(r is None for r in recs):
            continue
        first = recs[0]
        row = [f"{ratio:g}", f"{first['text_tokens']} + {first['visual_tokens']} → {first['kept_tokens']}"]
        row += [_fmt(PAPER_TAB4_LLM_MS.get(ratio))]
        row += [_fmt(r["groups_ms_per_frame"]["llm_forward"], 3) for r in recs]
        row += [_fmt(r["fps"]) for r in recs]
        for mode, r in zip(modes, recs, strict=True):
            base = rec.get((mode, 1.0, h_len))
            cell = _fmt(r["peak_memory_gib"])
            if r["peak_memory_gib"] and base and base["peak_memory_gib"]:
                cell += f" ({100 * r['peak_memory_gib'] / base['peak_memory_gib']:.1f} %)"
            row.append(cell)
        row.append({1.0: "100 %", 0.2: f"{100 * PAPER_FIG7B_MEMORY_AT_0_2:.1f} %"}.get(ratio, "–"))
        rows.append(row)
    if rows:
        lines += [f"### Compression ratio (clip length {h_len}; supplement Tab. 4, main Fig. 7b)", ""]
        lines += _table(header, rows)

    # Supplement Tab. 7: the clip length ("rest" = everything but mask decoding, as Tab. 7's "Others").
    header = ["clip length", "paper FPS (Tab. 7)"] + [f"{m} FPS" for m in modes]
    header += ["paper mask dec. ms"] + [f"{m} mask dec. ms" for m in modes]
    header += ["paper rest ms"] + [f"{m} rest ms" for m in modes]
    rows = []
    for t in lengths:
        recs = [rec.get((m, h_ratio, t)) for m in modes]
        if any(r is None for r in recs):
            continue
        paper = PAPER_TAB7.get(t, (None, None, None))
        row = [str(t), _fmt(paper[0])] + [_fmt(r["fps"]) for r in recs]
        row += [_fmt(paper[1])] + [_fmt(r["groups_ms_per_frame"]["mask_decoding"], 3) for r in recs]
        row += [_fmt(paper[2])]
        row += [_fmt(r["ms_per_frame"] - r["groups_ms_per_frame"]["mask_decoding"], 3) for r in recs]
        rows.append(row)
    if rows:
        lines += [
            f"### Clip length (ratio {h_ratio:g}; supplement Tab. 7, 'rest' = all but mask decoding)",
            "",
        ]
        lines += _table(header, rows)

    # Every configuration, with FLOPs and utilisation.
    speedups = {(s["ratio"], s["clip_length"]): s["speedup"] for s in report.get("speedups", [])}
    header = ["ratio", "clip length", "GFLOP/frame"]
    for m in modes:
        header += [f"{m} ms/frame", f"{m} FPS", f"{m} TFLOP/s (MFU)", f"{m} peak GiB"]
    header += ["fast / reference"] if speedups else []
    rows = []
    for ratio in ratios:
        for t in lengths:
            recs = [rec.get((m, ratio, t)) for m in modes]
            if any(r is None for r in recs):
                continue
            row = [f"{ratio:g}", str(t), _fmt(recs[0]["flops_per_frame"] / 1e9, 3)]
            for r in recs:
                mfu = "" if r["mfu"] is None else f" ({100 * r['mfu']:.1f} %)"
                row += [_fmt(r["ms_per_frame"], 3), _fmt(r["fps"]), _fmt(r["achieved_tflops"], 3) + mfu]
                row += [_fmt(r["peak_memory_gib"])]
            if speedups:
                row.append(_fmt(speedups.get((ratio, t))) + "×")
            rows.append(row)
    peak = meta["peak_tflops"]
    lines += ["### All configurations", ""] + _table(header, rows)
    lines += [
        f"GFLOP/frame of the first mode; MFU = achieved TFLOP/s / {peak:g} TFLOP/s (`--peak-tflops`)."
        if peak
        else "GFLOP/frame of the first mode; MFU: n/a (no `--peak-tflops` on CPU).",
        "",
    ]

    # Agreement of the two modes.
    if report.get("agreement"):
        tol = report["tolerance"]
        header = ["ratio", "clip length", "kept tokens shared", "object logits rel. L2"]
        header += ["mask logits rel. L2", "max Δ frame score"]
        header += ["one-frame shift (control): object / mask rel. L2, max Δ score", "verdict"]
        rows = [
            [
                f"{a['ratio']:g}",
                str(a["clip_length"]),
                f"{100 * a['kept_overlap']:.1f} %",
                f"{a['object_logits_rel_l2']:.2e}",
                f"{a['mask_logits_rel_l2']:.2e}",
                f"{a['frame_scores_max_abs']:.2e}",
                f"{a['frame_shift_object_logits_rel_l2']:.2e} / {a['frame_shift_mask_logits_rel_l2']:.2e}, "
                f"{a['frame_shift_frame_scores_max_abs']:.2e}",
                a["verdict"],
            ]
            for a in report["agreement"]
        ]
        lines += ["### Agreement of `fast` with `reference`", ""] + _table(header, rows)
        lines += [
            f"Tolerance ({tol['dtype']}): rel. L2 ≤ {tol['rel_l2']:g} on object and mask logits, "
            f"max |Δ frame score| ≤ {tol['score_abs']:g}. An output is judged only where the control, "
            "the reference against itself shifted by one frame, exceeds the tolerance. "
            f"Overall: **{report['agreement_verdict']}**.",
            "",
        ]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------


def frame_size_arg(value: str) -> tuple[int, int]:
    """``--frame-size``: ``"WxH"`` (width first, e.g. ``856x480``) -> (width, height) in pixels."""
    parts = value.lower().split("x")
    if len(parts) == 2 and all(part.isdecimal() and int(part) > 0 for part in parts):
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(
        f"expected WxH, width by height in pixels, e.g. 856x480 (ShanghaiTech's frames); got {value!r}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring and docs/benchmarks.md)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    positive, non_negative = count_at_least(1), count_at_least(0)
    add("--model", default="lavida", choices=sorted(PRESETS), help="model config in lavida/configs/model")
    add("--tiny", action="store_true", help="shorthand for --model tiny, on the CPU unless --device is given")
    add(
        "--device",
        default=None,
        help="cuda (the default where available) or cpu; without CUDA only --tiny defaults to the CPU",
    )
    add(
        "--override",
        action="append",
        default=[],
        help="Hydra override, e.g. model/mask_decoder=sam2.1_hiera_t",
    )
    add("--ratios", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1], help="compression ratios")
    add("--clip-lengths", type=int, nargs="+", default=[4, 8, 12, 16], help="frames per clip")
    add("--modes", nargs="+", default=["reference", "fast"], choices=["reference", "fast"])
    add("--warmup", type=non_negative, default=None, help="warm-up forwards per configuration (GPU 2, CPU 1)")
    add("--repeats", type=positive, default=None, help="timed forwards per configuration (GPU 5, CPU 3)")
    add(
        "--processing-repeats",
        type=positive,
        default=3,
        help="timed runs of the data processing per clip length",
    )
    add(
        "--reference-dtype", choices=sorted(DTYPES), default=None, help="GPU bfloat16 (official), CPU float32"
    )
    add("--fast-dtype", choices=sorted(DTYPES), default=None, help="GPU bfloat16, CPU float32")
    add("--reference-attn", default="eager", help="transformers attention of the reference mode")
    add(
        "--fast-attn", default="sdpa", help="transformers attention of the fast mode: sdpa, flash_attention_2"
    )
    add("--compile", action="store_true", help="fast mode: torch.compile SAM2 encoder, projector, decoder")
    add(
        "--peak-tflops",
        type=float,
        default=None,
        help=f"peak dense bf16 TFLOP/s for the MFU; default on CUDA {DEFAULT_PEAK_TFLOPS_CUDA:g} "
        "(H100 SXM, H200); H100 PCIe 756, H100 NVL 835, A100/A800 312",
    )
    add(
        "--frame-size",
        type=frame_size_arg,
        default=None,
        help="raw frame WxH, width first (default 856x480; tiny 240x136)",
    )
    add(
        "--threads",
        type=positive,
        default=None,
        help="torch CPU threads (CPU default 1: the tiny model's ops gain nothing from more, and OpenMP "
        "stalls for whole time slices when other processes share the cores)",
    )
    add("--seed", type=int, default=0)
    add("--out", type=Path, default=None, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model = "tiny"
    if args.device is None and args.model != "tiny" and not torch.cuda.is_available():
        # Falling back to the CPU would build the paper's 8.45 B parameters in fp32 (~34 GB) and fail in
        # the allocator minutes later; the CPU is for a user who asks for it by name.
        parser.error(
            f"--model {args.model} runs on a GPU unless --device says otherwise, and no CUDA device is "
            "available. Use --tiny to measure the tiny model on the CPU, --device cuda on a machine with a "
            "GPU, or --device cpu to build it on the CPU anyway (the paper's model in fp32 needs ~34 GB)."
        )
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    return args


def mode_specs(args: argparse.Namespace, device: torch.device) -> list[Mode]:
    """The requested modes, lowest precision first (the model is built in it and only ever cast up,
    which is exact, so every mode sees the same weight values).

    Raises:
        SystemExit: For float16 with bfloat16, which no exact cast joins (see below).
    """
    default = "bfloat16" if device.type == "cuda" else "float32"
    specs = {
        "reference": Mode(
            name="reference",
            dtype=DTYPES[args.reference_dtype or default],
            attn=args.reference_attn,
            math_sdpa=True,
            per_frame_decode=True,
            merge_lora=False,
            compile=False,
        ),
        "fast": Mode(
            name="fast",
            dtype=DTYPES[args.fast_dtype or default],
            attn=args.fast_attn,
            math_sdpa=False,
            per_frame_decode=False,
            merge_lora=True,
            compile=args.compile,
        ),
    }
    chosen = [specs[name] for name in dict.fromkeys(args.modes)]
    dtypes = {m.dtype for m in chosen}
    if len(dtypes) > 1 and torch.float32 not in dtypes:
        # fp16 has more mantissa bits, bf16 more exponent range: a cast either way rounds or
        # overflows (87 % of the tiny model's weights change), so the modes would not share weights.
        names = ", ".join(f"--{m.name}-dtype {_dtype_name(m.dtype)}" for m in chosen)
        raise SystemExit(
            f"{names}: neither dtype holds the other's values exactly, so the two modes could not run "
            "on the same weights. Use float32 for one of them, or the same dtype for both."
        )
    return sorted(chosen, key=lambda m: torch.finfo(m.dtype).bits)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence what random-weight builds print (open_clip's "no pretrained weights", transformers'
    sub-config attention notes, deprecation warnings), restoring every setting afterwards."""
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = logging.getLogger()
    root_level, verbosity = root.level, transformers.logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        transformers.logging.set_verbosity_error()
        root.setLevel(logging.ERROR)  # open_clip logs on the root logger
        try:
            yield
        finally:
            root.setLevel(root_level)
            transformers.logging.set_verbosity(verbosity)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the markdown tables, and return (with ``--out`` also write) the report."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads is not None or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    try:
        with quiet_libraries():
            return run(args)
    finally:
        torch.set_num_threads(threads)  # a caller (e.g. a test) keeps its own setting


def run(args: argparse.Namespace) -> dict:
    """:func:`main` after argument parsing: build, measure every configuration, report."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda, but no CUDA device is available; use --device cpu (e.g. with --tiny)."
        )
    preset = PRESETS[args.model]
    frame_size = args.frame_size or preset.frame_size
    cuda = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    repeats = args.repeats if args.repeats is not None else (5 if cuda else 3)
    if args.compile:
        warmup = max(warmup, 2)  # the first call per input shape compiles
    peak_tflops = (
        args.peak_tflops if args.peak_tflops is not None else (DEFAULT_PEAK_TFLOPS_CUDA if cuda else None)
    )
    modes = mode_specs(args, device)
    ratios = list(dict.fromkeys(args.ratios))
    lengths = list(dict.fromkeys(args.clip_lengths))
    if any(not 0 < r <= 1 for r in ratios):
        raise SystemExit(f"--ratios must lie in (0, 1]; got {ratios}")

    config = compose_config(args.model, args.override)
    begin = time.perf_counter()
    model = build_random_model(config, device, modes[0].dtype, args.seed)
    build_seconds = time.perf_counter() - begin
    temporal = model.mllm.hf_model.config.vision_config.temporal_patch_size
    if any(t < temporal or t % temporal for t in lengths):
        raise SystemExit(
            f"Clip lengths must be multiples of the ViT's temporal patch ({temporal}); got {lengths}"
        )
    processor = make_processor(model, preset.budget)
    mllm_h, mllm_w = smart_resize(frame_size[1], frame_size[0], factor=processor.factor, budget=preset.budget)
    hooks = StageHooks(model)
    frames = synthetic_clip(max(lengths), *frame_size, seed=args.seed)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"# {args.model}: {parameters / 1e9:.3f} B parameters built on {device} in {build_seconds:.1f} s; "
        f"{len(modes)} modes × {len(ratios)} ratios × {len(lengths)} clip lengths",
        file=sys.stderr,
    )

    # Each clip length's batch waits on the CPU and only the measured one is on the device, so a
    # configuration's resident and peak memory hold its own input batch, not every clip length's.
    host_batches: dict[int, LavidaBatch] = {}
    processing_ms: dict[int, float] = {}
    flops: dict[tuple[str, float, int], dict[str, float]] = {}
    measurements: list[Measurement] = []
    context: dict[str, Any] = {
        "meta": {
            "model": args.model,
            "overrides": args.override,
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device)
            if cuda
            else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
            "parameters": parameters,
            "frame_size": list(frame_size),
            "mllm_frame_size": [mllm_w, mllm_h],
            "sam_size": model.mask_decoder.image_size,
            "num_categories": len(SHANGHAITECH_CATEGORIES),
            "ratios": ratios,
            "clip_lengths": lengths,
            "modes": [m.name for m in modes],
            "mode_specs": [
                {
                    "name": m.name,
                    "dtype": _dtype_name(m.dtype),
                    "attn": m.attn,
                    "math_sdpa": m.math_sdpa,
                    "per_frame_decode": m.per_frame_decode,
                    "merge_lora": m.merge_lora,
                    "compile": m.compile,
                }
                for m in modes
            ],
            "warmup": warmup,
            "repeats": repeats,
            "peak_tflops": peak_tflops,
            "headline": headline(ratios, lengths),
            "build_seconds": build_seconds,
            "torch": torch.__version__,
            "transformers": importlib.metadata.version("transformers"),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),  # the start
        },
        "paper": {
            "gpu": PAPER_GPU,
            "tab2_fps": PAPER_TAB2_FPS,
            "tab2_ms_per_frame": PAPER_TAB2_MS,
            "tab4_llm_ms_per_frame": {str(k): v for k, v in PAPER_TAB4_LLM_MS.items()},
            "tab7": {
                str(k): dict(zip(("fps", "mask_decoding_ms", "others_ms"), v, strict=True))
                for k, v in PAPER_TAB7.items()
            },
            "fig7b_memory_at_0.2": PAPER_FIG7B_MEMORY_AT_0_2,
        },
    }

    def report_so_far(*, complete: bool) -> dict[str, Any]:
        report: dict[str, Any] = {**context, "meta": {**context["meta"], "complete": complete}}
        report["results"] = [
            summarise(m, flops[(m.mode, m.ratio, m.clip_length)], peak_tflops, processing_ms[m.clip_length])
            for m in measurements
        ]
        if {"reference", "fast"} <= {m.name for m in modes}:
            report.update(agreement_report(measurements, modes))
        report["markdown"] = render_markdown(report)
        return report

    for mode in modes:
        with applied(model, mode):
            for t in lengths:
                if t in host_batches:
                    batch = host_batches[t].to(device)
                else:
                    batch, processing_ms[t] = prepare_batch(
                        processor, frames[:t], device, args.processing_repeats
                    )
                    host_batches[t] = batch.to("cpu")
                    if cuda:
                        torch.cuda.synchronize(device)  # the copy to the host is asynchronous
                for ratio in ratios:
                    set_compression(model, ratio, config, hooks)
                    flops[(mode.name, ratio, t)] = count_flops(model, batch, hooks, device)
                    m = measure(
                        model,
                        batch,
                        hooks,
                        mode,
                        ratio=ratio,
                        clip_length=t,
                        device=device,
                        warmup=warmup,
                        repeats=repeats,
                    )
                    measurements.append(m)
                    print(
                        f"# {mode.name:9s} ratio {ratio:<4g} clip {t:2d}: {m.total_ms / t:9.3f} ms/frame "
                        f"{1e3 * t / m.total_ms:8.2f} FPS",
                        file=sys.stderr,
                    )
                    if args.out is not None:
                        # After every configuration, atomically: an interrupted run keeps what it measured.
                        write_json(args.out, report_so_far(complete=False), indent=2)
                del batch  # free this clip length's device copy before the next one is measured

    report = report_so_far(complete=True)
    print(report["markdown"])
    if args.out is not None:
        write_json(args.out, report, indent=2)
    return report


def headline(ratios: Sequence[float], lengths: Sequence[int]) -> list:
    """The paper's setting (ratio 0.2, clip length 8) where measured, else the closest measured one."""
    return [min(ratios, key=lambda r: abs(r - 0.2)), min(lengths, key=lambda t: abs(t - 8))]


if __name__ == "__main__":
    main()
