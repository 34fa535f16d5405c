"""The Anomaly Exposure Sampler (§3.3, Eq. 1–2): segmentation targets become pseudo-anomalies.

For a sample with genuine description ``s_i`` the sampler

1. labels the sample anomalous with probability ``p`` (Eq. 2; B.5: p = 0.5);
2. draws K_E − 1 *irrelevant* descriptions from the dataset's other samples (Eq. 1). A draw is uniform
   over samples, so a description carried by many samples (a frequent class such as "person") is
   drawn more often than a rare one; duplicates, the genuine description and every description
   visible in the sample are rejected;
3. returns the irrelevant descriptions plus ``s_i`` (anomalous, frame labels 1) or the irrelevant
   descriptions alone (normal, frame labels 0), shuffled.

Choices the paper leaves open (docs/fidelity.md):

- **K_E.** K_E ~ Unif{2, …, max_categories}: the number of irrelevant categories K_E − 1 is uniform on
  {1, …, max_categories − 1}, for anomalous and normal samples alike. An anomalous sample therefore
  lists 2…max_categories categories and a normal one 1…max_categories − 1 (B.5: max K_E = 30), where
  the pool has enough usable descriptions (next point).
- **The K_E = 1 edge.** K_E = 1 would leave a normal sample without any category. It only arises when
  ``max_categories == 1``; then an anomalous sample lists only its genuine description and a normal
  sample one irrelevant description: a normal sample always gets at least one category.
- **Too few usable descriptions.** With n distinct usable descriptions in the pool (distinct after
  normalisation, not the genuine one, not present in the sample), the number of irrelevant categories
  is uniform on {1, …, min(max_categories − 1, n)}, as the official release draws it
  (``randint(1, min(slots, |others|))``): uniform over the counts that are possible, rather than
  drawn from 1…max_categories − 1 and cut to n, which would pile nearly every draw on n (a Cityscapes
  image with 3 usable classes of 8 listed all 3 in 93 % of samples at max(K_E) = 30). If none is
  usable, a sample drawn as normal has nothing to list and is made anomalous instead (the official
  Cityscapes loader does the same when every class is visible).
- **Exact, bounded drawing.** "Draw a sample uniformly, reject repeats and excluded texts" is done
  exactly and without loops by Efraimidis–Spirakis weighted sampling without replacement: each distinct
  description gets the key log(u)/w (u ~ U(0, 1), w = the number of samples carrying it) and the
  largest keys win. This gives the same distribution as the rejection loop, in one vectorised pass.
- **Order.** The categories are shuffled, so the genuine description's position is uniform.
- **The count gives the label away.** Under Eq. 1–2 a normal sample lists one category fewer than an
  anomalous one drawn with the same K_E, so the number of listed categories alone predicts the label:
  with max(K_E) = 8 a predictor that only counts reaches a frame BCE of 0.60 against 0.68 for a
  constant (docs/benchmarks.md): counting is cheaper to learn than looking at the objects. At the
  paper's max(K_E) = 30 the effect is smaller (only K = 1 and K = 30 are certain) but present, where
  the pool has at least 29 usable descriptions. A source with few names caps the count at n, and the
  leak grows again: on a Cityscapes image (8 names) with c classes present, normal samples list
  Unif{1..8 − c} and anomalous ones 1 + Unif{1..8 − c}, so counts 1 and 9 − c are certain and the
  best count-only BCE is (1 − 1/(8 − c))·ln 2: 0.59 for c = 1, 0.55 for c = 3, 0.46 for c = 5.
  ``category_count="matched"`` (an option; the default is the paper's ``"paper"``) gives a normal
  sample K_E irrelevant categories, so both labels list K_E ~ Unif{2..max} categories and the count
  says nothing. With n usable descriptions, K_E ~ Unif{2..min(max, n)} for both labels (a normal
  sample cannot list more than n; bounding only its draw would leave K_E = n + 1 to anomalous samples
  and pile normal ones on n). With n < 2 (and max ≥ 2) no count is possible for both labels; such a
  sample follows the paper's rule, and a warning says so once per process.

Texts are compared case-insensitively after whitespace normalisation (``normalize_text``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args, overload

import numpy as np

from lavida.data.sources.base import SegRecord, SegTarget

log = logging.getLogger(__name__)

PoolWeighting = Literal["samples", "texts"]
CategoryCount = Literal["paper", "matched"]
CATEGORY_COUNTS: tuple[str, ...] = get_args(CategoryCount)


def normalize_text(text: str) -> str:
    """The comparison key of a description: whitespace collapsed, case folded."""
    return " ".join(str(text).split()).casefold()


class TextPool(Sequence[str]):
    """The descriptions of a dataset's samples, with repeats, indexed for fast exclusion and drawing.

    Behaves as the plain sequence of descriptions it was built from (one per sample, Eq. 1); it also
    holds the distinct descriptions (first spelling seen), how many samples carry each, and, when built
    from records, every text present in each record group.

    Args:
        texts: One description per sample (repeats expected).
        group_present: Group → texts visible anywhere in that group (see ``SegRecord.group``).
        weighting: ``"samples"`` (Eq. 1: a description is drawn in proportion to the samples carrying
            it) or ``"texts"`` (every distinct description equally likely).
    """

    def __init__(
        self,
        texts: Iterable[str],
        *,
        group_present: Mapping[str, Iterable[str]] | None = None,
        weighting: PoolWeighting = "samples",
    ) -> None:
        if weighting not in ("samples", "texts"):
            raise ValueError(f"weighting must be 'samples' or 'texts', got {weighting!r}.")
        self._texts = tuple(texts)
        self.weighting = weighting
        codes: dict[str, int] = {}
        distinct: list[str] = []
        counts: list[int] = []
        for text in self._texts:
            key = normalize_text(text)
            if not key:  # an empty description can never be listed as a category
                continue
            code = codes.get(key)
            if code is None:
                codes[key] = len(distinct)
                distinct.append(text)
                counts.append(1)
            else:
                counts[code] += 1
        self._codes = codes
        self.distinct: tuple[str, ...] = tuple(distinct)
        self.counts = np.asarray(counts, dtype=np.float64)  # (D,) samples per distinct description
        self._weights = self.counts if weighting == "samples" else np.ones_like(self.counts)
        self._group_present = {
            group: frozenset(normalize_text(t) for t in texts)
            for group, texts in (group_present or {}).items()
        }

    @classmethod
    def from_records(cls, records: Iterable[SegRecord], *, weighting: PoolWeighting = "samples") -> TextPool:
        """One description per target of every record; present texts gathered per group."""
        texts: list[str] = []
        present: dict[str, set[str]] = {}
        for record in records:
            group = present.setdefault(record.group, set())
            group.update(record.present)
            for target in record.targets:
                texts.append(target.text)
                group.add(target.text)
        return cls(texts, group_present=present, weighting=weighting)

    # -- Sequence[str]: the descriptions with repeats ------------------------------------------------

    def __len__(self) -> int:
        return len(self._texts)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index):
        return self._texts[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __repr__(self) -> str:
        return f"TextPool({len(self)} texts, {len(self.distinct)} distinct, weighting={self.weighting!r})"

    # -- drawing ---------------------------------------------------------------------------------------

    def group_present(self, group: str) -> frozenset[str]:
        """Normalised texts visible anywhere in ``group`` (empty for an unknown group)."""
        return self._group_present.get(group, frozenset())

    def code(self, text: str) -> int | None:
        """Index of ``text`` among the distinct descriptions (after normalisation), or None."""
        return self._codes.get(normalize_text(text))

    def usable(self, *, exclude: Iterable[str] = ()) -> int:
        """How many distinct descriptions :meth:`draw` can return with this ``exclude``."""
        excluded = {code for code in map(self.code, exclude) if code is not None}
        return len(self.distinct) - len(excluded)

    def draw(self, k: int, *, exclude: Iterable[str] = (), rng: np.random.Generator) -> list[str]:
        """Up to ``k`` distinct descriptions, none equal (normalised) to one in ``exclude``.

        Weighted sampling without replacement (Efraimidis–Spirakis): the same distribution as drawing
        samples uniformly (Eq. 1) and rejecting repeats and excluded texts until ``k`` are found, in one
        bounded pass. Returns fewer than ``k`` when fewer usable descriptions exist. Always consumes
        exactly ``len(self.distinct)`` uniforms from ``rng``.
        """
        size = len(self.distinct)
        uniforms = rng.random(size)
        allowed = np.ones(size, dtype=bool)
        for text in exclude:
            code = self.code(text)
            if code is not None:
                allowed[code] = False
        candidates = np.flatnonzero(allowed)
        k = min(int(k), candidates.size)
        if k <= 0:
            return []
        with np.errstate(divide="ignore"):  # u = 0 gives key −inf: still drawable, last
            keys = np.log(uniforms[candidates]) / self._weights[candidates]
        if k < candidates.size:
            top = np.argpartition(-keys, k - 1)[:k]
        else:
            top = np.arange(candidates.size)
        top = top[np.argsort(-keys[top], kind="stable")]  # draw order (largest key first)
        return [self.distinct[i] for i in candidates[top]]


def expose(
    text: str,
    pool: Sequence[str],
    *,
    present: Collection[str] = (),
    p: float = 0.5,
    max_categories: int = 30,
    category_count: CategoryCount = "paper",
    rng: np.random.Generator,
) -> tuple[list[str], bool]:
    """The Anomaly Exposure Sampler's core (Eq. 1–2) for one sample.

    Args:
        text: The sample's genuine description s_i.
        pool: Descriptions of the dataset's other samples, with repeats (drawing is uniform over
            samples, Eq. 1); a :class:`TextPool` avoids re-indexing the pool on every call.
        present: Texts visible in this sample; never used as irrelevant categories.
        p: Probability that the sample is anomalous (Eq. 2; B.5: 0.5).
        max_categories: max(K_E) (B.5: 30); caps the number of listed categories.
        category_count: ``"paper"`` (Eq. 1–2: a normal sample lists K_E − 1 categories) or ``"matched"``
            (it lists K_E, like an anomalous one, K_E ~ Unif{2..min(max, n)} with n usable texts; the
            paper's rule when n < 2); see the module docstring.
        rng: The random generator (the only source of randomness).

    Returns:
        ``(categories, is_anomaly)``: 1…max_categories distinct categories, in random order, containing
        ``text`` (verbatim) iff ``is_anomaly``. Irrelevant categories are spelled as first seen in the
        pool. See the module docstring for the distribution of their number and the edge cases.

    Raises:
        ValueError: ``p`` outside [0, 1], ``max_categories`` < 1, an unknown ``category_count`` or an
            empty ``text``.
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    _check_settings(p, max_categories, category_count)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}."
        )
    if not normalize_text(text):
        raise ValueError("The genuine description is empty; the source produced a target without text.")
    max_categories = int(max_categories)
    pool = pool if isinstance(pool, TextPool) else TextPool(pool)

    is_anomaly = bool(rng.random() < p)  # Eq. 2
    exclude = [text, *present]
    usable = pool.usable(exclude=exclude)
    # "matched": both labels list K ~ Unif{2..min(max, n)}, an anomalous sample as K − 1 irrelevant + s_i,
    # a normal one as K irrelevant. A normal sample can list at most n, so the bound is n for both labels:
    # capping only the normal draw would leave K = n + 1 to anomalous samples alone.
    largest_matched = min(max_categories, usable)
    if category_count == "matched" and largest_matched >= 2:
        listed = int(rng.integers(2, largest_matched + 1))
        num_irrelevant = listed - 1 if is_anomaly else listed
    else:
        if category_count == "matched" and max_categories >= 2:
            _warn_matched_fallback(usable)
        # Eq. 1: |S_irr| = K_E − 1 with K_E ~ Unif{2..max}; at least one (a normal sample needs a
        # category), and uniform over the counts the pool allows (the release's
        # randint(1, min(slots, |others|))).
        possible = min(max(max_categories - 1, 1), usable)
        num_irrelevant = int(rng.integers(1, max(possible, 1) + 1))
        if is_anomaly:
            num_irrelevant = min(num_irrelevant, max_categories - 1)  # room for s_i (max_categories = 1)
    irrelevant = pool.draw(num_irrelevant, exclude=exclude, rng=rng)
    if not is_anomaly and not irrelevant:
        # No usable description at all: a normal sample would list nothing, so it becomes anomalous.
        log.debug("No irrelevant description available for %r; the sample is made anomalous.", text)
        is_anomaly = True
    categories = irrelevant + [text] if is_anomaly else irrelevant
    order = rng.permutation(len(categories))  # the genuine category's position is uniform
    return [categories[i] for i in order], is_anomaly


