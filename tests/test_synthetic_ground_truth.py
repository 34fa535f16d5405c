"""The synthetic benchmark's ground truth, checked against an independent re-rendering of each scene.

``write_vad_set`` and ``write_segmentation_set`` hand the objects they draw to ``shapes.render``; the tests
record those objects, place and stack their stencils again by hand (own border reflection, own paint
order) and compare what was written: frame labels, pixel masks, ``normal_visible``, the training
annotations, and the rendered colours (so the masks follow the occlusion order the pixels show). The
written files are then read back through the real ShanghaiTech loader and the real synthetic source.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import file_digests
from PIL import Image

import lavida.synthetic.datasets as datasets
from lavida.synthetic.datasets import SegmentationSetSpec, VadSetSpec, default_split
from lavida.synthetic.shapes import COLOURS, SHAPES, all_descriptions, shape_mask

HEIGHT, WIDTH = 30, 38  # small, and not square, so that a swapped axis shows


def _reflect(position: float, limit: int) -> int:
    """Top-left corner on one axis: a triangle wave between 0 and ``limit`` (an object bouncing off the
    borders), written as ``limit - |(p mod 2·limit) - limit|``."""
    if limit <= 0:
        return 0
    return int(round(limit - abs((position % (2 * limit)) - limit)))


def _expected_ids(objects, *, frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W) id of the object seen at each pixel, objects painted in list order (later on top)."""
    ids = np.zeros((frames, height, width), dtype=np.int64)
    for number, obj in enumerate(objects, start=1):
        stencil = shape_mask(obj.shape, obj.size)
        assert stencil.any(), obj  # an empty stencil would make an object invisible
        for t in range(frames):
            if not obj.appear <= t < obj.disappear:
                continue
            top = _reflect(obj.start[0] + obj.velocity[0] * t, height - obj.size)
            left = _reflect(obj.start[1] + obj.velocity[1] * t, width - obj.size)
            assert 0 <= top <= height - obj.size and 0 <= left <= width - obj.size  # inside the frame
            window = ids[t, top : top + obj.size, left : left + obj.size]
            window[stencil] = number
    return ids


def _record_scenes(monkeypatch) -> list[tuple[list, np.ndarray]]:
    """Make the generators' ``render`` also record (copies of the objects, the rendered frames)."""
    scenes: list[tuple[list, np.ndarray]] = []
    original = datasets.render

    def recording(objects, **kwargs):
        video, ids = original(objects, **kwargs)
        scenes.append((copy.deepcopy(objects), video.copy()))
        return video, ids

    monkeypatch.setattr(datasets, "render", recording)
    return scenes


def _check_colours(video: np.ndarray, expected: np.ndarray, objects) -> None:
    """Every pixel of an object that is on top shows that object's colour (up to the ±3σ-ish noise)."""
    for number, obj in enumerate(objects, start=1):
        on_top = expected == number
        if on_top.any():
            difference = np.abs(video[on_top].astype(np.int64) - np.asarray(COLOURS[obj.colour]))
            assert difference.max() <= 20, (obj.description, difference.max())


