"""The training dataset: items, labels, determinism across workers, mixture, unreadable files, config."""

import json
import logging
import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lavida.data.config import DataConfig, SourceConfig
from lavida.data.exposure import AnomalyExposureSampler
from lavida.data.mixture import Mixture
from lavida.data.sources.base import SegmentationSource, SegRecord, SegTarget, write_manifest
from lavida.data.sources.masks import load_mask_spec
from lavida.data.train_dataset import (
    OpenedSources,
    TrainBatch,
    TrainDataset,
    UnreadableItemError,
    build_train_dataset,
)
from lavida.data.types import LavidaBatch

SIZE = (24, 32)
ANIMALS = ("dog", "cat", "cow", "horse")


class FakeVideoSource(SegmentationSource):
    """Videos written by :func:`write_fake`: JPEG frames, 'L' PNG object-id maps, an index.json."""

    name = "fakevideo"
    is_video = True

    def index(self):
        for line in (self.root / "index.jsonl").read_text().splitlines():
            yield SegRecord.from_json(line)

    def load_masks(self, record, target, positions):
        return load_mask_spec(target.mask, positions, root=self.root, size=tuple(record.meta["size"]))


class FakeImageSource(FakeVideoSource):
    name = "fakeimage"
    is_video = False


def write_fake(root: Path, *, items: int, frames: int, is_video: bool) -> Path:
    """Object 1 (an animal) is visible on frames ≥ 3, object 2 (a thing) on frames 0–1."""
    rng = np.random.default_rng(0)
    records = []
    for v in range(items):
        frame_paths, label_paths = [], []
        for t in range(frames):
            frame = Path("JPEGImages") / f"v{v}" / f"{t:05d}.jpg"
            label = Path("Annotations") / f"v{v}" / f"{t:05d}.png"
            (root / frame).parent.mkdir(parents=True, exist_ok=True)
            (root / label).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(root / frame)
            ids = np.zeros(SIZE, dtype=np.uint8)
            if t >= 3 or not is_video:
                ids[2:10, 4:12] = 1
            if t <= 1:
                ids[12:20, 20:30] = 2
            Image.fromarray(ids, mode="L").save(root / label)
            frame_paths.append(str(frame))
            label_paths.append(str(label))
        spec = {"kind": "index_png", "paths": label_paths}
        visible_1 = tuple(t for t in range(frames) if t >= 3 or not is_video)
        visible_2 = tuple(t for t in range(frames) if t <= 1)
        targets = (
            SegTarget(ANIMALS[v % len(ANIMALS)], {**spec, "values": [1]}, visible_1),
            SegTarget(f"thing {v}", {**spec, "values": [2]}, visible_2),
        )
        records.append(
            SegRecord(
                source="fake",
                key=f"v{v}",
                group=f"v{v}",
                frames=tuple(frame_paths),
                targets=targets,
                present=tuple(t.text for t in targets),
                is_video=is_video,
                meta={"size": list(SIZE)},
            )
        )
    (root / "index.jsonl").write_text("".join(record.to_json() + "\n" for record in records))
    return root


@pytest.fixture(scope="module")
def fake_sources(tmp_path_factory):
    video_root = write_fake(tmp_path_factory.mktemp("fakevideo"), items=6, frames=12, is_video=True)
    image_root = write_fake(tmp_path_factory.mktemp("fakeimage"), items=6, frames=1, is_video=False)
    return {"fakevideo": FakeVideoSource(video_root), "fakeimage": FakeImageSource(image_root)}


def make_dataset(sources, *, weights=None, length=64, seed=0, processor=None, **kwargs) -> TrainDataset:
    weights = weights or {"fakevideo": 0.75, "fakeimage": 0.25}
    return TrainDataset(
        sources=sources,
        records={name: list(source.index()) for name, source in sources.items()},
        mixture=Mixture(weights),
        sampler=AnomalyExposureSampler(p=0.5, max_categories=30),
        processor=processor,
        length=length,
        seed=seed,
        **kwargs,
    )


