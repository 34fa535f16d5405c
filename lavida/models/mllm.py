"""Anomaly semantics extraction (§3.5, Eq. 5): Qwen2-VL with ``<SEG>``, LoRA and token compression.

Data flow for a batch (shapes in the notation of ``lavida.data.types``):

1. 3-D M-RoPE position ids of the full sequence, (3, B, L), from the uncompressed token ids.
2. The frozen vision tower (ViT + 2×2 merger) turns patches into visual tokens, D = LLM width.
3. Per sample, all visual tokens of the clip are compressed by reverse attention (§3.4, Eq. 3–4);
   the kept tokens sit at the positions of the background tokens and keep those positions' ids.
4. The language model (LoRA on q/v) runs on the shortened sequence.
5. f_sem = last-layer hidden state at ``<SEG>``; L_txt = cross-entropy on the answer tokens, with the
   LM head applied only where a label exists (the vocabulary is 152k wide; the answer is ~8 tokens).

The text embeddings are computed with gradients on, so the trainable ``<SEG>`` row learns (the
official code rebuilt the embeddings under ``torch.no_grad`` and froze it; docs/fidelity.md).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lavida.data.types import IGNORE_INDEX, LavidaBatch
from lavida.models.compression import TokenCompressor
from lavida.models.qwen_processor import QWEN_HINT, QWEN_REQUIRED_FILES, QwenFamily, load_processor
from lavida.models.weights import WeightsNotFoundError, check_nothing_missing, check_pretrained_dir

log = logging.getLogger(__name__)

PositionMode = Literal["mrope", "sequential"]


@dataclass
class LoraSettings:
    """LoRA on the language model (B.5: r = 8, α = 16; dropout 0.05 and q/v targets as the official code).

    Attributes:
        r: Rank.
        alpha: Scaling numerator (scale = alpha / r).
        dropout: Dropout on the LoRA input.
        target_modules: Projection names inside the language model's attention to adapt.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class MllmOutput:
    """What the semantic extractor returns.

    Attributes:
        seg_features: (B, D_llm) f_sem, the last-layer hidden state at ``<SEG>`` (Eq. 5).
        lm_loss: Scalar L_txt (mean cross-entropy over answer tokens), or None without labels.
        visual_tokens: (B,) int64 visual tokens per sample before compression.
        kept_tokens: (B,) int64 visual tokens per sample after compression.
    """

    seg_features: torch.Tensor
    lm_loss: torch.Tensor | None
    visual_tokens: torch.Tensor
    kept_tokens: torch.Tensor


