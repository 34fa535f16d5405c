"""The Anomaly Exposure Sampler (Eq. 1–2): the `expose` contract and its statistics."""

import dataclasses
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from lavida.data.exposure import AnomalyExposureSampler, Exposure, TextPool, expose, normalize_text
from lavida.data.sources.base import SegRecord, SegTarget

POOL = [f"class {i}" for i in range(60)] * 3 + ["person"] * 40  # 61 distinct texts, with repeats


def _binomial_ok(successes: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(successes - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_share_of_anomalous_samples_is_p(p):
    rng = np.random.default_rng(1)
    pool = TextPool(POOL)
    n = 4000
    anomalous = sum(expose("a dog", pool, p=p, rng=rng)[1] for _ in range(n))
    assert _binomial_ok(anomalous, n, p)


def test_contract_over_many_draws():
    """Distinct, ≤ max, genuine iff anomalous, never the genuine or a present text as an irrelevant one."""
    rng = np.random.default_rng(2)
    pool = TextPool([*POOL, "A  Dog", "a dog", "red car", "RED CAR"])
    present = {"Red  Car", "class 3"}
    for _ in range(3000):
        categories, is_anomaly = expose("a dog", pool, present=present, max_categories=30, rng=rng)
        keys = [normalize_text(c) for c in categories]
        assert 1 <= len(categories) <= 30
        assert len(set(keys)) == len(keys)
        assert ("a dog" in categories) == is_anomaly
        assert keys.count("a dog") == int(is_anomaly)  # never a respelling of the genuine text
        assert "red car" not in keys and "class 3" not in keys


def test_number_of_categories_is_uniform_as_documented():
    """K_E ~ Unif{2..max}: irrelevant count uniform on 1..max−1; anomalous lists 2..max, normal 1..max−1."""
    rng = np.random.default_rng(3)
    pool = TextPool(POOL)
    irrelevant_counts, anomalous_sizes, normal_sizes = [], [], []
    for _ in range(6000):
        categories, is_anomaly = expose("a dog", pool, max_categories=30, rng=rng)
        irrelevant_counts.append(len(categories) - int(is_anomaly))
        (anomalous_sizes if is_anomaly else normal_sizes).append(len(categories))
    assert min(anomalous_sizes) == 2 and max(anomalous_sizes) == 30
    assert min(normal_sizes) == 1 and max(normal_sizes) == 29
    counts = Counter(irrelevant_counts)
    assert set(counts) == set(range(1, 30))
    assert chisquare([counts[k] for k in range(1, 30)]).pvalue > 1e-3


def _count_only_bce(draws: list[tuple[int, bool]]) -> float:
    """BCE of the best predictor that sees only the number of listed categories (per-count label rate)."""
    total = 0.0
    for size in {size for size, _ in draws}:
        labels = np.array([label for s, label in draws if s == size], dtype=float)
        rate = np.clip(labels.mean(), 1e-9, 1 - 1e-9)
        total -= (labels * np.log(rate) + (1 - labels) * np.log(1 - rate)).sum()
    return total / len(draws)


def test_matched_count_hides_the_label():
    """`matched`: both labels list K_E ~ Unif{2..max}; the count predicts nothing. `paper` leaks the label."""
    pool = TextPool(POOL)
    draws = {}
    for mode in ("paper", "matched"):
        rng = np.random.default_rng(13)
        draws[mode] = [
            (len(c), a)
            for c, a in (
                expose("a dog", pool, max_categories=8, category_count=mode, rng=rng) for _ in range(6000)
            )
        ]
    matched = draws["matched"]
    for label in (True, False):
        sizes = Counter(size for size, a in matched if a == label)
        assert set(sizes) == set(range(2, 9))
        assert chisquare([sizes[k] for k in range(2, 9)]).pvalue > 1e-3
    constant = -(0.5 * np.log(0.5)) * 2  # p = 0.5
    # A size-only predictor is exactly certain for K = 1 and K = 8 under the paper's rule: 2 of 14 cells.
    assert _count_only_bce(draws["paper"]) < constant - 0.07
    assert _count_only_bce(matched) > constant - 0.01


def test_matched_count_never_lists_the_genuine_text_in_a_normal_sample():
    rng = np.random.default_rng(14)
    for _ in range(500):
        categories, is_anomaly = expose("a dog", POOL, max_categories=8, category_count="matched", rng=rng)
        assert ("a dog" in categories) == is_anomaly and 2 <= len(categories) <= 8
    for _ in range(100):  # max_categories = 1: one category either way
        categories, is_anomaly = expose("dog", POOL, max_categories=1, category_count="matched", rng=rng)
        assert len(categories) == 1 and (categories == ["dog"]) == is_anomaly


def test_genuine_position_is_uniform():
    rng = np.random.default_rng(4)
    pool, positions = TextPool(POOL), Counter()
    while sum(positions.values()) < 3000:
        categories, is_anomaly = expose("a dog", pool, p=1.0, max_categories=3, rng=rng)
        if len(categories) == 3:
            positions[categories.index("a dog")] += 1
    assert chisquare([positions[i] for i in range(3)]).pvalue > 1e-3


def test_irrelevant_texts_are_drawn_uniformly_over_samples():
    """Eq. 1: a text carried by 90 % of the samples is drawn 90 % of the time; `texts` weighting: 50 %."""
    texts = ["car"] * 90 + ["tree"] * 10
    for weighting, expected in (("samples", 0.9), ("texts", 0.5)):
        pool = TextPool(texts, weighting=weighting)
        rng = np.random.default_rng(5)
        draws = [expose("dog", pool, p=0.0, max_categories=2, rng=rng)[0] for _ in range(3000)]
        assert all(len(d) == 1 for d in draws)
        assert _binomial_ok(sum(d == ["car"] for d in draws), 3000, expected)


def test_an_unknown_pool_weighting_is_refused():
    with pytest.raises(ValueError, match=r"weighting must be 'samples' or 'texts', got 'sample'\."):
        TextPool(POOL, weighting="sample")


def test_weighted_draw_without_replacement_is_exact():
    """Two of three texts weighted 6:3:1 follow successive sampling (draw, reject repeats) exactly."""
    pool = TextPool(["a"] * 6 + ["b"] * 3 + ["c"])
    rng = np.random.default_rng(6)
    n = 20000
    pairs = Counter(frozenset(pool.draw(2, rng=rng)) for _ in range(n))
    expected = {
        frozenset("ab"): 0.6 * 3 / 4 + 0.3 * 6 / 7,
        frozenset("ac"): 0.6 * 1 / 4 + 0.1 * 6 / 9,
        frozenset("bc"): 0.3 * 1 / 7 + 0.1 * 3 / 9,
    }
    assert set(pairs) == set(expected)
    for pair, probability in expected.items():
        assert _binomial_ok(pairs[pair], n, probability)


def test_too_small_pool_caps_at_what_exists():
    rng = np.random.default_rng(7)
    pool = ["dog", "cat", "cow", "Dog", "bird"]  # usable for "dog" with "bird" present: cat, cow
    for _ in range(500):
        categories, is_anomaly = expose("dog", pool, present=["bird"], max_categories=30, rng=rng)
        irrelevant = [c for c in categories if c != "dog"]
        assert set(irrelevant) <= {"cat", "cow"} and len(irrelevant) >= 1
        assert len(categories) == len(irrelevant) + int(is_anomaly)


@pytest.mark.parametrize("max_categories, counts", [(30, [1, 2, 3]), (3, [1, 2])])
def test_with_few_usable_texts_the_count_is_uniform_over_what_is_possible(max_categories, counts):
    """A Cityscapes-like pool of 8 classes with 4 visible and the genuine one: 3 usable. The number of
    irrelevant categories is uniform on 1…min(max − 1, 3), as the release draws it, not piled on 3."""
    classes = [f"class {i}" for i in range(8)]
    pool = TextPool(classes * 5)
    rng = np.random.default_rng(11)
    seen = Counter()
    for _ in range(3000):
        categories, is_anomaly = expose(
            "class 0", pool, present=classes[1:5], max_categories=max_categories, rng=rng
        )
        seen[len(categories) - int(is_anomaly)] += 1
    assert sorted(seen) == counts
    assert chisquare([seen[c] for c in counts]).pvalue > 1e-4
    assert pool.usable(exclude=["CLASS 0", *classes[1:5], "not in the pool"]) == 3


@pytest.mark.parametrize("pool,present", [([], ()), (["dog", "DOG"], ()), (["cat", "dog"], ["cat"])])
def test_no_usable_text_makes_the_sample_anomalous(pool, present):
    """A normal sample needs ≥ 1 category; with none usable, every draw lists only the genuine text."""
    rng = np.random.default_rng(8)
    for _ in range(50):
        assert expose("dog", pool, present=present, p=0.0, rng=rng) == (["dog"], True)


def test_max_categories_one():
    """K_E = 1 edge: an anomalous sample lists its text alone, a normal one a single irrelevant text."""
    rng = np.random.default_rng(9)
    for _ in range(200):
        categories, is_anomaly = expose("dog", POOL, max_categories=1, rng=rng)
        assert len(categories) == 1 and (categories == ["dog"]) == is_anomaly


def test_deterministic_and_pool_type_independent():
    first = expose("dog", POOL, present=["class 1"], rng=np.random.default_rng(10))
    again = expose("dog", TextPool(POOL), present=["class 1"], rng=np.random.default_rng(10))
    assert first == again
    draws = {tuple(expose("dog", POOL, rng=np.random.default_rng(seed))[0]) for seed in range(20)}
    assert len(draws) > 15  # different seeds, different draws


def test_invalid_arguments_say_what_is_wrong():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="p must lie"):
        expose("dog", POOL, p=1.5, rng=rng)
    with pytest.raises(ValueError, match="max_categories"):
        expose("dog", POOL, max_categories=0, rng=rng)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        expose("dog", POOL, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="empty"):
        expose("  ", POOL, rng=rng)
    with pytest.raises(ValueError, match="category_count"):
        expose("dog", POOL, category_count="balanced", rng=rng)


def test_pool_behaves_as_the_texts_with_repeats():
    pool = TextPool(["a", "b", "A", ""])
    assert list(pool) == ["a", "b", "A", ""] and len(pool) == 4 and pool[2] == "A"
    assert pool.distinct == ("a", "b") and pool.counts.tolist() == [2.0, 1.0]


def _record(key, group, texts, present=()):
    targets = tuple(SegTarget(text, {"object_ids": [i + 1]}) for i, text in enumerate(texts))
    return SegRecord("fake", key, group, ("f.jpg",), targets, tuple(present) or tuple(texts), False)


def test_sampler_excludes_everything_visible_in_the_group():
    """Texts of the record, its `present` list and other records of its group are never irrelevant."""
    records = [
        _record("img1/ref0", "img1", ["the left man"], present=["the left man", "a red umbrella"]),
        _record("img1/ref1", "img1", ["woman in blue"]),
        *[_record(f"img{i}", f"img{i}", [f"thing {i}"]) for i in range(2, 40)],
        _record("img40", "img40", ["a red umbrella"]),  # in the pool: only the exclusion keeps it out
    ]
    pool = TextPool.from_records(records)
    sampler = AnomalyExposureSampler(p=0.5, max_categories=30)
    rng = np.random.default_rng(12)
    record, target = records[0], records[0].targets[0]
    for _ in range(500):
        exposure = sampler(record, target, pool, rng=rng)
        assert not {"woman in blue", "a red umbrella"} & set(exposure.categories)
        assert (exposure.target is target) == exposure.is_anomaly
        if exposure.is_anomaly:
            assert exposure.categories[exposure.genuine_index] == "the left man"
        else:
            assert exposure.genuine_index is None and "the left man" not in exposure.categories
    capped = sampler(record, target, pool, rng=rng, max_categories=3)
    assert len(capped.categories) <= 3
    # The other record of the group: what is visible only in the first record's `present` list is
    # excluded too (the group's texts, not this record's own list).
    other = records[1]
    for _ in range(500):
        exposure = sampler(other, other.targets[0], pool, rng=rng)
        assert not {"the left man", "a red umbrella"} & set(exposure.categories)


@pytest.mark.parametrize("settings", [{"p": 0.2}, {"category_count": "matched"}, {"max_categories": 5}])
def test_sampler_hands_its_settings_to_expose(settings):
    """Draw for draw on the same random stream, the sampler decides as expose() with its settings."""
    records = [_record(f"img{i}", f"img{i}", [f"thing {i}"]) for i in range(40)]
    pool = TextPool.from_records(records)
    sampler = AnomalyExposureSampler(**settings)
    got_rng, want_rng = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(200):
        got = sampler(records[0], records[0].targets[0], pool, rng=got_rng)
        want = expose("thing 0", pool, present={"thing 0"}, rng=want_rng, **settings)
        assert (got.categories, got.is_anomaly) == want


def test_sampler_validates_its_settings():
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\], got -0\.1\."):
        AnomalyExposureSampler(p=-0.1)
    with pytest.raises(ValueError, match="max_categories must be at least 1, got 0."):
        AnomalyExposureSampler(max_categories=0)
    with pytest.raises(ValueError, match="category_count must be one of .*got 'balanced'"):
        AnomalyExposureSampler(category_count="balanced")
    with pytest.raises(TypeError, match="positional argument"):
        AnomalyExposureSampler(0.5, 30)  # keyword-only


