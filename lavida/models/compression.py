"""Reverse-attention visual token compression (LAVIDA paper §3.4, Eq. 3-4).

Background tokens are many and alike, so they sit in dense regions of feature space. The
compressor estimates every visual token's local density from its k nearest neighbours (Eq. 3),
keeps the R densest tokens as a background reference set Z^b, lets every token join its nearest
background token, and replaces each background token by a reverse-attention average over its
cluster (Eq. 4): softmax(-z_b·z_jᵀ/√D) favours the members least similar to the background, so
anomaly evidence survives the compression. L tokens become R = max(1, ⌊L·ratio⌋).

Constants and where they come from:

* ``ratio = 0.2``: the paper's main setting (its memory claim and the supplement's runtime table);
  the official config uses ``reduction_ratio: 0.5``.
* ``k = 8``: the paper does not state k; the official config uses ``lof_k: 8``.
* ``density = "paper"``: ρ(z_i) = k / Σ_{j∈N_k(i)} ‖z_i - z_j‖² (Eq. 3). ``"lof"`` is what the
  official code computes instead: LOF's local reachability density on Euclidean distances / √D.

Design notes (choices the paper leaves open are listed in ``docs/fidelity.md``):

* Discrete steps (kNN, top-R, assignment) run on detached tokens: they carry no gradient anyway,
  and keeping them out of the graph saves the L×L work from autograd. Eq. 4 runs on the input
  itself, so gradients reach ``tokens`` (the official code wrapped everything in ``no_grad``).
* Distances are exact differences of the input tokens in the work dtype (fp32; fp64 for fp64
  input) summed in fp64, in row chunks so that no L×L matrix is ever held. The tokens are not
  centred for this: two close floats differ exactly (Sterbenz's lemma), and rounding each token
  to a centred copy first moved near-duplicates' distances by ~1e-6 relative, enough to reorder
  near-tied ones. A fast matmul search (‖a‖² + ‖b‖² - 2a·b on a mean-centred fp64 copy)
  proposes k + 8 candidates per token for the kNN and 4 for the nearest background; the
  distances that enter the density and decide the assignment are then recomputed from
  differences. The expansion loses about u·‖z‖² to cancellation: in float32
  (as ``torch.cdist``'s matmul path, the official code) ≈1e-3 for D = 3584 and unit-variance
  features, which swamps the tiny distances of near-duplicate tokens, exactly the dense
  background tokens Eq. 3 ranks. The search therefore runs in float64: about twice a float32
  GEMM on CPU, the same on A100/H100-class GPUs (slower on GPUs with reduced fp64 rate), and
  never lowered to TF32/bf16 by ``torch.set_float32_matmul_precision``.
* The search only proposes; it never decides. Each search value becomes a lower bound on the
  true distance through the matmul's rounding-error bound γ(‖a‖ + ‖b‖)², γ ≈ 2(D + 8)·u (Higham,
  *Accuracy and Stability of Numerical Algorithms*, §3.1). A token outside the candidates can
  reach the k-th exact candidate distance only if its lower bound does; rows where some token
  might (in practice exact or near-exact ties, or near-duplicate clusters larger than the
  candidate list) get every such token measured exactly. Results therefore equal an exhaustive
  search over the difference-based distances whatever the chunk size and the float32 matmul
  precision setting. Those distances are within ``_exact_error`` of the true ones (≈8e-6
  relative in fp32 for D = 3584, from rounding the squares and their fp32 partial sums), so only
  candidates tied that closely can be ordered otherwise than by a float64 computation.
* Ties are broken towards lower indices everywhere (density ranking, nearest neighbour, nearest
  background), so results are deterministic and exact duplicates behave predictably.
* Argument checks include a finiteness check of ``tokens`` (one device sync per call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lavida.number_checks import is_real, is_whole

__all__ = [
    "CompressionResult",
    "Density",
    "TokenCompressor",
    "local_density",
    "num_kept",
    "reverse_attention_compress",
]

Density = Literal["paper", "lof"]
_DENSITIES: tuple[str, ...] = get_args(Density)
# Default scratch sizes: a chunk×L distance block and a gather of neighbour vectors (together ≲ 256 MB).
_BLOCK_BYTES = 224 * 2**20
_GATHER_BYTES = 32 * 2**20
# Added to the reachability sum by the official LOF code (scikit-learn adds it to the mean).
_LOF_EPS = 1e-10
# Candidates the fast distance search passes on to the exact re-check: k + _KNN_SPARE for the
# k nearest neighbours, _ASSIGN_CANDIDATES for the nearest background token.
_KNN_SPARE = 8
_ASSIGN_CANDIDATES = 4


@dataclass(frozen=True)
class CompressionResult:
    """Output of :func:`reverse_attention_compress` for one sample.

    Attributes:
        tokens: (R, D) compressed tokens Z' (Eq. 4) in the input dtype, one row per background
            token, ordered by the background token's original index.
        keep: (R,) int64, ascending original indices of the background tokens Z^b; row r of
            ``tokens`` replaces input token ``keep[r]`` (use it to keep position ids).
        assignment: (L,) int64, the row of ``tokens`` (cluster) each input token joined;
            ``assignment[keep[r]] == r``.
        density: (L,) float, the local density used for ranking (Eq. 3 or LOF lrd; ranked in
            fp64, reported in fp32, fp64 for fp64 input); NaN where it was not needed (R = L,
            the no-op fast path).
    """

    tokens: Tensor
    keep: Tensor
    assignment: Tensor
    density: Tensor

    @property
    def num_kept(self) -> int:
        """R, the number of compressed tokens."""
        return int(self.keep.numel())


def num_kept(num_tokens: int, ratio: float) -> int:
    """R = max(1, ⌊L·ratio⌋), the number of tokens compression keeps.

    Args:
        num_tokens: L ≥ 1.
        ratio: Compression ratio in (0, 1].

    Returns:
        R, with 1 ≤ R ≤ L. The floor is taken of the float product, as the official code does.
    """
    _check_ratio(ratio)
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}.")
    return max(1, min(num_tokens, math.floor(num_tokens * ratio)))


def local_density(
    tokens: Tensor, k: int = 8, density: Density = "paper", *, chunk_size: int | None = None
) -> Tensor:
    """Local density of every token from its k nearest neighbours (Eq. 3, or LOF's lrd).

    ``"paper"``: ρ(z_i) = k / Σ_{j∈N_k(i)} ‖z_i - z_j‖² (squared Euclidean, unscaled; exact
    duplicates give ρ = inf). ``"lof"``: with d = Euclidean distance / √D and kdist(o) the
    distance from o to its k-th neighbour, lrd(p) = k / (Σ_{o∈N_k(p)} max(kdist(o), d(p, o)) + 1e-10).
    The token itself is never its own neighbour (excluded by index, so a duplicate still counts).
    With fewer than k other tokens, k' = L - 1 neighbours are used.

    Args:
        tokens: (L, D) floating tensor, L ≥ 2. Not differentiated.
        k: Number of neighbours, ≥ 1.
        density: ``"paper"`` or ``"lof"``.
        chunk_size: Rows per distance block; ``None`` keeps the scratch memory under about 256 MB.

    Returns:
        (L,) density in fp32 (fp64 for fp64 input), on the tokens' device.

    Raises:
        ValueError: On a bad argument, fewer than 2 tokens, or non-finite values.
    """
    _check_tokens(tokens)
    _check_k_density_chunk(k, density, chunk_size)
    if tokens.shape[0] < 2:
        raise ValueError("local_density needs at least 2 tokens: a single token has no neighbours.")
    x = _detached(tokens)
    return _density(x, _search_copy(x), k, density, chunk_size).to(x.dtype)


def reverse_attention_compress(
    tokens: Tensor,
    ratio: float,
    k: int = 8,
    density: Density = "paper",
    *,
    chunk_size: int | None = None,
) -> CompressionResult:
    """Compress one sample's visual tokens L → R = max(1, ⌊L·ratio⌋) (paper §3.4).

    1. Density of every token from its k nearest neighbours (Eq. 3; see :func:`local_density`).
    2. Background set Z^b = the R densest tokens (ties: lower index first).
    3. Every token joins its nearest background token by Euclidean distance (ties: lower
       index); a background token always joins its own cluster, even if it has duplicates.
    4. Eq. 4 per cluster N_i (which contains b_i): Z'_i = Σ_{j∈N_i} softmax_j(-z_{b_i}·z_jᵀ/√D) z_j.

    With ratio = 1 (or L = 1) every token is its own cluster and the input is returned as is.

    Args:
        tokens: (L, D) visual tokens of one sample, all frames of the clip together. Any
            floating dtype and device; gradients flow back through Eq. 4.
        ratio: Compression ratio in (0, 1].
        k: Neighbours for the density, ≥ 1 (k' = L - 1 if fewer tokens exist).
        density: ``"paper"`` (Eq. 3) or ``"lof"`` (the official code's variant).
        chunk_size: Rows per distance block (memory vs speed; results do not depend on it);
            ``None`` keeps the scratch memory under about 256 MB.

    Returns:
        A :class:`CompressionResult` with ``tokens`` (R, D) in the input dtype, ``keep`` (R,),
        ``assignment`` (L,) and ``density`` (L,).

    Raises:
        TypeError: If ``tokens`` is not a tensor.
        ValueError: On a bad argument or non-finite tokens.
    """
    _check_tokens(tokens)
    _check_ratio(ratio)
    _check_k_density_chunk(k, density, chunk_size)
    num_tokens = tokens.shape[0]
    r = num_kept(num_tokens, ratio)
    if r == num_tokens:
        # Every token is a background token in a cluster of one: Eq. 4 is then the identity
        # (softmax over one element is 1), so skip the O(L²) work. Returns the input tensor.
        idx = torch.arange(num_tokens, device=tokens.device)
        nan = torch.full((num_tokens,), math.nan, dtype=_work_dtype(tokens), device=tokens.device)
        return CompressionResult(tokens=tokens, keep=idx, assignment=idx.clone(), density=nan)
    return _compress(tokens, r, k, density, chunk_size)


class TokenCompressor(nn.Module):
    """Reverse-attention token compression as a module (paper §3.4). It has no parameters.

    Args:
        ratio: Fraction of tokens kept, in (0, 1]. Paper 0.2, official config 0.5.
        k: Neighbours for the density, ≥ 1. The paper is silent; the official config uses 8.
        density: ``"paper"`` (Eq. 3) or ``"lof"`` (official code).
        chunk_size: Rows per distance block, ≥ 1, or ``None`` for about 256 MB of scratch.

    Raises:
        ValueError: On an argument outside the allowed values.
    """

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        k: int = 8,
        density: Density = "paper",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_ratio(ratio)
        _check_k_density_chunk(k, density, chunk_size)
        self.ratio = float(ratio)
        self.k = int(k)
        self.density = density
        self.chunk_size = None if chunk_size is None else int(chunk_size)

    def forward(self, tokens: Tensor) -> CompressionResult:
        """Compress (L, D) tokens of one sample to (R, D); see :func:`reverse_attention_compress`."""
        return reverse_attention_compress(
            tokens, self.ratio, self.k, self.density, chunk_size=self.chunk_size
        )

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, k={self.k}, density={self.density!r}, chunk_size={self.chunk_size}"


# --------------------------------------------------------------------------------------------
# Implementation


def _compress(tokens: Tensor, r: int, k: int, density: str, chunk_size: int | None) -> CompressionResult:
    """General path for any 1 ≤ R ≤ L (no fast path), so tests can check it against the fast one."""
    keep, assignment, rho = _select(tokens, r, k, density, chunk_size)
    out = _reverse_attention(tokens.to(_work_dtype(tokens)), keep, assignment)
    return CompressionResult(tokens=out.to(tokens.dtype), keep=keep, assignment=assignment, density=rho)


def _select(
    tokens: Tensor, r: int, k: int, density: str, chunk_size: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The discrete part: (keep (R,), assignment (L,), density (L,)), computed without a graph."""
    x = _detached(tokens)
    xs = _search_copy(x)
    if x.shape[0] > 1:
        rho = _density(x, xs, k, density, chunk_size)
    else:
        rho = torch.full((1,), math.nan, dtype=torch.float64, device=x.device)
    # Top-R by density (fp64); a stable descending sort keeps lower indices first among equal ones.
    top = torch.sort(rho, descending=True, stable=True).indices[:r]
    keep = torch.sort(top).values
    return keep, _assign(x, xs, keep, chunk_size), rho.to(x.dtype)


def _work_dtype(tokens: Tensor) -> torch.dtype:
    # Distances and Eq. 4 in fp32 at least: bf16's 8-bit mantissa cannot rank distances.
    return torch.float64 if tokens.dtype == torch.float64 else torch.float32


def _detached(tokens: Tensor) -> Tensor:
    """The (L, D) tokens without their graph, in the work dtype (no copy for fp32 and fp64 input).

    The exact differences are taken of these, not of a centred copy: two close floats differ
    exactly (Sterbenz's lemma), while centring would first round each of them, which can
    reorder near-tied distances of near-duplicate tokens.
    """
    return tokens.detach().to(_work_dtype(tokens))


def _search_copy(x: Tensor) -> Tensor:
    """(L, D) fp64 copy of ``x`` minus its mean, for the matmul search (module notes: why fp64).

    Distances are translation invariant; centring shrinks ‖z‖² (LLM features share a large
    common component), and with it the cancellation error of the ‖a‖² + ‖b‖² - 2a·b search
    and the bound that certifies it.
    """
    xs = x.to(torch.float64, copy=True)  # a copy even for fp64 input, which is centred in place
    return xs.sub_(xs.mean(dim=0, keepdim=True))


def _buffers(x: Tensor, xs: Tensor, width: int, m: int, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """Scratch reused by every chunk: a (rows, width) search block (dtype of ``xs``) and an
    (n·m, D) gather for the exact differences (dtype of ``x``).

    Allocating them once matters on CPU, where page-faulting a fresh block per chunk costs
    more than the arithmetic. By default the block takes _BLOCK_BYTES and the gather _GATHER_BYTES.
    """
    rows = chunk_size or max(1, _BLOCK_BYTES // (xs.element_size() * width))
    rows = min(rows, x.shape[0])
    return xs.new_empty(rows, width), _gather_buffer(x, m, rows)


def _gather_buffer(x: Tensor, m: int, rows: int) -> Tensor:
    """(p·m, D) scratch for :func:`_exact_sqdist`, p ≤ rows rows at a time within _GATHER_BYTES."""
    pieces = min(rows, max(1, _GATHER_BYTES // (x.element_size() * m * x.shape[1])))
    return x.new_empty(pieces * m, x.shape[1])


def _exact_sqdist(rows: Tensor, pool: Tensor, cand: Tensor, buf: Tensor) -> Tensor:
    """Squared distances from rows (c, D) to pool[cand] (c, m), from explicit differences.

    Differences and squares in the tokens' dtype, summed in groups of g ≤ 64 features in that
    dtype and the D/g partial sums in fp64 (as fast as a plain fp32 sum; a full fp64 sum costs 5×).
    Every term is positive, so the result is within :func:`_exact_error` of the exact value,
    relative: tight enough to certify the search (:func:`_complete`).
    ``buf`` is (p·m, D) scratch; rows are processed p at a time to bound the (p, m, D) gather.

    Returns:
        (c, m) float64.
    """
    c, m = cand.shape
    dim = rows.shape[1]
    group = _sum_group(dim)
    per = buf.shape[0] // m
    out = rows.new_empty(c, m, dtype=torch.float64)
    for s in range(0, c, per):  # pieces of rows, for bounded memory
        e = min(s + per, c)
        diff = torch.index_select(pool, 0, cand[s:e].reshape(-1), out=buf[: (e - s) * m]).view(e - s, m, -1)
        diff.sub_(rows[s:e].unsqueeze(1))
        partial = diff.square_().view(e - s, m, dim // group, group).sum(dim=-1)
        torch.sum(partial, dim=-1, dtype=torch.float64, out=out[s:e])
    return out


def _sum_group(dim: int) -> int:
    """Largest divisor of D up to 64: the group size of :func:`_exact_sqdist`'s first-level sums."""
    return max(g for g in range(1, min(dim, 64) + 1) if dim % g == 0)


def _exact_error(x: Tensor) -> float:
    """Relative error bound of :func:`_exact_sqdist` on tokens like ``x``, with a factor 2 margin.

    A difference and its square are off by at most u each, a sum of g positive terms by (g - 1)·u
    (Higham, §3.1), and the fp64 sum of the D/g partial sums by (D/g)·u_64.
    """
    dim = x.shape[1]
    group = _sum_group(dim)
    u, u64 = torch.finfo(x.dtype).eps / 2, torch.finfo(torch.float64).eps / 2
    return 2 * ((group + 3) * u + (dim // group + 2) * u64)


def _error_factor(x: Tensor) -> float:
    """γ such that |search value - true squared distance| ≤ γ·(‖a‖ + ‖b‖)² (see :func:`_lower_bounds`).

    A length-D dot product (and a sum of D squares) in any summation order is off by at most
    D·u/(1 - D·u) times the sum of the products' magnitudes (Higham, Accuracy and Stability of
    Numerical Algorithms, §3.1); a few more roundings add the + 8, and the factor 2 is a margin.
    """
    nu = (x.shape[1] + 8) * torch.finfo(x.dtype).eps / 2  # < 1e-12 for fp64 and any real D
    return 2 * nu / (1 - nu)


def _lower_bounds(
    block: Tensor, sq_rows: Tensor, norm_rows: Tensor, sq: Tensor, norm: Tensor, gamma: float
) -> Tensor:
    """Turn the search block ‖b‖² - 2a·b into lower bounds on ‖a - b‖², in place.

    ‖a - b‖² = ‖a‖² + (‖b‖² - 2a·b) ≥ block + ‖a‖² - γ(‖a‖ + ‖b‖)², written as three rank-one
    updates so that no second (rows, L) block is allocated. Entries set to inf stay inf.
    """
    block.add_(sq_rows.unsqueeze(1), alpha=1 - gamma).sub_(gamma * sq.unsqueeze(0))
    return block.addr_(norm_rows, norm, alpha=-2 * gamma)


def _complete(lower: Tensor, cand: Tensor, bound: Tensor) -> tuple[Tensor, Tensor]:
    """Rows whose exact result may lie outside their candidates, and those extra candidates.

    Args:
        lower: (c, W) lower bounds on the squared distances to the W pool tokens (modified:
            the candidates' entries are set to inf).
        cand: (c, m) the candidates (pool indices), already measured exactly.
        bound: (c,) the exact squared distance an outside token would have to reach.

    Returns:
        ``(rows, extra)``: (u,) int64 row indices and (u, m + e) candidates (old ones included)
        that contain every token whose exact distance can be ≤ ``bound`` (the margin covers the
        rounding of the exact differences); (0,) and (0, m) when every row is already complete.
    """
    lower.scatter_(1, cand, math.inf)
    open_rows = (lower.amin(dim=1) <= bound).nonzero(as_tuple=True)[0]
    if open_rows.numel() == 0:
        return open_rows, cand[:0]
    sub = lower.index_select(0, open_rows)
    # Top-e smallest bounds, e = the largest count of tokens under a row's bound: each row's set of
    # possible winners is inside its e smallest; any surplus is merely measured too.
    extra = int((sub <= bound[open_rows].unsqueeze(1)).sum(dim=1).max())
    more = sub.topk(extra, dim=1, largest=False, sorted=False).indices
    return open_rows, torch.cat([cand.index_select(0, open_rows), more], dim=1)


def _knn(x: Tensor, xs: Tensor, k: int, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """k nearest neighbours of every row of x (self excluded by index), by exact distances;
    ``xs`` is x's search copy (:func:`_search_copy`).

    Returns:
        idx (L, k) int64 and exact squared distances (L, k) in fp64, ascending along each row
        (ties: lower index).
    """
    num = x.shape[0]
    sq = xs.square().sum(dim=-1)
    norm = sq.sqrt()
    gamma = _error_factor(xs)
    margin = 1 + _exact_error(x)  # the exact distances' own rounding, relative
    idx = torch.empty(num, k, dtype=torch.long, device=x.device)
    d2 = torch.empty(num, k, dtype=torch.float64, device=x.device)
    m = min(num - 1, k + _KNN_SPARE)
    block_buf, diff_buf = _buffers(x, xs, num, m, chunk_size)
    step = block_buf.shape[0]
    for start in range(0, num, step):  # loop over row blocks only, for bounded memory
        stop = min(start + step, num)
        rows = x[start:stop]
        # ‖b‖² - 2a·b ranks candidates like ‖a - b‖² (‖a‖² is constant per row).
        block = torch.addmm(sq.unsqueeze(0), xs[start:stop], xs.T, alpha=-2, out=block_buf[: stop - start])
        local = torch.arange(stop - start, device=x.device)
        block[local, local + start] = math.inf  # a token is not its own neighbour
        # Candidates sorted by index so that exact ties go to the lower index (stable sort below).
        cand = torch.sort(block.topk(m, dim=1, largest=False, sorted=False).indices, dim=1).values
        dist, order = torch.sort(_exact_sqdist(rows, x, cand, diff_buf), dim=1, stable=True)
        idx[start:stop] = cand.gather(1, order[:, :k])
        d2[start:stop] = dist[:, :k]
        # Certify: no token outside the candidates may come within the k-th exact distance;
        # rows where one might are re-ranked over every such token.
        lower = _lower_bounds(block, sq[start:stop], norm[start:stop], sq, norm, gamma)
        open_rows, wider = _complete(lower, cand, dist[:, k - 1] * margin)
        if open_rows.numel():
            wider = torch.sort(wider, dim=1).values
            more = _exact_sqdist(
                rows[open_rows], x, wider, _gather_buffer(x, wider.shape[1], open_rows.numel())
            )
            more_dist, more_order = torch.sort(more, dim=1, stable=True)
            idx[start + open_rows] = wider.gather(1, more_order[:, :k])
            d2[start + open_rows] = more_dist[:, :k]
    return idx, d2


def _density(x: Tensor, xs: Tensor, k: int, density: str, chunk_size: int | None) -> Tensor:
    """(L,) fp64 density of the (L, D) tokens x, L ≥ 2, with ``xs`` their search copy."""
    k = min(k, x.shape[0] - 1)  # k' = L - 1 when there are fewer than k other tokens
    idx, d2 = _knn(x, xs, k, chunk_size)
    if density == "paper":
        # Eq. 3. Sums of ascending values, so tied neighbourhoods give bit-identical densities.
        return k / d2.sum(dim=1)
    # Official variant: LOF local reachability density on Euclidean distances / √D.
    dist = d2.sqrt() / math.sqrt(x.shape[1])
    kdist = dist[:, -1]  # distance to the k-th neighbour
    reach = torch.maximum(kdist[idx], dist)
    return k / (torch.sort(reach, dim=1).values.sum(dim=1) + _LOF_EPS)


def _assign(x: Tensor, xs: Tensor, keep: Tensor, chunk_size: int | None) -> Tensor:
    """(L,) int64 row in ``keep`` of every token's nearest background token, by exact distances
    (ties: lower row); certified like :func:`_knn`. ``xs`` is x's search copy (:func:`_search_copy`)."""
    num = x.shape[0]
    r = keep.numel()
    rows_r = torch.arange(r, device=x.device)
    bg, bg_search = x[keep], xs[keep]
    sq_bg, sq_x = bg_search.square().sum(dim=-1), xs.square().sum(dim=-1)
    norm_bg, norm_x = sq_bg.sqrt(), sq_x.sqrt()
    gamma = _error_factor(xs)
    margin = 1 + _exact_error(x)
    m = min(r, _ASSIGN_CANDIDATES)
    assignment = torch.empty(num, dtype=torch.long, device=x.device)
    block_buf, diff_buf = _buffers(x, xs, r, m, chunk_size)
    step = block_buf.shape[0]
    for start in range(0, num, step):  # loop over row blocks only, for bounded memory
        stop = min(start + step, num)
        rows = x[start:stop]
        # ‖b‖² - 2a·b ranks backgrounds like ‖a - b‖² (‖a‖² is constant per row).
        block = torch.addmm(
            sq_bg.unsqueeze(0), xs[start:stop], bg_search.T, alpha=-2, out=block_buf[: stop - start]
        )
        # Exact distances decide; candidates sorted by row so argmin's first hit is the lowest.
        cand = torch.sort(block.topk(m, dim=1, largest=False, sorted=False).indices, dim=1).values
        dist = _exact_sqdist(rows, bg, cand, diff_buf)
        best = dist.argmin(dim=1, keepdim=True)
        chosen = cand.gather(1, best).squeeze(1)
        # Certify as in _knn: re-check rows where an outside background might be as close.
        lower = _lower_bounds(block, sq_x[start:stop], norm_x[start:stop], sq_bg, norm_bg, gamma)
        open_rows, wider = _complete(lower, cand, dist.gather(1, best).squeeze(1) * margin)
        if open_rows.numel():
            wider = torch.sort(wider, dim=1).values
            more = _exact_sqdist(
                rows[open_rows], bg, wider, _gather_buffer(x, wider.shape[1], open_rows.numel())
            )
            chosen[open_rows] = wider.gather(1, more.argmin(dim=1, keepdim=True)).squeeze(1)
        assignment[start:stop] = chosen
    assignment[keep] = rows_r  # a background token always anchors its own cluster
    return assignment


def _reverse_attention(z: Tensor, keep: Tensor, assignment: Tensor) -> Tensor:
    """Eq. 4 for all clusters at once with segment operations; differentiable in z.

    Args:
        z: (L, D) tokens in the work dtype (carrying the graph).
        keep: (R,) background indices. assignment: (L,) cluster row of every token.

    Returns:
        (R, D) with row i = Σ_{j∈N_i} softmax_j(-z_{b_i}·z_jᵀ/√D) z_j.
    """
    r, dim = keep.numel(), z.shape[1]
    anchor = z.index_select(0, keep).index_select(0, assignment)  # (L, D): z_{b_i} per member j
    logits = -(z * anchor).sum(dim=-1) / math.sqrt(dim)  # (L,)  Eq. 4: -Z_i^b Z_{N_i}^T / √D
    # Segment softmax: subtract each cluster's max (softmax is shift invariant, so the max
    # needs no gradient) to keep exp() finite for large dot products.
    cmax = logits.new_full((r,), -math.inf).scatter_reduce(0, assignment, logits.detach(), reduce="amax")
    weight = torch.exp(logits - cmax[assignment])
    weight = weight / weight.new_zeros(r).index_add(0, assignment, weight)[assignment]
    return z.new_zeros(r, dim).index_add(0, assignment, weight.unsqueeze(1) * z)  # Eq. 4: · Z_{N_i}


# --------------------------------------------------------------------------------------------
# Argument checks: each message says what is allowed.


def _check_tokens(tokens: Tensor) -> None:
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens must be a torch.Tensor of shape (L, D), got {type(tokens).__name__}.")
    if tokens.ndim != 2:
        raise ValueError(
            f"tokens must be 2-D (L, D): the visual tokens of one sample, got shape {tuple(tokens.shape)}. "
            "Compress a batch one sample at a time (each sample keeps a different number of tokens)."
        )
    if tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(
            f"tokens must have L >= 1 tokens of D >= 1 features, got shape {tuple(tokens.shape)}."
        )
    if not tokens.is_floating_point():
        raise ValueError(f"tokens must be a floating-point tensor, got dtype {tokens.dtype}.")
    if not bool(torch.isfinite(tokens).all()):
        raise ValueError("tokens contain NaN or inf; densities and distances would be meaningless.")


def _check_ratio(ratio: float) -> None:
    ok = is_real(ratio) and 0 < ratio <= 1
    if not ok:
        raise ValueError(f"ratio must be a number in (0, 1] (fraction of tokens kept), got {ratio!r}.")


def _check_k_density_chunk(k: int, density: str, chunk_size: int | None) -> None:
    if not is_whole(k) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (number of nearest neighbours), got {k!r}.")
    if density not in _DENSITIES:
        raise ValueError(
            f"density must be one of {_DENSITIES} ('paper' = Eq. 3, 'lof' = official code), got {density!r}."
        )
    bad_chunk = not is_whole(chunk_size) or chunk_size < 1
    if chunk_size is not None and bad_chunk:
        raise ValueError(f"chunk_size must be None (automatic) or an integer >= 1, got {chunk_size!r}.")
