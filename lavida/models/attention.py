"""SAM-style attention building blocks for the multi-scale semantic projector (paper §3.7).

Two pieces, written after the behaviour of SAM's mask-decoder transformer (Kirillov et al., 2023):

- :class:`DownsampledAttention`: multi-head attention whose q/k/v live in a narrower space
  (``dim // downsample_rate``) before an output projection back to ``dim``.
- :class:`TwoWayBlock`: one layer of SAM's two-way transformer, in which a small set of query
  tokens and a set of key tokens update each other.

Shape notation: B = batch (for the projector: frames), Nq = query tokens, Nk = key tokens,
D = model width. Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` so that
fused kernels (flash / memory-efficient) are used where the device supports them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DownsampledAttention", "TwoWayBlock"]


class DownsampledAttention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width (SAM's ``Attention``).

    ``q``, ``k`` and ``v`` are projected from ``dim`` to ``dim // downsample_rate``, split into
    ``num_heads`` heads, combined with scaled dot-product attention and projected back to ``dim``.

    Args:
        dim: Width D of the inputs and of the output.
        num_heads: Number of attention heads; must divide ``dim // downsample_rate``.
        downsample_rate: Factor by which the internal width is reduced; must divide ``dim``.

    Raises:
        ValueError: If the sizes do not divide as required.
    """

    def __init__(self, *, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0 or downsample_rate <= 0:
            raise ValueError(
                f"dim, num_heads and downsample_rate must be positive, got dim={dim}, "
                f"num_heads={num_heads}, downsample_rate={downsample_rate}"
            )
        if dim % downsample_rate != 0:
            raise ValueError(
                f"dim={dim} is not divisible by downsample_rate={downsample_rate}; "
                "choose a downsample_rate that divides the model width"
            )
        internal_dim = dim // downsample_rate
        if internal_dim % num_heads != 0:
            raise ValueError(
                f"internal width dim/downsample_rate = {dim}/{downsample_rate} = {internal_dim} is not "
                f"divisible by num_heads={num_heads}; choose num_heads dividing {internal_dim}"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.internal_dim = internal_dim
        self.q_proj = nn.Linear(dim, internal_dim)
        self.k_proj = nn.Linear(dim, internal_dim)
        self.v_proj = nn.Linear(dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        # (B, N, internal) -> (B, heads, N, internal / heads)
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.internal_dim // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Attend from ``q`` to ``k``/``v``.

        Args:
            q: Queries, (B, Nq, D).
            k: Keys, (B, Nk, D).
            v: Values, (B, Nk, D).
            key_padding_mask: (B, Nk) bool, True = a real key that may be attended to, False =
                padding; or None (every key is real). Every row must hold at least one True,
                otherwise that row's output is NaN (no data-dependent check is made here, to keep
                the hot path free of device synchronisation).

        Returns:
            (B, Nq, D).
        """
        b, nq, _ = q.shape
        qh = self._split_heads(self.q_proj(q))  # (B, h, Nq, d_h)
        kh = self._split_heads(self.k_proj(k))  # (B, h, Nk, d_h)
        vh = self._split_heads(self.v_proj(v))  # (B, h, Nk, d_h)
        attn_mask = None
        if key_padding_mask is not None:
            if key_padding_mask.shape != k.shape[:2]:
                raise ValueError(
                    f"key_padding_mask must have shape (B, Nk) = {tuple(k.shape[:2])}, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            # bool mask, True = takes part; broadcast over heads and queries: (B, 1, 1, Nk)
            attn_mask = key_padding_mask.to(torch.bool)[:, None, None, :]
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)  # (B, h, Nq, d_h)
        out = out.transpose(1, 2).reshape(b, nq, self.internal_dim)  # (B, Nq, internal)
        return self.out_proj(out)


class TwoWayBlock(nn.Module):
    """One layer of SAM's two-way transformer: queries and keys update each other.

    Four steps, each followed by a residual connection and a LayerNorm:

    1. query self-attention (query PE added to q and k; values without PE);
    2. cross-attention queries -> keys (query PE on q, key PE on k, padded keys masked out);
    3. MLP (Linear-ReLU-Linear) on the queries;
    4. cross-attention keys -> queries (key PE on the attending keys, query PE on the attended
       queries); updates the keys.

    Padded key rows are also updated by step 4 and may hold arbitrary values afterwards. That is
    harmless: step 2 of every block masks them out, and steps 1, 3 and 4 never let a key row
    influence another row.

    Args:
        dim: Token width D (queries and keys).
        num_heads: Heads of all three attentions.
        mlp_dim: Hidden width of the MLP.
        attention_downsample_rate: Internal-width reduction of the two cross-attentions (the
            self-attention runs at full width, as in SAM).
        update_keys: If False, step 4 is not built and the keys are returned unchanged. Use it
            for the last block of a stack whose key output is not consumed: its step-4 weights
            would receive no gradient (dead parameters break DDP without
            ``find_unused_parameters``) and cost compute for nothing.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        update_keys: bool = True,
    ) -> None:
        super().__init__()
        self.update_keys = update_keys
        self.self_attn = DownsampledAttention(dim=dim, num_heads=num_heads, downsample_rate=1)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_query_to_key = DownsampledAttention(
            dim=dim, num_heads=num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        if update_keys:
            self.cross_attn_key_to_query = DownsampledAttention(
                dim=dim, num_heads=num_heads, downsample_rate=attention_downsample_rate
            )
            self.norm4 = nn.LayerNorm(dim)

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        *,
        query_pe: Tensor,
        key_pe: Tensor,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Run the four steps.

        Args:
            queries: (B, Nq, D).
            keys: (B, Nk, D).
            query_pe: Positional embedding of the queries, broadcastable to (B, Nq, D).
            key_pe: Positional embedding of the keys, broadcastable to (B, Nk, D).
            key_padding_mask: (B, Nk) bool, True = real key; or None.

        Returns:
            ``(queries, keys)``, shapes (B, Nq, D) and (B, Nk, D).
        """
        # (1) query self-attention; PE on q and k, not on v
        q = queries + query_pe
        queries = self.norm1(queries + self.self_attn(q, q, queries))

        # (2) queries attend to the (real) keys
        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_query_to_key(q, k, keys, key_padding_mask))

        # (3) MLP on the queries
        queries = self.norm3(queries + self.mlp(queries))

        # (4) keys attend to the queries (all queries are real, so no mask)
        if self.update_keys:
            q = queries + query_pe
            k = keys + key_pe
            keys = self.norm4(keys + self.cross_attn_key_to_query(k, q, queries))
        return queries, keys
