"""Vision backbone and Multi-Level Mask Decoder (§3.6, §3.8, Eq. 9; B.5), on transformers' ``Sam2Model``.

- The SAM2 image encoder (Hiera + FPN neck) is frozen (B.2) and runs without gradients. Its deepest
  level f_v (256-d, 64×64 at 1024² input) and that level's sine position encoding feed the projector.
- The prompt encoder and mask decoder are trained. ``conv_s0``/``conv_s1``, which project the two
  high-resolution FPN levels for the decoder, belong to the decoder: they are applied here, outside
  the frozen encoder, so they receive gradients.
- B.5 adds "an additional embedding layer into the prompt encoder to project f_proj into the feature
  space of the mask decoder": ``prompt_embedding`` below (a Linear; the official code has none).
- f_proj[t] is frame t's only sparse prompt; the dense prompt is SAM2's "no mask" embedding. The
  decoder returns 3 masks with predicted IoUs and an object-score logit per frame, all frames of the
  batch in one call. The object-score logit is the frame-level anomaly score (§3.8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lavida.models.weights import WeightsNotFoundError, check_nothing_missing, check_pretrained_dir

log = logging.getLogger(__name__)

SAM2_REQUIRED_FILES = (("config.json",), ("model.safetensors", "model.safetensors.index.json"))
SAM2_HINT = (
    "Download the transformers port of SAM2.1 once (e.g. `hf download facebook/sam2.1-hiera-small "
    "--local-dir DIR`; -tiny, -base-plus and -large for the other sizes) and point "
    "`model.mask_decoder.pretrained` (or LAVIDA_SAM2_PATH) at DIR. An original SAM2 checkpoint (Meta's .pt "
    "file, e.g. sam2.1_hiera_small.pt) is another format and is not read."
)
# SAM2's "no object" mask value: frames whose object score is ≤ 0 get this logit everywhere.
NO_OBJECT_LOGIT = -1024.0


@dataclass
class ImageFeatures:
    """Frozen SAM2 encoder output for N frames.

    Attributes:
        top: (N, C, h, w) deepest FPN level (C = 256, h = w = S/16), f_v; the decoder's image embedding
            is this plus SAM2's no-memory embedding (:meth:`MultiLevelMaskDecoder.forward`).
        top_pos: (N, C, h, w) its sine position encoding.
        high_res: [(N, C/8, 4h, 4w), (N, C/4, 2h, 2w)] high-resolution levels after conv_s0/conv_s1.
    """

    top: torch.Tensor
    top_pos: torch.Tensor
    high_res: list[torch.Tensor]

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """f_v and its position encoding as token sequences: (N, h·w, C) each."""
        return self.top.flatten(2).transpose(1, 2), self.top_pos.flatten(2).transpose(1, 2)


@dataclass
class DecoderOutput:
    """Per-frame decoder output.

    Attributes:
        mask_logits: (N, M, 4h, 4w) low-resolution mask logits (M = 3 multimask outputs).
        iou_pred: (N, M) predicted IoU of each mask.
        object_logits: (N,) object-score logits (the frame-level anomaly score before the sigmoid).
    """

    mask_logits: torch.Tensor
    iou_pred: torch.Tensor
    object_logits: torch.Tensor


class MultiLevelMaskDecoder(nn.Module):
    """SAM2 image encoder (frozen) + prompt encoder and mask decoder (trained) + prompt embedding.

    Args:
        sam: A transformers ``Sam2Model``.
        prompt_dim: Width D_m of f_proj (the projector's output).
        prompt_embedding: ``"linear"`` — B.5's additional embedding layer, Linear(D_m → C); ``"none"`` —
            feed f_proj directly (the official code; then D_m must equal C).
        multimask_output: Predict 3 masks per frame (SAM2's multimask mode, as the official code).
        train_image_encoder: Train the image encoder too. The paper freezes it (B.2), and so do all
            shipped configs, the tiny one included (an option for experiments with random encoders).
    """

    def __init__(
        self,
        *,
        sam: nn.Module,
        prompt_dim: int,
        prompt_embedding: Literal["linear", "none"] = "linear",
        multimask_output: bool = True,
        train_image_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.sam = sam
        self.train_image_encoder = train_image_encoder
        self.multimask_output = multimask_output
        self.embed_dim = sam.config.prompt_encoder_config.hidden_size
        if prompt_embedding == "linear":
            self.prompt_embedding = nn.Linear(prompt_dim, self.embed_dim)
        elif prompt_embedding == "none":
            if prompt_dim != self.embed_dim:
                raise ValueError(
                    f"prompt_embedding='none' feeds f_proj straight into the decoder, so the projector's output "
                    f"width ({prompt_dim}) must equal SAM2's prompt width ({self.embed_dim})."
                )
            self.prompt_embedding = nn.Identity()
        else:
            raise ValueError(f"prompt_embedding must be 'linear' or 'none', got '{prompt_embedding}'.")
        # Frozen image encoder (B.2); everything used by the decoder trains.
        self.sam.requires_grad_(False)
        for module in (self.sam.prompt_encoder, self.sam.mask_decoder):
            module.requires_grad_(True)
        if train_image_encoder:
            self.sam.vision_encoder.requires_grad_(True)
        self.sam.prompt_encoder.mask_embed.requires_grad_(False)  # no mask prompts: never used
        self.sam.prompt_encoder.point_embed.requires_grad_(False)  # no point prompts: never used
        self.sam.prompt_encoder.not_a_point_embed.requires_grad_(False)

    @property
    def image_size(self) -> int:
        return self.sam.config.prompt_encoder_config.image_size

    @property
    def feature_dim(self) -> int:
        """Width C of the deepest image features f_v (D_v = 256 in B.5)."""
        return self.sam.config.vision_config.fpn_hidden_size

    def train(self, mode: bool = True) -> MultiLevelMaskDecoder:
        super().train(mode)
        if not self.train_image_encoder:
            self.sam.vision_encoder.eval()  # frozen encoder: always inference behaviour
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """(N, 3, S, S) normalised frames → :class:`ImageFeatures` (frozen encoder, trainable convs)."""
        with torch.set_grad_enabled(self.train_image_encoder and torch.is_grad_enabled()):
            encoded = self.sam.vision_encoder(pixel_values)
        levels = encoded.fpn_hidden_states  # high → low resolution, each (N, C, H_l, W_l)
        top = levels[-1]
        top_pos = encoded.fpn_position_encoding[-1].to(top.dtype)
        decoder = self.sam.mask_decoder
        high_res = [decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1])]
        return ImageFeatures(top=top, top_pos=top_pos, high_res=high_res)

    def outside_parameters(self) -> list[nn.Parameter]:
        """SAM2 parameters that :meth:`forward` reads directly, outside their own module's forward
        (DeepSpeed ZeRO-3 gathers a shard only for its module's forward unless told otherwise)."""
        return [self.sam.no_memory_embedding]

    def forward(self, features: ImageFeatures, prompts: torch.Tensor) -> DecoderOutput:
        """Decode every frame with its own prompt (Eq. 9), all frames in one batched call.

        Args:
            features: Image features of N frames.
            prompts: (N, D_m) f_proj, one prompt per frame.
        """
        num_frames = prompts.shape[0]
        sam = self.sam
        # SAM2 adds a learned "no memory" embedding to the image embedding of a frame decoded without
        # memory (every frame here; the official code did it for video frames only).
        image_embeddings = features.top + sam.no_memory_embedding.reshape(1, -1, 1, 1)
        image_pe = sam.get_image_wide_positional_embeddings().expand(num_frames, -1, -1, -1)
        sparse = self.prompt_embedding(prompts).reshape(
            num_frames, 1, 1, self.embed_dim
        )  # (N, 1 point-batch, 1 token, C)
        height, width = image_embeddings.shape[-2:]
        # The no-mask embedding through its module's forward, not `.weight`: under ZeRO-3 a trained
        # weight read outside its module arrives as an empty shard in backward.
        no_mask = sam.prompt_encoder.no_mask_embed(torch.zeros(1, dtype=torch.long, device=prompts.device))
        dense = no_mask.reshape(1, -1, 1, 1).expand(num_frames, -1, height, width)
        masks, iou_pred, _, object_logits = sam.mask_decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
            high_resolution_features=features.high_res,
        )
        return DecoderOutput(
            mask_logits=masks[:, 0], iou_pred=iou_pred[:, 0], object_logits=object_logits.reshape(num_frames)
        )


def build_mask_decoder(
    *,
    pretrained: str | None = None,
    arch: dict | None = None,
    prompt_dim: int = 256,
    prompt_embedding: Literal["linear", "none"] = "linear",
    train_image_encoder: bool = False,
    dtype: str = "float32",
) -> MultiLevelMaskDecoder:
    """Build SAM2 from a local transformers checkpoint directory, or ``arch`` with random weights.

    Args:
        pretrained: Directory with ``config.json`` and ``model.safetensors`` (transformers' SAM2 format,
            e.g. ``facebook/sam2.1-hiera-small``); ``None`` builds ``arch`` randomly.
        arch: ``Sam2Config`` keyword arguments (``vision_config``, ``prompt_encoder_config``,
            ``mask_decoder_config``): the architecture built when ``pretrained`` is None, and the one the
            directory's config must describe when both are given (the size the config names).
        prompt_dim: Width D_m of the projector's output.
        prompt_embedding: See :class:`MultiLevelMaskDecoder`.
        train_image_encoder: See :class:`MultiLevelMaskDecoder` (the paper: False).
        dtype: Parameter dtype.
    """
    sam = load_sam2(pretrained=pretrained, arch=arch, dtype=dtype)
    log.info(
        "Built SAM2 (%s), image size %d",
        pretrained or "random init",
        sam.config.prompt_encoder_config.image_size,
    )
    decoder = MultiLevelMaskDecoder(
        sam=sam,
        prompt_dim=prompt_dim,
        prompt_embedding=prompt_embedding,
        train_image_encoder=train_image_encoder,
    )
    return decoder.to(getattr(torch, dtype))  # the new prompt embedding layer in the model's dtype too


def load_sam2(*, pretrained: str | None = None, arch: dict | None = None, dtype: str = "float32"):
    """The transformers ``Sam2Model``, from a local directory or ``arch``. Args as :func:`build_mask_decoder`.

    Raises:
        WeightsNotFoundError: the directory is missing or incomplete, its files are unreadable or lack a
            tensor of the model, or it holds another SAM2 size than ``arch``.
    """
    from transformers import Sam2Config, Sam2Model

    torch_dtype = getattr(torch, dtype)
    if pretrained is None:
        if arch is None:
            raise ValueError("SAM2 needs either `pretrained` (a local directory) or `arch`.")
        return Sam2Model(_sam2_config(Sam2Config, arch)).to(torch_dtype)
    directory = check_pretrained_dir(pretrained, what="SAM2", required=SAM2_REQUIRED_FILES, hint=SAM2_HINT)
    try:
        sam, loading = Sam2Model.from_pretrained(
            str(directory), dtype=torch_dtype, local_files_only=True, output_loading_info=True
        )
    except Exception as error:  # noqa: BLE001 - safetensors, OSError, ValueError...: all mean unusable files
        raise WeightsNotFoundError(f"Could not load SAM2 from '{directory}': {error}\n{SAM2_HINT}") from error
    check_nothing_missing(loading, directory=directory, what="SAM2", hint=SAM2_HINT)
    if arch is not None:
        _check_size(sam.config, _sam2_config(Sam2Config, arch), directory)
    return sam


# SAM2's sizes differ in their Hiera blocks per stage; the trained heads have the same shapes for all.
_SIZES = {
    (1, 2, 7, 2): "sam2.1_hiera_t",
    (1, 2, 11, 2): "sam2.1_hiera_s",
    (2, 3, 16, 3): "sam2.1_hiera_b_plus",
    (2, 6, 36, 4): "sam2.1_hiera_l",
}
# The fields that make one SAM2 architecture differ from another (not initialisation or memory settings).
_ARCHITECTURE_FIELDS = (
    "vision_config.backbone_config.hidden_size",
    "vision_config.backbone_config.blocks_per_stage",
    "vision_config.backbone_config.embed_dim_per_stage",
    "vision_config.backbone_config.num_attention_heads_per_stage",
    "vision_config.backbone_config.global_attention_blocks",
    "vision_config.backbone_config.window_size_per_stage",
    "vision_config.backbone_config.image_size",
    "vision_config.fpn_hidden_size",
    "prompt_encoder_config.image_size",
    "prompt_encoder_config.hidden_size",
    "mask_decoder_config.hidden_size",
    "mask_decoder_config.num_hidden_layers",
)


def _field(config, dotted: str):
    value = config
    for name in dotted.split("."):
        value = getattr(value, name, None)
    return list(value) if isinstance(value, (list, tuple)) else value


def _check_size(loaded, configured, directory: Path) -> None:
    """Refuse a SAM2 directory whose architecture differs from the configured one (``arch``).

    Without the check the directory's config wins silently: Hiera-L weights under the Hiera-S config
    train and report as Hiera-S, and a checkpoint trained on one size loads onto another.
    """
    differing = [
        f"{name}: {_field(loaded, name)} in the directory, {_field(configured, name)} configured"
        for name in _ARCHITECTURE_FIELDS
        if _field(loaded, name) != _field(configured, name)
    ]
    if not differing:
        return
    blocks = _field(loaded, "vision_config.backbone_config.blocks_per_stage")
    size = _SIZES.get(tuple(blocks or ()))
    choose = f"model/mask_decoder={size}" if size else "model/mask_decoder=<the directory's size>"
    raise WeightsNotFoundError(
        f"SAM2: '{directory}' holds another architecture than model.mask_decoder.arch describes:\n  "
        + "\n  ".join(differing)
        + f"\nPoint model.mask_decoder.pretrained (LAVIDA_SAM2_PATH) at the directory of the configured size, "
        f"or choose the config of the directory's size ({choose}). A LAVIDA checkpoint needs the SAM2 it "
        "was trained on."
    )


def _sam2_config(config_class, arch: dict):
    arch = {key: dict(value) if isinstance(value, dict) else value for key, value in arch.items()}
    vision = arch.get("vision_config", {})
    if "backbone_config" in vision:
        # transformers needs the sub-config's model type to pick its class.
        vision["backbone_config"] = {"model_type": "sam2_hiera_det_model", **dict(vision["backbone_config"])}
    return config_class(**arch)