_matched_fallback_warned = False


def _warn_matched_fallback(usable: int) -> None:
    """Say once per process that ``"matched"`` fell back to the paper's rule for lack of usable texts."""
    global _matched_fallback_warned
    if _matched_fallback_warned:
        return
    _matched_fallback_warned = True
    log.warning(
        "category_count='matched' needs at least 2 usable irrelevant descriptions to give both labels the "
        "same number of categories; a sample had %d, so it (and any other such sample, not logged again) "
        "follows the paper's rule, where the count can give the label away. A source with so few "
        "distinct descriptions (after excluding the ones visible in the sample) is the cause.",
        usable,
    )


def _check_settings(p: float, max_categories: int, category_count: str) -> None:
    """The checks shared by :func:`expose` and :class:`AnomalyExposureSampler`."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}.")
    if int(max_categories) < 1:
        raise ValueError(f"max_categories must be at least 1, got {max_categories}.")
    if category_count not in CATEGORY_COUNTS:
        raise ValueError(f"category_count must be one of {CATEGORY_COUNTS}, got {category_count!r}.")


@dataclass(frozen=True)
class Exposure:
    """What the sampler decided for one (record, target).

    Attributes:
        categories: The K listed categories, in prompt order.
        is_anomaly: Whether the target is listed (frame labels positive, masks = the target's).
        target: The genuine target when anomalous, else None (masks all zero, labels 0).
    """

    categories: list[str]
    is_anomaly: bool
    target: SegTarget | None

    @property
    def genuine_index(self) -> int | None:
        """Position of the target's description in ``categories`` (None for a normal sample)."""
        return None if self.target is None else self.categories.index(self.target.text)


class AnomalyExposureSampler:
    """Applies :func:`expose` to a record and its chosen target (§3.3).

    Every text visible in the record's group (``SegRecord.present``, the texts of every target of the
    group's records) is excluded from the irrelevant categories: a normal clip must not contain what it
    lists, and an anomalous clip must contain only its genuine category.

    Args:
        p: Probability of an anomalous sample (B.5: 0.5).
        max_categories: max(K_E) (B.5: 30); ``__call__`` can override it per source (the official
            release caps Mapillary at 20 and Cityscapes at 6).
        category_count: ``"paper"`` or ``"matched"`` (see :func:`expose`).
    """

    def __init__(
        self, *, p: float = 0.5, max_categories: int = 30, category_count: CategoryCount = "paper"
    ) -> None:
        _check_settings(p, max_categories, category_count)
        self.p = float(p)
        self.max_categories = int(max_categories)
        self.category_count = category_count

    def __call__(
        self,
        record: SegRecord,
        target: SegTarget,
        pool: TextPool,
        *,
        rng: np.random.Generator,
        max_categories: int | None = None,
    ) -> Exposure:
        """Categories, label and target for ``target`` of ``record``.

        Args:
            record: The record the clip comes from.
            target: The chosen target (its text is the genuine description s_i).
            pool: The source's text pool (``TextPool.from_records`` over all its records).
            rng: The random generator.
            max_categories: Overrides the constructor's cap for this call.
        """
        present = set(record.present)
        present.update(t.text for t in record.targets)
        present.update(pool.group_present(record.group))
        categories, is_anomaly = expose(
            target.text,
            pool,
            present=present,
            p=self.p,
            max_categories=self.max_categories if max_categories is None else max_categories,
            category_count=self.category_count,
            rng=rng,
        )
        return Exposure(categories=categories, is_anomaly=is_anomaly, target=target if is_anomaly else None)

    def __repr__(self) -> str:
        return (
            f"AnomalyExposureSampler(p={self.p}, max_categories={self.max_categories}, "
            f"category_count={self.category_count!r})"
        )
