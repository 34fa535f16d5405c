"""Streaming pooled pixel ROC-AUC with constant memory (LAVIDA's "pixel-level AUC").

The metric is the MVTec-style pooled AUROC: every pixel of every test frame, normal frames included,
in one ROC curve. LAVIDA computes it with one ``roc_auc_score`` over the flattened predictions
(``train_acc.py::validate``, ``research/vad_eval.md`` §2 item 3), which needs all pixels in memory at
once (UBnormal at 720p is ~8e10 pixels). :class:`PixelAUC` instead keeps, for each bin of a fixed
monotone quantisation of the score, the number of negative and positive pixels in it, and computes the
AUC from those counts.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lavida.metrics._validation import check_labels, check_scores

__all__ = ["PixelAUC"]

logger = logging.getLogger(__name__)

# IEEE 754 layouts: float32 has 23 mantissa bits and exponent bias 127, float64 52 and 1023.
_F32_MANTISSA_BITS, _F32_EXPONENT_BIAS = 23, 127
_F64_MANTISSA_BITS, _F64_EXPONENT_BIAS = 52, 1023
_STATE_VERSION = 1
# compute() warns when its own a-posteriori error bound is larger than this.
_WARN_ERROR_BOUND = 1e-4


class PixelAUC:
    """Pooled pixel ROC-AUC accumulated over any number of ``update`` calls, in constant memory.

    **Quantiser.** A score ``x`` in [0, 1] is folded to its distance from the nearer end,
    ``d = min(x, 1 - x)`` (exact in the input's float width: ``1 - x`` is exact for ``x`` in
    [0.5, 1] by Sterbenz's lemma), and ``d`` is binned *logarithmically* by keeping its floating-point
    exponent and the top ``mantissa_bits`` bits of its mantissa. Bins are therefore at most ``2**-mantissa_bits`` wide relative to
    ``d``: fine where probability maps crowd (sigmoid outputs saturate towards 0 and 1) and still
    ``0.25 * 2**-mantissa_bits`` wide at worst (around 0.25 to 0.75). ``d < 2**-octaves`` falls into one
    tail bin per side; ``x == 0`` and ``x == 1`` exactly each get a bin of their own. The bin index is a
    non-decreasing function of ``x``. Defaults (14, 40): 1,277,958 bins, 20 MB of int64 counts; the
    tail bins hold scores within 9.1e-13 of 0 or 1 (float32 cannot even represent ``1 - x`` below
    6e-8 there, so for float32 maps the upper tail costs nothing).

    **AUC from the histogram.** With ``p_b`` positives and ``n_b`` negatives in bin ``b``,
    ``AUC = sum_b p_b (n_{<b} + n_b / 2) / (P N)``: a pair in different bins is ordered by the bins,
    a pair in the same bin counts one half. sklearn's ``roc_auc_score`` is the same sum over *distinct
    scores* (a tied pair counts one half there too, because its ROC curve has one point per distinct
    score and a trapezoid through each tie block).

    **Error bound.** The quantiser is monotone, so pairs in different bins are ordered exactly as
    sklearn orders them; only a positive/negative pair in the *same* bin can differ, and by at most
    one half (we count 1/2, sklearn counts 0, 1/2 or 1). Hence
    ``|AUC_hist - AUC_sklearn| <= sum_b p_b n_b / (2 P N)``, summed over bins other than the exact-0
    and exact-1 bins (those hold a single value, where sklearn also counts one half).
    :meth:`error_bound` returns this number from the counts, so every result carries its own
    guarantee; it is far smaller than ``max_b n_b / (2 N)`` in practice, and :meth:`compute` logs a
    warning when it exceeds 1e-4 (then increase ``mantissa_bits`` or ``octaves``).

    **Memory** is independent of the number of pixels: the counts take ``32 * (3 + (octaves - 1) *
    2**mantissa_bits)`` bytes (20 MB by default); during :meth:`update`, temporaries for one chunk of
    ``chunk_size`` pixels (about 30 bytes each, 60 MB by default). Scores that are not float32/float64
    and labels that are not bool are converted once per call (integer and float16 scores to float32,
    which holds them exactly), so that copy scales with the size of one update, never with the total.

    Example::

        metric = PixelAUC()
        for pred, gt in loader:  # pred: (T, H, W) probabilities, gt: (T, H, W) bool
            metric.update(pred, gt)
        auc, bound = metric.compute(), metric.error_bound()

    Args:
        mantissa_bits: Mantissa bits kept per octave (1 to 20). Relative bin width ``2**-mantissa_bits``.
        octaves: Number of octaves of ``d`` resolved below 0.5 (1 to 125); distances below
            ``2**-octaves`` share a tail bin.
        chunk_size: Pixels quantised per vectorised step in :meth:`update` (bounds the temporaries).
    """

    def __init__(self, *, mantissa_bits: int = 14, octaves: int = 40, chunk_size: int = 1 << 21) -> None:
        if not 1 <= int(mantissa_bits) <= 20:
            raise ValueError(f"PixelAUC: mantissa_bits must be in [1, 20], got {mantissa_bits!r}.")
        if not 1 <= int(octaves) <= 125:
            raise ValueError(f"PixelAUC: octaves must be in [1, 125], got {octaves!r}.")
        if int(chunk_size) < 1:
            raise ValueError(f"PixelAUC: chunk_size must be positive, got {chunk_size!r}.")
        self.mantissa_bits = int(mantissa_bits)
        self.octaves = int(octaves)
        self.chunk_size = int(chunk_size)
        # Per side: index 0 = exact end value, 1 = tail, then one bin per (exponent, mantissa prefix)
        # for d in [2**-octaves, 0.5]; d = 0.5 has biased exponent 1022 and mantissa 0.
        self._half = 3 + ((self.octaves - 1) << self.mantissa_bits)
        self._counts = np.zeros((2, self.num_bins), dtype=np.int64)  # [0] negatives, [1] positives

    # ------------------------------------------------------------------ accumulation
    @property
    def num_bins(self) -> int:
        """Number of histogram bins (both sides of 0.5)."""
        return 2 * self._half

    @property
    def num_positive(self) -> int:
        """Anomalous (label 1) pixels seen so far."""
        return int(self._counts[1].sum())

    @property
    def num_negative(self) -> int:
        """Normal (label 0) pixels seen so far."""
        return int(self._counts[0].sum())

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add pixels.

        Args:
            scores: Array of any shape, e.g. ``(T, H, W)`` or ``(H, W)``, of probabilities in [0, 1]
                (numpy, or anything ``np.asarray`` accepts, such as a CPU torch tensor in float32).
            labels: Array of the same shape; bool or 0/1.

        Raises:
            ValueError: If the shapes differ, a score is NaN or outside [0, 1], or a label is not 0/1.
                Nothing is added when an error is raised.
        """
        s = np.asarray(scores)
        y = np.asarray(labels)
        if s.shape != y.shape:
            raise ValueError(
                f"PixelAUC.update: scores have shape {s.shape} but labels have shape {y.shape}; "
                "expected one label per pixel."
            )
        s = check_scores(s, fn="PixelAUC.update", where="scores").reshape(-1)
        y = check_labels(y, fn="PixelAUC.update", where="labels").reshape(-1)
        # Every check above ran on the whole input, so a bad value cannot leave half an update behind.
        flat = self._counts.reshape(-1)  # a view: label l, bin b -> slot l * num_bins + b
        for start in range(0, s.size, self.chunk_size):
            stop = start + self.chunk_size
            # One unbuffered add of 1 per pixel into its slot, both classes at once: the same integer
            # counts as np.bincount(idx) added onto the front of the counts, without its array of up to
            # 2 * num_bins int64 (31 MB at 60 octaves) allocated, zeroed and added on every call.
            np.add.at(flat, self._bin_index(s[start:stop], y[start:stop]), 1)

    def _bin_index(
        self, x: NDArray[np.floating], labels: NDArray[np.bool_] | None = None
    ) -> NDArray[np.int64]:
        """Monotone bin index of scores in [0, 1] (see the class docstring), plus ``num_bins`` per label.

        Works on the float32 or float64 bit pattern as given (no up-cast): for normal numbers the
        exponent and the top ``mantissa_bits`` mantissa bits are the same in both widths, so a value
        lands in the same bin whichever width it arrives in (``octaves <= 125`` keeps every resolved
        ``d`` a normal float32). Branch-free int32 arithmetic (indices stay below ``2 * num_bins``, at most
        about 5.2e8 < 2**31 for mantissa_bits 20 and octaves 125): masked ufuncs and int64 temporaries are
        several times slower.
        """
        if x.dtype == np.float32:
            sint, mant, bias = np.int32, _F32_MANTISSA_BITS, _F32_EXPONENT_BIAS
        else:
            x = x.astype(np.float64, copy=False)
            sint, mant, bias = np.int64, _F64_MANTISSA_BITS, _F64_EXPONENT_BIAS
        upper = (x > 0.5).view(np.int8)  # 0 / 1
        d = x.dtype.type(1) - x
        np.minimum(x, d, out=d)  # d = min(x, 1 - x); 1 - x is exact for x in [0.5, 1] (Sterbenz)
        # -0.0 passes the [0, 1] check, but its sign bit would make the bit pattern below negative; at
        # mantissa_bits 20 the float64 one then wrapped around int32 to an index past the counts.
        np.abs(d, out=d)
        # Non-negative floats order like their bit patterns (sign bit 0, so the signed view is >= 0).
        # Exponent and mantissa prefix as one integer, < 2**(11 + mantissa_bits) <= 2**31.
        q = (d.view(sint) >> sint(mant - self.mantissa_bits)).astype(np.int32, copy=False)
        # Resolved values: 2 + (exponent + octaves - 1, mantissa prefix); the tail below 2**-octaves -> 1.
        q -= ((bias - self.octaves) << self.mantissa_bits) - 2
        np.maximum(q, 1, out=q)
        q -= (d == 0).view(np.int8)  # d == 0 exactly (x == 0 or x == 1): index 0, a bin of its own
        # Upper side mirrors the lower one (larger x = smaller d = larger index): num_bins - 1 - q,
        # written as (q XOR -1) + num_bins, since q XOR -1 = -q - 1 in two's complement.
        q ^= -upper
        offset = upper if labels is None else upper + labels.view(np.int8)
        q += np.multiply(offset, self.num_bins, dtype=np.int32)
        return q.astype(np.int64)

    def merge(self, other: PixelAUC) -> PixelAUC:
        """Add another instance's counts into this one (sharded evaluation). Returns ``self``.

        Raises:
            TypeError: If ``other`` is not a :class:`PixelAUC`.
            ValueError: If the two were built with different quantiser settings.
        """
        if not isinstance(other, PixelAUC):
            raise TypeError(f"PixelAUC.merge: expected a PixelAUC, got {type(other).__name__}.")
        if (other.mantissa_bits, other.octaves) != (self.mantissa_bits, self.octaves):
            raise ValueError(
                "PixelAUC.merge: quantisers differ: this one has "
                f"(mantissa_bits={self.mantissa_bits}, octaves={self.octaves}), the other "
                f"(mantissa_bits={other.mantissa_bits}, octaves={other.octaves})."
            )
        self._counts += other._counts
        return self

    def __iadd__(self, other: PixelAUC) -> PixelAUC:
        return self.merge(other)

    def reset(self) -> None:
        """Forget every pixel seen so far (keeps the quantiser settings)."""
        self._counts[...] = 0

    # ------------------------------------------------------------------ results
    def compute(self) -> float:
        """Pooled pixel ROC-AUC of every pixel added so far.

        Returns:
            The AUC, within :meth:`error_bound` of ``sklearn.metrics.roc_auc_score`` on the same pixels.

        Raises:
            ValueError: If no positive or no negative pixel has been seen (the AUC is undefined).
        """
        value, bound = self._auc_and_bound("compute")
        if bound > _WARN_ERROR_BOUND:
            logger.warning(
                "PixelAUC: the quantisation error bound is %.3g (> %.0e): many positive and negative "
                "pixels share score bins. Where they share a score exactly (a near-constant model) the AUC "
                "counts them as ties, as sklearn does, and the bound is loose; otherwise build PixelAUC "
                "with more mantissa_bits (now %d) or octaves (now %d).",
                bound,
                _WARN_ERROR_BOUND,
                self.mantissa_bits,
                self.octaves,
            )
        return value

    def error_bound(self) -> float:
        """Upper bound on ``|compute() - roc_auc_score(all labels, all scores)|`` from the counts.

        ``sum_b p_b n_b / (2 P N)`` over all bins except the two exact-value bins (x == 0, x == 1):
        only positive/negative pairs that share a bin can be ordered differently from sklearn, and each
        changes the AUC by at most ``1 / (2 P N)``.

        Raises:
            ValueError: If no positive or no negative pixel has been seen.
        """
        return self._auc_and_bound("error_bound")[1]

    def _auc_and_bound(self, method: str) -> tuple[float, float]:
        neg, pos = self._counts
        n_neg, n_pos = int(neg.sum()), int(pos.sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError(
                f"PixelAUC.{method}: seen {n_pos} anomalous and {n_neg} normal pixels; the ROC-AUC "
                "needs at least one of each and is undefined."
            )
        # float64 from here on: counts may reach 1e11, so integer products could overflow int64.
        pos_f = pos.astype(np.float64)
        below = np.cumsum(neg)  # int64, exact
        below -= neg  # negatives strictly below each bin
        pairs = float(n_pos) * float(n_neg)
        tied = float(np.dot(pos_f, neg.astype(np.float64)))  # positive/negative pairs sharing a bin
        # Pairs in different bins are ordered by the bins; pairs sharing a bin count one half.
        value = (float(np.dot(pos_f, below.astype(np.float64))) + 0.5 * tied) / pairs
        # Same-bin pairs, less bin 0 (x == 0) and the last bin (x == 1), which hold a single value.
        same_bin = tied - float(pos[0]) * float(neg[0]) - float(pos[-1]) * float(neg[-1])
        return value, same_bin / (2.0 * pairs)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, NDArray[Any]]:
        """The accumulated state as plain numpy arrays (``np.savez``-able, no pickle needed).

        Only non-empty bins are stored, so a checkpoint is small.

        Returns:
            ``{"version", "mantissa_bits", "octaves"}`` as 0-d int64 arrays, ``"bins"`` ``(K,)`` int64
            indices of the non-empty bins, and ``"negatives"``/``"positives"`` ``(K,)`` int64 counts.
        """
        nonzero = np.flatnonzero(self._counts.any(axis=0))
        return {
            "version": np.asarray(_STATE_VERSION, dtype=np.int64),
            "mantissa_bits": np.asarray(self.mantissa_bits, dtype=np.int64),
            "octaves": np.asarray(self.octaves, dtype=np.int64),
            "bins": nonzero.astype(np.int64),
            "negatives": self._counts[0, nonzero],
            "positives": self._counts[1, nonzero],
        }

    def load_state_dict(self, state: dict[str, ArrayLike]) -> None:
        """Replace the accumulated counts with those of ``state`` (from :meth:`state_dict`).

        Raises:
            ValueError: If keys are missing, the version or quantiser settings differ, or the arrays are
                inconsistent. The current state is left unchanged then.
        """
        required = ("version", "mantissa_bits", "octaves", "bins", "negatives", "positives")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"PixelAUC.load_state_dict: missing keys {missing}; expected {list(required)}.")
        if int(np.asarray(state["version"])) != _STATE_VERSION:
            raise ValueError(
                f"PixelAUC.load_state_dict: state version {int(np.asarray(state['version']))}, "
                f"expected {_STATE_VERSION}."
            )
        settings = (int(np.asarray(state["mantissa_bits"])), int(np.asarray(state["octaves"])))
        if settings != (self.mantissa_bits, self.octaves):
            raise ValueError(
                f"PixelAUC.load_state_dict: state has (mantissa_bits, octaves) = {settings}, this "
                f"instance {(self.mantissa_bits, self.octaves)}; build PixelAUC with the same settings."
            )
        bins = np.asarray(state["bins"], dtype=np.int64).reshape(-1)
        neg = np.asarray(state["negatives"], dtype=np.int64).reshape(-1)
        pos = np.asarray(state["positives"], dtype=np.int64).reshape(-1)
        if not (bins.shape == neg.shape == pos.shape):
            raise ValueError(
                "PixelAUC.load_state_dict: 'bins', 'negatives' and 'positives' must have equal lengths, "
                f"got {bins.shape}, {neg.shape}, {pos.shape}."
            )
        if bins.size and (bins.min() < 0 or bins.max() >= self.num_bins or not _distinct(bins)):
            raise ValueError(
                f"PixelAUC.load_state_dict: 'bins' must be distinct indices in [0, {self.num_bins})."
            )
        if (neg < 0).any() or (pos < 0).any():
            raise ValueError("PixelAUC.load_state_dict: counts must be non-negative.")
        self._counts[...] = 0
        self._counts[0, bins] = neg
        self._counts[1, bins] = pos

    def __repr__(self) -> str:
        return (
            f"PixelAUC(mantissa_bits={self.mantissa_bits}, octaves={self.octaves}, "
            f"positive={self.num_positive}, negative={self.num_negative})"
        )


def _distinct(values: NDArray[np.int64]) -> bool:
    """Whether the 1-D ``values`` are pairwise distinct.

    :meth:`PixelAUC.state_dict` stores its bins in ascending order, which one linear pass confirms;
    only another order pays for ``np.unique``'s sort (a resumed evaluation loads one state per video,
    and the sort of up to ~1.9M bins dominated loading it).
    """
    if values.size < 2 or bool((values[1:] > values[:-1]).all()):
        return True
    return np.unique(values).size == values.size
