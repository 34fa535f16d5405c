"""The synthetic benchmark and lavida-demo: each test pins a defect that was found and fixed."""

from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pytest
from conftest import file_digests, tree_listing
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

import lavida.demo
import lavida.demo_report
import lavida.models.random_init
import lavida.synthetic.datasets
import lavida.train.state
from lavida.data.processor import LavidaProcessor
from lavida.data.sources.base import write_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.data.types import ClipSample
from lavida.data.video import open_video
from lavida.demo import (
    DATA_SETTINGS,
    DATA_SETTINGS_FILE,
    STAND_INS_FILE,
    DemoConfig,
    _tiny_model_dict,
    base_models,
    check_data_settings,
    run_demo,
)
from lavida.demo_report import score_axis_limits, targets_line
from lavida.eval.result_cache import cached_result_path
from lavida.eval.video_result import VideoResult
from lavida.inference import upsample_mask_logits
from lavida.models.checkpoint import load_checkpoint
from lavida.models.config import LavidaConfig
from lavida.synthetic.datasets import (
    SegmentationSetSpec,
    VadSetSpec,
    default_split,
    write_segmentation_set,
    write_vad_set,
)

# -- default_split must not hand back a split that breaks its promises -------------------------------------


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        # 42 held out leave 6 training descriptions, too few to show all 8 colours.
        ({"num_unseen": 42, "num_seen": 3, "num_normal": 3}, r"num_unseen=42.*colour and shape"),
        # 6 + 6 + 40 > 48: seen and normal cannot both be taken from the 42 training descriptions.
        ({"num_normal": 40}, r"6 seen \+ 40 normal.*42 training descriptions"),
        ({"num_unseen": -1}, r"num_unseen=-1"),
        ({"num_seen": 0}, r"num_seen=0"),
    ],
)
def test_default_split_refuses_sizes_it_cannot_honour(sizes, message):
    """It used to return the last permutation tried (unseen words missing from training) or a short
    ``normal`` tuple without a word."""

    with pytest.raises(ValueError, match=message):
        default_split(0, **sizes)


def test_default_split_gives_the_sizes_asked_for():

    split = default_split(3, num_unseen=10, num_seen=4, num_normal=5)
    assert (len(split.unseen_anomalies), len(split.seen_anomalies), len(split.normal)) == (10, 4, 5)
    assert len(split.train) == 48 - 10


# -- a refused data rerun names every folder that has to go -------------------------------------------------


def _refusal(tmp_path, before: dict, after: dict) -> str:

    out = tmp_path / "demo"
    first = DemoConfig(output_dir=str(out), **before)
    check_data_settings(first)
    assert json.loads((out / "data" / DATA_SETTINGS_FILE).read_text())["settings"] == {
        key: getattr(first, key) for key in DATA_SETTINGS
    }
    with pytest.raises(ValueError) as error:
        check_data_settings(DemoConfig(output_dir=str(out), **after))
    return str(error.value)


@pytest.mark.parametrize(
    "changed", [{"train_videos": 7}, {"train_images": 3}, {"seed": 1}, {"train_frames": 4}]
)
def test_data_refusal_for_training_set_settings_names_base_models_and_training(tmp_path, changed):
    """The stand-ins are pretrained on the training set and its run trains on it: deleting data/ alone
    only led to a second refusal (stand_ins.json) on the next run."""
    message = _refusal(tmp_path, {}, changed)
    out = tmp_path / "demo"
    assert f"differing: {next(iter(changed))})" in message
    assert re.search(
        rf"delete {re.escape(str(out / 'data'))}, {re.escape(str(out / 'base_models'))} and "
        rf"{re.escape(str(out / 'train'))} to start over",
        message,
    ), message


def test_data_refusal_for_test_set_settings_names_only_the_data(tmp_path):
    """The test sets decide nothing that was trained: the base models and training stay usable."""
    message = _refusal(tmp_path, {}, {"test_frames": 8})
    out = tmp_path / "demo"
    assert f"delete {out / 'data'} to start over" in message
    assert "base_models" not in message and str(out / "train") not in message


