"""The evaluation's faster paths give bit for bit what the plain computations they replace gave."""

import contextlib
import io
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import legacy_nearest
from sklearn.metrics import roc_auc_score

from lavida.eval.video_result import (
    PIXEL_AUC_OCTAVES,
    PixelStatistics,
    VideoResult,
    _release_masks,
    pixel_statistics,
    resize_masks,
    resize_probabilities,
)
from lavida.inference import upsample_mask_logits
from lavida.metrics import PixelAUC, extract_regions


def _same_statistics(a: PixelStatistics, b: PixelStatistics) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and np.array_equal(sa[key], sb[key]), key


def _old_pixel_statistics(
    scored, *, predicted, ground_truth, size=None, resize="bilinear", region_thresholds=None
):
    """The previous implementation: every map to float64, every frame predicted and resized itself."""
    stats, regions = PixelStatistics(), []
    for start in range(0, scored.size, 16):
        frames = scored[start : start + 16]
        labels = np.asarray(ground_truth(frames), dtype=bool)
        predictions = np.asarray(predicted(frames), dtype=np.float64)
        native = tuple(labels.shape[1:])
        target = tuple(size or native)
        if resize == "release":
            grid = tuple(predictions.shape[1:])
            scores = resize_probabilities(predictions, target, mode="nearest")
            labels_at_target = resize_masks(
                resize_masks(labels, grid, mode="nearest"), target, mode="nearest"
            )
        else:
            scores = resize_probabilities(predictions, target)
            labels_at_target = resize_masks(labels, target)
        stats.update(scores, labels_at_target)
        if region_thresholds is not None:
            same = target == native and resize == "bilinear"
            at_native = scores if same else resize_probabilities(predictions, native)
            regions.append(
                extract_regions(at_native, thresholds=list(region_thresholds), frames=frames.tolist())
            )
    boxes = (
        (np.concatenate(regions) if regions else np.zeros((0, 6))) if region_thresholds is not None else None
    )
    return stats, boxes


def _maps(rng, frames, height, width, dtype):
    """Probability maps with the awkward values: exact 0 and 1, subnormals, neighbours of 0.5 and 1."""
    logits = rng.standard_normal((frames, height, width)) * 6
    maps = (1 / (1 + np.exp(-logits))).astype(dtype)
    flat = maps.reshape(-1)
    special = np.array(
        [0.0, 1.0, 0.5, np.nextafter(0.5, 0), np.nextafter(0.5, 1), np.nextafter(1, 0), 1e-40, 1e-30, 0.3],
        dtype=dtype,
    )
    flat[rng.choice(flat.size, special.size * 20, replace=False)] = np.repeat(special, 20)
    maps[:, 2:5, 3:9] = 0.9  # a blob for the regions
    return maps


def _labels(rng, frames, height, width):
    labels = rng.random((frames, height, width)) < 0.2
    labels[::3] = False  # normal frames
    labels[1] = True  # a fully anomalous frame
    return labels


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.uint8])
@pytest.mark.parametrize("size", [None, (13, 17)])
def test_saved_maps_of_any_width_give_the_statistics_of_their_float64_copy(dtype, size):
    rng = np.random.default_rng(1)
    maps = _maps(rng, 21, 12, 20, np.float64)
    maps = (maps > 0.5).astype(dtype) if dtype == np.uint8 else maps.astype(dtype)
    labels = _labels(rng, 21, 12, 20)
    scored = np.arange(21)
    options = dict(
        predicted=lambda f: maps[f], ground_truth=lambda f: labels[f], size=size, region_thresholds=(0.5, 0.3)
    )
    new, new_regions = pixel_statistics(scored, **options)
    old, old_regions = _old_pixel_statistics(scored, **options)
    _same_statistics(new, old)
    assert np.array_equal(new_regions, old_regions) and len(new_regions)


@pytest.mark.parametrize("resize", ["bilinear", "release"])
def test_ground_truth_read_as_0_255_images_counts_as_its_bool_masks(resize):
    """A benchmark's masks straight from 8-bit images (0 and 255) are the masks they show: pixel_statistics
    takes any non-zero pixel as anomalous, in both resize modes."""
    rng = np.random.default_rng(3)
    maps = _maps(rng, 9, 12, 20, np.float64)
    labels = _labels(rng, 9, 12, 20)
    images = labels.astype(np.uint8) * 255
    options = dict(predicted=lambda f: maps[f], size=(13, 17), resize=resize, region_thresholds=(0.5,))
    from_images, _ = pixel_statistics(np.arange(9), ground_truth=lambda f: images[f], **options)
    from_masks, _ = pixel_statistics(np.arange(9), ground_truth=lambda f: labels[f], **options)
    _same_statistics(from_images, from_masks)


