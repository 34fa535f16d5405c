"""Resuming an evaluation: which cached per-video results a rerun may reuse, what a killed or refused
rerun leaves behind, and that merging cached results does not grow with the number of videos."""

import dataclasses
import json
import logging
import os
import threading

import numpy as np
import pytest
from conftest import evaluate_saved
from sklearn.metrics import roc_auc_score

from lavida.eval import report, runner
from lavida.eval.benchmark import TestVideo, VadBenchmark
from lavida.eval.result_cache import _differences, cached_result_path, run_facts, video_facts
from lavida.eval.runner import run_evaluation
from lavida.eval.settings import EvalSettings
from lavida.eval.video_result import PIXEL_AUC_OCTAVES
from lavida.metrics import PixelAUC


class FireVideos(VadBenchmark):
    """``count`` in-memory videos of the one category "fire" (no files on disk are read)."""

    def __init__(self, root, *, count=4, shift=0):
        super().__init__(root)
        self.count, self.shift = count, shift

    @property
    def categories(self):
        return ["fire"]


class FrameOnly(FireVideos):
    """``count`` videos of 20 frames with frame labels only."""

    name = "frame_only"
    intervals = {"standard": 2, "lavida_official": 4}
    has_pixel_gt = False

    def load_videos(self):
        videos = []
        for i in range(self.count):
            labels = np.zeros(20, np.uint8)
            labels[5 + i + self.shift : 12 + self.shift] = 1
            videos.append(TestVideo(name=f"v{i}", path=self.root / f"v{i}", frame_labels=labels))
        return videos


class WithPixels(FireVideos):
    """``count`` videos of 6 frames with pixel ground truth (a square from frame 2 on, in odd videos)."""

    name = "with_pixels"
    intervals = {"standard": 1, "lavida_official": 1}
    has_pixel_gt = True
    primary_metric = "pixel_auc"

    def load_videos(self):
        videos = []
        for i in range(self.count):
            masks = np.zeros((6, 8, 10), bool)
            if i % 2:
                masks[2:, 2 : 4 + i, 3:7] = True
            labels = masks.any(axis=(1, 2)).astype(np.uint8)
            videos.append(
                TestVideo(
                    name=f"p{i}",
                    path=self.root / f"p{i}",
                    frame_labels=labels,
                    pixel_masks=lambda idx, m=masks: m[idx],
                )
            )
        return videos


