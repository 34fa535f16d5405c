"""lavida.synthetic.datasets: a set killed while its marker file is written is regenerated, not half-read.

``lavida-demo`` treats ``meta.json`` (training set) and ``synthetic_layout.json`` (test sets) as "this set
is finished" and skips generating it on a rerun, so a marker cut short by a kill would break every later
run of the same output directory.
"""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from lavida.data.sources.synthetic import SyntheticSource
from lavida.synthetic.datasets import (
    CategorySplit,
    SegmentationSetSpec,
    VadSetSpec,
    default_split,
    untrained_categories,
    write_segmentation_set,
    write_vad_set,
)


class Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C arriving in the middle of a write."""


def _kill_half_way_through(monkeypatch, name: str) -> None:
    """Make the next text write whose target or temporary mentions ``name`` write half its text and die."""
    original = pathlib.Path.write_text

    def write_text(self, data, *args, **kwargs):
        if name in self.name:
            original(self, data[: len(data) // 2], *args, **kwargs)
            raise Killed
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


@pytest.mark.parametrize("kind", ["segmentation", "vad"])
def test_a_kill_while_writing_the_marker_leaves_no_marker(tmp_path, monkeypatch, kind):
    split = default_split(0)
    if kind == "segmentation":
        marker = "meta.json"

        def write():
            return write_segmentation_set(
                tmp_path, split, SegmentationSetSpec(videos=2, images=1, frames=2, seed=1)
            )
    else:
        marker = "synthetic_layout.json"

        def write():
            return write_vad_set(
                tmp_path,
                anomalies=split.seen_anomalies,
                normal=split.normal,
                spec=VadSetSpec(anomalous_videos=1, normal_videos=1, frames=8, seed=1),
            )

    with monkeypatch.context() as patch:
        _kill_half_way_through(patch, marker)
        with pytest.raises(Killed):
            write()
    assert not (tmp_path / marker).exists()  # a rerun sees an unfinished set and regenerates it
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left

    write()
    content = json.loads((tmp_path / marker).read_text())
    videos = content["videos"] if kind == "segmentation" else content
    assert len(videos) == 2


# -- per-frame visibility of the normal objects ----------------------------------------------------------


def _covering_intruder(monkeypatch, anomaly: str):
    """Make the generator draw every normal object as a still 8-pixel shape at (10, 10) and the intruder
    as a still 40-pixel shape at (0, 0), on top of it: a "square" intruder's stencil spans rows and
    columns 4–35, so the normal object is fully covered on exactly the anomalous frames."""
    import lavida.synthetic.datasets as datasets

    original = datasets.random_object

    def placed(description, **kwargs):
        obj = original(description, **kwargs)  # draws as before, so the rest of the stream is unchanged
        obj.velocity = (0.0, 0.0)
        obj.size, obj.start = (40, (0.0, 0.0)) if description == anomaly else (8, (10.0, 10.0))
        return obj

    monkeypatch.setattr(datasets, "random_object", placed)


def test_layout_records_the_frames_on_which_each_normal_object_is_visible(tmp_path, monkeypatch):
    _covering_intruder(monkeypatch, "red square")
    spec = VadSetSpec(anomalous_videos=2, normal_videos=1, frames=8, normal_objects=(1, 1), seed=3)
    layout = write_vad_set(tmp_path, anomalies=("red square",), normal=("blue circle",), spec=spec)
    assert layout == json.loads((tmp_path / "synthetic_layout.json").read_text())
    for name, info in layout.items():
        assert info["normal_objects"] == ["blue circle"]  # the existing keys are kept
        if info["anomaly"] is None:
            hidden = set()
        else:
            start, end = info["interval"]
            hidden = set(range(start, end))
            assert 0 < len(hidden) < spec.frames
        assert info["normal_visible"] == {"blue circle": [t for t in range(8) if t not in hidden]}, name


def test_attribute_rules_on_the_test_set_use_the_recorded_visibility():
    """Video A: normal "red square" visible on frame 0 only, anomaly "blue circle" on frames 2–3 of 4;
    video B: normal "blue ring" on every frame. Prompt "red circle". Labels A 0011, B 0000.

    Colour rule: A 1000, B 0000: each positive scores 0, below A's frame 0 and tied with the other 5
    negatives: AUC = (0.5·5·2) / (2·6) = 5/12 (it would be 10/12 with the red square on every frame).
    Shape rule: A 0011, B 0000: 1.
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    from conftest import load_benchmark_script

    diagnostics = load_benchmark_script("demo_diagnostics")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        masks = root / "testing" / "test_frame_mask"
        masks.mkdir(parents=True)
        np.save(masks / "01_0001.npy", np.array([0, 0, 1, 1], dtype=np.uint8))
        np.save(masks / "01_0002.npy", np.zeros(4, dtype=np.uint8))
        layout = {
            "01_0001": {
                "anomaly": "blue circle",
                "interval": [2, 4],
                "normal_objects": ["red square"],
                "normal_visible": {"red square": [0]},
            },
            "01_0002": {
                "anomaly": None,
                "interval": None,
                "normal_objects": ["blue ring"],
                "normal_visible": {"blue ring": [0, 1, 2, 3]},
            },
        }
        (root / "synthetic_layout.json").write_text(json.dumps(layout))
        aucs = diagnostics.attribute_rule_test_auc(root, ["red circle"])
    assert aucs["colour"] == pytest.approx(5 / 12)
    assert aucs["shape"] == pytest.approx(1.0)


