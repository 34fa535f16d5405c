"""The LAVIDA model (§3.2, Fig. 2): composition root of the five components.

clip + categories ─┬─ SemanticExtractor (Qwen2-VL, <SEG>, compression) ── f_sem (B, D_llm)   Eq. 5
                   ├─ CategoryEncoder (CLIP text, frozen) ─────────────── f_c (C, D_t)       Eq. 6
                   ├─ SAM2 image encoder (frozen) ─────────────────────── f_v (N, h·w, D_v)  Eq. 6
                   ├─ MultiScaleSemanticProjector(f_sem, f_c, f_v) ─────── f_proj (N, D_m)   Eq. 7–8
                   └─ SAM2 prompt encoder + mask decoder(f_proj, f_v) ─── masks, object logits Eq. 9
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lavida.data.types import LavidaBatch
from lavida.models.adapters import MLPAdapter
from lavida.models.compression import TokenCompressor
from lavida.models.config import LavidaConfig
from lavida.models.mask_decoder import MultiLevelMaskDecoder, build_mask_decoder
from lavida.models.mllm import SemanticExtractor, build_semantic_extractor
from lavida.models.outputs import LavidaOutput, LavidaPrediction
from lavida.models.projector import MultiScaleSemanticProjector
from lavida.models.text_encoder import CategoryEncoder, build_category_encoder

log = logging.getLogger(__name__)


class LavidaModel(nn.Module):
    """LAVIDA: frame scores and pixel masks for anomaly categories named in text.

    Args:
        mllm: The semantic extractor (f_sem).
        text_encoder: The category encoder (f_c).
        mask_decoder: SAM2 encoder (f_v) and decoder.
        projector: The multi-scale semantic projector (f_proj).
    """

    def __init__(
        self,
        *,
        mllm: SemanticExtractor,
        text_encoder: CategoryEncoder,
        mask_decoder: MultiLevelMaskDecoder,
        projector: MultiScaleSemanticProjector | MLPAdapter,
    ) -> None:
        super().__init__()
        self.mllm = mllm
        self.text_encoder = text_encoder
        self.mask_decoder = mask_decoder
        self.projector = projector

    def forward(self, batch: LavidaBatch) -> LavidaOutput:
        """Run all components on a batch (training and inference share this path)."""
        semantic = self.mllm(batch)  # f_sem, L_txt (Eq. 5)
        features = self.mask_decoder.encode_images(batch.sam_pixel_values.to(self._sam_dtype))  # f_v (Eq. 6)
        f_v, f_v_pos = features.tokens()
        f_c, category_mask = self._category_features(batch)  # f_c (Eq. 6)
        dtype = self.projector_dtype
        f_proj = self.projector(  # Eq. 7–8
            f_sem=semantic.seg_features.to(dtype),
            f_c=f_c.to(dtype),
            category_mask=category_mask,
            f_v=f_v.to(dtype),
            f_v_pos=f_v_pos.to(dtype),
            frame_to_sample=batch.frame_to_sample,
        )
        decoded = self.mask_decoder(features, f_proj.to(self._sam_dtype))  # Eq. 9
        return LavidaOutput(
            mask_logits=decoded.mask_logits,
            iou_pred=decoded.iou_pred,
            object_logits=decoded.object_logits,
            seg_features=semantic.seg_features,
            lm_loss=semantic.lm_loss,
            visual_tokens=semantic.visual_tokens,
            kept_tokens=semantic.kept_tokens,
        )

    @torch.no_grad()
    def predict(self, batch: LavidaBatch, *, gate_masks: bool = True) -> LavidaPrediction:
        """Frame scores (sigmoid of the object logit) and the best mask per frame.

        Runs in eval mode whatever mode the model is in (LoRA's dropout would make the scores random),
        and leaves the mode as it found it.
        """
        training = self.training
        self.eval()
        try:
            return LavidaPrediction.from_output(self(batch), gate_masks=gate_masks)
        finally:
            self.train(training)

    def _category_features(self, batch: LavidaBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode all categories at once and pad them per sample (Eq. 6, f_c).

        Returns:
            (B, K, D_t) features, K = the largest category count, each sample's categories in their
            batch order; and the (B, K) bool validity mask.
        """
        features = self.text_encoder(batch.category_tokens)  # (C, D_t)
        owner = batch.category_to_sample
        counts = torch.bincount(owner, minlength=batch.batch_size)
        if bool((counts == 0).any()):
            raise ValueError("Every sample needs at least one category; some sample has none.")
        starts = torch.cumsum(counts, dim=0) - counts
        # Slot of a category = its rank among its own sample's categories. A stable sort by owner
        # gives that rank for any order of the rows (the processor emits them grouped by sample, but
        # a hand-built batch may interleave them; a plain `arange - start` would then misplace rows).
        grouped = torch.sort(owner, stable=True).indices
        slot = torch.empty_like(owner)
        slot[grouped] = torch.arange(owner.shape[0], device=owner.device) - starts[owner[grouped]]
        padded = features.new_zeros(batch.batch_size, int(counts.max()), features.shape[-1])
        padded[owner, slot] = features
        mask = torch.zeros(padded.shape[:2], dtype=torch.bool, device=owner.device)
        mask[owner, slot] = True
        return padded, mask

    @property
    def _sam_dtype(self) -> torch.dtype:
        return self.mask_decoder.sam.no_memory_embedding.dtype

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_lavida(config: LavidaConfig | dict) -> LavidaModel:
    """Build the full model from its configuration (weights from the configured local paths)."""
    if isinstance(config, dict):
        config = LavidaConfig.from_dict(config)
    check_base_weights(config)
    compression = config.compression
    compressor = None
    # CompressionConfig guarantees 0 < ratio <= 1; ratio 1.0 keeps every token, i.e. no compression.
    if compression.enabled and compression.ratio < 1.0:
        compressor = TokenCompressor(ratio=compression.ratio, k=compression.k, density=compression.density)
    m = config.mllm
    mllm = build_semantic_extractor(
        family=m.family,
        pretrained=m.pretrained,
        arch=m.arch,
        lora=m.lora,
        compressor=compressor,
        positions=m.positions,
        dtype=config.dtype,
        attn_implementation=m.attn_implementation,
        gradient_checkpointing=m.gradient_checkpointing,
    )
    t = config.text_encoder
    text_encoder = build_category_encoder(
        model_name=t.model_name, pretrained=t.pretrained, arch=t.arch, dtype=config.dtype
    )
    d = config.mask_decoder
    p = config.projector
    mask_decoder = build_mask_decoder(
        pretrained=d.pretrained,
        arch=d.arch,
        prompt_dim=p.out_dim,
        prompt_embedding=d.prompt_embedding,
        train_image_encoder=d.train_image_encoder,
        dtype=config.dtype,
    )
    if p.kind == "mlp":
        projector = MLPAdapter(llm_dim=mllm.hidden_size, out_dim=p.out_dim, hidden_dim=p.hidden_dim)
    elif p.kind in ("multiscale", "qformer"):
        projector = MultiScaleSemanticProjector(
            llm_dim=mllm.hidden_size,
            text_dim=text_encoder.dim,
            vision_dim=mask_decoder.feature_dim,
            out_dim=p.out_dim,
            hidden_dim=p.hidden_dim,
            num_queries=p.num_queries,
            num_layers=p.num_layers,
            num_heads=p.num_heads,
            mlp_dim=p.mlp_dim,
            cross_attn_heads=p.cross_attn_heads,
            attention_downsample_rate=p.attention_downsample_rate,
            eq7=p.eq7,
            two_way=p.kind == "multiscale",
        )
    else:
        raise ValueError(f"model.projector.kind must be multiscale, qformer or mlp; got '{p.kind}'.")
    projector = projector.to(getattr(torch, config.dtype))
    model = LavidaModel(mllm=mllm, text_encoder=text_encoder, mask_decoder=mask_decoder, projector=projector)
    log.info(
        "LAVIDA built: %.3f B parameters, %.2f M trainable",
        sum(p.numel() for p in model.parameters()) / 1e9,
        model.trainable_parameter_count() / 1e6,
    )
    return model


# Where the paper's configs read each base model's path from (lavida/configs/model/*/*.yaml).
_PATH_VARIABLES = {
    "mllm": {"qwen2_vl": "LAVIDA_QWEN2VL_PATH", "qwen2_5_vl": "LAVIDA_QWEN2_5VL_PATH"},
    "text_encoder": "LAVIDA_CLIP_PATH",
    "mask_decoder": "LAVIDA_SAM2_PATH",
}


def path_variable(section: str, mllm_family: str) -> str:
    """The environment variable the paper's configs read ``section``'s base-model path from (README, step 1)."""
    variable = _PATH_VARIABLES[section]
    return variable[mllm_family] if isinstance(variable, dict) else variable


def check_base_weights(config: LavidaConfig) -> None:
    """Fail before anything loads if a base model's weights are missing.

    With ``base_weights="required"`` every component needs a ``pretrained`` path (an unset environment
    variable would otherwise build a random 7B model and train on it without a word). Every given path
    is checked for the files its loader needs, so a wrong SAM2 path is reported before the MLLM's
    15 GB are read.

    Raises:
        WeightsNotFoundError: naming each missing or incomplete base model and how to provide it.
    """
    from lavida.models.mask_decoder import SAM2_HINT, SAM2_REQUIRED_FILES
    from lavida.models.qwen_processor import QWEN_HINT, QWEN_REQUIRED_FILES
    from lavida.models.text_encoder import check_clip_weights
    from lavida.models.weights import WeightsNotFoundError, check_pretrained_dir

    if config.base_weights == "required":
        unset = []
        for section in ("mllm", "text_encoder", "mask_decoder"):
            if getattr(config, section).pretrained is None:
                variable = path_variable(section, config.mllm.family)
                unset.append(f"  - model.{section}.pretrained (environment variable {variable})")
        if unset:
            raise WeightsNotFoundError(
                "No local weights are configured for:\n"
                + "\n".join(unset)
                + "\nLAVIDA fine-tunes pretrained "
                "base models and never downloads them: set the variables to the local copies (README, step 1), "
                "or pass model.<part>.pretrained=PATH. Random base models are only for smoke runs: "
                "model.base_weights=optional."
            )
    if config.mllm.pretrained is not None:
        check_pretrained_dir(
            config.mllm.pretrained,
            what=f"{config.mllm.family} model",
            required=QWEN_REQUIRED_FILES,
            hint=QWEN_HINT,
        )
    if config.text_encoder.pretrained is not None:
        check_clip_weights(config.text_encoder.pretrained)
    if config.mask_decoder.pretrained is not None:
        check_pretrained_dir(
            config.mask_decoder.pretrained, what="SAM2", required=SAM2_REQUIRED_FILES, hint=SAM2_HINT
        )