def save_predictions(folder, bench, *, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for video in bench.videos():
        np.save(folder / f"{video.name}.npy", rng.random(video.num_frames))


@pytest.fixture
def computed(monkeypatch):
    """Names of the videos whose results were computed (not served from the cache)."""
    names = []
    original = runner.result_from_saved

    def spy(video, *args, **kwargs):
        names.append(video.name)
        return original(video, *args, **kwargs)

    monkeypatch.setattr(runner, "result_from_saved", spy)
    return names


@pytest.fixture
def data(tmp_path):
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


# Defect 1: the fingerprint of a cached result covers the run's settings and that video's own inputs.


def test_a_video_added_later_keeps_the_finished_ones(data, tmp_path, computed):
    save_predictions(tmp_path / "preds", FrameOnly(data, count=4))
    evaluate_saved(FrameOnly(data, count=3), tmp_path / "preds", tmp_path / "out")  # one video not copied yet
    assert computed == ["v0", "v1", "v2"]
    computed.clear()
    metrics = evaluate_saved(FrameOnly(data, count=4), tmp_path / "preds", tmp_path / "out")
    assert computed == ["v3"] and metrics["num_videos"] == 4


def test_a_full_run_after_a_smoke_run_resumes(data, tmp_path, computed):
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", settings=EvalSettings(max_videos=2))
    computed.clear()
    metrics = evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    assert computed == ["v2", "v3"] and metrics["videos_left_out"] == 0


def test_relative_and_absolute_paths_share_the_cache(data, tmp_path, computed, monkeypatch):
    save_predictions(tmp_path / "preds", FrameOnly(data))
    monkeypatch.chdir(tmp_path)
    first = evaluate_saved(FrameOnly("data"), "preds", "out")
    computed.clear()
    again = evaluate_saved(FrameOnly(tmp_path / "data"), tmp_path / "preds", tmp_path / "out")
    assert computed == [] and again == first


def test_the_refusal_names_the_setting_that_differs(data, tmp_path):
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    with pytest.raises(ValueError) as refused:
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", categories=["dog"])
    message = str(refused.value)
    assert str(cached_result_path(tmp_path / "out", "v0")) in message
    assert "categories" in message and "['fire']" in message and "['dog']" in message
    assert "overwrite=true" in message and "output_dir" in message
    assert "pixel size" not in message  # only what differs


def test_a_nested_setting_is_named_by_its_key_and_an_unrecorded_one_as_absent():
    """Settings inside the run info (the base models' fingerprints, checkpoint_overrides) are named by
    their dotted key, not by two dumps of the whole run info; one that an older cache lacks is absent."""
    import json

    def facts(run_info):
        return json.dumps({"run": {"benchmark": "ped2", "run": run_info}, "video": {}})

    old = facts({"dtype": "torch.float32", "checkpoint_overrides": {}})
    new = facts({"dtype": "torch.float32", "checkpoint_overrides": {}, "base_models": {"mllm": "a" * 16}})
    assert _differences(old, new) == f"run.base_models was absent, now {{'mllm': '{'a' * 16}'}}"
    other = facts({"dtype": "torch.float32", "checkpoint_overrides": {}, "base_models": {"mllm": "b" * 16}})
    assert _differences(new, other) == f"run.base_models.mllm was '{'a' * 16}', now '{'b' * 16}'"
    overridden = facts({"dtype": "torch.bfloat16", "checkpoint_overrides": {"compression": {"ratio": 0.5}}})
    assert _differences(old, overridden) == (
        "run.checkpoint_overrides.compression was absent, now {'ratio': 0.5}; "
        "run.dtype was 'torch.float32', now 'torch.bfloat16'"
    )


def test_the_refusal_names_a_video_whose_own_labels_changed(data, tmp_path, computed):
    save_predictions(tmp_path / "preds", FrameOnly(data))
    evaluate_saved(FrameOnly(data), tmp_path / "preds", tmp_path / "out")
    with pytest.raises(ValueError, match=r"(?s)v0\.npz.*ground truth.*overwrite=true"):
        evaluate_saved(FrameOnly(data, shift=1), tmp_path / "preds", tmp_path / "out")
    computed.clear()
    evaluate_saved(FrameOnly(data, shift=1), tmp_path / "preds", tmp_path / "out", overwrite=True)
    assert computed == ["v0", "v1", "v2", "v3"]


def test_rewritten_predictions_of_one_video_recompute_that_video_only(data, tmp_path, computed):
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    np.save(tmp_path / "preds" / "v1.npy", np.linspace(0, 1, 20))
    os.utime(tmp_path / "preds" / "v1.npy", ns=(1, 1))  # a different time even on coarse clocks
    with pytest.raises(ValueError, match=r"(?s)v1\.npz.*prediction file"):
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    computed.clear()
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", overwrite=True)
    assert computed == ["v1"]


# Defect 2: a rerun that dies midway leaves no metrics of the previous run behind.


def test_a_killed_rerun_leaves_no_stale_metrics(data, tmp_path, monkeypatch):
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench, seed=0)
    out = tmp_path / "out"
    evaluate_saved(bench, tmp_path / "preds", out)
    outputs = [out / "metrics.json", out / "report.md", out / "per_video.csv"]
    assert all(path.is_file() for path in outputs)

    save_predictions(tmp_path / "preds", bench, seed=1)  # a new method version, same folder
    for video in bench.videos():
        os.utime(tmp_path / "preds" / f"{video.name}.npy", ns=(2, 2))
    original = runner.result_from_saved
    calls = []

    def dies_on_the_second_video(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "result_from_saved", dies_on_the_second_video)
    with pytest.raises(KeyboardInterrupt):
        evaluate_saved(bench, tmp_path / "preds", out, overwrite=True)
    assert [path.name for path in outputs if path.exists()] == []

    monkeypatch.setattr(runner, "result_from_saved", original)
    resumed = evaluate_saved(bench, tmp_path / "preds", out, overwrite=True)
    fresh = evaluate_saved(bench, tmp_path / "preds", tmp_path / "fresh")
    assert resumed == fresh
    assert json.loads((out / "metrics.json").read_text()) == fresh