def test_expose_defaults_are_the_papers():
    """B.5: p = 0.5 and max(K_E) = 30. With a pool of 61 usable texts nothing else caps the count, so
    the default call lists at most 30 categories (an anomalous sample reaches 30: K_E = 30 has
    probability 1/29) and labels about half the samples anomalous."""
    rng = np.random.default_rng(13)
    pool = TextPool(POOL)
    draws = [expose("a dog", pool, rng=rng) for _ in range(3000)]
    assert max(len(categories) for categories, _ in draws) == 30
    assert _binomial_ok(sum(is_anomaly for _, is_anomaly in draws), 3000, 0.5)


def test_pool_repr_counts_texts_and_distinct_ones():
    """4 texts, of which "a"/"A " are one description after normalisation and "" is no description."""
    assert repr(TextPool(["a", "b", "A ", ""], weighting="texts")) == (
        "TextPool(4 texts, 2 distinct, weighting='texts')"
    )


def test_sampler_repr_shows_its_settings():
    sampler = AnomalyExposureSampler(p=0.25, max_categories=6, category_count="matched")
    assert repr(sampler) == "AnomalyExposureSampler(p=0.25, max_categories=6, category_count='matched')"


def test_sampler_defaults_are_the_papers():
    """B.5: p = 0.5, max(K_E) = 30, and Eq. 1–2's category count unless "matched" is asked for."""
    sampler = AnomalyExposureSampler()
    assert (sampler.p, sampler.max_categories, sampler.category_count) == (0.5, 30, "paper")