def test_run_demo_refuses_data_made_with_other_settings_before_writing_anything(tmp_path):
    """The whole demo, not just ``check_data_settings``: a rerun with another seed stops at its first step
    and leaves the folder as it was, instead of training on the old data under the new settings."""
    out = tmp_path / "demo"
    sizes = {
        "train_videos": 1,
        "train_images": 0,
        "train_frames": 2,
        "test_anomalous": 1,
        "test_normal": 0,
        "test_frames": 4,
        "sam_pretrain_steps": 0,
        "clip_pretrain_steps": 0,
        "steps": 1,
        "num_workers": 0,
    }
    check_data_settings(DemoConfig(output_dir=str(out), seed=1, **sizes))  # an earlier run's record
    before = tree_listing(out)
    with pytest.raises(ValueError, match=rf"{DATA_SETTINGS_FILE}: the synthetic data .*differing: seed\)"):
        run_demo(DemoConfig(output_dir=str(out), seed=0, **sizes))
    assert tree_listing(out) == before


class DataWritten(Exception):
    """Raised where run_demo's data step ends (see ``data_step_only``)."""


@pytest.fixture
def data_step_only(monkeypatch):
    """run_demo stopped with :class:`DataWritten` where the data step ends, before the base models."""

    def stop(*args, **kwargs):
        raise DataWritten

    monkeypatch.setattr(lavida.demo, "base_models", stop)


SMALL_DATA = {
    "train_videos": 2,
    "train_images": 1,
    "train_frames": 3,
    "test_anomalous": 1,
    "test_normal": 1,
    "test_frames": 5,
}


def test_run_demo_writes_its_data_with_the_demos_sizes_and_seeds(tmp_path, data_step_only):
    """The training set and both test sets are the ones the generators make of the demo's sizes and seed
    (the test sets at seed + 101 and seed + 202), with the training set's manifest. At sizes and a seed
    away from every generator default, so that a size or seed not handed on shows."""
    with pytest.raises(DataWritten):
        run_demo(DemoConfig(output_dir=str(tmp_path / "demo"), seed=7, **SMALL_DATA))

    split = default_split(7)
    expected = tmp_path / "expected"
    train = SegmentationSetSpec(videos=2, images=1, frames=3, seed=7)
    source = SyntheticSource(write_segmentation_set(expected / "synthetic_train", split, train))
    write_manifest(source.index(), source.manifest_path(), options=source.index_options())
    for name, anomalies, seed in (
        ("seen", split.seen_anomalies, 108),
        ("unseen", split.unseen_anomalies, 209),
    ):
        spec = VadSetSpec(anomalous_videos=1, normal_videos=1, frames=5, seed=seed)
        write_vad_set(expected / f"vad_{name}", anomalies=anomalies, normal=split.normal, spec=spec)
    data = tmp_path / "demo" / "data"
    assert sorted(path.name for path in data.iterdir()) == [
        DATA_SETTINGS_FILE,
        "synthetic_train",
        "vad_seen",
        "vad_unseen",
    ]
    for name in ("synthetic_train", "vad_seen", "vad_unseen"):
        assert file_digests(data / name) == file_digests(expected / name), name


def test_run_demo_builds_on_the_model_config_it_is_given(tmp_path, monkeypatch):
    """lavida-demo passes the composed ``model`` group; only a call without one falls back to the tiny
    model's config."""
    given = []

    def stop(config, model_config, train_root):
        given.append(model_config)
        raise DataWritten

    monkeypatch.setattr(lavida.demo, "base_models", stop)
    other = _tiny_model_dict()
    other["compression"]["ratio"] = 0.5
    for model in (None, other):
        with pytest.raises(DataWritten):
            run_demo(DemoConfig(output_dir=str(tmp_path / "demo"), **SMALL_DATA), model=model)
    assert given == [LavidaConfig.from_dict(_tiny_model_dict()), LavidaConfig.from_dict(other)]
    assert given[1].compression.ratio == 0.5


@pytest.mark.parametrize(
    ("untrained", "warned"),
    [
        ({"seen": ["red ring"], "normal": []}, "seen red ring"),
        ({"seen": [], "normal": ["white square"]}, "normal white square"),
        ({"seen": [], "normal": []}, None),
    ],
)
def test_run_demo_warns_of_each_kind_of_untrained_category(
    tmp_path, data_step_only, monkeypatch, caplog, untrained, warned
):
    """A seen anomaly or a normal category without training objects is each warned about on its own."""
    monkeypatch.setattr(lavida.synthetic.datasets, "untrained_categories", lambda records, split: untrained)
    with caplog.at_level("WARNING", logger="lavida.demo"), pytest.raises(DataWritten):
        run_demo(DemoConfig(output_dir=str(tmp_path / "demo"), **SMALL_DATA))
    warnings = [record.getMessage() for record in caplog.records if record.name == "lavida.demo"]
    if warned is None:
        assert warnings == []
    else:
        (warning,) = warnings
        assert f"has 0 targets of {warned}: raise train_videos" in warning