@pytest.mark.parametrize("resize", ["bilinear", "release"])
@pytest.mark.parametrize("interval", [1, 3, 4])
def test_sample_and_hold_maps_are_predicted_once_with_identical_statistics(resize, interval):
    rng = np.random.default_rng(2)
    num_frames = 37
    source = np.arange(num_frames) // interval
    low = rng.standard_normal((source.max() + 1, 8, 10)).astype(np.float16) * 5
    labels = _labels(rng, num_frames, 18, 22)
    asked = []

    def predicted(frames):
        asked.append(frames.size)
        held = low[source[frames]]
        if resize == "release":
            return upsample_mask_logits(held, (32, 32), dtype=np.float64)
        return 1 / (1 + np.exp(-held.astype(np.float64)))

    options = dict(
        predicted=predicted,
        ground_truth=lambda f: labels[f],
        size=(11, 15) if resize == "release" else None,
        resize=resize,
        region_thresholds=(0.5,),
    )
    new, new_regions = pixel_statistics(np.arange(num_frames), holds=source, **options)
    assert (
        sum(asked) == np.unique(np.arange(num_frames) // 16 * 10**6 + source).size
    )  # once per chunk and map
    old, old_regions = _old_pixel_statistics(np.arange(num_frames), **options)
    _same_statistics(new, old)
    assert np.array_equal(new_regions, old_regions)


def test_cached_results_read_back_as_savez_compressed_wrote_them(tmp_path):
    rng = np.random.default_rng(5)
    stats = PixelStatistics()
    stats.update(_maps(rng, 6, 20, 30, np.float64), _labels(rng, 6, 20, 30))
    result = VideoResult(
        "v#1",
        np.arange(6),
        rng.random(6),
        np.array([0, 1, 1, 0, 0, 1], np.uint8),
        stats,
        rng.random((4, 6)),
        fingerprint="abc",
        facts='{"x": 1}',
    )
    path = result.save(tmp_path / "cache" / "video" / "v.npz")  # folders made as needed
    reference = io.BytesIO()
    arrays = {
        "name": np.asarray(result.name),
        "fingerprint": np.asarray(result.fingerprint),
        "facts": np.asarray(result.facts),
        "scored": result.scored.astype(np.int64),
        "frame_scores": result.frame_scores.astype(np.float64),
        "frame_labels": result.frame_labels.astype(np.uint8),
        **{f"pixels.{k}": v for k, v in stats.state_dict().items()},
        "regions": result.regions.astype(np.float64),
    }
    np.savez_compressed(reference, **arrays)
    reference.seek(0)
    with np.load(path, allow_pickle=False) as new, np.load(reference, allow_pickle=False) as old:
        assert new.files == old.files
        for key in old.files:
            assert new[key].dtype == old[key].dtype and np.array_equal(new[key], old[key]), key
    loaded = VideoResult.load(path)
    _same_statistics(loaded.pixels, stats)
    assert (loaded.name, loaded.fingerprint, loaded.facts) == ("v#1", "abc", '{"x": 1}')
    for field in ("scored", "frame_scores", "frame_labels", "regions"):
        expected = getattr(result, field)
        assert np.array_equal(getattr(loaded, field), expected), field
    assert VideoResult.read_fingerprint(path) == ("abc", '{"x": 1}')


def test_pixel_statistics_tell_apart_probabilities_a_logit_apart_out_to_the_documented_ends():
    """Float64 sigmoids of logits 29 and 30 (1 - p ≈ 2.5e-13 and 9.4e-14) and of -41 and -40 (≈ 1.6e-18
    and 4.2e-18) lie past the 40 octaves of PixelAUC's default; the evaluation's statistics keep them
    apart (PIXEL_AUC_OCTAVES), so the pooled AUC is sklearn's 3/4, where tied bins would give 1/2."""
    logits = torch.tensor([[[30.0, -40.0, 29.0, -41.0]]], dtype=torch.float64)
    scores = torch.sigmoid(logits).numpy()
    labels = np.array([[[True, True, False, False]]])
    stats = PixelStatistics()
    stats.update(scores, labels)
    assert roc_auc_score(labels.ravel(), scores.ravel()) == 0.75
    assert stats.pixel_auc.compute() == 0.75
    assert stats.pixel_auc.error_bound() == 0.0


def test_pixel_auc_state_loads_sorted_and_unsorted_bins_and_refuses_repeats():
    rng = np.random.default_rng(6)
    metric = PixelAUC(octaves=PIXEL_AUC_OCTAVES)
    metric.update(_maps(rng, 4, 30, 30, np.float64), _labels(rng, 4, 30, 30))
    state = metric.state_dict()
    assert state["bins"].size > 100
    loaded = PixelAUC(octaves=PIXEL_AUC_OCTAVES)
    loaded.load_state_dict(state)
    assert np.array_equal(loaded._counts, metric._counts)
    order = rng.permutation(state["bins"].size)  # another writer's order: still distinct, still accepted
    shuffled = dict(state, **{k: state[k][order] for k in ("bins", "negatives", "positives")})
    loaded = PixelAUC(octaves=PIXEL_AUC_OCTAVES)
    loaded.load_state_dict(shuffled)
    assert np.array_equal(loaded._counts, metric._counts)
    for bins in (
        np.sort(np.r_[state["bins"][:-1], state["bins"][0]]),
        np.r_[state["bins"][1:], state["bins"][5]],
    ):
        repeated = dict(state, bins=bins)
        with pytest.raises(ValueError, match="distinct"):
            PixelAUC(octaves=PIXEL_AUC_OCTAVES).load_state_dict(repeated)


# -- the release's protocol without the float64 sigmoid of whole S×S maps, Ped2 masks read once, PixelAUC
# -- counts without a bincount per update.


@contextlib.contextmanager
def _one_torch_thread():
    """torch.sigmoid's float64 result for a value depends on whether its vectorised loop or its scalar tail
    takes it (the last bit differs for ~3 % of logits). The old whole-map sigmoid sent every value of
    n·S² (a multiple of 16) through the vectorised loop on a power-of-two thread count; on one thread it
    does so on any machine, so the references below do not depend on the test machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _release_logits(rng, count, side):
    """Low-resolution float16 mask logits as the model returns them: wide range, gated frames at −1024."""
    low = (rng.standard_normal((count, side, side)) * 12 - 4).astype(np.float16)
    low[::5] = -1024  # frames whose object score gated the mask (SAM2's convention)
    low[1, :2, :3] = np.float16(60)  # saturating logits on both sides
    low[1, 2:4, :3] = np.float16(-60)
    return low


@pytest.mark.parametrize(
    ("native", "grid", "target"),
    [
        ((240, 360), (1024, 1024), (158, 238)),
        ((30, 40), (64, 64), (30, 40)),
        ((30, 40), (30, 40), (30, 40)),
        ((30, 40), (64, 64), (64, 64)),  # metrics at the predictions' own grid (SAM2's S×S)
        ((12, 20), (24, 40), (48, 80)),
        ((17, 23), (64, 64), (128, 11)),
        ((101, 7), (33, 97), (5, 3)),
    ],
)
def test_release_masks_pick_what_the_two_nearest_resizes_picked(native, grid, target):
    rng = np.random.default_rng(9)
    masks = rng.random((3, *native)) < 0.4
    expected = resize_masks(resize_masks(masks, grid, mode="nearest"), target, mode="nearest")
    got = _release_masks(masks, grid, target)
    assert got.dtype == np.bool_ and got.shape == expected.shape and np.array_equal(got, expected)


def _nearest_exact_by_hand(masks, size):
    """Output pixel (i, j) reads source row floor((i + 1/2) h / H), pixel centres aligned (nearest-exact),
    and likewise for columns; fractions, no floats."""
    (_, h, w), (height, width) = masks.shape, size
    rows = [min(h - 1, math.floor((i + Fraction(1, 2)) * Fraction(h, height))) for i in range(height)]
    cols = [min(w - 1, math.floor((j + Fraction(1, 2)) * Fraction(w, width))) for j in range(width)]
    return masks[:, rows][:, :, cols]


@pytest.mark.parametrize(("native", "size"), [((5, 7), (8, 3)), ((12, 20), (13, 17)), ((9, 4), (3, 11))])
def test_masks_are_resized_by_the_nearest_rule_each_mode_names(native, size):
    """Ground truth reaches the metrics' size by nearest-exact (pixel centres) unless the release's legacy
    rule is asked for; the two differ on these sizes."""
    masks = np.random.default_rng(12).random((2, *native)) < 0.5
    exact = resize_masks(masks, size)
    legacy = resize_masks(masks, size, mode="nearest")
    assert exact.dtype == legacy.dtype == np.bool_
    assert np.array_equal(exact, _nearest_exact_by_hand(masks, size))
    assert np.array_equal(legacy, legacy_nearest(masks, size))
    assert not np.array_equal(exact, legacy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_auc_counts_are_the_bincount_of_the_bin_indices(dtype):
    """np.add.at counts what the per-update bincount counted: every chunk, both classes, any size."""
    rng = np.random.default_rng(10)
    metric = PixelAUC(octaves=PIXEL_AUC_OCTAVES, chunk_size=1000)
    expected = np.zeros(2 * metric.num_bins, np.int64)
    pool = rng.permutation(_maps(rng, 1, 100, 100, dtype).reshape(-1))  # with 0, 1, subnormals, 0.5±
    for shape in [(0,), (1,), (3, 7, 11), (2, 40, 60), (5000,)]:
        scores = rng.choice(pool, int(np.prod(shape))).reshape(shape)
        labels = rng.random(shape) < 0.3
        metric.update(scores, labels)
        flat_scores, flat_labels = scores.reshape(-1), labels.reshape(-1)
        for start in range(0, flat_scores.size, 1000):
            idx = metric._bin_index(flat_scores[start : start + 1000], flat_labels[start : start + 1000])
            binned = np.bincount(idx)
            expected[: binned.size] += binned
        assert np.array_equal(metric._counts.reshape(-1), expected)
    assert metric.num_positive and metric.num_negative


def test_a_cache_written_with_other_quantiser_settings_loads_as_written(tmp_path):
    """The fingerprint, not the loader, decides what to do with an older cache: its PixelAUC (here
    40 octaves and 10 mantissa bits, not the current settings) reads back with its own settings and
    counts instead of failing to load into a default one."""
    rng = np.random.default_rng(7)
    stats = PixelStatistics(pixel_auc=PixelAUC(mantissa_bits=10, octaves=40))
    stats.update(_maps(rng, 3, 8, 8, np.float64), _labels(rng, 3, 8, 8))
    path = VideoResult("v", np.arange(3), rng.random(3), np.zeros(3, np.uint8), stats).save(
        tmp_path / "v.npz"
    )
    loaded = VideoResult.load(path).pixels
    assert (loaded.pixel_auc.mantissa_bits, loaded.pixel_auc.octaves) == (10, 40)
    _same_statistics(loaded, stats)


def test_release_regions_at_the_ground_truths_size_are_still_cut_bilinearly():
    """Regions come from the predictions bilinearly resized to the ground truth's own size, whatever
    ``resize``: with ``release`` and no ``size`` the metrics' maps are nearest-resized to that same size,
    and are not the maps the regions are cut from."""
    rng = np.random.default_rng(8)
    maps, labels = _maps(rng, 5, 12, 20, np.float64), _labels(rng, 5, 18, 22)
    _, regions = pixel_statistics(
        np.arange(5),
        predicted=lambda f: maps[f],
        ground_truth=lambda f: labels[f],
        resize="release",
        region_thresholds=(0.5, 0.3),
    )
    expected = extract_regions(
        resize_probabilities(maps, (18, 22)), thresholds=[0.5, 0.3], frames=list(range(5))
    )
    assert regions.shape == expected.shape and np.array_equal(regions, expected)


def test_bilinear_resizing_samples_pixel_centres():
    # 2 → 4 columns, pixel centres (align_corners=False): output x reads input (x + 0.5) / 2 - 0.5 =
    # -0.25, 0.25, 0.75, 1.25, clamped to [0, 1]: values 0, 0.25, 0.75, 1 (corners would give thirds).
    got = resize_probabilities(np.array([[[0.0, 1.0]]]), (1, 4))
    np.testing.assert_allclose(got, [[[0.0, 0.25, 0.75, 1.0]]], atol=1e-12)


def test_a_video_without_scored_frames_has_no_regions():
    stats, regions = pixel_statistics(
        np.arange(0),
        predicted=lambda f: np.zeros((f.size, 4, 4)),
        ground_truth=lambda f: np.zeros((f.size, 4, 4), bool),
        region_thresholds=(0.5,),
    )
    assert regions.shape == (0, 6)  # (N, 6) rows, N = 0


def test_loaded_results_keep_their_facts_and_older_caches_have_none(tmp_path):
    result = VideoResult(
        "v", np.arange(2), np.array([0.1, 0.9]), np.array([0, 1], np.uint8), facts='{"x": 1}'
    )
    loaded = VideoResult.load(result.save(tmp_path / "v.npz"))
    assert (loaded.name, loaded.facts) == ("v", '{"x": 1}')
    old = tmp_path / "old.npz"  # a cache of an earlier version: no facts member
    np.savez(
        old,
        name="v",
        fingerprint="f",
        scored=np.arange(2),
        frame_scores=np.zeros(2),
        frame_labels=np.zeros(2),
    )
    assert VideoResult.load(old).facts == ""


def test_cached_results_never_unpickle(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, name="v", fingerprint=np.array([object()], dtype=object), facts="", scored=np.arange(1))
    with pytest.raises(ValueError):
        VideoResult.load(path)
    with pytest.raises(ValueError):
        VideoResult.read_fingerprint(path)