def test_exposure_is_frozen():
    """A decision is a value: the item built from it cannot be changed behind the sampler's back."""
    exposure = Exposure(categories=["a dog"], is_anomaly=True, target=SegTarget("a dog", {}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        exposure.is_anomaly = False  # type: ignore[misc]


def test_draw_is_the_largest_efraimidis_spirakis_keys_for_a_large_pool():
    """The slow form of the documented draw, replayed on the same random stream: each distinct text gets
    the key log(u)/w (one uniform per distinct text, w = its number of samples); the draw is the k
    allowed texts with the largest keys, largest first. A pool of 600 distinct texts, as a real dataset
    has, and k up to 400: the fast path (a partial partition) must pick the same k as a full sort."""
    weights = [1 + i % 7 for i in range(600)]
    texts = [f"text {i}" for i, w in enumerate(weights) for _ in range(w)]
    pool = TextPool(texts)
    exclude = ["TEXT 3", "text 10", "not in the pool"]
    allowed = np.array([t not in ("text 3", "text 10") for t in pool.distinct])
    rng, replay = np.random.default_rng(14), np.random.default_rng(14)
    for k in [1, 2, 29, 150, 300, 400] * 40:
        got = pool.draw(k, exclude=exclude, rng=rng)
        keys = np.log(replay.random(600)) / np.asarray(weights, dtype=float)
        keys[~allowed] = -np.inf
        order = sorted(range(600), key=lambda i: -keys[i])[:k]
        assert got == [pool.distinct[i] for i in order], k