def test_vad_ground_truth_matches_an_independent_rendering(tmp_path, monkeypatch):
    from lavida.eval.benchmarks.shanghaitech import ShanghaiTech

    scenes = _record_scenes(monkeypatch)
    split = default_split(0)
    spec = VadSetSpec(
        anomalous_videos=4,
        normal_videos=2,
        frames=10,
        height=HEIGHT,
        width=WIDTH,
        normal_objects=(1, 3),
        seed=4,
    )
    layout = datasets.write_vad_set(tmp_path, anomalies=split.seen_anomalies, normal=split.normal, spec=spec)
    assert json.loads((tmp_path / "synthetic_layout.json").read_text()) == layout
    assert sorted(layout) == [f"01_{n:04d}" for n in range(1, 7)]  # ShanghaiTech's <scene>_<video> names
    assert len(scenes) == 6
    testing = tmp_path / "testing"
    for (name, info), (objects, video) in zip(sorted(layout.items()), scenes, strict=True):
        expected = _expected_ids(objects, frames=spec.frames, height=HEIGHT, width=WIDTH)
        normal_count = len(info["normal_objects"])
        assert [o.description for o in objects[:normal_count]] == info["normal_objects"]
        assert set(info["normal_objects"]) <= set(split.normal)
        if info["anomaly"] is None:
            assert len(objects) == normal_count and info["interval"] is None
            truth = np.zeros_like(expected, dtype=bool)
        else:
            intruder = objects[-1]
            assert len(objects) == normal_count + 1 and intruder.description == info["anomaly"]
            assert info["anomaly"] in split.seen_anomalies
            assert [intruder.appear, intruder.disappear] == info["interval"]
            truth = expected == len(objects)
        # Pixel and frame ground truth, in the dtypes and shapes the loader expects.
        pixel = np.load(testing / "test_pixel_mask" / f"{name}.npy")
        frame = np.load(testing / "test_frame_mask" / f"{name}.npy")
        assert pixel.dtype == np.uint8 and pixel.shape == (spec.frames, HEIGHT, WIDTH)
        assert frame.dtype == np.uint8 and frame.shape == (spec.frames,)
        np.testing.assert_array_equal(pixel, truth.astype(np.uint8))
        np.testing.assert_array_equal(frame, truth.any(axis=(1, 2)).astype(np.uint8))
        if info["interval"] is not None:  # the intruder is on top: seen on exactly its interval
            start, end = info["interval"]
            assert frame.tolist() == [int(start <= t < end) for t in range(spec.frames)]
            # int(0.25·F) to int(0.6·F) frames (datasets.MIN_VAD_FRAMES), inside the video.
            assert int(0.25 * spec.frames) <= end - start <= int(0.6 * spec.frames)
            assert 0 <= start < end <= spec.frames
        assert info["normal_visible"] == {
            text: [t for t in range(spec.frames) if (expected[t] == k).any()]
            for k, text in enumerate(info["normal_objects"], start=1)
        }
        _check_colours(video, expected, objects)
        # The frames written are the rendered ones, named as ShanghaiTech's.
        files = sorted(p.name for p in (testing / "frames" / name).iterdir())
        assert files == [f"{t:03d}.jpg" for t in range(spec.frames)]
        decoded = np.stack([np.asarray(Image.open(testing / "frames" / name / f)) for f in files])
        # JPEG (quality 95, chroma subsampled) of noisy frames: ~5 grey levels off on average.
        assert decoded.shape == video.shape and np.abs(decoded.astype(int) - video).mean() < 8

    # Read back through the production loader: the same labels, masks and frame counts.
    videos = ShanghaiTech(tmp_path, pixel_metrics=True).load_videos()
    assert [v.name for v in videos] == sorted(layout)
    for video in videos:
        assert video.num_frames == spec.frames
        np.testing.assert_array_equal(
            video.frame_labels, np.load(testing / "test_frame_mask" / f"{video.name}.npy")
        )
        np.testing.assert_array_equal(
            video.pixel_masks(np.arange(spec.frames)),
            np.load(testing / "test_pixel_mask" / f"{video.name}.npy") > 0,
        )


def test_covered_normal_object_is_left_out_of_normal_visible(tmp_path, monkeypatch):
    """Occlusion among normal objects: a small still object under a large still one is never visible."""
    original = datasets.random_object

    def placed(description, **kwargs):
        obj = original(description, **kwargs)
        obj.velocity = (0.0, 0.0)
        # "blue circle" first (below), 8 px at (12, 12); "red square" (26 px at (0, 0)) covers rows/cols 3–22 when on top.
        obj.size, obj.start = (8, (12.0, 12.0)) if description == "blue circle" else (26, (0.0, 0.0))
        return obj

    monkeypatch.setattr(datasets, "random_object", placed)
    scenes = _record_scenes(monkeypatch)
    spec = VadSetSpec(
        anomalous_videos=0, normal_videos=3, frames=3, height=HEIGHT, width=WIDTH, normal_objects=(2, 2)
    )
    layout = datasets.write_vad_set(tmp_path, anomalies=(), normal=("blue circle", "red square"), spec=spec)
    for (objects, _), info in zip(scenes, layout.values(), strict=True):
        expected_visible = {"red square": [0, 1, 2]}
        # Covered only where the square was drawn after (on top of) the circle.
        expected_visible["blue circle"] = [] if objects[0].description == "blue circle" else [0, 1, 2]
        assert info["normal_visible"] == expected_visible, info


