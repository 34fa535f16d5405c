"""Multi-Scale Semantic Projector (paper §3.7, Eq. 7-8).

Turns the video-level anomaly semantics of the MLLM (``f_sem``, one ``<SEG>`` feature per sample)
and the frame-level category/vision evidence (``f_a``, Eq. 7) into one prompt token per frame for
the SAM2 mask decoder (``f_proj``, Eq. 8).

Notation: B samples, N frames in the whole batch (N = sum of the samples' frame counts), K
categories per sample (padded to the batch maximum), HW vision tokens per frame, Q learnable
queries, D_a = ``hidden_dim``, D_m = ``out_dim``.

Frames are independent batch elements: a frame's output depends only on its own vision features
and on its own sample's ``f_sem`` / ``f_c``. All frames of the batch are processed in one batched
call (no per-frame or per-sample loop).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lavida.models.attention import DownsampledAttention, TwoWayBlock

__all__ = ["MultiScaleSemanticProjector"]


class MultiScaleSemanticProjector(nn.Module):
    """Eq. 7-8: category-vision cross-attention, then a two-way transformer with learnable queries.

    Defaults are the paper's and the official code's constants: D_a = 768, 48 queries, 5 layers,
    D_m = 256 (supplement B.5); 12 heads / MLP 2048 in the two-way blocks, 8 heads in the Eq. 7
    cross-attention, attention downsample 2 (official code). Every size is an argument, so a tiny
    configuration builds the same structure.

    Args:
        llm_dim: Width of ``f_sem`` (the MLLM hidden size, 3584 for Qwen2-VL-7B).
        text_dim: Width D_t of the CLIP category features ``f_c`` (512 for ViT-B/32).
        vision_dim: Width D_v of the SAM2 top-level features ``f_v`` (256).
        out_dim: Width D_m of the output prompt token (SAM2's prompt width, 256).
        hidden_dim: Projector width D_a.
        num_queries: Number Q of learnable queries.
        num_layers: Number of two-way blocks.
        num_heads: Heads of the two-way blocks.
        mlp_dim: MLP width of the two-way blocks.
        cross_attn_heads: Heads of the Eq. 7 category -> vision cross-attention.
        attention_downsample_rate: Internal-width reduction of every cross-attention.
        eq7: ``"paper"``: f_a = W_o · CrossAttn(W_c f_c, W_v f_v, W_v f_v), as Eq. 7 is printed;
            ``"official"``: f_a = W_o · LayerNorm(W_c f_c + CrossAttn(...)), the release's residual and
            LayerNorm (docs/fidelity.md).
        two_way: Update the keys from the queries in every block (the proposed projector); False gives
            the one-way Q-Former baseline of Tab. 4.
    """

    def __init__(
        self,
        *,
        llm_dim: int,
        text_dim: int,
        vision_dim: int,
        out_dim: int,
        hidden_dim: int = 768,
        num_queries: int = 48,
        num_layers: int = 5,
        num_heads: int = 12,
        mlp_dim: int = 2048,
        cross_attn_heads: int = 8,
        attention_downsample_rate: int = 2,
        eq7: Literal["paper", "official"] = "paper",
        two_way: bool = True,
    ) -> None:
        super().__init__()
        if eq7 not in ("paper", "official"):
            raise ValueError(f"eq7 must be 'paper' or 'official', got '{eq7}'.")
        for name, value in (
            ("llm_dim", llm_dim),
            ("text_dim", text_dim),
            ("vision_dim", vision_dim),
            ("out_dim", out_dim),
            ("hidden_dim", hidden_dim),
            ("num_queries", num_queries),
            ("num_layers", num_layers),
            ("mlp_dim", mlp_dim),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.llm_dim = llm_dim
        self.text_dim = text_dim
        self.vision_dim = vision_dim
        self.out_dim = out_dim
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.eq7 = eq7

        # Eq. 7: f_a = W_o · CrossAttn(W_c f_c, W_v f_v, W_v f_v)
        self.category_proj = nn.Linear(text_dim, hidden_dim)  # W_c
        self.vision_proj = nn.Linear(vision_dim, hidden_dim)  # W_v
        self.category_vision_attn = DownsampledAttention(
            dim=hidden_dim, num_heads=cross_attn_heads, downsample_rate=attention_downsample_rate
        )
        # Not in Eq. 7: the official code adds a residual and a LayerNorm before W_o.
        self.category_norm = nn.LayerNorm(hidden_dim) if eq7 == "official" else None
        self.category_out = nn.Linear(hidden_dim, hidden_dim)  # W_o

        # Eq. 8: f_proj = Φ_proj([W_LLM f_sem, f_a])
        self.semantic_proj = nn.Linear(llm_dim, hidden_dim)  # W_LLM
        # Learnable queries Q0; the official code initialises them from a standard normal.
        self.query_tokens = nn.Parameter(torch.empty(num_queries, hidden_dim))
        nn.init.normal_(self.query_tokens)
        # The last block's key update (SAM's step 4) feeds nothing downstream (the output is read
        # from the queries only), so it is not built; the query output is unchanged.
        self.blocks = nn.ModuleList(
            TwoWayBlock(
                dim=hidden_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                # Tab. 4's Q-Former baseline (two_way=False): the queries read the keys, which never change.
                update_keys=two_way and i < num_layers - 1,
            )
            for i in range(num_layers)
        )
        self.out_proj = nn.Linear(num_queries * hidden_dim, out_dim)

    def category_attention(
        self, *, f_c: Tensor, f_v: Tensor, f_v_pos: Tensor, frame_to_sample: Tensor
    ) -> Tensor:
        """Eq. 7: frame-level category semantics ``f_a``.

        Args:
            f_c: (B, K, text_dim) CLIP category features (padded rows allowed; they only
                produce their own, later masked, rows).
            f_v: (N, HW, vision_dim) deepest SAM2 features per frame.
            f_v_pos: (N, HW, vision_dim) their sine positional encoding.
            frame_to_sample: (N,) int64, the sample of each frame.

        Returns:
            f_a: (N, K, hidden_dim).
        """
        q = self.category_proj(f_c)[frame_to_sample]  # (B, K, D_a) -> (N, K, D_a)
        kv = self.vision_proj(f_v + f_v_pos)  # (N, HW, D_a); PE is added before W_v (official code)
        a = self.category_vision_attn(q, kv, kv)  # (N, K, D_a)
        if self.category_norm is None:
            return self.category_out(a)  # Eq. 7
        return self.category_out(self.category_norm(q + a))  # residual + LN (official code), then W_o

    def forward(
        self,
        *,
        f_sem: Tensor,
        f_c: Tensor,
        category_mask: Tensor,
        f_v: Tensor,
        f_v_pos: Tensor,
        frame_to_sample: Tensor,
    ) -> Tensor:
        """Compute one prompt token per frame.

        Args:
            f_sem: (B, llm_dim) the MLLM ``<SEG>`` feature of each sample.
            f_c: (B, K, text_dim) CLIP category features, padded to K = max_b K_b.
            category_mask: (B, K) bool, True = a real category, False = padding. Padded rows
                have no influence on the output whatever their values.
            f_v: (N, HW, vision_dim) deepest SAM2 features of every frame of the batch.
            f_v_pos: (N, HW, vision_dim) their positional encoding.
            frame_to_sample: (N,) int64 in [0, B), the sample each frame belongs to.

        Returns:
            f_proj: (N, out_dim).

        Raises:
            ValueError: If shapes disagree.
        """
        self._check_inputs(f_sem, f_c, category_mask, f_v, f_v_pos, frame_to_sample)
        category_mask = category_mask.to(torch.bool)
        # Zero the padded categories so that any padding value (even NaN/inf) stays harmless.
        f_c = f_c.masked_fill(~category_mask[..., None], 0.0)

        f_a = self.category_attention(
            f_c=f_c, f_v=f_v, f_v_pos=f_v_pos, frame_to_sample=frame_to_sample
        )  # (N, K, D_a), Eq. 7
        n = f_a.shape[0]
        # Eq. 8: W_LLM f_sem, expanded over the frames of its sample
        s = self.semantic_proj(f_sem)[frame_to_sample].unsqueeze(1)  # (B, D_a) -> (N, 1, D_a)
        keys = torch.cat([s, f_a], dim=1)  # (N, 1 + K, D_a)
        key_mask = torch.cat(
            [category_mask.new_ones(n, 1), category_mask[frame_to_sample]], dim=1
        )  # (N, 1 + K); the f_sem token is always real
        key_pe = keys  # the block input is its own PE, fixed across layers (SAM / official code)
        query_pe = self.query_tokens.to(keys.dtype).unsqueeze(0)  # (1, Q, D_a), broadcast over N
        queries = query_pe.expand(n, -1, -1)  # (N, Q, D_a)
        for block in self.blocks:
            queries, keys = block(queries, keys, query_pe=query_pe, key_pe=key_pe, key_padding_mask=key_mask)
        return self.out_proj(queries.flatten(1))  # (N, Q·D_a) -> (N, D_m)

    def _check_inputs(
        self,
        f_sem: Tensor,
        f_c: Tensor,
        category_mask: Tensor,
        f_v: Tensor,
        f_v_pos: Tensor,
        frame_to_sample: Tensor,
    ) -> None:
        # Shape-only checks: no data-dependent test, so no device synchronisation.
        if f_sem.ndim != 2 or f_sem.shape[1] != self.llm_dim:
            raise ValueError(f"f_sem must be (B, llm_dim={self.llm_dim}), got {tuple(f_sem.shape)}")
        b = f_sem.shape[0]
        if f_c.ndim != 3 or f_c.shape[0] != b or f_c.shape[2] != self.text_dim:
            raise ValueError(f"f_c must be (B={b}, K, text_dim={self.text_dim}), got {tuple(f_c.shape)}")
        if category_mask.shape != f_c.shape[:2]:
            raise ValueError(
                f"category_mask must be (B, K) = {tuple(f_c.shape[:2])}, got {tuple(category_mask.shape)}"
            )
        if f_v.ndim != 3 or f_v.shape[2] != self.vision_dim:
            raise ValueError(f"f_v must be (N, HW, vision_dim={self.vision_dim}), got {tuple(f_v.shape)}")
        if f_v_pos.shape != f_v.shape:
            raise ValueError(
                f"f_v_pos must have the shape of f_v {tuple(f_v.shape)}, got {tuple(f_v_pos.shape)}"
            )
        if frame_to_sample.shape != (f_v.shape[0],) or frame_to_sample.dtype != torch.long:
            raise ValueError(
                f"frame_to_sample must be int64 of shape (N,) = ({f_v.shape[0]},), got "
                f"{frame_to_sample.dtype} {tuple(frame_to_sample.shape)}"
            )