def test_a_refused_rerun_keeps_the_previous_outputs(data, tmp_path):
    """Nothing is computed when the cache is refused, so the previous run's outputs still describe it."""
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    with pytest.raises(ValueError, match="categories"):
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", categories=["dog"])
    assert (tmp_path / "out" / "metrics.json").is_file()


# Defect 3: an unreadable cache file is named, and overwrite=true recomputes it.


def test_a_truncated_cache_file_is_named_and_overwrite_recomputes_it(data, tmp_path, computed):
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    first = evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    cache = cached_result_path(tmp_path / "out", "v1")
    cache.write_bytes(cache.read_bytes()[:100])  # a partial copy, a full disk
    with pytest.raises(ValueError) as refused:
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    assert str(cache) in str(refused.value) and "overwrite=true" in str(refused.value)
    assert "delete it" in str(refused.value)
    computed.clear()
    assert evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", overwrite=True) == first
    assert computed == ["v1"]


def test_a_cache_damaged_past_its_fingerprint_is_recomputed_by_overwrite(data, tmp_path, computed):
    """The check reads only the fingerprint; a damaged score array is found when the results are merged,
    and the overwrite=true that the error suggests recomputes it."""
    import zipfile

    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    first = evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    cache = cached_result_path(tmp_path / "out", "v2")
    with zipfile.ZipFile(cache) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["frame_scores.npy"] = members["frame_scores.npy"][:-8]  # its last scores lost
    with zipfile.ZipFile(cache, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    with pytest.raises(ValueError, match="overwrite=true") as refused:
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    assert str(cache) in str(refused.value)
    computed.clear()
    assert evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", overwrite=True) == first
    assert computed == ["v2"]


# Defect 4: the report and metrics.json record the clip length T (supplement Tab. 7).


@pytest.mark.parametrize("clip_length", [4, 16])
def test_the_clip_length_is_recorded(data, tmp_path, clip_length):
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    protocol = dataclasses.replace(bench.protocol("lavida_official"), clip_length=clip_length)
    metrics = run_evaluation(
        benchmark=bench, protocol=protocol, output_dir=tmp_path / "out", predictions_dir=tmp_path / "preds"
    )
    assert metrics["clip_length"] == clip_length
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["clip_length"] == clip_length
    # metrics.json read alone names its run, as report.md's title does (FrameOnly: interval 4 under it)
    assert (saved["benchmark"], saved["protocol"], saved["interval"]) == ("frame_only", "lavida_official", 4)
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"- clip_length: `{clip_length}`" in text
    assert "pixel_size" not in text and "pixel_resize" not in text  # no pixel ground truth here


def test_pixel_benchmarks_report_pixel_size_and_resize(data, tmp_path):
    bench = WithPixels(data, count=2)
    rng = np.random.default_rng(0)
    (tmp_path / "preds").mkdir()
    for video in bench.videos():
        np.savez(
            tmp_path / "preds" / f"{video.name}.npz",
            frame_scores=rng.random(6),
            pixel_scores=rng.random((6, 8, 10)),
        )
    metrics = evaluate_saved(
        bench, tmp_path / "preds", tmp_path / "out", settings=EvalSettings(pixel_size=(4, 5))
    )
    text = (tmp_path / "out" / "report.md").read_text()
    assert "- pixel_size: `(4, 5)`" in text and "- pixel_resize: `bilinear`" in text
    assert metrics["pixel_size"] == [4, 5] and metrics["pixel_resize"] == "bilinear"


# Defect 5: cached results are merged one at a time.


def test_pixel_statistics_are_merged_one_video_at_a_time(data, tmp_path, monkeypatch):
    bench = WithPixels(data, count=5)
    rng = np.random.default_rng(3)
    (tmp_path / "preds").mkdir()
    pooled_scores, pooled_labels = [], []
    for video in bench.videos():
        pixel_scores = rng.random((6, 8, 10))
        np.savez(
            tmp_path / "preds" / f"{video.name}.npz", frame_scores=rng.random(6), pixel_scores=pixel_scores
        )
        pooled_scores.append(pixel_scores.reshape(-1))
        pooled_labels.append(video.pixel_masks(np.arange(6)).reshape(-1))

    seen = []
    original = report.compute_metrics

    def spy(results, **kwargs):
        seen.extend(result.pixels for result in results)
        return original(results, **kwargs)

    monkeypatch.setattr(runner, "compute_metrics", spy)
    metrics = evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    assert len(seen) == 5 and all(pixels is None for pixels in seen)  # no per-video histograms kept
    scores, labels = np.concatenate(pooled_scores), np.concatenate(pooled_labels)
    # Independent: sklearn on the pooled pixels, within the histogram's own stated bound.
    bound = metrics["pixel_auc_error_bound"]
    assert bound < 1e-4
    assert abs(metrics["pixel_auc"] - roc_auc_score(labels, scores)) <= bound + 1e-12
    # Identical to one histogram over every pixel (what the old list-based merge computed).
    reference = PixelAUC(octaves=PIXEL_AUC_OCTAVES)
    reference.update(scores, labels)
    assert metrics["pixel_auc"] == pytest.approx(reference.compute(), abs=1e-12)


# With several processes, every rank decides on every video before any computes.


class FakeRank:
    """PartialState of one rank among ``count``; the other ranks' work is not simulated."""

    def __init__(self, index, count=2):
        self.process_index, self.num_processes = index, count
        self.is_main_process = self.is_local_main_process = index == 0

    def wait_for_everyone(self):
        pass


_THREAD_RANK = threading.local()


def current_rank() -> int:
    """The rank of the calling thread under :func:`on_two_thread_ranks`."""
    return _THREAD_RANK.rank


def on_two_thread_ranks(monkeypatch, body):
    """Run ``body`` as ranks 0 and 1 of one run, in two threads that meet at real barriers; return each
    rank's result. An error on one rank releases the other and is raised here."""
    import accelerate

    barrier = threading.Barrier(2, timeout=30)

    class ThreadRank(FakeRank):
        def wait_for_everyone(self):
            barrier.wait()

    monkeypatch.setattr(accelerate, "PartialState", lambda: ThreadRank(current_rank()))
    results, errors = {}, []

    def rank_main(rank):
        _THREAD_RANK.rank = rank
        try:
            results[rank] = body()
        except BaseException as error:  # reported below, after the barrier is released
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("rank", [0, 1])
def test_a_stale_cache_of_another_rank_is_refused_on_every_rank(data, tmp_path, monkeypatch, computed, rank):
    """A cache that one rank refuses must stop the others before they remove the previous outputs and
    compute: under `accelerate launch` the refusing rank exits and the launcher kills the rest midway."""
    import accelerate

    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    out = tmp_path / "out"
    evaluate_saved(bench, tmp_path / "preds", out)
    cached_result_path(out, f"v{rank}").unlink()  # never finished: this rank computes it
    stale = f"v{1 - rank}"  # another rank's video (round-robin over 2 ranks: v0, v2 / v1, v3)
    np.save(tmp_path / "preds" / f"{stale}.npy", np.linspace(0, 1, 20))
    os.utime(tmp_path / "preds" / f"{stale}.npy", ns=(1, 1))
    monkeypatch.setattr(accelerate, "PartialState", lambda: FakeRank(rank))
    computed.clear()
    with pytest.raises(ValueError, match=rf"(?s){stale}\.npz.*prediction file"):
        evaluate_saved(bench, tmp_path / "preds", out)
    assert computed == [] and (out / "metrics.json").is_file()


def test_ranks_share_the_videos_left_to_compute(data, tmp_path, monkeypatch, computed):
    """Two ranks as threads meeting at real barriers: the videos without a current cache are split
    between them, each computed once, and rank 0 merges all of them."""
    bench = FrameOnly(data, count=6)
    save_predictions(tmp_path / "preds", bench)
    out = tmp_path / "out"
    evaluate_saved(bench, tmp_path / "preds", out, settings=EvalSettings(max_videos=2))  # v0, v1 done
    computed.clear()
    results = on_two_thread_ranks(monkeypatch, lambda: evaluate_saved(bench, tmp_path / "preds", out))
    assert sorted(computed) == ["v2", "v3", "v4", "v5"]  # each once, v0 and v1 from the cache
    assert results[1] == {} and results[0]["num_videos"] == 6


# A rerun that recomputes removes the previous command's .hydra/ record with its metrics.


def evaluated_with_record(data, tmp_path):
    """A finished scores-only run in ``tmp_path/out`` with the .hydra/ record lavida-eval writes."""
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    out = tmp_path / "out"
    evaluate_saved(bench, tmp_path / "preds", out)
    (out / ".hydra").mkdir()
    (out / ".hydra" / "overrides.yaml").write_text("- categories=fire\n")  # as lavida-eval writes it
    return bench, out


def test_a_recomputing_rerun_removes_the_previous_record(data, tmp_path, monkeypatch):
    bench, out = evaluated_with_record(data, tmp_path)
    with pytest.raises(ValueError, match="categories"):  # refused: nothing computed, the record stays
        evaluate_saved(bench, tmp_path / "preds", out, categories=["dog"])
    assert (out / ".hydra" / "overrides.yaml").is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(runner, "result_from_saved", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate_saved(bench, tmp_path / "preds", out, categories=["dog"], overwrite=True)
    assert not (out / ".hydra").exists() and not (out / "metrics.json").exists()


def test_a_rerun_that_computes_nothing_keeps_the_record(data, tmp_path):
    """Only a rerun that computes something removes the previous .hydra/ record (module docstring): one
    that finds every result cached leaves it, and writes the same metrics again."""
    bench, out = evaluated_with_record(data, tmp_path)
    written = (out / "metrics.json").read_bytes()
    evaluate_saved(bench, tmp_path / "preds", out)
    assert (out / ".hydra" / "overrides.yaml").read_text() == "- categories=fire\n"
    assert (out / "metrics.json").read_bytes() == written


# A model is loaded only to predict: a rerun with every result cached, or a rank with no video to
# predict, never loads it (minutes and ~17 GB for the paper's model).


@pytest.fixture
def predicted(monkeypatch):
    """Names of the videos the model predicted; ``runner._predict`` gives fixed scores of the "model"."""
    names = []

    def fake_predict(video, plan, predictor, *args):
        assert predictor == "model"  # what the factory below returns
        names.append(video.name)
        scores = np.linspace(0, 1, plan.scored.size)
        return runner.VideoResult(video.name, plan.scored, scores, video.frame_labels[plan.scored])

    monkeypatch.setattr(runner, "_predict", fake_predict)
    return names


def evaluate_model(bench, output_dir, load):
    """A model run whose model ``load`` returns, described in ``run_info`` without loading it."""
    return run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("standard"),
        output_dir=output_dir,
        predictor_factory=load,
        run_info={"dtype": "torch.float32", "gate_masks": True},
    )


def must_not_load():
    raise AssertionError("the model was loaded")


def test_a_rerun_with_every_result_cached_does_not_load_the_model(data, tmp_path, predicted):
    bench, loads = FrameOnly(data), []
    first = evaluate_model(bench, tmp_path / "out", lambda: loads.append(1) or "model")
    assert loads == [1] and predicted == ["v0", "v1", "v2", "v3"]
    written = (tmp_path / "out" / "metrics.json").read_bytes()
    predicted.clear()
    assert evaluate_model(bench, tmp_path / "out", must_not_load) == first and predicted == []
    assert (tmp_path / "out" / "metrics.json").read_bytes() == written


def test_a_rank_with_no_video_to_predict_does_not_load_the_model(data, tmp_path, monkeypatch, predicted):
    """Two ranks as threads meeting at real barriers: the one video left goes to rank 0, which loads the
    model once; rank 1 loads nothing and still meets rank 0 at every barrier."""
    bench = FrameOnly(data)
    out = tmp_path / "out"
    first = evaluate_model(bench, out, lambda: "model")
    cached_result_path(out, "v1").unlink()  # never finished: the only video left to predict
    predicted.clear()
    loads = []
    results = on_two_thread_ranks(
        monkeypatch, lambda: evaluate_model(bench, out, lambda: loads.append(current_rank()) or "model")
    )
    assert loads == [0] and predicted == ["v1"]
    assert results[1] == {} and results[0] == first


# Added by mutation testing: what the fingerprint leaves out, and the refusals that name no setting.


def test_a_checkpoint_path_counts_only_without_its_digest(data, tmp_path, computed):
    """run_facts drops the checkpoint path when its digest is recorded (the same weights moved or
    spelled otherwise reuse the results) and keeps it when no digest is given (another path may be
    other weights): the second rerun below is refused and names the path."""
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    digest = {"checkpoint_sha256": "0123456789abcdef"}
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", run_info={"checkpoint": "runs/a", **digest})
    computed.clear()
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", run_info={"checkpoint": "/moved/a", **digest})
    assert computed == []
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "bare", run_info={"checkpoint": "runs/a"})
    with pytest.raises(ValueError, match=r"run\.checkpoint was 'runs/a', now '/moved/a'"):
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "bare", run_info={"checkpoint": "/moved/a"})