def test_training_annotations_match_an_independent_rendering(tmp_path, monkeypatch):
    from lavida.data.sources.base import write_manifest
    from lavida.data.sources.synthetic import SyntheticSource

    scenes = _record_scenes(monkeypatch)
    split = default_split(0)
    spec = SegmentationSetSpec(
        videos=4, images=3, frames=5, height=HEIGHT, width=WIDTH, max_objects=3, seed=2
    )
    datasets.write_segmentation_set(tmp_path, split, spec)
    meta = json.loads((tmp_path / "meta.json").read_text())
    keys = [("videos", f"v{i:04d}") for i in range(4)] + [("images", f"i{i:04d}") for i in range(3)]
    assert sorted(meta["videos"]) == [k for kind, k in keys if kind == "videos"]
    assert sorted(meta["images"]) == [k for kind, k in keys if kind == "images"]
    source = SyntheticSource(tmp_path)
    write_manifest(source.index(), source.manifest_path())
    records = {record.key: record for record in source.index()}
    for (kind, key), (objects, video) in zip(keys, scenes, strict=True):
        frames = spec.frames if kind == "videos" else 1
        entry = meta[kind][key]
        assert entry == {
            "objects": {str(i): o.description for i, o in enumerate(objects, start=1)},
            "frames": frames,
        }
        expected = _expected_ids(objects, frames=frames, height=HEIGHT, width=WIDTH)
        for t in range(frames):
            png = np.asarray(Image.open(tmp_path / "Annotations" / key / f"{t:05d}.png"))
            np.testing.assert_array_equal(png, expected[t])
            # The JPEG frame is the rendered one up to compression: on these noisy 30×38 scenes the mean
            # absolute error is ~5.6 levels at the generator's quality 95, 8.2 at 75 and 22 at 0.
            jpeg = np.asarray(Image.open(tmp_path / "JPEGImages" / key / f"{t:05d}.jpg"), dtype=np.int64)
            assert np.abs(jpeg - video[t]).mean() < 7, (key, t)
        _check_colours(video, expected, objects)
        # The source's per-target visible frames are the frames the object is seen on.
        for target, number in zip(records[key].targets, entry["objects"], strict=True):
            if kind == "videos":
                assert list(target.frames) == [t for t in range(frames) if (expected[t] == int(number)).any()]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_training_descriptions_never_include_held_out_categories(tmp_path, seed):
    """Every description in meta.json (targets, and hence the sampler's distractor pool) is a training
    description; the unseen ones never occur, and the three test groups are disjoint."""
    split = default_split(seed)
    unseen, seen, normal = set(split.unseen_anomalies), set(split.seen_anomalies), set(split.normal)
    assert len(unseen) == len(split.unseen_anomalies) == 6 and len(seen) == 6 and len(normal) == 6
    assert not (unseen & seen or unseen & normal or seen & normal)
    assert seen | normal <= set(split.train) and not unseen & set(split.train)
    assert set(split.train) | unseen == set(all_descriptions())
    train_words = {word for text in split.train for word in text.split()}
    assert all(set(text.split()) <= train_words for text in unseen)  # the words are all seen
    root = datasets.write_segmentation_set(
        tmp_path, split, SegmentationSetSpec(videos=30, images=30, frames=2, height=12, width=12, seed=seed)
    )
    meta = json.loads((root / "meta.json").read_text())
    written = [
        text for kind in ("videos", "images") for e in meta[kind].values() for text in e["objects"].values()
    ]
    assert written and set(written) <= set(split.train)
    assert not set(written) & unseen


def test_same_seed_gives_byte_identical_sets_and_other_seeds_other_videos(tmp_path):
    split = default_split(0)
    train = SegmentationSetSpec(videos=2, images=2, frames=3, height=HEIGHT, width=WIDTH, seed=3)
    for copy_ in ("a", "b"):
        datasets.write_segmentation_set(tmp_path / f"train_{copy_}", split, train)
        for seed in (101, 202):
            spec = VadSetSpec(
                anomalous_videos=2, normal_videos=1, frames=6, height=HEIGHT, width=WIDTH, seed=seed
            )
            datasets.write_vad_set(
                tmp_path / f"vad_{seed}_{copy_}",
                anomalies=split.seen_anomalies,
                normal=split.normal,
                spec=spec,
            )
    assert file_digests(tmp_path / "train_a") == file_digests(tmp_path / "train_b")
    for seed in (101, 202):
        assert file_digests(tmp_path / f"vad_{seed}_a") == file_digests(tmp_path / f"vad_{seed}_b")
    # The demo's two test seeds give other videos: no frame file is shared.
    first, second = file_digests(tmp_path / "vad_101_a"), file_digests(tmp_path / "vad_202_a")
    frames = [name for name in first if name.endswith(".jpg")]
    assert frames and all(first[name] != second[name] for name in frames)
    assert split == default_split(0) and default_split(0) != default_split(1)


def test_shape_stencils_are_non_empty_and_distinct_at_the_smallest_size():
    stencils = {shape: shape_mask(shape, 8) for shape in SHAPES}
    assert all(s.any() and s.shape == (8, 8) for s in stencils.values())
    assert len({s.tobytes() for s in stencils.values()}) == len(SHAPES)