class SemanticExtractor(nn.Module):
    """Qwen2-VL (or Qwen2.5-VL) that reads a clip and a category prompt and returns f_sem.

    Args:
        model: A ``Qwen2VLForConditionalGeneration`` (or Qwen2.5-VL), optionally wrapped by PEFT.
        seg_token_id: Token id of ``<SEG>``.
        compressor: Reverse-attention compressor applied per sample to the visual tokens; None keeps all.
        positions: ``"mrope"`` keeps each kept token's original 3-D M-RoPE ids (our default);
            ``"sequential"`` numbers the shortened sequence 0, 1, 2, ... as the official code ends up doing.
        processor: The matching Qwen processor, kept for building inputs (optional).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        seg_token_id: int,
        compressor: TokenCompressor | None,
        positions: PositionMode = "mrope",
        processor=None,
    ) -> None:
        super().__init__()
        if positions not in ("mrope", "sequential"):
            raise ValueError(f"positions must be 'mrope' or 'sequential', got '{positions}'.")
        self.model = model
        self.compressor = compressor
        self.seg_token_id = seg_token_id
        self.positions = positions
        self.processor = processor  # the matching Qwen processor (plain attribute, not a module)

    # -- structure ---------------------------------------------------------------------------------

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (LoRA layers injected if PEFT wraps it)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def hidden_size(self) -> int:
        return self.hf_model.config.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.hf_model.config.text_config.vocab_size

    # -- forward -----------------------------------------------------------------------------------

    def forward(self, batch: LavidaBatch) -> MllmOutput:
        packed, visual_counts, kept_counts = self._prepare(batch)
        hidden = self.hf_model.model.language_model(
            inputs_embeds=packed.embeds,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
            use_cache=False,
        ).last_hidden_state  # (B, L', D), after the final norm
        hf = self.hf_model

        # 5. f_sem at <SEG> (Eq. 5) and L_txt on the answer tokens.
        seg_features = self._seg_features(hidden, packed.input_ids)
        lm_loss = None
        if packed.labels is not None:
            lm_loss = _answer_cross_entropy(hidden, packed.labels, hf.get_output_embeddings())
        return MllmOutput(
            seg_features=seg_features, lm_loss=lm_loss, visual_tokens=visual_counts, kept_tokens=kept_counts
        )

    def _prepare(self, batch: LavidaBatch) -> tuple[_Packed, torch.Tensor, torch.Tensor]:
        """Steps 1–4: M-RoPE ids, visual tokens, compression, packing. Returns the packed sequence and the
        visual-token counts per sample before and after compression."""
        hf = self.hf_model
        core = hf.model  # Qwen2VLModel: .visual, .language_model, .get_rope_index
        input_ids, attention_mask = batch.input_ids, batch.attention_mask
        cfg = hf.config
        visual_mask = (input_ids == cfg.image_token_id) | (input_ids == cfg.video_token_id)
        visual_mask &= attention_mask.bool()

        # 1. 3-D M-RoPE ids of the uncompressed sequence (Qwen2-VL's own rule).
        rope_kwargs = {}
        if batch.second_per_grid_ts is not None:
            rope_kwargs["second_per_grid_ts"] = batch.second_per_grid_ts
        position_ids, _ = core.get_rope_index(
            input_ids=input_ids,
            mm_token_type_ids=batch.mm_token_type_ids,
            image_grid_thw=batch.image_grid_thw,
            video_grid_thw=batch.video_grid_thw,
            attention_mask=attention_mask,
            **rope_kwargs,
        )

        # 2. Visual tokens (the vision tower is frozen), scattered into a (B, L, D) canvas.
        text_embeds = hf.get_input_embeddings()(input_ids)
        visual = self._visual_tokens(batch, input_ids, text_embeds)

        # 3. Reverse-attention compression per sample, over all frames of its clip (§3.4).
        keep = attention_mask.bool() & ~visual_mask
        visual_counts = visual_mask.sum(dim=1)
        kept_counts = visual_counts.clone()
        if self.compressor is not None and visual_mask.any():
            visual = visual.clone()
            for b in range(input_ids.shape[0]):
                slots = visual_mask[b].nonzero(as_tuple=True)[0]
                if slots.numel() == 0:
                    continue
                result = self.compressor(visual[b, slots])
                kept_slots = slots[result.keep]
                visual[b, kept_slots] = result.tokens.to(visual.dtype)
                keep[b, kept_slots] = True
                kept_counts[b] = kept_slots.numel()
        else:
            keep |= visual_mask
        embeds = torch.where(visual_mask.unsqueeze(-1), visual, text_embeds)

        # 4. Shorten the sequence to the kept positions (the language model runs on it).
        packed = _pack(
            keep, embeds=embeds, input_ids=input_ids, labels=batch.labels, position_ids=position_ids
        )
        if self.positions == "sequential":
            sequential = (packed.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
            packed.position_ids = sequential.unsqueeze(0).expand(3, -1, -1)
        return packed, visual_counts, kept_counts

    @torch.no_grad()
    def generate(self, batch: LavidaBatch, *, max_new_tokens: int = 64) -> list[int]:
        """Greedy decoding from a prompt that ends with the assistant header (one sample, B = 1).

        The visual tokens are compressed exactly as for detection (§3.4; supplement D.1.4 uses this for
        explanations). Decoding continues the 1-D position after the largest prompt position, as Qwen2-VL
        does after its 3-D vision ids.

        Returns:
            The generated token ids (without the prompt), stopping at ``<|im_end|>``.
        """
        if batch.batch_size != 1:
            raise ValueError(f"generate() takes one sample, got a batch of {batch.batch_size}.")
        packed, _, _ = self._prepare(batch)
        hf = self.hf_model
        language_model = hf.model.language_model
        embed, head = hf.get_input_embeddings(), hf.get_output_embeddings()
        end = hf.config.text_config.eos_token_id
        ends = set(end) if isinstance(end, list) else {end}
        output = language_model(
            inputs_embeds=packed.embeds,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
            use_cache=True,
        )
        cache, mask = output.past_key_values, packed.attention_mask
        position = int(packed.position_ids.max()) + 1
        token = int(head(output.last_hidden_state[:, -1]).argmax(-1))
        generated = [token]
        while token not in ends and len(generated) < max_new_tokens:
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
            step = torch.full((3, 1, 1), position, dtype=packed.position_ids.dtype, device=mask.device)
            ids = torch.tensor([[token]], device=mask.device)
            output = language_model(
                inputs_embeds=embed(ids),
                attention_mask=mask,
                position_ids=step,
                past_key_values=cache,
                use_cache=True,
            )
            cache, position = output.past_key_values, position + 1
            token = int(head(output.last_hidden_state[:, -1]).argmax(-1))
            generated.append(token)
        return generated

    def _visual_tokens(self, batch: LavidaBatch, input_ids: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Run the frozen vision tower and place its tokens at their placeholder positions: (B, L, D).

        Images and videos go through the tower in one call (each item is attended to on its own, so
        this changes nothing but the call count): under ZeRO-3 every module call gathers parameters
        across processes, and a process whose batch held images and videos called the tower twice
        while one with videos only called it once, a collective mismatch.
        """
        core = self.hf_model.model
        cfg = self.hf_model.config
        canvas = torch.zeros_like(like)
        streams = (
            (batch.pixel_values, batch.image_grid_thw, cfg.image_token_id),
            (batch.pixel_values_videos, batch.video_grid_thw, cfg.video_token_id),
        )
        present = []  # (grid, placeholder mask, token id) of the streams with pixels
        for pixels, grid, token_id in streams:
            slots = input_ids == token_id
            if pixels is None:
                if slots.any():
                    raise ValueError(
                        f"The batch has {int(slots.sum())} placeholder tokens (id {token_id}) but no pixels "
                        "for them; the processor and the batch disagree."
                    )
                continue
            present.append((grid, slots, token_id))
        if not present:
            return canvas
        pixels = torch.cat([p for p, _, _ in streams if p is not None], dim=0)
        grids = torch.cat([grid for grid, _, _ in present], dim=0)
        with torch.no_grad():  # the vision tower is frozen (B.2); nothing upstream needs a gradient
            per_item = core.get_image_features(pixels, grids).pooler_output  # video grids work alike
        start = 0
        for grid, slots, token_id in present:
            tokens = torch.cat(per_item[start : start + grid.shape[0]], dim=0)
            start += grid.shape[0]
            if tokens.shape[0] != int(slots.sum()):
                raise ValueError(
                    f"The vision tower produced {tokens.shape[0]} tokens for {int(slots.sum())} placeholders "
                    f"(id {token_id}); check the grid_thw of the batch."
                )
            canvas = canvas.masked_scatter(slots.unsqueeze(-1), tokens.to(canvas.dtype))
        return canvas

    def _seg_features(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        is_seg = input_ids == self.seg_token_id
        counts = is_seg.sum(dim=1)
        if not bool((counts == 1).all()):
            bad = [(b, int(c)) for b, c in enumerate(counts.tolist()) if c != 1]
            raise ValueError(
                f"Every sample needs exactly one <SEG> token in its answer; (sample, count) = {bad}. "
                "Build prompts with lavida.data.prompts, which strips '<SEG>' from category names."
            )
        return hidden[is_seg]  # (B, D), rows in batch order


@dataclass
class _Packed:
    embeds: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None


def _pack(
    keep: torch.Tensor,
    *,
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor | None,
    position_ids: torch.Tensor,
) -> _Packed:
    """Move the kept positions of every row to the front (right padding), all tensors alike.

    Args:
        keep: (B, L) bool, the positions to keep (padding already False).
        embeds: (B, L, D); input_ids, labels: (B, L); position_ids: (3, B, L).

    Returns:
        The shortened tensors with L' = max kept per row; padding has attention 0, label -100, id 0.
    """
    batch_size = keep.shape[0]
    length = int(keep.sum(dim=1).max())
    rows, cols = keep.nonzero(as_tuple=True)
    dest = (keep.cumsum(dim=1) - 1)[rows, cols]

    new_embeds = embeds.new_zeros(batch_size, length, embeds.shape[-1])
    new_embeds = new_embeds.index_put((rows, dest), embeds[rows, cols])  # differentiable scatter
    new_ids = input_ids.new_zeros(batch_size, length)
    new_ids[rows, dest] = input_ids[rows, cols]
    new_mask = input_ids.new_zeros(batch_size, length)
    new_mask[rows, dest] = 1
    new_pos = position_ids.new_zeros(3, batch_size, length)
    new_pos[:, rows, dest] = position_ids[:, rows, cols]
    new_labels = None
    if labels is not None:
        new_labels = labels.new_full((batch_size, length), IGNORE_INDEX)
        new_labels[rows, dest] = labels[rows, cols]
    return _Packed(new_embeds, new_ids, new_mask, new_pos, new_labels)


def _answer_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    """L_txt: next-token cross-entropy, the LM head applied only at positions that predict a label.

    Equivalent to HF's shifted loss (mean over supervised tokens) without materialising (B, L, V) logits.
    """
    targets = labels[:, 1:]
    rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return hidden.sum() * 0.0
    logits = lm_head(hidden[rows, cols])  # (n, V): the state at t predicts token t + 1
    return F.cross_entropy(logits.float(), targets[rows, cols])


# -- building ---------------------------------------------------------------------------------------


def build_semantic_extractor(
    *,
    family: QwenFamily = "qwen2_vl",
    pretrained: str | None = None,
    arch: dict | None = None,
    lora: LoraSettings | dict | None = None,
    compressor: TokenCompressor | None = None,
    positions: PositionMode = "mrope",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
) -> SemanticExtractor:
    """Build the semantic extractor from a local checkpoint or from an architecture dict.

    Args:
        family: ``"qwen2_vl"`` (the paper's Qwen2-VL-7B-Instruct) or ``"qwen2_5_vl"``.
        pretrained: Local directory of the model (config, safetensors, tokenizer, processor). ``None``
            builds ``arch`` with random weights (tests, tiny configs, ``lavida-info``, benchmarks).
        arch: ``Qwen2VLConfig`` keyword arguments, used when ``pretrained`` is None.
        lora: LoRA settings; None leaves the LLM frozen (an ablation) — ``<SEG>`` rows still train.
        compressor: Token compressor (§3.4); None disables compression.
        positions: Position ids of kept visual tokens, see :class:`SemanticExtractor`.
        dtype: Parameter dtype (``"float32"`` on CPU, ``"bfloat16"`` on GPU).
        attn_implementation: ``"sdpa"``, ``"eager"`` or ``"flash_attention_2"``.
        gradient_checkpointing: Recompute LLM activations in backward (saves memory on GPU).
    """
    model, processor = load_base_mllm(
        family=family, pretrained=pretrained, arch=arch, dtype=dtype, attn_implementation=attn_implementation
    )
    seg_token_id = processor.tokenizer.convert_tokens_to_ids("<SEG>")
    model.requires_grad_(False)
    model = _apply_lora(model, lora=lora, seg_token_id=seg_token_id)
    if gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    log.info(
        "Built %s (%s), <SEG> id %d, compression %s, positions %s",
        family,
        pretrained or "random init",
        seg_token_id,
        compressor,
        positions,
    )
    return SemanticExtractor(
        model=model,
        seg_token_id=seg_token_id,
        compressor=compressor,
        positions=positions,
        processor=processor,
    )


def load_base_mllm(
    *,
    family: QwenFamily = "qwen2_vl",
    pretrained: str | None = None,
    arch: dict | None = None,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
):
    """The plain transformers model and its processor (``<SEG>`` added), without LoRA.

    Args: as :func:`build_semantic_extractor`.

    Returns:
        ``(model, processor)``; the embedding has room for ``<SEG>``.
    """
    processor = load_processor(pretrained, family=family, vision=(arch or {}).get("vision_config"))
    torch_dtype = getattr(torch, dtype)
    model_class = _model_class(family)
    if pretrained is None:
        if arch is None:
            raise ValueError("The MLLM needs either `pretrained` (a local directory) or `arch`.")
        config = _config_from_arch(family, arch, processor.tokenizer)
        config._attn_implementation = attn_implementation
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch_dtype)
        try:
            model = model_class(config)
        finally:
            torch.set_default_dtype(previous)
    else:
        directory = check_pretrained_dir(
            pretrained, what=f"{family} model", required=QWEN_REQUIRED_FILES, hint=QWEN_HINT
        )
        model = _from_pretrained(model_class, directory, torch_dtype, attn_implementation)
    _ensure_vocabulary(model, len(processor.tokenizer))
    return model, processor


