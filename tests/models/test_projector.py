"""Tests of the multi-scale semantic projector (Eq. 7-8) and its SAM-style attention blocks."""

from __future__ import annotations

import math
import re

import pytest
import torch

from lavida.models.attention import DownsampledAttention, TwoWayBlock
from lavida.models.projector import MultiScaleSemanticProjector

TINY = dict(
    llm_dim=24,
    text_dim=12,
    vision_dim=10,
    out_dim=16,
    hidden_dim=32,
    num_queries=4,
    num_layers=2,
    num_heads=4,
    mlp_dim=64,
    cross_attn_heads=4,
    attention_downsample_rate=2,
)
PAPER = dict(llm_dim=3584, text_dim=512, vision_dim=256, out_dim=256)  # all other sizes: defaults

# 3 samples, K = 3 padded categories, 7 frames of 6 vision tokens; frames in no particular order.
CATEGORY_MASK = torch.tensor([[True, True, True], [True, False, False], [True, False, True]])
FRAME_TO_SAMPLE = torch.tensor([2, 0, 1, 0, 2, 1, 0])
HW = 6


def _inputs(cfg=TINY, *, seed=1):
    g = torch.Generator().manual_seed(seed)
    b, k = CATEGORY_MASK.shape
    n = FRAME_TO_SAMPLE.numel()
    return {
        "f_sem": torch.randn(b, cfg["llm_dim"], generator=g),
        "f_c": torch.randn(b, k, cfg["text_dim"], generator=g),
        "category_mask": CATEGORY_MASK.clone(),
        "f_v": torch.randn(n, HW, cfg["vision_dim"], generator=g),
        "f_v_pos": torch.randn(n, HW, cfg["vision_dim"], generator=g),
        "frame_to_sample": FRAME_TO_SAMPLE.clone(),
    }


@pytest.fixture(params=["paper", "official"])
def projector(request):
    """Both forms of Eq. 7: as printed, and with the official residual + LayerNorm."""
    return MultiScaleSemanticProjector(**TINY, eq7=request.param).eval()


# ---------------------------------------------------------------------------------------------
# Slow float64 reference: one frame at a time, only its sample's real categories, no masks,
# attention written out head by head with an explicit softmax.
# ---------------------------------------------------------------------------------------------


def _lin(layer, x):
    return x @ layer.weight.double().T + layer.bias.double()  # y = x Wᵀ + b


