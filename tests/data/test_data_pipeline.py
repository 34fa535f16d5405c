"""The training data pipeline and the clip predictor against the paper (§3.3, Eq. 1–2; B.3, B.5)
and the recorded official options: slow re-implementations of the deterministic rules, exact expected
distributions for the random ones, and the regressions of the defects found in it."""

import itertools
import math
import pickle
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import offline_lavida_processor
from scipy.stats import chisquare

from lavida.data.clips import sample_clip
from lavida.data.exposure import AnomalyExposureSampler, TextPool, expose, normalize_text
from lavida.data.mixture import Mixture
from lavida.data.processor import PixelBudget, smart_resize
from lavida.data.sources.base import SegRecord, SegTarget
from lavida.data.types import ClipSample


def _max_z(observed: Counter, expected: dict, n: int) -> float:
    """Largest |observed − n·p| / binomial sd over the expected cells (unexpected cells fail separately)."""
    cells = [(key, p) for key, p in expected.items() if 0 < p < 1]  # a certain cell needs no test
    return max((abs(observed[key] - n * p) / math.sqrt(n * p * (1 - p)) for key, p in cells), default=0.0)


# -- Eq. 1: the irrelevant categories ------------------------------------------------------------------------


def _successive_draw_probabilities(weights: dict[str, int], k: int) -> dict[frozenset, float]:
    """Eq. 1 read literally: draw samples uniformly (a text with probability ∝ its samples), reject
    repeats, until k distinct texts; probability of each resulting set, by enumeration of the orders."""
    sets: Counter = Counter()
    for order in itertools.permutations(weights, k):
        probability, remaining = 1.0, sum(weights.values())
        for text in order:
            probability *= weights[text] / remaining
            remaining -= weights[text]
        sets[frozenset(order)] += probability
    return dict(sets)


@pytest.mark.parametrize("k, exclude", [(1, []), (2, ["B "]), (3, ["d", "A"])])
def test_irrelevant_sets_follow_successive_sampling_with_exclusions(k, exclude):
    """Weighted draws without replacement equal the rejection loop of Eq. 1, with excluded texts (any
    spelling) removed before drawing."""
    texts = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + ["e"] * 4 + ["A "]  # "A " is one more "a"
    pool = TextPool(texts)
    excluded = {normalize_text(t) for t in exclude}
    weights = {t: int(c) for t, c in zip(pool.distinct, pool.counts, strict=True) if t not in excluded}
    expected = _successive_draw_probabilities(weights, k)
    rng = np.random.default_rng(20)
    n = 20000
    observed = Counter(frozenset(pool.draw(k, exclude=exclude, rng=rng)) for _ in range(n))
    assert set(observed) <= set(expected)
    assert _max_z(observed, expected, n) < 4.5


def test_exposure_distribution_over_k_e_label_and_position_is_exact():
    """The paper's rule (B.5: p = 0.5, max K_E = 30): P(anomalous) = p, |S_irr| = K_E − 1 ~ Unif{1..29}
    for both labels, the genuine text at each of the K_E positions with probability 1/K_E."""
    pool = TextPool([f"class {i}" for i in range(80)])
    rng = np.random.default_rng(21)
    n = 12000
    cells: Counter = Counter()  # (is_anomaly, |S_irr|)
    positions: Counter = Counter()  # genuine position among K_E = 4 categories
    for _ in range(n):
        categories, is_anomaly = expose("a dog", pool, max_categories=30, rng=rng)
        cells[is_anomaly, len(categories) - int(is_anomaly)] += 1
        if is_anomaly and len(categories) == 4:
            positions[categories.index("a dog")] += 1
    expected = {(label, m): 0.5 / 29 for label in (True, False) for m in range(1, 30)}
    assert set(cells) == set(expected)
    assert chisquare([cells[c] for c in expected], [n * p for p in expected.values()]).pvalue > 1e-4
    assert chisquare([positions[i] for i in range(4)]).pvalue > 1e-4