# -- categories the training set never shows ----------------------------------------------------------------


def test_untrained_categories_names_the_seen_and_normal_ones_absent_from_training(tmp_path):
    split = default_split(0)
    # One video with a single object: exactly one training description occurs.
    write_segmentation_set(tmp_path, split, SegmentationSetSpec(videos=1, images=0, frames=2, max_objects=1))
    (trained,) = json.loads((tmp_path / "meta.json").read_text())["videos"]["v0000"]["objects"].values()
    missing = untrained_categories(SyntheticSource(tmp_path).index(), split)
    assert missing == {
        "seen": [text for text in split.seen_anomalies if text != trained],
        "normal": [text for text in split.normal if text != trained],
    }
    assert len(missing["seen"]) >= len(split.seen_anomalies) - 1 >= 1


def test_an_object_hidden_on_every_frame_is_not_trained(tmp_path):
    """meta.json lists the seen anomaly split.seen_anomalies[0] as object 2 of an image, but object 1 is
    drawn over it: no pixel of value 2, so SyntheticSource makes it no target, and it counts as untrained."""
    split = default_split(0)
    hidden, shown = split.seen_anomalies[0], split.normal[0]
    ids = np.zeros((6, 8), dtype=np.uint8)
    ids[1:4, 2:6] = 1
    for folder, name, image in (
        ("JPEGImages", "00000.jpg", Image.new("RGB", (8, 6))),
        ("Annotations", "00000.png", Image.fromarray(ids, mode="L")),
    ):
        (tmp_path / folder / "i0000").mkdir(parents=True)
        image.save(tmp_path / folder / "i0000" / name)
    meta = {"videos": {}, "images": {"i0000": {"frames": 1, "objects": {"1": shown, "2": hidden}}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    missing = untrained_categories(SyntheticSource(tmp_path).index(), split)
    assert missing == {"seen": list(split.seen_anomalies), "normal": list(split.normal[1:])}


def test_a_category_both_anomalous_and_normal_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"write_vad_set: red cross is both an anomaly and a normal category"
    ):
        write_vad_set(
            tmp_path, anomalies=("red cross",), normal=("red cross", "cyan circle"), spec=VadSetSpec(seed=1)
        )
    assert not (tmp_path / "synthetic_layout.json").exists()


# -- settings the generators cannot honour are refused up front ------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"frames": 1}, r"frames=1.*at least 2"),
        ({"videos": -1}, r"videos=-1.*at least 0"),
        ({"images": -2}, r"images=-2.*at least 0"),
        ({"max_objects": 0}, r"max_objects=0.*at least 1"),
        ({"height": 8}, r"height=8.*at least 9"),
        ({"width": 0}, r"width=0.*at least 9"),
    ],
)
def test_segmentation_spec_refuses_settings_the_generator_cannot_honour(settings, message):
    with pytest.raises(ValueError, match=r"SegmentationSetSpec: " + message):
        SegmentationSetSpec(**settings)


def test_segmentation_set_refuses_more_objects_than_training_descriptions(tmp_path):
    split = default_split(0)
    spec = SegmentationSetSpec(videos=1, images=0, max_objects=len(split.train) + 1)
    with pytest.raises(ValueError, match=rf"max_objects={len(split.train) + 1}.*at most {len(split.train)}"):
        write_segmentation_set(tmp_path, split, spec)
    assert not (tmp_path / "meta.json").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"frames": 3}, r"frames=3.*at least 4"),
        ({"anomalous_videos": -1}, r"anomalous_videos=-1.*at least 0"),
        ({"normal_videos": -1}, r"normal_videos=-1.*at least 0"),
        ({"normal_objects": (0, 2)}, r"normal_objects=\(0, 2\).*1 ≤ lo ≤ hi"),
        ({"normal_objects": (2, 1)}, r"normal_objects=\(2, 1\).*1 ≤ lo ≤ hi"),
        ({"height": 5}, r"height=5.*at least 9"),
        # One anomalous video is enough to need the 4 frames: int(0.25 · 3) = 0 frames could be drawn.
        ({"anomalous_videos": 1, "frames": 3}, r"frames=3.*at least 4"),
    ],
)
def test_vad_spec_refuses_settings_the_generator_cannot_honour(settings, message):
    with pytest.raises(ValueError, match=r"VadSetSpec: " + message):
        VadSetSpec(**settings)