def _ln(norm, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def _attn(att: DownsampledAttention, q, k, v):
    """q (Nq, D), k/v (Nk, D): per head h, softmax(q_h k_hᵀ / √d_h) v_h; heads concatenated, out-proj."""
    qp, kp, vp = _lin(att.q_proj, q), _lin(att.k_proj, k), _lin(att.v_proj, v)
    d_h = att.internal_dim // att.num_heads
    heads = []
    for h in range(att.num_heads):
        cols = slice(h * d_h, (h + 1) * d_h)
        scores = qp[:, cols] @ kp[:, cols].T / math.sqrt(d_h)
        e = torch.exp(scores - scores.max(-1, keepdim=True).values)
        heads.append((e / e.sum(-1, keepdim=True)) @ vp[:, cols])
    return _lin(att.out_proj, torch.cat(heads, dim=-1))


def _block(blk: TwoWayBlock, queries, keys, qpe, kpe):
    queries = _ln(blk.norm1, queries + _attn(blk.self_attn, queries + qpe, queries + qpe, queries))
    queries = _ln(blk.norm2, queries + _attn(blk.cross_attn_query_to_key, queries + qpe, keys + kpe, keys))
    mlp = _lin(blk.mlp[2], torch.relu(_lin(blk.mlp[0], queries)))
    queries = _ln(blk.norm3, queries + mlp)
    if blk.update_keys:
        keys = _ln(blk.norm4, keys + _attn(blk.cross_attn_key_to_query, keys + kpe, queries + qpe, queries))
    return queries, keys


def _eq7_frame(p: MultiScaleSemanticProjector, f_c_real, f_v, f_v_pos):
    """Eq. 7 for one frame, q = W_c f_c, kv = W_v (f_v + pos): f_a = W_o · CrossAttn(q, kv, kv) as printed,
    or W_o · LN(q + CrossAttn(q, kv, kv)) as the official code."""
    q = _lin(p.category_proj, f_c_real.double())  # (K_b, D_a)
    kv = _lin(p.vision_proj, (f_v + f_v_pos).double())  # (HW, D_a)
    a = _attn(p.category_vision_attn, q, kv, kv)
    if p.eq7 == "paper":
        return _lin(p.category_out, a)
    return _lin(p.category_out, _ln(p.category_norm, q + a))


def _reference_frame(p: MultiScaleSemanticProjector, inputs, n):
    b = int(inputs["frame_to_sample"][n])
    f_c_real = inputs["f_c"][b][inputs["category_mask"][b]]  # (K_b, text_dim), padding dropped
    f_a = _eq7_frame(p, f_c_real, inputs["f_v"][n], inputs["f_v_pos"][n])
    s = _lin(p.semantic_proj, inputs["f_sem"][b].double())  # W_LLM f_sem
    keys = torch.cat([s[None], f_a])  # (1 + K_b, D_a), Eq. 8
    q0 = p.query_tokens.double()
    queries, kpe = q0, keys
    for blk in p.blocks:
        queries, keys = _block(blk, queries, keys, q0, kpe)
    return _lin(p.out_proj, queries.flatten())  # (D_m,)


# ---------------------------------------------------------------------------------------------


def test_shapes_and_dtype(projector):
    out = projector(**_inputs())
    assert out.shape == (FRAME_TO_SAMPLE.numel(), TINY["out_dim"])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_eq7_matches_per_frame_loop(projector):
    inputs = _inputs()
    with torch.no_grad():
        f_a = projector.category_attention(
            f_c=inputs["f_c"],
            f_v=inputs["f_v"],
            f_v_pos=inputs["f_v_pos"],
            frame_to_sample=inputs["frame_to_sample"],
        )
    assert f_a.shape == (FRAME_TO_SAMPLE.numel(), 3, TINY["hidden_dim"])
    for n, b in enumerate(FRAME_TO_SAMPLE.tolist()):
        real = CATEGORY_MASK[b]
        want = _eq7_frame(projector, inputs["f_c"][b][real], inputs["f_v"][n], inputs["f_v_pos"][n])
        torch.testing.assert_close(f_a[n][real].double(), want, rtol=1e-5, atol=1e-5)


def test_forward_matches_per_frame_loop(projector):
    inputs = _inputs()
    with torch.no_grad():
        out = projector(**inputs)
        want = torch.stack([_reference_frame(projector, inputs, n) for n in range(FRAME_TO_SAMPLE.numel())])
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_frames_are_independent(projector):
    inputs = _inputs()
    with torch.no_grad():
        base = projector(**inputs)
        for j in (0, 4):
            for key in ("f_v", "f_v_pos"):
                changed = {**inputs, key: inputs[key].clone()}
                changed[key][j] += torch.randn(HW, TINY["vision_dim"])
                out = projector(**changed)
                others = torch.arange(len(base)) != j
                assert torch.equal(out[others], base[others]), (key, j)
                assert not torch.allclose(out[j], base[j])


@pytest.mark.parametrize("key", ["f_c", "f_sem"])
def test_sample_inputs_only_reach_their_frames(projector, key):
    inputs = _inputs()
    with torch.no_grad():
        base = projector(**inputs)
        for b in range(3):
            changed = {**inputs, key: inputs[key].clone()}
            changed[key][b] += torch.randn_like(changed[key][b])
            out = projector(**changed)
            mine = FRAME_TO_SAMPLE == b
            assert torch.equal(out[~mine], base[~mine]), b
            assert not torch.allclose(out[mine], base[mine]), b


@pytest.mark.parametrize("fill", ["random", "nan", "inf"])
def test_padded_categories_have_no_effect(projector, fill):
    inputs = _inputs()
    with torch.no_grad():
        base = projector(**inputs)
        f_c = inputs["f_c"].clone()
        pad = ~CATEGORY_MASK
        f_c[pad] = {
            "random": 100 * torch.randn(int(pad.sum()), TINY["text_dim"]),
            "nan": torch.full((int(pad.sum()), TINY["text_dim"]), float("nan")),
            "inf": torch.full((int(pad.sum()), TINY["text_dim"]), float("inf")),
        }[fill]
        assert torch.equal(projector(**{**inputs, "f_c": f_c}), base)


def test_padding_width_does_not_matter(projector):
    """Extra padded columns, or no categories at all vs all padded, give the same output."""
    inputs = _inputs()
    with torch.no_grad():
        base = projector(**inputs)
        wider = {
            **inputs,
            "f_c": torch.cat([inputs["f_c"], torch.randn(3, 2, TINY["text_dim"])], dim=1),
            "category_mask": torch.cat([CATEGORY_MASK, torch.zeros(3, 2, dtype=torch.bool)], dim=1),
        }
        torch.testing.assert_close(projector(**wider), base, rtol=1e-6, atol=1e-6)
        none = {
            **inputs,
            "f_c": torch.zeros(3, 0, TINY["text_dim"]),
            "category_mask": torch.zeros(3, 0, dtype=torch.bool),
        }
        all_padded = {**inputs, "category_mask": torch.zeros_like(CATEGORY_MASK)}
        torch.testing.assert_close(projector(**none), projector(**all_padded), rtol=1e-6, atol=1e-6)


def test_gradient_reaches_every_parameter(projector):
    out = projector.train()(**_inputs())
    (out * torch.randn_like(out)).sum().backward()
    missing = [name for name, p in projector.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # The last block's key update would receive none, which is why it is not built.
    assert missing == []
    assert not hasattr(projector.blocks[-1], "cross_attn_key_to_query")
    assert all(hasattr(blk, "cross_attn_key_to_query") for blk in projector.blocks[:-1])


def _expected_paper_param_count() -> int:
    def lin(i, o):
        return i * o + o

    d, q, mlp, ln = 768, 48, 2048, 2 * 768
    attn_full = 4 * lin(d, d)  # self-attention, internal width 768
    attn_half = 3 * lin(d, d // 2) + lin(d // 2, d)  # cross-attentions, internal width 384
    block = attn_full + 2 * attn_half + lin(d, mlp) + lin(mlp, d) + 4 * ln
    last_block = block - attn_half - ln  # no key update in the last block
    eq7 = lin(512, d) + lin(256, d) + attn_half + lin(d, d)  # W_c, W_v, attention, W_o
    eq8 = lin(3584, d) + q * d + 4 * block + last_block + lin(q * d, 256)  # W_LLM, Q0, blocks, output
    return eq7 + eq8


def test_paper_configuration_on_meta_device():
    with torch.device("meta"):
        p = MultiScaleSemanticProjector(**PAPER)
        official = MultiScaleSemanticProjector(**PAPER, eq7="official")
    assert all(t.device.type == "meta" for t in p.parameters())
    count = sum(t.numel() for t in p.parameters())
    assert count == _expected_paper_param_count() == 52_808_960
    # The official form adds only the LayerNorm (weight and bias) before W_o.
    assert sum(t.numel() for t in official.parameters()) == count + 2 * 768
    assert p.category_norm is None and official.category_norm is not None
    assert p.query_tokens.shape == (48, 768) and len(p.blocks) == 5
    assert p.category_vision_attn.internal_dim == 384 and p.category_vision_attn.num_heads == 8
    assert p.blocks[0].self_attn.num_heads == 12 and p.blocks[0].cross_attn_query_to_key.internal_dim == 384
    assert p.out_proj.out_features == 256


def test_tiny_twin_has_the_same_structure(projector):
    with torch.device("meta"):
        paper = MultiScaleSemanticProjector(**PAPER, eq7=projector.eq7)

    def tree(m):
        return {(re.sub(r"\.\d+(?=\.|$)", ".#", name), type(mod).__name__) for name, mod in m.named_modules()}

    assert tree(projector) == tree(paper)


def test_query_init_is_standard_normal():
    p = MultiScaleSemanticProjector(**{**TINY, "num_queries": 64, "hidden_dim": 64})
    assert abs(p.query_tokens.mean().item()) < 0.05 and abs(p.query_tokens.std().item() - 1) < 0.05


@pytest.mark.parametrize(
    "key,bad",
    [
        ("f_sem", torch.zeros(3, 5)),
        ("f_c", torch.zeros(2, 3, 12)),
        ("category_mask", torch.ones(3, 2, dtype=torch.bool)),
        ("f_v", torch.zeros(7, HW, 9)),
        ("f_v_pos", torch.zeros(7, HW + 1, 10)),
        ("frame_to_sample", torch.zeros(6, dtype=torch.long)),
        ("frame_to_sample", torch.zeros(7, dtype=torch.int32)),
    ],
)
def test_shape_errors(projector, key, bad):
    with pytest.raises(ValueError, match=key):
        projector(**{**_inputs(), key: bad})


def test_vision_features_of_the_wrong_width_are_named():
    """f_v (and its positional encoding, of the same shape) 9 wide where vision_dim is 10: the error names
    f_v's expected shape (not a matmul failure inside W_v, nor the f_v_pos check)."""
    projector = MultiScaleSemanticProjector(**TINY)
    wrong = torch.zeros(7, HW, 9)
    with pytest.raises(ValueError, match=r"f_v must be \(N, HW, vision_dim=10\), got \(7, 6, 9\)"):
        projector(**{**_inputs(), "f_v": wrong, "f_v_pos": wrong})


def test_constructor_validation():
    with pytest.raises(ValueError, match="downsample_rate"):
        DownsampledAttention(dim=30, num_heads=3, downsample_rate=4)
    with pytest.raises(ValueError, match="num_heads"):
        DownsampledAttention(dim=32, num_heads=3, downsample_rate=2)
    with pytest.raises(ValueError, match="num_heads"):
        MultiScaleSemanticProjector(**{**TINY, "cross_attn_heads": 5})
    with pytest.raises(ValueError, match="num_queries"):
        MultiScaleSemanticProjector(**{**TINY, "num_queries": 0})
    with pytest.raises(ValueError, match="eq7"):
        MultiScaleSemanticProjector(**TINY, eq7="residual")


def test_sizes_of_one_are_valid():
    """Only sizes ≤ 0 are refused: one query, one two-way block (which then updates no keys) and a
    1-wide output are a valid projector, equal to the per-frame reference of Eq. 7–8."""
    p = MultiScaleSemanticProjector(**{**TINY, "num_queries": 1, "num_layers": 1, "out_dim": 1})
    assert len(p.blocks) == 1 and not p.blocks[0].update_keys
    inputs = _inputs()
    with torch.no_grad():
        out = p(**inputs)
        want = torch.stack([_reference_frame(p, inputs, n) for n in range(FRAME_TO_SAMPLE.numel())])
    assert out.shape == (FRAME_TO_SAMPLE.numel(), 1)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


def test_downsampled_attention_matches_loop_and_masks_keys():
    att = DownsampledAttention(dim=16, num_heads=2, downsample_rate=2)
    q, k, v = torch.randn(3, 4, 16), torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    mask = torch.tensor([[True] * 5, [True, False, True, False, False], [False, False, False, False, True]])
    with torch.no_grad():
        out = att(q, k, v, mask)
        assert out.shape == (3, 4, 16)
        for i in range(3):
            want = _attn(att, q[i].double(), k[i][mask[i]].double(), v[i][mask[i]].double())
            torch.testing.assert_close(out[i].double(), want, rtol=1e-5, atol=1e-5)
        # masked keys may hold anything
        k2, v2 = k.clone(), v.clone()
        k2[~mask], v2[~mask] = 1e3, -1e3
        assert torch.equal(att(q, k2, v2, mask), out)
        torch.testing.assert_close(att(q, k, v), att(q, k, v, torch.ones(3, 5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="key_padding_mask"):
        att(q, k, v, mask[:, :4])


def test_two_way_block_matches_loop_and_update_keys_flag():
    blk = TwoWayBlock(dim=16, num_heads=2, mlp_dim=32, attention_downsample_rate=2).eval()
    queries, keys = torch.randn(2, 3, 16), torch.randn(2, 4, 16)
    qpe, kpe = torch.randn(1, 3, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        q_out, k_out = blk(queries, keys, query_pe=qpe, key_pe=kpe)
        for i in range(2):
            wq, wk = _block(blk, queries[i].double(), keys[i].double(), qpe[0].double(), kpe[i].double())
            torch.testing.assert_close(q_out[i].double(), wq, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(k_out[i].double(), wk, rtol=1e-5, atol=1e-5)
        frozen_keys = TwoWayBlock(dim=16, num_heads=2, mlp_dim=32, update_keys=False)
        frozen_keys.load_state_dict(blk.state_dict(), strict=False)
        q2, k2 = frozen_keys(queries, keys, query_pe=qpe, key_pe=kpe)
        assert k2 is keys and torch.equal(q2, q_out)


def test_downsampled_attention_defaults_to_full_width_as_torch_multihead_attention():
    """SAM's ``Attention`` keeps the full width unless told otherwise (downsample_rate 1): the default
    DownsampledAttention is then ordinary multi-head attention, the same function as torch's
    ``nn.MultiheadAttention`` given the same q/k/v/out weights (its in_proj stacks W_q, W_k, W_v)."""
    torch.manual_seed(0)
    att = DownsampledAttention(dim=8, num_heads=2)
    reference = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        reference.in_proj_bias.copy_(torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        reference.out_proj.weight.copy_(att.out_proj.weight)
        reference.out_proj.bias.copy_(att.out_proj.bias)
        q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
        want, _ = reference(q, k, v, need_weights=False)
        torch.testing.assert_close(att(q, k, v), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("sizes", "shown"),
    [
        ({"dim": 0, "num_heads": 1, "downsample_rate": 1}, "dim=0, num_heads=1, downsample_rate=1"),
        ({"dim": 4, "num_heads": 0, "downsample_rate": 1}, "dim=4, num_heads=0, downsample_rate=1"),
        ({"dim": 4, "num_heads": 1, "downsample_rate": 0}, "dim=4, num_heads=1, downsample_rate=0"),
    ],
)
def test_downsampled_attention_refuses_each_size_of_zero(sizes, shown):
    """A single size of 0 is refused by name (not a ZeroDivisionError, nor a module of 0-wide layers)."""
    message = f"dim, num_heads and downsample_rate must be positive, got {shown}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DownsampledAttention(**sizes)


def test_downsampled_attention_of_width_one_is_valid():
    """dim = num_heads = 1 is a valid attention. With a single key the softmax weight is 1, so the output
    is out_proj(v_proj(v)) whatever the query: v_proj = 2v + 1 and out_proj = 3x − 1 at v = 0.5 give
    3 · (2 · 0.5 + 1) − 1 = 5."""
    att = DownsampledAttention(dim=1, num_heads=1)
    with torch.no_grad():
        att.v_proj.weight.fill_(2.0)
        att.v_proj.bias.fill_(1.0)
        att.out_proj.weight.fill_(3.0)
        att.out_proj.bias.fill_(-1.0)
        out = att(torch.tensor([[[7.0], [-3.0]]]), torch.tensor([[[0.25]]]), torch.tensor([[[0.5]]]))
    assert torch.equal(out, torch.tensor([[[5.0], [5.0]]]))


def test_key_padding_mask_of_the_wrong_shape_names_both_shapes():
    att = DownsampledAttention(dim=16, num_heads=2, downsample_rate=2)
    q, k = torch.zeros(3, 4, 16), torch.zeros(3, 5, 16)
    message = "key_padding_mask must have shape (B, Nk) = (3, 5), got (3, 4)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        att(q, k, k, torch.ones(3, 4, dtype=torch.bool))


def test_two_way_block_updates_the_keys_by_default():
    """SAM's two-way block always runs step 4 (keys attend to the updated queries); it is built unless
    ``update_keys=False`` is asked for. Step 4 written out from the float64 reference's updated queries."""
    torch.manual_seed(0)
    blk = TwoWayBlock(dim=16, num_heads=2, mlp_dim=32).eval()
    queries, keys = torch.randn(3, 16), torch.randn(4, 16)
    qpe, kpe = torch.randn(3, 16), torch.randn(4, 16)
    with torch.no_grad():
        _, k_out = blk(queries[None], keys[None], query_pe=qpe[None], key_pe=kpe[None])
        q, k, qp, kp = queries.double(), keys.double(), qpe.double(), kpe.double()
        q = _ln(blk.norm1, q + _attn(blk.self_attn, q + qp, q + qp, q))
        q = _ln(blk.norm2, q + _attn(blk.cross_attn_query_to_key, q + qp, k + kp, k))
        q = _ln(blk.norm3, q + _lin(blk.mlp[2], torch.relu(_lin(blk.mlp[0], q))))
        want = _ln(blk.norm4, k + _attn(blk.cross_attn_key_to_query, k + kp, q + qp, q))
    torch.testing.assert_close(k_out[0].double(), want, rtol=1e-5, atol=1e-5)