def test_another_clip_length_refuses_the_cache(data, tmp_path):
    """Every protocol field but video_filter is in the fingerprint: results computed with T = 8
    sampled frames per clip (B.3) are not served to a rerun with T = 4."""
    import dataclasses

    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    protocol = dataclasses.replace(bench.protocol("standard"), clip_length=4)
    with pytest.raises(ValueError, match=r"protocol\.clip_length was 8, now 4"):
        run_evaluation(
            benchmark=bench,
            protocol=protocol,
            output_dir=tmp_path / "out",
            predictions_dir=tmp_path / "preds",
        )


def test_the_video_facts_digest_the_tracks(tmp_path):
    """A video's facts digest its frame labels and (UBnormal) its anomaly tracks: other tracks with the
    same labels give other facts, the same ones the same facts."""
    labels = np.array([0, 1, 1, 0], np.uint8)
    box = np.array([[1, 1, 2, 3, 8, 9], [1, 2, 2, 3, 8, 9]], np.int64)  # (track_id, frame, x0, y0, x1, y1)
    moved = box + np.array([0, 0, 1, 0, 1, 0])

    def facts(tracks):
        return video_facts(TestVideo(name="v", path=tmp_path / "v", frame_labels=labels, tracks=tracks), None)

    assert facts(box) == facts(box.copy())
    assert facts(box) != facts(moved)
    assert facts(box) != facts(None)
    assert facts(box)["ground_truth"]["frames"] == 4