def _model_class(family: QwenFamily):
    if family == "qwen2_vl":
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration
    raise ValueError(f"Unknown MLLM family '{family}'; expected 'qwen2_vl' or 'qwen2_5_vl'.")


def _config_from_arch(family: QwenFamily, arch: dict, tokenizer):
    """A model config from ``arch`` whose special-token ids are the tokenizer's (never constants)."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    config_class = Qwen2VLConfig if family == "qwen2_vl" else Qwen2_5_VLConfig
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _TOKEN_FIELDS.items()}
    text = dict(arch.get("text_config", {}))
    text.setdefault("eos_token_id", tokenizer.convert_tokens_to_ids("<|im_end|>"))
    text.setdefault("pad_token_id", tokenizer.pad_token_id)
    text.setdefault("bos_token_id", None)
    rest = {k: v for k, v in arch.items() if k not in ("text_config", "vision_config")}
    return config_class(text_config=text, vision_config=dict(arch.get("vision_config", {})), **ids, **rest)


_TOKEN_FIELDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def _from_pretrained(model_class, directory: Path, torch_dtype: torch.dtype, attn_implementation: str):
    try:
        model, loading = model_class.from_pretrained(
            str(directory),
            dtype=torch_dtype,
            attn_implementation=attn_implementation,
            local_files_only=True,
            output_loading_info=True,
        )
    except Exception as error:  # noqa: BLE001 - safetensors, OSError, ValueError...: all mean unusable files
        raise WeightsNotFoundError(
            f"Could not load the MLLM from '{directory}': {error}\nThe files may be truncated or from another "
            f"model family. {QWEN_HINT}"
        ) from error
    check_nothing_missing(loading, directory=directory, what="MLLM", hint=QWEN_HINT)
    return model


def _ensure_vocabulary(model: nn.Module, tokenizer_size: int) -> None:
    """Grow the embeddings if ``<SEG>`` does not fit; never shrink them.

    Qwen2-VL-7B's embedding has 152,064 rows for a 151,657-token tokenizer, so ``<SEG>`` (id 151,657)
    takes an existing spare row. The official code called ``resize_token_embeddings(len(tokenizer))``,
    which shrinks both matrices to 151,658 rows; we keep the checkpoint's shape (docs/fidelity.md).
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer_size > rows:
        model.resize_token_embeddings(tokenizer_size, mean_resizing=True)


