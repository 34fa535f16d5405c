"""Tab. 4's baseline adapters between the MLLM and the mask decoder.

The proposed adapter is :class:`~lavida.models.projector.MultiScaleSemanticProjector`. Tab. 4 compares
it with an "MLP" and a "Q-Former"; the paper does not describe them further, so we use the usual
forms:

- MLP: LISA's projection — f_proj[t] = MLP(f_sem) for every frame of the sample; no frame-level
  category evidence, no learnable queries.
- Q-Former: the proposed projector with one-way blocks (``two_way=False``): the learnable queries read
  [W_LLM f_sem, f_a], which are never updated by the queries (BLIP-2's Q-Former pattern).
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPAdapter(nn.Module):
    """f_proj[t] = W_2 ReLU(W_1 f_sem) for each frame t of the sample (Tab. 4, "MLP").

    Args:
        llm_dim: Width of f_sem.
        out_dim: Width D_m of the prompt.
        hidden_dim: Hidden width.
    """

    def __init__(self, *, llm_dim: int, out_dim: int, hidden_dim: int = 768) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(llm_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )

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
        """Same arguments as the proposed projector; only ``f_sem`` (B, llm_dim) is used. Returns (N, out_dim)."""
        return self.mlp(f_sem)[frame_to_sample]