def test_the_refusal_explains_a_difference_it_cannot_name_by_a_setting():
    """A cache that recorded no facts (an earlier lavida) is refused as such; facts that agree although
    the fingerprints do not say so; a video fact present on one side only (a scores-only rerun over a
    model run's cache, whose facts hold no prediction files) is named."""
    from lavida.eval.result_cache import _differences

    run = {"benchmark": "frame_only", "run": {}}
    model = json.dumps({"run": run, "video": {"ground_truth": {"frames": 20}}})
    scores = json.dumps({"run": run, "video": {"ground_truth": {"frames": 20}, "prediction_files": [[]]}})
    assert _differences("", model) == (
        "it was written by an earlier version of lavida, which did not record its settings"
    )
    assert _differences(model, model) == "unknown (the facts agree but the fingerprints do not)"
    written_again = "this video's prediction files were written again (name, size or time differ)"
    assert _differences(model, scores) == written_again
    assert _differences(scores, model) == written_again


def test_the_run_facts_name_the_mode(data, tmp_path):
    """The mode in the fingerprint (and so in a refusal, "mode was 'model', now 'scores-only'") is the
    one that ran: ``model`` without a predictions_dir, ``scores-only`` with one."""
    bench = FrameOnly(data)

    def mode(predictions_dir):
        facts = run_facts(
            bench, bench.protocol("standard"), ["fire"], EvalSettings(), None, None, predictions_dir
        )
        return facts["mode"]

    assert (mode(None), mode(tmp_path / "preds")) == ("model", "scores-only")