def test_items_follow_the_exposure_rules(fake_sources):
    dataset = make_dataset(fake_sources, length=120)
    seen_anomalous = seen_normal = 0
    for index in range(len(dataset)):
        item = dataset[index]
        info, sample = item.info, item.sample
        source = fake_sources[info.source]
        record = next(r for r in source.index() if r.key == info.key)
        target = record.targets[info.target]
        frames = sample.frames
        assert frames.dtype == np.uint8 and frames.shape == (8 if record.is_video else 1, *SIZE, 3)
        assert sample.masks.shape == frames.shape[:3] and sample.frame_labels.shape == (len(frames),)
        assert list(info.categories) == sample.categories and sample.is_video == record.is_video
        assert (target.text in sample.categories) == info.is_anomaly
        if info.is_anomaly:
            seen_anomalous += 1
            expected = source.load_masks(record, target, list(info.positions))
            assert np.array_equal(sample.masks, expected)
            # Per-frame mask presence (the default) and visibility preference: the target is in the clip.
            assert np.array_equal(sample.frame_labels, expected.any(axis=(1, 2)).astype(np.float32))
            assert info.visible_frames == int(sample.frame_labels.sum()) >= 1
        else:
            seen_normal += 1
            assert not sample.masks.any() and not sample.frame_labels.any() and info.visible_frames == 0
            assert not set(record.present) & set(sample.categories)
    assert seen_anomalous > 30 and seen_normal > 30


def test_clip_frame_labels_are_all_ones(fake_sources):
    """Eq. 2: with frame_labels='clip' an anomalous clip is 1 on every frame, even where the target is absent."""
    dataset = make_dataset(fake_sources, length=80, frame_labels="clip", weights={"fakevideo": 1.0})
    labels = [dataset[i] for i in range(len(dataset))]
    anomalous = [item for item in labels if item.info.is_anomaly]
    assert anomalous and all(item.sample.frame_labels.tolist() == [1.0] * 8 for item in anomalous)
    assert any(item.info.visible_frames < 8 for item in anomalous)
    with pytest.raises(ValueError, match="frame_labels"):
        make_dataset(fake_sources, frame_labels="ones")


def _run(dataset, *, workers: int, batch_size: int = 4):
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=dataset.collate_fn)
    return list(loader)


def _same(batches_a, batches_b) -> bool:
    for a, b in zip(batches_a, batches_b, strict=True):
        if a.items != b.items:
            return False
        for x, y in zip(a.samples, b.samples, strict=True):
            if not (np.array_equal(x.frames, y.frames) and np.array_equal(x.masks, y.masks)):
                return False
    return True


def test_same_seed_same_batches_across_workers_and_loaders(fake_sources):
    dataset = make_dataset(fake_sources, length=24, seed=3)
    first = _run(dataset, workers=2)
    assert all(isinstance(batch, TrainBatch) and batch.batch is None for batch in first)
    assert _same(first, _run(dataset, workers=2))  # a second DataLoader
    assert _same(
        first, _run(make_dataset(fake_sources, length=24, seed=3), workers=0)
    )  # a restart, no workers
    assert not _same(first, _run(make_dataset(fake_sources, length=24, seed=4), workers=0))
    dataset.set_epoch(1)
    assert not _same(first, _run(dataset, workers=2))


def test_sources_are_drawn_by_weight(fake_sources):
    dataset = make_dataset(fake_sources, length=400, weights={"fakevideo": 0.25, "fakeimage": 0.75})
    n = len(dataset)
    videos = sum(dataset[i].info.source == "fakevideo" for i in range(n))
    assert abs(videos - 0.25 * n) <= 4 * np.sqrt(n * 0.25 * 0.75)