def test_short_normal_only_vad_sets_stay_allowed(tmp_path):
    """The 4-frame minimum comes from the anomalous interval; a set without anomalies needs 1 frame."""
    split = default_split(0)
    spec = VadSetSpec(anomalous_videos=0, normal_videos=1, frames=1)
    layout = write_vad_set(tmp_path, anomalies=split.seen_anomalies, normal=split.normal, spec=spec)
    assert list(layout) == ["01_0001"]


def test_vad_set_refuses_more_normal_objects_than_normal_categories(tmp_path):
    split = default_split(0)
    spec = VadSetSpec(anomalous_videos=1, normal_videos=0, normal_objects=(1, 3))
    with pytest.raises(ValueError, match=r"normal_objects=\(1, 3\).*at most 2 normal categories"):
        write_vad_set(tmp_path, anomalies=split.seen_anomalies, normal=split.normal[:2], spec=spec)
    with pytest.raises(ValueError, match=r"no anomaly categories"):
        write_vad_set(tmp_path, anomalies=(), normal=split.normal, spec=VadSetSpec(anomalous_videos=1))


# -- what the generators draw: every allowed value, nothing outside ------------------------------------------


def test_training_entries_show_one_to_max_objects_distinct_descriptions(tmp_path):
    """SegmentationSetSpec: "objects per entry are drawn from 1..max_objects", and one entry shows a
    description at most once, so max_objects may equal the number of training descriptions. With two
    descriptions and max_objects=2, 40 entries hold 1 or 2 objects each, both counts occur, and no
    two-object entry repeats a description (each would with probability 1/2 if drawn with replacement)."""
    split = CategorySplit(
        train=("red circle", "blue square"), seen_anomalies=(), unseen_anomalies=(), normal=()
    )
    spec = SegmentationSetSpec(videos=20, images=20, frames=2, height=12, width=12, max_objects=2, seed=5)
    write_segmentation_set(tmp_path, split, spec)
    meta = json.loads((tmp_path / "meta.json").read_text())
    entries = [entry["objects"] for kind in ("videos", "images") for entry in meta[kind].values()]
    assert len(entries) == 40
    assert {len(objects) for objects in entries} == {1, 2}
    for objects in entries:
        assert list(objects) == [str(i) for i in range(1, len(objects) + 1)]  # ids 1..n, pixel values
        assert len(set(objects.values())) == len(objects), objects


def test_vad_sets_draw_every_allowed_count_length_and_start(tmp_path):
    """write_vad_set's docstring: lo..hi normal objects per video, and an anomalous interval covering
    25–60 % of the video, anywhere in it. At 10 frames that is int(2.5) = 2 to int(6.0) = 6 frames,
    starting anywhere from frame 0 to 10 − length; over 60 anomalous videos (seed fixed) every length
    occurs, some interval starts on the first frame and some ends on the last."""
    split = default_split(0)
    spec = VadSetSpec(
        anomalous_videos=60, normal_videos=0, frames=10, height=12, width=12, normal_objects=(1, 3), seed=2
    )
    layout = write_vad_set(tmp_path, anomalies=split.seen_anomalies, normal=split.normal, spec=spec)
    assert {len(info["normal_objects"]) for info in layout.values()} == {1, 2, 3}
    intervals = [tuple(info["interval"]) for info in layout.values()]
    assert {end - start for start, end in intervals} == {2, 3, 4, 5, 6}
    assert all(0 <= start < end <= 10 for start, end in intervals)
    assert min(start for start, _ in intervals) == 0 and max(end for _, end in intervals) == 10


def test_default_split_sizes_of_one_and_an_immutable_split():
    """Sizes must be at least 1 (so 1 itself is allowed), and the split is a frozen value: the demo hands
    the same split to the training set, both test sets and the report."""
    split = default_split(0, num_unseen=1, num_seen=1, num_normal=1)
    assert (len(split.unseen_anomalies), len(split.seen_anomalies), len(split.normal)) == (1, 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.normal = ()