def test_the_same_run_info_in_another_order_reuses_the_cache(data, tmp_path, computed):
    """The facts are canonical JSON (keys sorted, normalised_facts): the same run info with its keys,
    or a nested setting's keys, in another order (e.g. overrides given in another order) is the same run."""
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    first = {"dtype": "torch.float32", "checkpoint_overrides": {"compression": {"ratio": 0.5, "k": 8}}}
    again = {"checkpoint_overrides": {"compression": {"k": 8, "ratio": 0.5}}, "dtype": "torch.float32"}
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", run_info=first)
    computed.clear()
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out", run_info=again)
    assert computed == []


# What a run says about loading the model, what a rerun that computes nothing keeps, and the progress bar
# of the process that shows it.


def cache_messages(caplog):
    """The runner's log lines about cached videos and the model load, in order."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "lavida.eval.runner" and "cached" in r.getMessage()
    ]


def test_the_model_load_is_logged_only_with_a_model_to_load(data, tmp_path, predicted, caplog):
    """A model run says why it loads the model (2 videos, none cached, both on the one process) and a rerun
    with every result cached that it does not; a scores-only run has no model and says neither."""
    caplog.set_level(logging.INFO, logger="lavida.eval.runner")
    bench = FrameOnly(data, count=2)
    evaluate_model(bench, tmp_path / "model", lambda: "model")
    assert cache_messages(caplog) == ["2 of 2 videos are not cached (2 on this process); loading the model."]
    caplog.clear()
    evaluate_model(bench, tmp_path / "model", must_not_load)
    assert cache_messages(caplog) == ["All 2 videos are cached; the model is not loaded."]
    save_predictions(tmp_path / "preds", bench)
    for _ in ("first run", "rerun, every result cached"):
        caplog.clear()
        evaluate_saved(bench, tmp_path / "preds", tmp_path / "scores")
        assert cache_messages(caplog) == []


def test_the_progress_bar_is_shown_by_the_local_main_process(data, tmp_path, monkeypatch):
    """One process is its machine's main process: its bar over the videos is shown, named after the
    benchmark and protocol."""
    bars = []

    def recording_tqdm(iterable, **kwargs):
        bars.append(kwargs)
        return iterable

    monkeypatch.setattr(runner, "tqdm", recording_tqdm)
    bench = FrameOnly(data)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    assert bars == [{"desc": "frame_only (standard)", "unit": "video", "disable": False}]


def test_a_video_without_pixel_ground_truth_adds_no_pixels(data, tmp_path):
    """A pixel benchmark may have videos without pixel ground truth (``pixel_masks`` None): after videos
    that have it, such a video is scored on frames only and the pooled pixel AUC is that of the others'
    pixels (sklearn on p0 and p1, within the histogram's stated bound)."""

    class LastWithoutMasks(WithPixels):
        def load_videos(self):
            videos = super().load_videos()
            return videos[:-1] + [dataclasses.replace(videos[-1], pixel_masks=None)]

    bench = LastWithoutMasks(data, count=3)
    rng = np.random.default_rng(5)
    (tmp_path / "preds").mkdir()
    scores, labels = [], []
    for video in bench.videos()[:2]:
        pixel_scores = rng.random((6, 8, 10))
        np.savez(
            tmp_path / "preds" / f"{video.name}.npz", frame_scores=rng.random(6), pixel_scores=pixel_scores
        )
        scores.append(pixel_scores.reshape(-1))
        labels.append(video.pixel_masks(np.arange(6)).reshape(-1))
    np.save(tmp_path / "preds" / "p2.npy", rng.random(6))
    metrics = evaluate_saved(bench, tmp_path / "preds", tmp_path / "out")
    expected = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    assert abs(metrics["pixel_auc"] - expected) <= metrics["pixel_auc_error_bound"] + 1e-12


def test_the_report_names_the_mode(data, tmp_path, predicted):
    """report.md's first setting says what produced the numbers: ``model``, or ``scores-only (<folder>)``."""
    bench = FrameOnly(data, count=2)
    save_predictions(tmp_path / "preds", bench)
    evaluate_saved(bench, tmp_path / "preds", tmp_path / "scores")
    evaluate_model(bench, tmp_path / "model", lambda: "model")
    for run, mode in (("scores", f"scores-only ({tmp_path / 'preds'})"), ("model", "model")):
        lines = (tmp_path / run / "report.md").read_text().splitlines()
        assert lines[2] == f"- mode: `{mode}`", run


# From a review of the run management (2026-12-08): what was served although it should not have been.


def test_a_video_whose_file_changed_is_not_served_its_old_result(data, tmp_path, predicted):
    """Model mode: the state of the video's file (or frame folder) is in its facts. Another copy of the data,
    re-encoded or rescaled with the same labels, was served the old frames' results."""
    bench = FrameOnly(data)
    for video in bench.videos():
        video.path.write_bytes(b"frames")
    evaluate_model(bench, tmp_path / "out", lambda: "model")
    (data / "v2").write_bytes(b"other frames")
    predicted.clear()
    with pytest.raises(
        ValueError, match=r"v2\.npz was computed with other settings: .*video.*file or frames"
    ):
        evaluate_model(bench, tmp_path / "out", must_not_load)
    run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("standard"),
        output_dir=tmp_path / "out",
        predictor_factory=lambda: "model",
        run_info={"dtype": "torch.float32", "gate_masks": True},
        overwrite=True,
    )
    assert predicted == ["v2"]  # the others' files are as they were