@pytest.fixture
def broken_source(tmp_path):
    """A video source whose record v1 has an unreadable frame everywhere."""
    root = write_fake(tmp_path, items=3, frames=10, is_video=True)
    for frame in (root / "JPEGImages" / "v1").iterdir():
        frame.write_bytes(b"not a jpeg")
    return {"fakevideo": FakeVideoSource(root)}


def test_unreadable_file_raises_naming_it(broken_source):
    dataset = make_dataset(broken_source, weights={"fakevideo": 1.0}, length=30)
    failing = None
    for index in range(len(dataset)):
        try:
            dataset[index]
        except UnreadableItemError as error:
            failing = str(error)
            break
    assert failing is not None
    assert "JPEGImages/v1/" in failing and "record 'v1'" in failing and "skip_errors" in failing


def test_skip_errors_logs_counts_and_redraws(broken_source, caplog):
    dataset = make_dataset(broken_source, weights={"fakevideo": 1.0}, length=30, skip_errors=True)
    with caplog.at_level(logging.WARNING, logger="lavida.data.train_dataset"):
        items = [dataset[i] for i in range(len(dataset))]
    skipped = [message for item in items for message in item.info.skipped]
    assert skipped and dataset.num_skipped == len(skipped)
    assert all(message.startswith("fakevideo/v1: ") and "JPEGImages/v1/" in message for message in skipped)
    assert all(item.info.key != "v1" for item in items)
    assert "Skipping an unreadable item" in caplog.text
    # The redraws are deterministic: the same items and counts with worker processes.
    batches = _run(
        make_dataset(broken_source, weights={"fakevideo": 1.0}, length=30, skip_errors=True), workers=2
    )
    assert sum(batch.num_skipped for batch in batches) == len(skipped)
    assert [info for batch in batches for info in batch.items] == [item.info for item in items]


def test_too_many_unreadable_draws_give_up(broken_source):
    dataset = make_dataset(
        broken_source, weights={"fakevideo": 1.0}, length=30, skip_errors=True, max_attempts=1
    )
    with pytest.raises(UnreadableItemError, match="1 draws in a row"):
        for index in range(len(dataset)):
            dataset[index]


def test_build_from_config(fake_sources, caplog):
    for source in fake_sources.values():
        write_manifest(source.index(), source.manifest_path())
    config = DataConfig(
        sources={
            "fakevideo": SourceConfig(weight=3.0),
            "fakeimage": SourceConfig(weight=1.0, max_categories=2, pool_weighting="texts"),
            "mevis": SourceConfig(weight=1.0, root="MeViS"),  # not downloaded
        },
        samples_per_epoch=16,
        seed=1,
    )
    with pytest.raises(ValueError, match=r"(?s)mevis: no dataset folder.*missing_sources=renormalize"):
        build_train_dataset(config, processor=None, sources=fake_sources)
    config.missing_sources = "renormalize"
    with caplog.at_level(logging.WARNING):
        dataset = build_train_dataset(config, processor=None, sources=fake_sources)
    assert "mevis" in caplog.text
    assert dataset.mixture.weights == pytest.approx({"fakevideo": 0.75, "fakeimage": 0.25})
    assert len(dataset) == 16 and dataset.max_categories_per_source == {"fakeimage": 2}
    # A source's own pool weighting (experiment=official's category sets) overrides data.pool_weighting.
    assert {name: pool.weighting for name, pool in dataset.pools.items()} == {
        "fakevideo": "samples",
        "fakeimage": "texts",
    }
    items = [dataset[i].info for i in range(16)]
    assert all(len(info.categories) <= 2 for info in items if info.source == "fakeimage")
    assert dataset.sampler.category_count == "paper"
    config.category_count = "matched"
    assert (
        build_train_dataset(config, processor=None, sources=fake_sources).sampler.category_count == "matched"
    )