# -- base models regenerated under a training run that started on others --------------------------------


def test_base_models_are_not_remade_under_an_existing_training_run(tmp_path, monkeypatch):
    """With base_models/ deleted but train/ kept, the base models were written and pretrained again and
    the training resumed on them: the same only if every float op repeats (the stand-ins differ between
    thread counts, lavida.cli.demo.torch_threads), silently wrong otherwise."""

    out = tmp_path / "demo"
    (out / "train" / "checkpoints" / "step_4").mkdir(parents=True)
    monkeypatch.setattr(
        lavida.train.state, "latest_checkpoint", lambda folder: folder / "checkpoints" / "step_4"
    )

    def must_not_run(*args, **kwargs):
        raise AssertionError("base models were written under an existing training run")

    monkeypatch.setattr(lavida.models.random_init, "write_random_pretrained", must_not_run)
    config = DemoConfig(output_dir=str(out), sam_pretrain_steps=1, clip_pretrain_steps=1)
    with pytest.raises(ValueError, match=rf"{STAND_INS_FILE}.*delete {re.escape(str(out / 'train'))}"):
        base_models(config, LavidaConfig.from_dict(_tiny_model_dict()), out / "data" / "synthetic_train")


# -- the mask overlays: the anomaly's frames, predicted masks in green, the ground truth outlined ------------


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` (H, W) that differ from the pixel above or to the left (wrapping round at the
    first row and column), the slow way."""
    height, width = mask.shape
    edge = np.zeros_like(mask)
    for y in range(height):
        for x in range(width):
            edge[y, x] = mask[y, x] != mask[y - 1, x] or mask[y, x] != mask[y, x - 1]
    return edge


def test_overlays_show_two_anomalous_videos_with_masks_in_green_and_the_truth_outlined(
    tmp_path, detect_checkpoint
):
    """report.md lists overlays/ as predicted masks (green) and ground-truth outlines (magenta) on
    anomalous frames; each tile is checked pixel by pixel against the test set's own frames and masks."""
    split = default_split(0)
    root = tmp_path / "data" / "vad_seen"
    spec = VadSetSpec(anomalous_videos=3, normal_videos=1, frames=32, seed=3)  # anomalies of 8+ frames
    layout = write_vad_set(root, anomalies=split.seen_anomalies, normal=split.normal, spec=spec)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "final").symlink_to(detect_checkpoint)

    lavida.demo_report._overlays(tmp_path, {"seen": (root, list(split.seen_anomalies))})

    anomalous = sorted(video for video, info in layout.items() if info["interval"])
    assert len(anomalous) == 3
    written = sorted(path.name for path in (tmp_path / "overlays").iterdir())
    assert written == [f"seen_{video}.png" for video in anomalous[:2]]  # two per split
    model, config = load_checkpoint(detect_checkpoint)
    processor = LavidaProcessor.for_model(model, config.inputs)
    blended_anywhere = False
    for video in anomalous[:2]:
        start, end = layout[video]["interval"]
        frames = open_video(root / "testing" / "frames" / video).get_frames(list(range(32)))
        # The model sees 8 frames evenly over the anomaly, as one inference clip; every other one is shown.
        clip = np.linspace(start, end - 1, 8).round().astype(int)
        sample = ClipSample(frames=frames[clip], categories=list(split.seen_anomalies))
        logits = model.predict(processor([sample], train=False)).mask_logits.numpy()
        masks = upsample_mask_logits(logits, frames.shape[1:3]) > 0.5
        predicted = dict(zip(clip.tolist(), masks, strict=True))
        truth = np.load(root / "testing" / "test_pixel_mask" / f"{video}.npy") > 0
        image = np.asarray(Image.open(tmp_path / "overlays" / f"seen_{video}.png"))
        height, width = frames.shape[1:3]
        assert image.shape == (height, 4 * width, 3)
        shown = []
        # Each frame's pixels as they are, and half of them plus half of pure green.
        green = (0.5 * frames.astype(np.float32) + 0.5 * np.array([0, 255, 0])).astype(np.uint8)
        for tile in np.split(image, 4, axis=1):
            magenta = np.all(tile == (255, 0, 255), axis=-1)
            own, blended = np.all(tile == frames, axis=-1), np.all(tile == green, axis=-1)  # (32, H, W)
            # The frame a tile shows: the one each of its pixels is drawn from, plain, green or magenta.
            (t,) = [t for t in range(32) if np.all(own[t] | blended[t] | magenta)]
            shown.append(t)
            edge = _outline(truth[t])
            assert edge.any() and np.array_equal(magenta & ~own[t], edge & ~own[t])
            # Elsewhere green exactly where the mask is predicted; pure green pixels look the same either way.
            changed = ~own[t] & ~edge
            assert np.array_equal(blended[t] & changed, predicted[t] & changed)
            assert not (changed & ~blended[t]).any()
            blended_anywhere |= bool((blended[t] & changed).any())
        assert shown == clip[::2].tolist()
    assert blended_anywhere  # the checkpoint predicts a mask somewhere


# -- the report's verdicts agree with the numbers they print ------------------------------------------------


@pytest.mark.parametrize("value", [0.89996, 0.899999999, 0.8999999999999])
def test_a_missed_target_never_prints_as_the_bound(value):
    """0.89996 printed as "missed (90.00 %)": the shown number met the bound the verdict says it missed."""

    line = targets_line({"frame_auc_micro": value, "pixel_auc": 0.95, "total_seconds": 100.0})
    shown = re.search(r"seen frame AUC ≥ 90 %: missed \(([0-9.]+) %\)", line)
    assert shown, line
    assert float(shown.group(1)) < 90.0 and float(shown.group(1)) <= 100 * value
    assert re.search(r"seen pixel AUC ≥ 90 %: met \(95\.00 %\)", line)


# -- the score curves shade the ground-truth frames --------------------------------------------------------


def test_score_curves_shade_exactly_the_anomalous_frames(tmp_path, monkeypatch):

    matplotlib.use("Agg")

    labels = {  # split: {video: frame labels}
        "seen": {"01_0001": [0, 0, 1, 1, 1, 0, 0, 0], "01_0002": [0] * 8},
        "unseen": {"01_0001": [1, 0, 0, 0, 0, 0, 1, 1], "01_0002": [0, 0, 0, 1, 0, 0, 0, 0]},
    }
    test_sets = {}
    curves = []  # each row's scores, top to bottom
    for split, videos in labels.items():
        root = tmp_path / f"vad_{split}"
        root.mkdir()
        (root / "synthetic_layout.json").write_text(json.dumps({name: {} for name in videos}))
        for name, frame_labels in videos.items():
            offset = 0.3 + 0.1 * len(curves)  # every video at another offset
            curves.append(np.linspace(offset, offset + 0.05, 8, dtype=np.float32))
            VideoResult(
                name=name,
                scored=np.arange(8),
                frame_scores=curves[-1],
                frame_labels=np.array(frame_labels, dtype=np.uint8),
            ).save(cached_result_path(tmp_path / f"eval_{split}", name))
        test_sets[split] = (root, [])
    spans, saved = [], []
    original_span, original_save = Axes.axvspan, Figure.savefig

    def recording(self, xmin, xmax, *args, **kwargs):
        spans.append((self, xmin, xmax))  # the row's label is set after its spans
        return original_span(self, xmin, xmax, *args, **kwargs)

    def keeping(self, *args, **kwargs):
        saved.append(self)  # the figure as written, before write_plots closes it
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "axvspan", recording)
    monkeypatch.setattr(Figure, "savefig", keeping)
    overlaid = []  # the overlays need a checkpoint: tested on their own above
    monkeypatch.setattr(lavida.demo_report, "_overlays", lambda *args: overlaid.append(args))
    lavida.demo_report.write_plots(tmp_path, test_sets)
    assert (tmp_path / "score_curves.png").is_file()
    assert overlaid == [(tmp_path, test_sets)]
    # One row per video, each its own curve, all on the one fitted y-axis the title states.
    (figure,) = saved
    low, high = score_axis_limits(curves)
    assert f"one y-axis {low:.2f}–{high:.2f} for all" in figure.get_suptitle()
    assert len(figure.axes) == len(curves)
    for axis, scores in zip(figure.axes, curves, strict=True):
        (line,) = axis.get_lines()
        assert np.array_equal(line.get_xdata(), np.arange(8))
        assert np.array_equal(line.get_ydata(), scores)
        assert axis.get_ylim() == (low, high)
    assert figure.axes[-1].get_xlabel() == "frame"
    # Frames a..b (inclusive) are shaded from a − 0.5 to b + 0.5.
    assert [(axis.get_ylabel(), xmin, xmax) for axis, xmin, xmax in spans] == [
        ("seen\n01_0001", 1.5, 4.5),
        ("unseen\n01_0001", -0.5, 0.5),
        ("unseen\n01_0001", 5.5, 7.5),
        ("unseen\n01_0002", 2.5, 3.5),
    ]