def test_results_another_run_wrote_meanwhile_are_not_mixed_into_the_metrics(
    data, tmp_path, predicted, monkeypatch
):
    """Nothing locks an output_dir: a run that rewrote v0 (here with the first run's result) after this run
    had checked its caches left a metrics.json of both runs' predictions. The metrics now refuse it."""
    bench, out = FrameOnly(data), tmp_path / "out"
    evaluate_model(bench, out, lambda: "model")  # gate_masks True
    first_v0 = cached_result_path(out, "v0").read_bytes()
    fake_predict = runner._predict

    def other_run_writes_v0(video, *args):
        if video.name == "v3":
            cached_result_path(out, "v0").write_bytes(first_v0)
        return fake_predict(video, *args)

    monkeypatch.setattr(runner, "_predict", other_run_writes_v0)
    with pytest.raises(
        ValueError, match=r"v0\.npz: this cached result was computed with other settings than "
    ):
        run_evaluation(
            benchmark=bench,
            protocol=bench.protocol("standard"),
            output_dir=out,
            predictor_factory=lambda: "model",
            run_info={"dtype": "torch.float32", "gate_masks": False},
            overwrite=True,
        )
    assert not (out / "metrics.json").exists()


def test_base_weight_paths_count_in_the_facts_only_without_the_weights_fingerprints(data):
    """The same frozen weights named by another path (a checkpoint trained on another machine, pointed at
    the local copies with checkpoint_overrides) reuse the results where base_models fingerprints them; any
    other override, or a path without fingerprints, still counts."""
    bench = FrameOnly(data)

    def facts(overrides, base_models=True):
        info = {
            "checkpoint_overrides": overrides,
            **({"base_models": {"mllm": "0a1b"}} if base_models else {}),
        }
        return run_facts(bench, bench.protocol("standard"), ["fire"], EvalSettings(), None, info, None)

    assert facts({"mllm": {"pretrained": "/a"}}) == facts({"mllm": {"pretrained": "/b"}}) == facts({})
    assert facts({"mllm": {"pretrained": "/a", "lora_r": 4}}) != facts({"mllm": {"pretrained": "/a"}})
    assert facts({"compression": {"ratio": 0.5}}) != facts({})
    assert facts({"mllm": {"pretrained": "/a"}}, False) != facts({"mllm": {"pretrained": "/b"}}, False)