def test_processed_batches_with_workers_are_deterministic(fake_sources, tiny_pretrained):
    """The real processor in two worker processes: a LavidaBatch, identical across two loaders."""
    from conftest import tiny_processor_for

    from lavida.models.lavida import build_lavida

    processor = tiny_processor_for(build_lavida(tiny_pretrained))
    dataset = make_dataset(fake_sources, length=4, seed=5, processor=processor)
    first, second = _run(dataset, workers=2, batch_size=2), _run(dataset, workers=2, batch_size=2)
    for a, b in zip(first, second, strict=True):
        assert isinstance(a.batch, LavidaBatch) and a.items == b.items
        for name in (
            "input_ids",
            "labels",
            "sam_pixel_values",
            "target_masks",
            "frame_labels",
            "category_tokens",
        ):
            assert torch.equal(getattr(a.batch, name), getattr(b.batch, name)), name
        frames = [8 if info.source == "fakevideo" else 1 for info in a.items]
        assert a.batch.num_frames == sum(frames) and a.batch.frame_labels.shape == (sum(frames),)
        offsets = np.cumsum([0, *frames])
        for row, info in enumerate(a.items):
            labels = a.batch.frame_labels[offsets[row] : offsets[row + 1]]
            masks = a.batch.target_masks[offsets[row] : offsets[row + 1]]
            assert int(labels.sum()) == info.visible_frames
            if not info.is_anomaly:
                assert not masks.any()
        assert a.to("cpu").batch.input_ids.shape == a.batch.input_ids.shape


def test_records_file_roundtrip_is_what_the_fake_index_reads(fake_sources):
    """Sanity of the fixture itself: index.jsonl holds valid records with visible frames."""
    records = list(fake_sources["fakevideo"].index())
    assert len(records) == 6 and records[0].targets[0].frames == tuple(range(3, 12))
    assert json.loads(records[0].to_json())["meta"] == {"size": list(SIZE)}


def test_defaults_are_the_papers_and_the_configs(fake_sources):
    """A dataset built without options trains as DataConfig's defaults do: T = 8 (supplement B.3, "each
    video clip to contain 8 frames"), strides {1, 2, 4} with 3 tries for a window showing the target and
    presence frame labels (docs/fidelity.md), no skipping and 10 attempts, from epoch 0."""
    dataset = TrainDataset(
        sources=fake_sources,
        records={name: list(source.index()) for name, source in fake_sources.items()},
        mixture=Mixture({"fakevideo": 1.0}),
        sampler=AnomalyExposureSampler(p=0.5, max_categories=30),
        length=4,
    )
    config = DataConfig()
    assert dataset.clip_length == config.clip_length == 8
    assert dataset.strides == tuple(config.strides) == (1, 2, 4)
    assert dataset.visibility_tries == config.visibility_tries == 3
    assert dataset.frame_labels == config.frame_labels == "presence"
    assert dataset.skip_errors is config.skip_errors is False
    assert dataset.max_attempts == config.max_attempts == 10
    assert dataset.epoch == 0 and dataset.num_skipped == 0
    assert {name: pool.weighting for name, pool in dataset.pools.items()} == {
        "fakevideo": config.pool_weighting
    }
    assert [len(dataset[i].sample.frames) for i in range(4)] == [8] * 4


@pytest.mark.parametrize(("length", "max_attempts"), [(0, 10), (10, 0), (-1, 1)])
def test_length_and_attempts_must_be_positive(fake_sources, length, max_attempts):
    """Either one below 1 alone is refused at construction, not at the first item."""
    with pytest.raises(ValueError, match="length and max_attempts must be ≥ 1"):
        make_dataset(fake_sources, length=length, max_attempts=max_attempts)


def test_one_item_and_one_attempt_are_enough(fake_sources):
    """The smallest valid dataset: item 0 exists, index 1 (= length) and -1 are outside it."""
    dataset = make_dataset(fake_sources, length=1, max_attempts=1)
    assert len(dataset) == 1 and dataset[0].info.index == 0
    for index in (1, -1):
        with pytest.raises(IndexError, match=rf"Item {index} is outside the dataset's 1 items"):
            dataset[index]