def _apply_lora(model: nn.Module, *, lora: LoraSettings | dict | None, seg_token_id: int) -> nn.Module:
    """Wrap with PEFT: LoRA on the language model's q/v only, ``<SEG>`` rows of embedding and LM head trainable.

    The target regex is anchored on ``language_model``, so the vision tower (whose attention uses
    ``qkv``/``proj``) and anything outside this Qwen model can never receive an adapter.
    """
    from peft import LoraConfig

    token_layers = {"embed_tokens": [seg_token_id]}
    if not _embeddings_tied(model):
        token_layers["lm_head"] = [seg_token_id]
    if lora is None:
        # Frozen LLM (an ablation): only the <SEG> rows of the embedding and (untied) LM head train,
        # as with LoRA; PEFT's trainable-token adapter alone does that.
        from peft import TrainableTokensConfig

        config = TrainableTokensConfig(target_modules=list(token_layers), token_indices=[seg_token_id])
        return _peft_model(model, config)
    settings = lora if isinstance(lora, LoraSettings) else LoraSettings(**lora)
    targets = "|".join(settings.target_modules)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        bias="none",
        target_modules=rf".*language_model\.layers\.\d+\.self_attn\.({targets})",
        trainable_token_indices=token_layers,
    )
    return _peft_model(model, config)


