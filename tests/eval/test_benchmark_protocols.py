"""What ``lavida.eval.benchmark`` hands the runner: the two protocols' settings, the protocol checks, the
record of a video missing on disk, and the value objects that cannot change once made."""

import dataclasses

import numpy as np
import pytest

from lavida.eval.benchmark import Protocol, TestVideo, VadBenchmark, missing_video, plan_clips


class Bare(VadBenchmark):
    """A benchmark that sets only what a subclass must (no ``has_pixel_gt``): intervals 3 and 5, so that
    each protocol's interval shows which entry it took."""

    name = "bare"
    intervals = {"standard": 3, "lavida_official": 5}

    @property
    def categories(self):
        return ["fire"]

    def load_videos(self):
        return []


def test_the_standard_protocol_scores_every_frame_in_clips_of_eight(tmp_path):
    """docs/evaluation.md, "Two protocols": standard samples every I-th frame into clips of T = 8 (B.3),
    pads the tail instead of dropping it, keeps every video and the ground truth's own pixel size."""
    protocol = Bare(tmp_path).protocol("standard")
    assert protocol == Protocol(
        name="standard",
        interval=3,
        clip_length=8,  # supplement B.3: T = 8
        drop_tail=False,
        pixel_size=None,
        pixel_resize="bilinear",
        video_filter=None,
    )


def test_the_official_protocol_is_the_releases(tmp_path):
    """lavida_official: the release's interval, whole 8·I windows only, pixels at 158×238 resized as the
    release does, and no video filter unless the benchmark overrides ``official_filter`` (UBnormal)."""
    protocol = Bare(tmp_path).protocol("lavida_official")
    assert (protocol.name, protocol.interval, protocol.clip_length, protocol.drop_tail) == (
        "lavida_official",
        5,
        8,
        True,
    )
    assert (protocol.pixel_size, protocol.pixel_resize, protocol.video_filter) == (
        (158, 238),
        "release",
        None,
    )


def test_a_benchmark_without_pixel_ground_truth_is_the_default(tmp_path):
    """A subclass that does not say has frame ground truth only: pixel metrics stay off."""
    assert Bare(tmp_path).has_pixel_gt is False


@pytest.mark.parametrize(("interval", "clip_length"), [(0, 8), (2, 0), (-1, 8)])
def test_a_protocol_refuses_an_interval_or_clip_length_below_one(interval, clip_length):
    message = f"Protocol needs interval ≥ 1 and clip_length ≥ 1, got {interval}, {clip_length}."
    with pytest.raises(ValueError, match=f"^{message}$"):
        Protocol(name="standard", interval=interval, clip_length=clip_length)


def test_a_protocol_of_single_frames_is_accepted():
    """interval = clip_length = 1 (the smallest valid values) plans one frame per clip: 3 frames → 3 clips."""
    protocol = Protocol(name="standard", interval=1, clip_length=1)
    plan = plan_clips(3, interval=protocol.interval, clip_length=protocol.clip_length)
    np.testing.assert_array_equal(plan.clips, [[0], [1], [2]])


def test_a_missing_video_has_no_frames_and_keeps_its_listed_facts(tmp_path):
    video = missing_video("gone", tmp_path / "gone.mp4", abnormal=True)
    assert (video.name, video.path, video.meta) == ("gone", tmp_path / "gone.mp4", {"abnormal": True})
    assert video.num_frames == 0 and video.frame_labels.dtype == np.uint8 and not video.is_anomalous


def test_videos_protocols_and_plans_cannot_be_changed(tmp_path):
    """Frozen like the detector's intervals (tests/detect/test_intervals.py): the loader, the runner and the
    result cache share these objects, so none may change one under the others."""
    video = TestVideo(name="v", path=tmp_path / "v", frame_labels=np.zeros(4, np.uint8))
    protocol = Bare(tmp_path).protocol("standard")
    plan = plan_clips(4, interval=1)
    for value, attribute in ((video, "name"), (protocol, "interval"), (plan, "clips")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, attribute, None)
