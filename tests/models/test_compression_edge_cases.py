"""Edge cases of the token compression (paper §3.4) that the reference-agreement tests leave open:
default arguments, exact ties and neighbours the fast search cannot rank (the exact re-check must
decide them), the smallest inputs, and the scratch memory budget."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from lavida.models import compression
from lavida.models.compression import TokenCompressor, local_density, num_kept, reverse_attention_compress

# Ten tokens on a line, z_i = i (D = 1). With k = 8 each token's neighbours are the other nine
# minus the farthest one, so Eq. 3's sum is Σ_{j≠i} (i - j)² minus the largest square:
#   i = 0: 1 + 4 + ... + 81 = 285, minus 81 -> 204     i = 1: 1 + (1 + ... + 64) = 205, minus 64 -> 141
#   i = 2: 4 + 1 + (1 + ... + 49) = 145, minus 49 -> 96  i = 3: 9 + 4 + 1 + 91 = 105, minus 36 -> 69
#   i = 4: 16 + 9 + 4 + 1 + 55 = 85, minus 25 -> 60     and symmetrically for i = 5 ... 9.
_LINE = torch.arange(10.0).unsqueeze(1)
_LINE_SUMS_K8 = torch.tensor([204.0, 141, 96, 69, 60, 60, 69, 96, 141, 204])


def test_default_k_is_eight():
    """k = 8 by default everywhere (official config ``lof_k: 8``; docs/fidelity.md): Eq. 3 on the
    hand-worked line above, through local_density, reverse_attention_compress and the module."""
    expected = 8 / _LINE_SUMS_K8
    torch.testing.assert_close(local_density(_LINE), expected)
    torch.testing.assert_close(reverse_attention_compress(_LINE, 0.2).density, expected)
    torch.testing.assert_close(TokenCompressor()(_LINE).density, expected)


def test_result_is_frozen():
    """A CompressionResult cannot be modified after the fact (keep and assignment must stay consistent)."""
    res = reverse_attention_compress(_LINE, 0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.keep = torch.tensor([0])  # type: ignore[misc]


def test_tied_backgrounds_beyond_the_search_candidates_join_the_lowest():
    """More equidistant backgrounds than the 4 search candidates: the widened exact check must
    still find the lowest row (ties: lower index, module notes).

    20 copies of (0, 0), then 10 of (1, 0) and 10 of (-1, 0) (mean exactly 0, so centring changes
    nothing). Every token has >= 3 exact duplicates, so with k = 3 every density is inf and
    Z^b = the first R = ⌊40·0.3⌋ = 12 tokens, all copies of (0, 0). Copies 12-19 of (0, 0) are at
    distance 0 from all 12 backgrounds (the search's lower bound is exactly 0 too, not below it),
    the (±1, 0) tokens at distance 1 from all 12: every tie goes to row 0. Eq. 4 for row 0: anchor
    (0, 0), all logits 0, uniform weights over 1 + 8 + 20 members, mean (0, 0) up to the rounding
    of the weights 1/29; rows 1-11 are single copies of (0, 0)."""
    x = torch.cat(
        [
            torch.zeros(20, 2),
            torch.tensor([[1.0, 0.0]]).repeat(10, 1),
            torch.tensor([[-1.0, 0.0]]).repeat(10, 1),
        ]
    )
    # One row per block, so that each row's widening is sized by its own ties only.
    res = reverse_attention_compress(x, 0.3, k=3, chunk_size=1)
    assert res.keep.tolist() == list(range(12))
    assert res.assignment.tolist() == list(range(12)) + [0] * 28
    torch.testing.assert_close(res.tokens, torch.zeros(12, 2), rtol=0, atol=1e-7)


def test_two_tokens_are_enough_for_a_density():
    """L = 2 is the smallest input local_density accepts (k' = L - 1 = 1). z0 = (0, 0), z1 = (3, 4):
    ‖z0 - z1‖² = 25, so Eq. 3 gives ρ = 1 / 25 for both; LOF: d = 5 / √2 = kdist,
    lrd = 1 / (d + 1e-10)."""
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(local_density(x), torch.full((2,), 1 / 25, dtype=torch.float64))
    lrd = 1 / (5 / math.sqrt(2) + 1e-10)
    torch.testing.assert_close(local_density(x, density="lof"), torch.full((2,), lrd, dtype=torch.float64))


def test_neighbours_below_the_search_resolution_are_found_exactly():
    """When the fast search cannot rank the neighbours at all, the exact re-check must pick them.

    Two blobs of 20 tokens at ±a (‖a‖² ≈ 9·64) with spread 1e-6: squared distances inside a blob
    (~1e-10) are below the search's error bound γ(‖a‖ + ‖b‖)² ≈ 3e-10 (γ ≈ 2(D + 8)·u64), so every
    row is re-ranked over all tokens the bound cannot exclude, and the 8 nearest must be the
    smallest of those bounds. Reference: Eq. 3 and LOF's lrd (k / (Σ reach + 1e-10), reach =
    max(kdist, d), d = distance / √D) on float64 distances from explicit differences."""
    g = torch.Generator().manual_seed(0)
    a = 3 * torch.randn(1, 64, generator=g)
    x = torch.cat([a + 1e-6 * torch.randn(20, 64, generator=g), -a + 1e-6 * torch.randn(20, 64, generator=g)])
    x64 = x.double()
    d2 = torch.cdist(x64, x64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d2.fill_diagonal_(math.inf)
    near, nbr = d2.topk(8, largest=False)  # ascending; no ties in random data
    paper = 8 / near.sum(dim=1)
    dist = near.sqrt() / 8  # √D = 8
    lof = 8 / (torch.maximum(dist[:, -1][nbr], dist).sum(dim=1) + 1e-10)
    for chunk_size in (None, 3):  # blocks of 3 rows: the re-ranked rows are written back in place
        got = local_density(x, chunk_size=chunk_size).double()
        torch.testing.assert_close(got, paper, rtol=1e-5, atol=0)
        got = local_density(x, density="lof", chunk_size=chunk_size).double()
        torch.testing.assert_close(got, lof, rtol=1e-5, atol=0)


def test_exactly_tied_backgrounds_far_from_the_mean_join_the_lowest():
    """Exact ties decided by the exact distances, not by the search's rounding (ties: lower row).

    c = (1, 2, ..., 6) and the 12 backgrounds c ± e_i, all at squared distance exactly 1 from c;
    the same mirrored at -c (so the mean is 0 and ‖c‖ is not centred away). Each background is
    duplicated once, so with k = 1 its density is 1 / 0 = inf, and Z^b is the first R = ⌊50·0.48⌋
    = 24 tokens, the originals. The copies join their originals (distance 0); c is equidistant
    from rows 0-11 and joins row 0, -c likewise joins row 12. The search ranks the 12 tied
    backgrounds by its rounding alone, so row 0 is found only if the exact re-check covers every
    background whose lower bound reaches the exact distance (with its rounding margin)."""
    c = torch.arange(1.0, 7.0)
    side = torch.cat([c + torch.eye(6), c - torch.eye(6)])
    backgrounds = torch.cat([side, -side])
    x = torch.cat([backgrounds, backgrounds, c[None], -c[None]])
    assert num_kept(50, 0.48) == 24
    res = reverse_attention_compress(x, 0.48, k=1)
    assert res.keep.tolist() == list(range(24))
    assert res.assignment.tolist() == list(range(24)) * 2 + [0, 12]


def test_lof_uses_the_lowest_indexed_of_exactly_tied_neighbours():
    """Exact neighbour ties go to the lower index also where the search cannot tell them apart
    (LOF's reachability depends on which neighbour was taken, Eq. 3's sum does not).

    c = (1, ..., 12) is token 0; tokens 1-24 are c ± e_i, all at distance exactly 1 from c; token
    25 + i is a satellite 1 + (i + 1)/64 beyond token 1 + i, so kdist(token 1 + i) = 1 + (i + 1)/64
    (its 2 nearest: c at 1 and its satellite; the other c ± e_j are at √2 or farther). With k = 2,
    c's neighbours are tokens 1 and 2 (lowest of the 24 tied), and with d = distance / √12:
    lrd(c) = 2 / (max(kdist, d) summed + 1e-10) = 2 / ((1 + 1/64 + 1 + 2/64) / √12 + 1e-10)."""
    c = torch.arange(1.0, 13.0)
    directions = torch.cat([torch.eye(12), -torch.eye(12)])
    beyond = 1 + torch.arange(1.0, 25.0) / 64
    x = torch.cat([c[None], c + directions, c + directions * (1 + beyond[:, None])])
    expected = 2 / ((2 + 3 / 64) / math.sqrt(12) + 1e-10)
    assert local_density(x, k=2, density="lof")[0].item() == pytest.approx(expected, rel=1e-6)


def test_lof_ties_among_many_candidates_keep_index_order():
    """The exact re-ranking of the k + 8 candidates keeps index order among equal distances
    (a stable sort; an unstable one reorders rows longer than 16 on CPU). k = 9, 17 candidates.

    1-D tokens: c = 0, eight copies of 1 (A), eight of -1 (B), a satellite of A at 2.25, one of
    B at -2.5 and a far token at 10.25 (20 tokens summing to 10: the mean 0.5 is exact, so centring
    keeps every distance exact and the ties intact). An A token's 9 nearest: 7 copies (0), c (1),
    its satellite (1.25; B is at 2), so kdist(A) = 1.25; likewise kdist(B) = 1.5. c's 9 nearest
    are the lowest 9 of the 16 tied at distance 1: all of A and the first B. LOF with
    d = distance / √1 and reach = max(kdist, d): lrd(c) = 9 / (8·1.25 + 1.5 + 1e-10) = 9 / 11.5."""
    x = torch.tensor([0.0] + [1.0] * 8 + [-1.0] * 8 + [2.25, -2.5, 10.25]).unsqueeze(1)
    assert local_density(x, k=9, density="lof")[0].item() == pytest.approx(9 / 11.5, rel=1e-6)


@pytest.mark.parametrize("density", ["paper", "lof"])
def test_chunks_fill_the_preallocated_scratch(density, monkeypatch):
    """Each row block, and each piece of the neighbour gather, is written into the scratch
    allocated once (module notes: no L×L matrix). A block of the wrong size would still give the
    right numbers, but torch then resizes the ``out=`` buffer with a UserWarning: here an error.
    Blocks of 4 rows: 30 = 7·4 + 2, and 4 < R = 6. Results equal the unchunked ones."""
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    full = reverse_attention_compress(x, 0.2, 8, density)
    # Gather pieces of 3 rows for the 16 kNN candidates: two pieces per block of 4 rows.
    monkeypatch.setattr(compression, "_GATHER_BYTES", 3 * 16 * 8 * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunked = reverse_attention_compress(x, 0.2, 8, density, chunk_size=4)
    assert torch.equal(chunked.keep, full.keep) and torch.equal(chunked.assignment, full.assignment)
    assert torch.equal(chunked.tokens, full.tokens)


def test_nearest_token_with_a_negative_dot_product_is_found():
    """The search key ‖b‖² - 2a·b ranks tokens exactly like ‖a - b‖²; a wrong weight on a·b
    would favour the far tokens aligned with a over the near one opposite to it.

    Tokens (mean exactly 0 up to rounding, so centring moves nothing): n = (-0.05, 0),
    a = (0.1, 0), ten b = (0.2, ±√0.015) (five each), and F = -(their sum) = (-2.05, 0) far away.
    ‖a - n‖² = 0.15² = 0.0225 while ‖a - b‖² = 0.1² + 0.015 = 0.025, so a's nearest token is n,
    though a·n < 0 < a·b. k = 1: ρ(a) = 1 / 0.0225 (Eq. 3). Compression with R = ⌊13·0.85⌋ = 11:
    the b's are duplicates (ρ = inf), n and a tie at 1 / 0.0225 and n has the lower index, so
    Z^b = n and the b's (rows 0-10); a's nearest background is n, row 0."""
    b = torch.tensor([[0.2, math.sqrt(0.015)]] * 5 + [[0.2, -math.sqrt(0.015)]] * 5)
    core = torch.cat([torch.tensor([[-0.05, 0.0], [0.1, 0.0]]), b])
    x = torch.cat([core, -core.sum(dim=0, keepdim=True)])
    assert local_density(x, k=1)[1].item() == pytest.approx(1 / 0.0225, rel=1e-5)
    res = reverse_attention_compress(x, 0.85, k=1)
    assert res.keep.tolist() == [0, *range(2, 12)]
    assert res.assignment[1].item() == 0


def test_general_path_on_one_token_matches_the_fast_path():
    """A single token has no neighbours: the general path (no fast path) reports its density as
    one NaN, exactly like the R = L fast path, and returns the token itself."""
    x = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    fast = reverse_attention_compress(x, 1.0)
    general = compression._compress(x, 1, 8, "paper", None)
    torch.testing.assert_close(general.density, fast.density, equal_nan=True)
    assert torch.equal(general.tokens, fast.tokens) and torch.equal(general.keep, fast.keep)


def test_default_scratch_stays_within_its_memory_budget():
    """With chunk_size=None the scratch is a (rows, L) float64 search block within _BLOCK_BYTES
    (224 MiB) and an exact-difference gather within _GATHER_BYTES (32 MiB): ≲ 256 MB in all
    (module notes). L = 6000 tokens of D = 1024 float32 features, m = 16 candidates:
    block rows = ⌊224·2²⁰ / (8·6000)⌋ = ⌊234881024 / 48000⌋ = 4893 (< L, so the rows are chunked),
    gather rows = 16·min(4893, ⌊32·2²⁰ / (4·16·1024)⌋) = 16·512 = 8192."""
    x = torch.zeros(1, 1024).expand(6000, 1024)  # shapes and dtypes only: nothing is materialised
    xs = torch.zeros(1, 1024, dtype=torch.float64).expand(6000, 1024)
    block, gather = compression._buffers(x, xs, 6000, 16, None)
    assert block.shape == (4893, 6000) and block.dtype == torch.float64
    assert gather.shape == (8192, 1024) and gather.dtype == torch.float32
    assert block.numel() * 8 + gather.numel() * 4 <= 256 * 2**20


@pytest.mark.parametrize(("dim", "centre"), [(4, 2.0**21), (64, 2.0**20)])
def test_a_search_error_within_its_bound_cannot_hide_the_kth_neighbour(dim, centre, monkeypatch):
    """The fast search only proposes: a true neighbour that it ranks too far must still be found by
    the certificate (module notes), which compares lower bounds with the k-th exact candidate distance.

    The search value of token 0 for X, its true 2nd nearest, is raised by 0.4·B, B = γ(‖a‖ + ‖b‖)²
    with γ ≈ 2(D + 8)u (module notes; real fp64 errors stay under B/2). Tokens on the first axis,
    dyadic so that every difference is exact: token 0 at c, then Y, X and nine Z at c + offsets
    with squared distances ≈ 0.01·B, 0.8·B and 0.9·B ... 1.06·B, and a last token at minus their
    sum (the mean is exactly 0, so ‖a‖ ≈ ‖b‖ ≈ c). X, at 1.2·B in the search, falls behind the
    nine Z and out of the k + 8 = 10 candidates. Its lower bound, about (0.8 + 0.4 - 1)·B = 0.2·B,
    is above Y's distance but below the 2nd candidate's (Z, 0.9·B): only a check against the k-th
    candidate distance (not the (k - 1)-th) with a positive γ (at D = 4 a (D - 8) would make it
    negative) measures X. Reference: Eq. 3 with k = 2 on exact float64 distances."""
    u = 2.0**-53
    bound = 2 * (dim + 8) * u * (2 * centre) ** 2  # B for a, b ≈ c: 0.047 (D = 4), 0.070 (D = 64)
    grid = 2.0**-12

    def offset(fraction: float) -> float:  # dyadic, squared ≈ fraction·B
        return round(math.sqrt(fraction * bound) / grid) * grid

    fractions = [0.01, 0.8] + [0.9 + 0.02 * q for q in range(9)]
    tokens = torch.zeros(13, dim, dtype=torch.float64)
    tokens[0, 0] = centre
    tokens[1:12, 0] = centre + torch.tensor([offset(f) for f in fractions], dtype=torch.float64)
    tokens[12, 0] = -tokens[:12, 0].sum()
    real_addmm = torch.addmm

    def search_with_error(*args, **kwargs):
        out = real_addmm(*args, **kwargs)  # one block of all 13 rows (chunk_size=None)
        out[0, 2] += 0.4 * bound
        return out

    monkeypatch.setattr(torch, "addmm", search_with_error)
    got = local_density(tokens, k=2)
    d2 = torch.cdist(tokens, tokens, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d2.fill_diagonal_(math.inf)
    torch.testing.assert_close(got, 2 / d2.topk(2, largest=False).values.sum(dim=1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("token_at_origin", [False, True])
def test_a_search_error_within_its_bound_cannot_hide_the_lowest_tied_background(token_at_origin, monkeypatch):
    """The nearest-background search is certified like the kNN one, and each term of its slack
    γ(‖a‖ + ‖b‖)² = γ‖a‖² + γ‖b‖² + 2γ‖a‖‖b‖ is needed: here one of ‖a‖, ‖b‖ is 0 in turn.

    Six backgrounds (rows 0-5) tie exactly for token 6, which must join row 0 (ties: lower row).
    Token 6's search values for rows 0 and 1 are raised by 0.4·B, B = γ(‖a‖ + ‖b‖)² with
    γ ≈ 2(D + 8)u (module notes): rows 2-5 are then the m = 4 candidates, whatever topk's tie order.
    The lower bound of rows 0 and 1 is their exact distance + 0.4·B - B, so they are re-measured.
    First case: token e_1, backgrounds all at 0 (‖b‖ = 0, distance 1, B = γ). Second: token 0,
    backgrounds ±2e_1, ±2e_2, ±2e_3 (‖a‖ = 0, distance 4, B = 4γ). D = 1024, so that γ ≈ 2064u is
    far above the exact distances' own rounding margin (≈ 170u relative): a bound missing the
    γ‖a‖² (first case) or γ‖b‖² (second) term would exceed the exact distance and row 2 would win."""
    dim = 1024
    x = torch.zeros(7, dim, dtype=torch.float64)
    if token_at_origin:
        x[:6, :3] = 2 * torch.cat([torch.eye(3), -torch.eye(3)])
    else:
        x[6, 0] = 1.0
    u = 2.0**-53
    bound = 2 * (dim + 8) * u * (x[6].norm() + x[0].norm()).item() ** 2
    real_addmm = torch.addmm

    def search_with_error(*args, **kwargs):
        out = real_addmm(*args, **kwargs)  # (7 tokens, 6 backgrounds): one block
        out[6, :2] += 0.4 * bound
        return out

    monkeypatch.setattr(torch, "addmm", search_with_error)
    # x itself as the search copy: the norms above are those of the searched tokens.
    assert compression._assign(x, x, torch.arange(6), None).tolist() == [0, 1, 2, 3, 4, 5, 0]