def _peft_model(model: nn.Module, config) -> nn.Module:
    """``peft.get_peft_model`` without transformers' deprecation notice that PEFT itself triggers.

    PEFT 0.21's ``PeftModel.__init__`` reads ``model.is_gradient_checkpointing``, which transformers 5
    deprecated (FutureWarning, "use is_activation_checkpointing") in favour of a property PEFT does not
    read yet; no argument of ours avoids the read. The notice, printed by every model build, asks PEFT's
    authors (not lavida's users) to change something, so exactly that message is ignored here, for this
    call only. Remove this once the pinned PEFT reads ``is_activation_checkpointing``.
    """
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return get_peft_model(model, config)


def _embeddings_tied(model: nn.Module) -> bool:
    """Whether the LM head shares the input embedding matrix (Qwen2-VL-2B, Qwen2.5-VL-3B; not the 7B).

    PEFT gives a tied LM head the embedding's ``<SEG>`` adapter by itself; listing ``lm_head`` as well
    wraps the tied layer a second time, and with ``lora=None`` every forward then fails. transformers 5
    keeps ``tie_word_embeddings`` on the outer config (a hub config.json is flat), so the text config
    alone does not tell; the shared weight does.
    """
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is model.get_input_embeddings().weight:
        return True
    return bool(
        getattr(model.config, "tie_word_embeddings", False)
        or getattr(model.config.get_text_config(), "tie_word_embeddings", False)
    )