def test_nothing_visible_anywhere_in_the_group_is_listed_in_any_spelling():
    """Two records of one group (e.g. two refs of an image): a text visible in either, in any case or
    spacing, is never an irrelevant category of the other, though the pool carries it from elsewhere."""
    records = [
        SegRecord(
            "x", "img1/a", "img1", ("f.jpg",), (SegTarget("the left man", {}),), ("A Red  Umbrella",), False
        ),
        SegRecord("x", "img1/b", "img1", ("f.jpg",), (SegTarget("Woman in blue", {}),), (), False),
        *[
            SegRecord("x", f"other{i}", f"other{i}", ("f.jpg",), (SegTarget(text, {}),), (text,), False)
            for i, text in enumerate(
                ["a red umbrella", "woman  in BLUE", "The Left Man"] * 3 + [f"t{j}" for j in range(20)]
            )
        ],
    ]
    pool = TextPool.from_records(records)
    sampler = AnomalyExposureSampler(p=0.5, max_categories=30)
    rng = np.random.default_rng(22)
    forbidden = {"a red umbrella", "woman in blue", "the left man"}
    for _ in range(400):
        exposure = sampler(records[0], records[0].targets[0], pool, rng=rng)
        listed = {normalize_text(c) for c in exposure.categories}
        assert listed & forbidden == ({"the left man"} if exposure.is_anomaly else set())


# -- clips (B.3: 8 frames; our strides and visibility rule, docs/fidelity.md) ---------------------------------


