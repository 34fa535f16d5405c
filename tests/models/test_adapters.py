"""Tab. 4's "MLP" baseline adapter: f_proj[t] = W_2 ReLU(W_1 f_sem) for every frame t of the sample.

The adapter is LISA's projection (lavida/models/adapters.py): only f_sem is read, and every frame of a
sample gets its sample's prompt. The expectation is worked by hand on 2-wide weights.
"""

import torch

from lavida.models.adapters import MLPAdapter


def test_mlp_adapter_is_w2_relu_w1_f_sem_repeated_per_frame():
    adapter = MLPAdapter(llm_dim=2, out_dim=1, hidden_dim=2)
    with torch.no_grad():
        first, second = adapter.mlp[0], adapter.mlp[2]
        first.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # W_1 = I
        first.bias.copy_(torch.tensor([0.0, -1.0]))
        second.weight.copy_(torch.tensor([[2.0, 3.0]]))  # W_2
        second.bias.copy_(torch.tensor([0.5]))
    f_sem = torch.tensor([[1.0, 3.0], [-2.0, 0.5]])  # two samples
    # Hand-worked: sample 0: W_1 f + b_1 = [1, 2] -> ReLU [1, 2] -> 2·1 + 3·2 + 0.5 = 8.5;
    # sample 1: [-2, -0.5] -> ReLU [0, 0] -> 0.5.
    frame_to_sample = torch.tensor([0, 0, 1, 0])  # frames of sample 0, then an image, then sample 0 again
    ignored = torch.full((1,), float("nan"))  # the other projector arguments are not read
    f_proj = adapter(
        f_sem=f_sem,
        f_c=ignored,
        category_mask=ignored,
        f_v=ignored,
        f_v_pos=ignored,
        frame_to_sample=frame_to_sample,
    )
    torch.testing.assert_close(f_proj, torch.tensor([[8.5], [8.5], [0.5], [8.5]]), rtol=0, atol=0)