def test_every_mixture_source_needs_a_source_and_records(fake_sources):
    """A mixture name missing from either mapping is refused up front, the message saying which one."""
    records = {name: list(source.index()) for name, source in fake_sources.items()}
    sampler = AnomalyExposureSampler(p=0.5, max_categories=30)
    mixture = Mixture({"fakevideo": 0.5, "fakeimage": 0.5})
    with pytest.raises(ValueError, match="Mixture source 'fakeimage' has no source"):
        TrainDataset(
            sources={"fakevideo": fake_sources["fakevideo"]},
            records=records,
            mixture=mixture,
            sampler=sampler,
            length=1,
        )
    with pytest.raises(ValueError, match="Mixture source 'fakeimage' has no records"):
        TrainDataset(
            sources=fake_sources,
            records={"fakevideo": records["fakevideo"]},
            mixture=mixture,
            sampler=sampler,
            length=1,
        )


def test_records_without_targets_are_left_out_and_counted(fake_sources, caplog):
    """6 records with targets plus 2 without: the 2 are logged and never drawn; none dropped, nothing said."""
    records = list(fake_sources["fakevideo"].index())
    empty = [SegRecord(**{**vars(records[0]), "key": f"empty{i}", "targets": ()}) for i in range(2)]
    sampler = AnomalyExposureSampler(p=0.5, max_categories=30)
    with caplog.at_level(logging.INFO, logger="lavida.data.train_dataset"):
        dataset = TrainDataset(
            sources=fake_sources,
            records={"fakevideo": [*records, *empty]},
            mixture=Mixture({"fakevideo": 1.0}),
            sampler=sampler,
            length=1,
        )
    assert "fakevideo: 2 records without targets are not used." in caplog.text
    assert [record.key for record in dataset.records["fakevideo"]] == [record.key for record in records]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lavida.data.train_dataset"):
        make_dataset(fake_sources, length=1)
    assert "without targets" not in caplog.text


def test_a_source_whose_records_all_lack_targets_is_refused(fake_sources):
    """Every record of fakevideo without a target: nothing could be drawn from it, so it is refused by
    name, with the fix."""
    records = [SegRecord(**{**vars(record), "targets": ()}) for record in fake_sources["fakevideo"].index()]
    with pytest.raises(
        ValueError, match=r"^Source 'fakevideo' has no record with a target; re-run lavida-prepare for it\.$"
    ):
        TrainDataset(
            sources=fake_sources,
            records={"fakevideo": records},
            mixture=Mixture({"fakevideo": 1.0}),
            sampler=AnomalyExposureSampler(p=0.5, max_categories=30),
            length=1,
        )


def test_a_manifest_without_a_usable_record_names_the_manifest(fake_sources, tmp_path):
    """A manifest whose records all lack targets makes the source unreadable (its manifest named, with
    the lavida-prepare command to re-run), like a missing manifest."""
    records = [SegRecord(**{**vars(record), "targets": ()}) for record in fake_sources["fakeimage"].index()]
    manifest = tmp_path / "fakeimage.jsonl"
    write_manifest(records, manifest)
    config = DataConfig(
        sources={"fakeimage": SourceConfig(weight=1.0, manifest=str(manifest))}, samples_per_epoch=4
    )
    expected = f"  fakeimage: {manifest}: no record with a target; re-run lavida-prepare fakeimage\n"
    with pytest.raises(ValueError, match=re.escape(expected)):
        build_train_dataset(config, processor=None, sources=fake_sources)


class _Reshaped(FakeVideoSource):
    """The fake video source with its frames or masks altered by ``frames_fn`` / ``masks_fn``."""

    def __init__(self, root, *, frames_fn=None, masks_fn=None):
        super().__init__(root)
        self.frames_fn, self.masks_fn = frames_fn, masks_fn

    def load_frames(self, record, positions):
        frames = np.asarray(super().load_frames(record, positions))
        return self.frames_fn(frames) if self.frames_fn else frames

    def load_masks(self, record, target, positions):
        masks = super().load_masks(record, target, positions)
        return self.masks_fn(masks) if self.masks_fn else masks