def _documented_clip_distribution(n: int, length: int, strides, visible, tries: int) -> dict[tuple, Fraction]:
    """Exact distribution of the clip rule as clips.py documents it, by enumerating every stride draw."""

    def fitting(stride):
        return stride if (length - 1) * stride + 1 <= n else max(1, (n - 1) // (length - 1))

    def windows(stride):
        return [
            tuple(min(start + stride * k, n - 1) for k in range(length))
            for start in range(max(n - (length - 1) * stride, 1))
        ]

    dist: Counter = Counter()

    def attempt(depth: int, probability: Fraction) -> None:
        for drawn in strides:
            p = probability / len(strides)
            every = windows(fitting(drawn))
            showing = [w for w in every if set(w) & set(visible)]
            if not visible or (not showing and depth + 1 == tries):
                for w in every:
                    dist[w] += p / len(every)
            elif showing:
                for w in showing:
                    dist[w] += p / len(showing)
            else:
                attempt(depth + 1, p)

    attempt(0, Fraction(1))
    assert sum(dist.values()) == 1
    return dict(dist)


@pytest.mark.parametrize(
    "num_frames, visible",
    [(30, [2]), (30, [2, 27]), (12, [11]), (5, [0]), (40, [])],
    ids=["unreachable-by-stride-4", "two-ends", "one-window", "short-video", "no-target"],
)
def test_clip_windows_follow_the_documented_rule_exactly(num_frames, visible):
    expected = _documented_clip_distribution(num_frames, 8, (1, 2, 4), visible, 3)
    rng = np.random.default_rng(23)
    n = 12000
    observed = Counter(
        tuple(sample_clip(num_frames, strides=(1, 2, 4), visible=visible, rng=rng, tries=3).tolist())
        for _ in range(n)
    )
    assert set(observed) <= set(expected)
    if len(expected) > 1:
        assert _max_z(observed, {w: float(p) for w, p in expected.items()}, n) < 4.5


# -- the source mixture ----------------------------------------------------------------------------------------


def test_renormalised_mixture_draws_the_remaining_sources_in_proportion():
    """Missing sources are dropped and the rest keep their ratios (0.25 : 0.20 : 0.05 → 0.5 : 0.4 : 0.1)."""
    mixture = Mixture({"mevis": 0.25, "refvos": 0.20, "refdavis": 0.20, "vos": 0.05, "ade20k": 0.10})
    kept = mixture.restricted({"mevis", "refvos", "vos"}, on_missing="renormalize")
    expected = {"mevis": 0.5, "refvos": 0.4, "vos": 0.1}
    assert kept.weights == pytest.approx(expected)
    n = 20000
    observed = Counter(kept.draw(np.random.default_rng([24, i])) for i in range(n))
    assert set(observed) == set(expected) and _max_z(observed, expected, n) < 4.5


# -- the processor: Qwen2-VL resize, SAM2 resize and normalisation, masks ------------------------------------


def _qwen_vl_utils_smart_resize(height: int, width: int, budget: PixelBudget, factor: int = 28):
    """qwen-vl-utils' rule, written out: nearest multiple of 28, then scaled into the pixel budget."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > budget.max_pixels:
        beta = math.sqrt(height * width / budget.max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < budget.min_pixels:
        beta = math.sqrt(budget.min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@pytest.mark.parametrize(
    "budget",
    [PixelBudget(200_704, 401_408), PixelBudget(1_003_520, 1_204_224), PixelBudget(25_088, 802_816)],
    ids=["train-video", "test-video", "image"],
)
def test_mllm_resize_is_qwen_vl_utils_rule(budget):
    rng = np.random.default_rng(25)
    sizes = [(480, 856), (240, 320), (720, 1280), (1080, 1920), (158, 238), (24, 32), (1024, 2048)]
    sizes += [tuple(int(v) for v in rng.integers(16, 2500, 2)) for _ in range(200)]
    for height, width in sizes:
        assert smart_resize(height, width, factor=28, budget=budget) == _qwen_vl_utils_smart_resize(
            height, width, budget
        ), (height, width)


@pytest.fixture(scope="module")
def processor():
    """A LavidaProcessor on the offline byte-level Qwen2-VL processor; CLIP tokens are not checked here."""
    return offline_lavida_processor(sam_image_size=64)


def test_sam_branch_is_a_square_stretch_with_imagenet_normalisation_in_float32(processor):
    """Each channel of a stretched uniform frame is (v/255 − mean)/std; masks resize by nearest neighbour
    at pixel centres (index ⌊(i + ½)·in/out⌋), checked against that rule written out."""
    frames = np.empty((2, 30, 50, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 10, 128, 250
    masks = np.random.default_rng(26).random((2, 30, 50)) > 0.6
    encoded = processor.encode(ClipSample(frames=frames, categories=["x"], masks=masks), train=False)
    assert (
        encoded.sam_pixel_values.shape == (2, 3, 64, 64) and encoded.sam_pixel_values.dtype == torch.float32
    )
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (np.array([10, 128, 250]) / 255 - mean) / std
    np.testing.assert_allclose(encoded.sam_pixel_values[1].mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    rows = np.floor((np.arange(64) + 0.5) * 30 / 64).astype(int)
    cols = np.floor((np.arange(64) + 0.5) * 50 / 64).astype(int)
    assert encoded.target_masks.dtype == torch.float32
    np.testing.assert_array_equal(encoded.target_masks.numpy(), masks[:, rows][:, :, cols].astype(np.float32))


def test_image_sample_with_several_frames_is_refused(processor):
    """An image sample (is_video=False) has one frame (types.ClipSample); with three, the MLLM saw only the
    first while SAM2 decoded all three, silently. It must say what is wrong instead."""
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"is_video=False.*3 frames"):
        processor.encode(ClipSample(frames=frames, categories=["x"], is_video=False), train=False)
    one = processor.encode(ClipSample(frames=frames[:1], categories=["x"], is_video=False), train=False)
    assert not one.is_video and one.sam_pixel_values.shape[0] == 1


# -- inference: workers, batching, mask upsampling -------------------------------------------------------------


class _ModelThatStaysHome(torch.nn.Module):
    """Stands in for a LAVIDA model that cannot be copied into a worker process (8.5 B parameters, on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.projector = torch.nn.Linear(2, 2)

    def __reduce__(self):
        raise pickle.PicklingError("the model was pickled into a dataloader worker")


class _StubProcessor:
    def collate(self, samples):
        return list(samples)


def test_predictor_workers_do_not_receive_the_model(monkeypatch):
    """Under the spawn and forkserver start methods (macOS, Windows; Linux from Python 3.14) a DataLoader
    pickles its collate_fn into every worker. The clip loader's collate_fn was a bound method of the
    Predictor, so each video copied the whole model into each worker."""
    import lavida.inference as inference

    captured = {}

    def loader(dataset, **kwargs):
        captured.update(kwargs, dataset=dataset)
        return []

    monkeypatch.setattr(inference, "DataLoader", loader)
    predictor = inference.Predictor(model=_ModelThatStaysHome(), processor=_StubProcessor(), num_workers=2)
    assert list(predictor.iter_clips("video.mp4", np.zeros((2, 8), np.int64), ["fire"])) == []
    # What a spawned worker is sent: serialising must not reach the model (it refuses to be pickled). Only
    # dumped, never loaded: the project unpickles nothing.
    pickle.dumps(captured["collate_fn"])
    pickle.dumps(captured["dataset"])
    assert captured["collate_fn"]([(1, "a"), (0, "b")]) == ([1, 0], ["a", "b"])


class _FramesOfSize:
    """A frame source of black (H, W) frames."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width)

    def for_worker(self):
        return self

    def get_frames(self, indices):
        return np.zeros((len(indices), *self.shape, 3), np.uint8)


class _RefusingProcessor:
    """Refuses every clip, as Qwen2-VL's processor refuses frames it cannot resize."""

    def encode(self, sample, *, train):
        raise ValueError("refused")


def test_the_aspect_ratio_hint_follows_qwen2_vls_limit():
    """A clip the processor refuses names the video and its frame size; it advises cropping exactly when
    Qwen2-VL's own smart_resize refuses the frame size (aspect ratio over 200, strictly), and not for a
    frame at the limit, whose refusal has another cause."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from lavida.inference import ClipDataset

    for height, width in ((2, 400), (2, 401), (2, 402), (300, 2), (3, 600)):
        try:
            smart_resize(height, width)
            qwen_refuses = False
        except ValueError:
            qwen_refuses = True
        dataset = ClipDataset(
            path="thin.mp4",
            clips=np.zeros((1, 2), np.int64),
            categories=["fire"],
            processor=_RefusingProcessor(),
            source=_FramesOfSize(height, width),
        )
        with pytest.raises(
            ValueError, match=rf"thin.mp4: cannot encode clip 0 of its {height}x{width} "
        ) as error:
            dataset[0]
        assert ("aspect ratio of at most 200" in str(error.value)) == qwen_refuses, (height, width)
        assert qwen_refuses == (max(height, width) > 200 * min(height, width))  # the reference, checked


class _RecordingProcessor:
    """Returns what it was asked to encode."""

    def encode(self, sample, *, train):
        return sample, train


def test_clip_dataset_encodes_at_test_time_and_one_frame_as_an_image():
    """Each clip is encoded for inference (``train=False``: the test-time pixel budget, no augmentation),
    with its frames and the prompt categories; a clip of one frame is an image (Qwen2-VL's image input),
    one of several frames a video."""
    from lavida.inference import ClipDataset

    for length, is_video in ((1, False), (2, True), (3, True)):
        dataset = ClipDataset(
            path="v.mp4",
            clips=np.zeros((2, length), np.int64),
            categories=["fire", "smoke"],
            processor=_RecordingProcessor(),
            source=_FramesOfSize(6, 8),
        )
        index, (sample, train) = dataset[1]
        assert index == 1 and train is False
        assert sample.frames.shape == (length, 6, 8, 3) and sample.is_video is is_video, length
        assert list(sample.categories) == ["fire", "smoke"]


def test_clip_plans_of_whole_numbers_are_taken_as_int64():
    """check_clips' contract: a (C, T) plan of whole numbers, T ≥ 1, C ≥ 0, returned as int64; whole
    floats (a plan computed in floating point) are accepted, fractional ones and T = 0 refused."""
    from lavida.inference import check_clips

    for plan, want in (
        (np.array([[0.0, 2.0], [4.0, 6.0]]), [[0, 2], [4, 6]]),
        ([[3]], [[3]]),  # one clip of one frame
        (np.array([[1, 2]], np.uint8), [[1, 2]]),
    ):
        got = check_clips(plan)
        assert got.dtype == np.int64 and got.tolist() == want
    assert check_clips(np.zeros((0, 4))).shape == (0, 4)  # a video without a clip
    for bad in (np.zeros((2, 0)), np.array([[0.0, 1.5]]), np.array([[0.0, np.nan]])):
        with pytest.raises(ValueError, match=r"clips must be a \(C, T\) array"):
            check_clips(bad)


def test_batched_and_worker_predictions_match_one_clip_at_a_time(tiny_model, tmp_path):
    """Clip batching and the frame-to-clip mapping: every batch size and worker count gives each clip's T
    frames their own scores and masks (up to float32 reduction order)."""
    from conftest import tiny_processor_for
    from PIL import Image

    from lavida.inference import Predictor

    rng = np.random.default_rng(27)
    for t in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / f"{t:03d}.png")
    clips = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [7, 7, 7, 7], [3, 0, 2, 1]])
    processor = tiny_processor_for(tiny_model)
    results = {
        (batch, workers): Predictor(
            model=tiny_model, processor=processor, batch_size=batch, num_workers=workers
        ).predict_video(tmp_path, clips, ["a red square", "fire"])
        for batch, workers in ((1, 0), (3, 0), (2, 2))
    }
    single = results[1, 0]
    assert single.frame_scores.shape == (16,) and single.mask_logits.shape[0] == 16
    assert single.frame_scores[8:12].std() < 1e-9  # the clip of one repeated frame: identical frames
    for key, result in results.items():
        np.testing.assert_allclose(result.frame_scores, single.frame_scores, atol=1e-6, err_msg=str(key))
        np.testing.assert_allclose(
            result.mask_logits.astype(np.float32), single.mask_logits.astype(np.float32), atol=1e-2
        )


def test_a_default_predictor_gates_the_masks_of_frames_without_an_object(tiny_model, tmp_path):
    """SAM2's no-object convention, on by default (docs/fidelity.md: masks gated when producing
    predictions): a frame whose object logit is ≤ 0 gets the mask logit −1024 everywhere. The object-score
    head's bias is pushed down so that every frame has a negative logit (score < 0.5)."""
    from conftest import tiny_processor_for
    from PIL import Image

    from lavida.inference import Predictor

    rng = np.random.default_rng(29)
    for t in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / f"{t:03d}.png")
    head = tiny_model.mask_decoder.sam.mask_decoder.pred_obj_score_head  # SAM2's object-score MLP
    with torch.no_grad():
        head.proj_out.bias.sub_(100.0)
    processor, clips = tiny_processor_for(tiny_model), np.array([[0, 1]])
    default = Predictor(model=tiny_model, processor=processor).predict_video(tmp_path, clips, ["fire"])
    assert (default.frame_scores < 0.5).all()
    assert (default.mask_logits == -1024).all()
    raw = Predictor(model=tiny_model, processor=processor, gate_masks=False).predict_video(
        tmp_path, clips, ["fire"]
    )
    np.testing.assert_array_equal(raw.frame_scores, default.frame_scores)
    assert (raw.mask_logits != -1024).any()


def test_mask_upsampling_is_half_pixel_bilinear_then_sigmoid():
    """SAM2's post-processing (bilinear, align_corners=False), checked against the formula written out."""
    from scipy.special import expit

    from lavida.inference import upsample_mask_logits

    logits = np.random.default_rng(28).normal(0, 3, (2, 4, 5)).astype(np.float16)
    size = (7, 12)

    def axis(out: int, inp: int):
        source = np.clip((np.arange(out) + 0.5) * inp / out - 0.5, 0, None)
        low = np.minimum(np.floor(source).astype(int), inp - 1)
        return low, np.minimum(low + 1, inp - 1), source - low

    (r0, r1, fr), (c0, c1, fc) = axis(size[0], 4), axis(size[1], 5)
    x = logits.astype(np.float64)
    top = x[:, r0][:, :, c0] * (1 - fc) + x[:, r0][:, :, c1] * fc
    bottom = x[:, r1][:, :, c0] * (1 - fc) + x[:, r1][:, :, c1] * fc
    expected = expit(top * (1 - fr[:, None]) + bottom * fr[:, None])
    got = upsample_mask_logits(logits, size, dtype=np.float64)
    assert got.dtype == np.float64 and got.shape == (2, *size)
    np.testing.assert_allclose(got, expected, atol=1e-6)
