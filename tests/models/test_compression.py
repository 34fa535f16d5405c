"""Tests for reverse-attention token compression (paper §3.4, Eq. 3-4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import LocalOutlierFactor
from torch import nn

from lavida.models import compression
from lavida.models.compression import (
    CompressionResult,
    TokenCompressor,
    local_density,
    num_kept,
    reverse_attention_compress,
)

# --------------------------------------------------------------------------------------------
# A slow, obvious reference written straight from the paper: Python loops over float64 numpy.


def slow_reference(z: np.ndarray, ratio: float, k: int, density: str):
    """Returns (keep, assignment, density, tokens) for (L, D) array z, following Eq. 3-4 literally."""
    z = z.astype(np.float64)
    n, dim = z.shape
    r = max(1, math.floor(n * ratio))
    kk = min(k, n - 1)
    sq = [[float(np.sum((z[i] - z[j]) ** 2)) for j in range(n)] for i in range(n)]
    # k nearest neighbours, self excluded, ties by lower index.
    nbrs = [sorted((j for j in range(n) if j != i), key=lambda j, i=i: (sq[i][j], j))[:kk] for i in range(n)]
    if density == "paper":  # Eq. 3
        sums = [sum(sq[i][j] for j in nbrs[i]) for i in range(n)]
        rho = [kk / s if s > 0 else math.inf for s in sums]
    else:  # LOF local reachability density on Euclidean / sqrt(D)
        dist = [[math.sqrt(sq[i][j]) / math.sqrt(dim) for j in range(n)] for i in range(n)]
        kdist = [max(dist[o][j] for j in nbrs[o]) for o in range(n)]
        rho = [kk / (sum(max(kdist[o], dist[i][o]) for o in nbrs[i]) + 1e-10) for i in range(n)]
    ranked = sorted(range(n), key=lambda i: (-rho[i], i))
    keep = sorted(ranked[:r])
    assignment = []
    for j in range(n):
        if j in keep:
            assignment.append(keep.index(j))
        else:
            euclid = [float(np.linalg.norm(z[j] - z[b])) for b in keep]
            assignment.append(min(range(r), key=lambda q, e=euclid: (e[q], q)))
    out = np.zeros((r, dim))
    for q, b in enumerate(keep):  # Eq. 4
        members = [j for j in range(n) if assignment[j] == q]
        logits = np.array([-(z[b] @ z[j]) / math.sqrt(dim) for j in members])
        w = np.exp(logits - logits.max())
        w /= w.sum()
        out[q] = sum(wj * z[j] for wj, j in zip(w, members, strict=True))
    return keep, assignment, np.array(rho), out


def _assert_matches_reference(x: torch.Tensor, ratio: float, k: int, density: str, **kw) -> CompressionResult:
    res = reverse_attention_compress(x, ratio, k, density, **kw)
    keep, assignment, rho, out = slow_reference(x.double().numpy(), ratio, k, density)
    assert res.keep.tolist() == keep
    assert res.assignment.tolist() == assignment
    if x.shape[0] > 1 and num_kept(x.shape[0], ratio) < x.shape[0]:
        np.testing.assert_allclose(res.density.double().numpy(), rho, rtol=1e-5)
    np.testing.assert_allclose(res.tokens.double().numpy(), out, rtol=1e-5, atol=1e-5)
    return res


def _clustered(n: int, dim: int, centres: int, seed: int) -> torch.Tensor:
    """Gaussian blobs of different spreads: a crude stand-in for background plus objects."""
    g = torch.Generator().manual_seed(seed)
    c = 3 * torch.randn(centres, dim, generator=g)
    label = torch.randint(centres, (n,), generator=g)
    spread = torch.rand(centres, generator=g)[label, None] + 0.1
    return c[label] + spread * torch.randn(n, dim, generator=g)


# --------------------------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("density", ["paper", "lof"])
@pytest.mark.parametrize(
    ("n", "dim", "k", "ratio", "seed"),
    [
        (40, 16, 8, 0.2, 0),
        (57, 32, 3, 0.35, 1),
        (33, 5, 1, 0.5, 2),
        (12, 8, 8, 0.5, 3),  # k = L - 4
        (6, 4, 8, 0.5, 4),  # fewer than k other tokens: k' = L - 1 = 5
        (3, 7, 8, 0.34, 5),  # R = 1: everything joins one cluster
        (2, 3, 2, 0.5, 6),
        (24, 3584, 8, 0.2, 7),  # the real feature width
    ],
)
def test_matches_slow_reference_random(density, n, dim, k, ratio, seed):
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    _assert_matches_reference(x, ratio, k, density)


@pytest.mark.parametrize("density", ["paper", "lof"])
@pytest.mark.parametrize(("ratio", "seed"), [(0.1, 10), (0.25, 11), (0.6, 12)])
def test_matches_slow_reference_clustered(density, ratio, seed):
    x = _clustered(70, 12, centres=4, seed=seed)
    _assert_matches_reference(x, ratio, 8, density, chunk_size=16)


def test_hand_worked_example():
    # Five 2-D tokens, k = 2, ratio 0.4 -> R = max(1, floor(5 * 0.4)) = 2.
    #   z0 = (0, 0), z1 = (1, 0), z2 = (0, 1), z3 = (5, 5), z4 = (5, 4)
    # Squared distances:  z0-z1 1, z0-z2 1, z1-z2 2, z3-z4 1, z0-z3 50, z0-z4 41,
    #                     z1-z3 41, z1-z4 32, z2-z3 41, z2-z4 34.
    # Eq. 3, rho = 2 / (sum of the two smallest squared distances):
    #   z0: 2/(1+1) = 1      z1: 2/(1+2) = 2/3    z2: 2/(1+2) = 2/3
    #   z3: 2/(1+41) = 1/21  z4: 2/(1+32) = 2/33
    # Background = the 2 densest: z0 (1), then z1 and z2 tie at 2/3 -> lower index z1. keep = [0, 1].
    # Nearest background (Euclidean): z2 -> z0 (1 < 2); z3 -> z1 (41 < 50); z4 -> z1 (32 < 41).
    #   clusters: row 0 = {z0, z2}, row 1 = {z1, z3, z4};  assignment = [0, 1, 0, 1, 1].
    # Eq. 4, logits -z_b . z_j / sqrt(2):
    #   row 0, b = z0 = 0: all logits 0 -> weights 1/2, 1/2 -> Z'_0 = (z0 + z2)/2 = (0, 0.5).
    #   row 1, b = z1: z1.z1 = 1, z3.z1 = 5, z4.z1 = 5 -> weights propto e^{-1/s}, e^{-5/s}, e^{-5/s}
    #   (s = sqrt 2); the background token is the least similar by dot product, so it dominates.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 4.0]])
    res = reverse_attention_compress(x, 0.4, k=2)

    torch.testing.assert_close(res.density, torch.tensor([1.0, 2 / 3, 2 / 3, 1 / 21, 2 / 33]))
    assert res.keep.tolist() == [0, 1]
    assert res.assignment.tolist() == [0, 1, 0, 1, 1]
    s = math.sqrt(2)
    e1, e5 = math.exp(-1 / s), math.exp(-5 / s)
    w1, w3 = e1 / (e1 + 2 * e5), e5 / (e1 + 2 * e5)
    expected = torch.tensor([[0.0, 0.5], [w1 * 1 + w3 * 5 + w3 * 5, w3 * 5 + w3 * 4]])
    torch.testing.assert_close(res.tokens, expected)
    assert res.tokens[1].tolist() == pytest.approx([1.42286, 0.47571], abs=1e-5)


# --------------------------------------------------------------------------------------------
# LOF variant against scikit-learn (an independent implementation)


@pytest.mark.parametrize(("n", "dim", "k"), [(80, 24, 8), (50, 3584, 8), (30, 6, 3)])
def test_lof_density_matches_sklearn(n, dim, k):
    x = _clustered(n, dim, centres=3, seed=n).double()
    ours = local_density(x, k=k, density="lof").numpy()
    lrd = LocalOutlierFactor(n_neighbors=k).fit(x.numpy() / math.sqrt(dim))._lrd
    # Ours (and the official code): k / (sum reach + 1e-10). sklearn: 1 / (mean reach + 1e-10).
    reach_sum = k / ours - 1e-10
    np.testing.assert_allclose(1 / (reach_sum / k + 1e-10), lrd, rtol=1e-9)
    # In fp32 too, and the background set is sklearn's top-R lrd (ties: lower index).
    ours32 = local_density(x.float(), k=k, density="lof").numpy()
    np.testing.assert_allclose(ours32, lrd, rtol=1e-5)
    res = reverse_attention_compress(x.float(), 0.2, k, "lof")
    top = np.argsort(-lrd, kind="stable")[: num_kept(n, 0.2)]
    assert res.keep.tolist() == sorted(top.tolist())


# --------------------------------------------------------------------------------------------
# Sizes, ratio = 1, tiny inputs


@pytest.mark.parametrize(
    ("n", "ratio", "expected"),
    [
        (1, 0.2, 1),
        (2, 0.2, 1),  # floor(0.4) = 0 -> 1
        (3, 0.2, 1),
        (3, 0.34, 1),
        (3, 0.67, 2),
        (3, 1.0, 3),
        (10, 0.05, 1),  # floor(0.5) = 0 -> 1
        (10, 0.2, 2),
        (5, 0.99, 4),
        (1296, 0.2, 259),
        (10368, 0.2, 2073),
        (100, 0.29, 28),  # floor of the float product (28.999999999999996), as the official int()
    ],
)
def test_num_kept(n, ratio, expected):
    assert num_kept(n, ratio) == expected
    res = reverse_attention_compress(torch.randn(n, 4), ratio, k=2)
    assert res.tokens.shape == (expected, 4)
    assert res.num_kept == expected


@pytest.mark.parametrize("n", [0, -4])
def test_num_kept_refuses_fewer_than_one_token(n):
    """R = max(1, ...) would otherwise claim one kept token out of none."""
    with pytest.raises(ValueError, match=rf"^num_tokens must be >= 1, got {n}\.$"):
        num_kept(n, 0.2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("ratio", [0.01, 0.3, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("density", ["paper", "lof"])
def test_result_invariants(n, ratio, density):
    x = torch.randn(n, 6)
    res = reverse_attention_compress(x, ratio, k=8, density=density)
    r = max(1, math.floor(n * ratio))
    assert res.tokens.shape == (r, 6) and res.tokens.dtype == x.dtype
    assert res.keep.shape == (r,) and res.keep.dtype == torch.int64
    assert res.assignment.shape == (n,) and res.assignment.dtype == torch.int64
    assert res.density.shape == (n,) and res.density.is_floating_point()
    assert torch.all(res.keep[1:] > res.keep[:-1])  # strictly ascending original indices
    assert res.assignment[res.keep].tolist() == list(range(r))  # backgrounds anchor their own row
    assert 0 <= int(res.assignment.min()) and int(res.assignment.max()) < r


def test_ratio_one_is_identity_and_matches_general_path():
    x = torch.randn(50, 16)
    res = reverse_attention_compress(x, 1.0)
    assert res.tokens is x
    assert res.keep.tolist() == list(range(50)) and res.assignment.tolist() == list(range(50))
    # The general path (no fast path) gives the same, bit for bit: singleton softmax weights are 1.
    general = compression._compress(x, 50, 8, "paper", None)
    assert torch.equal(general.tokens, x)
    assert torch.equal(general.keep, res.keep) and torch.equal(general.assignment, res.assignment)
    assert torch.isfinite(general.density).all()


def test_single_token_returns_itself():
    x = torch.randn(1, 8)
    for ratio in (0.01, 0.2, 1.0):
        res = reverse_attention_compress(x, ratio)
        assert torch.equal(res.tokens, x) and res.keep.tolist() == [0] and res.assignment.tolist() == [0]
    general = compression._compress(x, 1, 8, "lof", None)
    assert torch.equal(general.tokens, x) and general.assignment.tolist() == [0]


# --------------------------------------------------------------------------------------------
# Duplicates, ties, determinism, chunking


@pytest.mark.parametrize("density", ["paper", "lof"])
def test_exact_duplicates_match_reference_and_are_deterministic(density):
    base = torch.randn(8, 10)
    # Duplicates scattered through the sequence: three copies of row 0, two of rows 1 and 5.
    order = [0, 3, 1, 0, 5, 2, 6, 1, 0, 4, 7, 5]
    x = base[order]
    res = _assert_matches_reference(x, 0.25, 2, density)
    again = reverse_attention_compress(x.clone(), 0.25, 2, density, chunk_size=5)
    for name in ("tokens", "keep", "assignment", "density"):
        assert torch.equal(getattr(res, name), getattr(again, name))
    if density == "paper":
        # Three copies of row 0: two neighbours at distance 0 -> infinite density, first in line.
        assert math.isinf(res.density[0]) and res.keep[0] == 0


def test_all_identical_tokens():
    # Every density ties (inf): the background set is the first R tokens. More duplicate
    # backgrounds than search candidates: every other token still joins the lowest one.
    x = torch.full((25, 6), 0.5)
    res = reverse_attention_compress(x, 0.2, k=3)
    assert res.keep.tolist() == [0, 1, 2, 3, 4]
    assert res.assignment.tolist() == [0, 1, 2, 3, 4] + [0] * 20
    torch.testing.assert_close(res.tokens, x[:5], rtol=0, atol=1e-7)


def test_equidistant_backgrounds_prefer_lower_index():
    # Two mirrored triangles; their apexes (±1.125, 0) are the densest (rho = 2/(2 * 0.03125)) and tie,
    # so both are kept. The origin is exactly equidistant from both: it joins the lower index (0).
    pts = [
        (1.125, 0.0),
        (1.0, 0.125),
        (1.0, -0.125),
        (0.0, 0.0),
        (-1.0, 0.125),
        (-1.0, -0.125),
        (-1.125, 0.0),
    ]
    x = torch.tensor(pts)
    res = reverse_attention_compress(x, 2 / 7, k=2)
    assert res.keep.tolist() == [0, 6]
    assert res.density[0] == res.density[6] == pytest.approx(2 / 0.0625)
    assert res.assignment.tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("density", ["paper", "lof"])
@pytest.mark.parametrize(("n", "dim"), [(61, 24), (20, 3584)])
def test_chunked_equals_unchunked(density, n, dim, monkeypatch):
    x = _clustered(n, dim, centres=5, seed=3)
    full = reverse_attention_compress(x, 0.2, 8, density, chunk_size=n)
    # Also split the neighbour gather into pieces of a few rows (its default cap is 32 MB).
    monkeypatch.setattr(compression, "_GATHER_BYTES", 3 * 8 * dim * 4)
    for chunk in (1, 2, 7, 50, None):
        res = reverse_attention_compress(x, 0.2, 8, density, chunk_size=chunk)
        for name in ("tokens", "keep", "assignment", "density"):
            assert torch.equal(getattr(res, name), getattr(full, name)), (chunk, name)


def test_near_duplicates_keep_full_precision():
    # Triplets of near-identical tokens at D = 3584 on top of a common offset: their squared
    # distances (~7e-3) are far below the ~1e-3 cancellation error of ||a||^2 + ||b||^2 - 2ab
    # (the plain expansion and torch.cdist's matmul path both return 0 -> inf density here).
    base = torch.randn(10, 3584) + 3.0
    x = torch.cat([base, base + 1e-3 * torch.randn(10, 3584), base + 1e-3 * torch.randn(10, 3584)])
    x64 = x.double()
    d2 = torch.cdist(x64, x64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d2.fill_diagonal_(math.inf)
    expected = 2 / d2.topk(2, largest=False).values.sum(dim=1)
    torch.testing.assert_close(local_density(x, k=2).double(), expected, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------
# Dtypes and gradients


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("density", ["paper", "lof"])
def test_half_precision_input(dtype, density):
    x = _clustered(90, 32, centres=4, seed=5).to(dtype)
    res = reverse_attention_compress(x, 0.2, 8, density)
    ref = reverse_attention_compress(x.float(), 0.2, 8, density)  # same values, fp32 storage
    assert res.tokens.dtype == dtype
    assert torch.equal(res.keep, ref.keep) and torch.equal(res.assignment, ref.assignment)
    # Distances and Eq. 4 run in fp32: the output is the fp32 result rounded once.
    assert torch.equal(res.tokens, ref.tokens.to(dtype))
    torch.testing.assert_close(res.tokens.float(), ref.tokens, rtol=1e-2, atol=1e-2)


def test_float64_input_stays_float64():
    x = torch.randn(20, 5, dtype=torch.float64)
    res = reverse_attention_compress(x, 0.3, 4)
    assert res.tokens.dtype == torch.float64 and res.density.dtype == torch.float64


def test_gradient_reaches_every_input_token():
    x = _clustered(40, 8, centres=3, seed=9).requires_grad_()
    res = reverse_attention_compress(x, 0.2, 8)
    # Fails if anything wraps Eq. 4 in no_grad: the output would have no graph to backprop.
    assert res.tokens.requires_grad and res.tokens.grad_fn is not None
    (res.tokens * torch.randn_like(res.tokens)).sum().backward()
    assert x.grad is not None
    # Every token is a member of exactly one cluster, so every row receives gradient.
    assert bool((x.grad.abs().sum(dim=1) > 0).all())


def test_gradient_is_correct():
    # Discrete choices are fixed under tiny perturbations, so Eq. 4's analytic gradient must
    # match finite differences.
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: reverse_attention_compress(t, 0.34, 2).tokens, (x,))


def test_trainable_embedding_gets_gradient_through_compressor():
    # Regression test for the official release, whose no_grad compression froze embed_tokens.
    emb = nn.Embedding(12, 16)
    compressor = TokenCompressor(ratio=0.25, k=4)
    tokens = emb(torch.tensor([3, 3, 3, 7, 7, 1, 1, 1, 1, 11, 5, 5]))
    compressor(tokens).tokens.square().sum().backward()
    assert emb.weight.grad is not None
    used = emb.weight.grad.abs().sum(dim=1) > 0
    assert used.nonzero().flatten().tolist() == [1, 3, 5, 7, 11]


# --------------------------------------------------------------------------------------------
# Argument checks and the module


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0.0}, "ratio must be a number in \\(0, 1\\]"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": math.nan}, "ratio"),
        ({"ratio": True}, "ratio"),
        ({"ratio": "0.2"}, "ratio"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": -3}, "k must"),
        ({"k": 2.5}, "k must"),
        ({"density": "LOF"}, "density must be one of \\('paper', 'lof'\\)"),
        ({"density": "knn"}, "density"),
        ({"chunk_size": 0}, "chunk_size must be None"),
        ({"chunk_size": 1.5}, "chunk_size"),
        ({"tokens": torch.randn(10)}, "2-D \\(L, D\\)"),
        ({"tokens": torch.randn(2, 10, 4)}, "one sample at a time"),
        ({"tokens": torch.randn(0, 4)}, "L >= 1"),
        ({"tokens": torch.ones(5, 4, dtype=torch.int64)}, "floating-point"),
        ({"tokens": torch.tensor([[0.0, math.nan], [1.0, 2.0]])}, "NaN or inf"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"tokens": torch.randn(10, 4), "ratio": 0.2, "k": 8, "density": "paper"} | kwargs
    chunk = args.pop("chunk_size", None)
    with pytest.raises(ValueError, match=match):
        reverse_attention_compress(
            args["tokens"], args["ratio"], args["k"], args["density"], chunk_size=chunk
        )


def test_non_tensor_and_bad_local_density_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        reverse_attention_compress(np.zeros((4, 2)), 0.5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        local_density(torch.randn(1, 4))


def test_token_compressor_module():
    module = TokenCompressor()
    assert (module.ratio, module.k, module.density, module.chunk_size) == (0.2, 8, "paper", None)
    assert "ratio=0.2, k=8, density='paper', chunk_size=None" in repr(module)
    assert list(module.parameters()) == []
    x = torch.randn(30, 8)
    lof = TokenCompressor(ratio=0.5, k=3, density="lof", chunk_size=4)
    expected = reverse_attention_compress(x, 0.5, 3, "lof")
    out = lof(x)
    assert isinstance(out, CompressionResult)
    assert torch.equal(out.tokens, expected.tokens) and torch.equal(out.keep, expected.keep)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0}, r"ratio must be a number in \(0, 1\].*got 0\."),
        ({"ratio": 2.0}, r"ratio must be a number in \(0, 1\].*got 2\.0\."),
        ({"k": 0}, r"k must be an integer >= 1 .*got 0\."),
        ({"density": "cosine"}, r"density must be one of \('paper', 'lof'\).*got 'cosine'\."),
        ({"chunk_size": -1}, r"chunk_size must be None \(automatic\) or an integer >= 1, got -1\."),
    ],
)
def test_token_compressor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenCompressor(**kwargs)


def test_token_compressor_is_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        TokenCompressor(0.2)  # type: ignore[misc]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("density", ["paper", "lof"])
def test_cuda_matches_cpu(density):
    x = _clustered(300, 64, centres=6, seed=21)
    cpu = reverse_attention_compress(x, 0.2, 8, density)
    gpu = reverse_attention_compress(x.to("cuda"), 0.2, 8, density, chunk_size=64)
    assert gpu.tokens.device.type == "cuda" and gpu.keep.device.type == "cuda"
    assert torch.equal(gpu.keep.cpu(), cpu.keep) and torch.equal(gpu.assignment.cpu(), cpu.assignment)
    torch.testing.assert_close(gpu.tokens.cpu(), cpu.tokens, rtol=1e-5, atol=1e-5)
    xb = x.to("cuda").bfloat16().requires_grad_()
    out = reverse_attention_compress(xb, 0.2, 8, density)
    out.tokens.float().sum().backward()
    assert out.tokens.dtype == torch.bfloat16 and xb.grad is not None


# --------------------------------------------------------------------------------------------
# The fast candidate search must not decide the result (near-duplicate backgrounds)


def _near_duplicate_blobs(per_blob: int, dim: int, spread: float, seed: int) -> torch.Tensor:
    """Two tight blobs of near-identical tokens far from each other (and from the mean): a uniform
    background region. Their squared distances (~2·spread²·D) sit below the cancellation error of the
    ‖a‖² + ‖b‖² - 2a·b search, so the search alone ranks the neighbours inside a blob at random."""
    g = torch.Generator().manual_seed(seed)
    a = 3 * torch.randn(1, dim, generator=g)
    return torch.cat(
        [
            a + spread * torch.randn(per_blob, dim, generator=g),
            -a + spread * torch.randn(per_blob, dim, generator=g),
        ]
    )


@pytest.mark.parametrize("density", ["paper", "lof"])
@pytest.mark.parametrize("seed", [0, 1])
def test_near_duplicate_blobs_match_exact_reference(density, seed):
    # Eq. 3 on exact distances (the float64 loop reference). Before the fix, the k + 8 search
    # candidates missed most true neighbours inside a blob: densities off by ~3 %, a different
    # background set and different clusters.
    x = _near_duplicate_blobs(60, 3584, 1e-3, seed)
    res = _assert_matches_reference(x, 0.2, 8, density)
    chunked = reverse_attention_compress(x, 0.2, 8, density, chunk_size=7)
    for name in ("tokens", "keep", "assignment", "density"):
        assert torch.equal(getattr(chunked, name), getattr(res, name)), name


def test_nearest_background_is_exact_among_near_duplicates():
    # The assignment step alone (Z^b given): each token joins its exactly nearest background
    # (ties: lower row), even when 40 backgrounds are near-duplicates of each other.
    x = _near_duplicate_blobs(40, 3584, 1e-3, 3)
    keep = torch.arange(0, 80, 2)
    got = compression._assign(x, compression._search_copy(x), keep, None)
    d2 = torch.cdist(x.double(), x.double()[keep], compute_mode="donot_use_mm_for_euclid_dist")
    want = d2.argmin(dim=1)  # first minimum = lower row
    want[keep] = torch.arange(keep.numel())
    assert got.tolist() == want.tolist()


def test_exactly_tied_backgrounds_go_to_the_lower_row_far_from_the_mean():
    # Case i: a token p_i and two backgrounds p_i + 1e-3·e_0 (row 2i) and p_i + 1e-3·e_1 (row 2i + 1),
    # p_i in [1, 1.9)^8. Adding 1e-3 to any float32 in [1, 2) lands 8389 steps of 2^-23 higher, so both
    # squared distances are exactly (8389·2^-23)²: a tie, which the lower row wins. Sixteen tokens at -40
    # put the mean near -9. Centring rounded p - mean (in [8, 16)) to steps 8× coarser, and taking the
    # exact differences of that centred copy broke some of these ties towards row 2i + 1.
    g = torch.Generator().manual_seed(0)
    cases = []
    for _ in range(16):
        p = 1 + 0.9 * torch.rand(8, generator=g)
        cases += [p + 1e-3 * torch.eye(8)[0], p + 1e-3 * torch.eye(8)[1], p]
    x = torch.cat([torch.stack(cases), torch.full((16, 8), -40.0)])
    tokens = x[2:48:3].double()
    d_low = (tokens - x[0:48:3].double()).square().sum(dim=1)
    d_high = (tokens - x[1:48:3].double()).square().sum(dim=1)
    assert torch.equal(d_low, d_high) and torch.all(d_low == (8389 * 2.0**-23) ** 2)  # the premise
    assert -10 < x.mean().item() < -8
    keep = torch.tensor([*range(0, 48, 3), *range(1, 48, 3)]).sort().values  # rows 2i, 2i + 1 of case i
    got = compression._assign(x, compression._search_copy(x), keep, None)
    assert got[2:48:3].tolist() == list(range(0, 32, 2))


@pytest.mark.parametrize("precision", ["high", "medium"])
def test_reduced_precision_float32_matmuls_do_not_change_the_result(precision):
    # torch.set_float32_matmul_precision("medium") makes CPU (oneDNN) float32 matmuls run in bf16,
    # "high" allows TF32 on GPU: the distance search must not inherit that precision.
    x = _near_duplicate_blobs(30, 512, 1e-2, 4)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        _assert_matches_reference(x, 0.2, 8, "paper")
        _assert_matches_reference(_clustered(90, 64, centres=4, seed=6), 0.3, 8, "lof")
    finally:
        torch.set_float32_matmul_precision(before)