@pytest.mark.parametrize(
    ("frames_fn", "got"),
    [
        (lambda f: f[..., 0], r"\(8, 24, 32\) uint8"),  # one channel, no channel axis
        (lambda f: np.concatenate([f, f[..., :1]], axis=-1), r"\(8, 24, 32, 4\) uint8"),  # RGBA
        (lambda f: f.astype(np.float32), r"\(8, 24, 32, 3\) float32"),  # right shape, wrong dtype
    ],
    ids=["grey", "rgba", "float"],
)
def test_frames_that_are_not_rgb_uint8_are_refused(fake_sources, frames_fn, got):
    """Each flaw alone is a format error naming the record and what the source returned."""
    source = _Reshaped(fake_sources["fakevideo"].root, frames_fn=frames_fn)
    dataset = make_dataset({"fakevideo": source}, weights={"fakevideo": 1.0}, length=1)
    with pytest.raises(UnreadableItemError, match=rf"frames must be \(T, H, W, 3\) uint8, got {got}\."):
        dataset[0]


def test_masks_of_another_size_than_the_frames_are_refused(fake_sources):
    """Masks at half resolution on an anomalous item: a format error quoting both (T, H, W) shapes."""
    good = make_dataset(fake_sources, weights={"fakevideo": 1.0}, length=16)
    index = next(i for i in range(16) if good[i].info.is_anomaly)
    source = _Reshaped(fake_sources["fakevideo"].root, masks_fn=lambda m: m[:, ::2, ::2])
    dataset = make_dataset({"fakevideo": source}, weights={"fakevideo": 1.0}, length=16)
    with pytest.raises(UnreadableItemError, match=r"masks \(8, 12, 16\) do not match frames \(8, 24, 32\)\."):
        dataset[index]


def test_a_sources_own_strides_override_the_global_ones(fake_sources):
    """data.sources.<name>.strides: with T = 4 on 12-frame videos a stride of 3 fits (positions t, t+3,
    t+6, t+9), so every video clip steps by 3 while the image source keeps T = 1."""
    for source in fake_sources.values():
        write_manifest(source.index(), source.manifest_path())
    config = DataConfig(
        sources={"fakevideo": SourceConfig(weight=1.0, strides=[3]), "fakeimage": SourceConfig(weight=1.0)},
        clip_length=4,
        strides=[1],
        samples_per_epoch=12,
    )
    dataset = build_train_dataset(config, processor=None, sources=fake_sources)
    assert dataset.strides_per_source == {"fakevideo": (3,)} and dataset.strides == (1,)
    infos = [dataset[i].info for i in range(12)]
    videos = [info.positions for info in infos if info.source == "fakevideo"]
    assert videos and all(np.diff(positions).tolist() == [3, 3, 3] for positions in videos)
    assert all(info.positions == (0,) for info in infos if info.source == "fakeimage")


def test_an_items_origin_is_a_value(fake_sources):
    """ItemInfo (an item's origin, compared across workers and restarts) and OpenedSources (the mixture
    the run record holds) cannot be edited after the fact; origins hash by value: item 0 read twice and
    item 1 are two origins."""
    dataset = make_dataset(fake_sources, length=2)
    infos = [dataset[0].info, dataset[0].info, dataset[1].info]
    assert len(set(infos)) == 2
    with pytest.raises(FrozenInstanceError):
        infos[0].is_anomaly = not infos[0].is_anomaly
    opened = OpenedSources(sources={}, records={}, mixture=Mixture({"fakevideo": 1.0}))
    with pytest.raises(FrozenInstanceError):
        opened.mixture = Mixture({"fakeimage": 1.0})
