"""The evaluation runner against independent computations: clip plans and sample-and-hold
against a slow re-implementation of both protocols, per-video results merged into the metrics against
sklearn, RBDC/TBDC frame counts, the order in which a run's outputs are written, and the settings the
runner and lavida-eval accept."""

import dataclasses
import json
import logging

import numpy as np
import pytest
from conftest import save_ramp_scores, slow_auc_eer
from eval.trees import VideosMadeByTheTest, write_ucsd_ped2_tree
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

import lavida.cli.eval as evaluate
from lavida.eval import report, runner
from lavida.eval.benchmark import TestVideo, VadBenchmark, plan_clips
from lavida.eval.result_cache import cached_result_path
from lavida.eval.runner import run_evaluation
from lavida.eval.settings import EvalSettings
from lavida.eval.video_result import VideoResult
from lavida.inference import VideoPrediction
from lavida.metrics import rbdc_tbdc

# -- a slow, obvious re-implementation of the two protocols' clip plans ---------------------------------


def slow_standard(num_frames, interval, clip_length):
    """Frames 0, I, 2I, ... grouped T to a clip, the last clip padded with its last sampled frame; raw frame
    f takes the score of the sampled frame at or before it (docs/evaluation.md, "Two protocols")."""
    sampled = [f for f in range(num_frames) if f % interval == 0]
    clips, valid = [], []
    for start in range(0, len(sampled), clip_length):
        clip = sampled[start : start + clip_length]
        pad = clip_length - len(clip)
        clips.append(clip + [clip[-1]] * pad)
        valid.append([True] * len(clip) + [False] * pad)
    holds = []  # (clip, position) whose prediction raw frame f takes
    for f in range(num_frames):
        held = max(s for s in sampled if s <= f)
        index = sampled.index(held)
        holds.append((index // clip_length, index % clip_length))
    return clips, valid, list(range(num_frames)), holds


def slow_official(num_frames, interval, clip_length):
    """The release (lavida_official.md §10): windows of T·I raw frames, stride T·I, the tail dropped; a
    window's clip is ``window[::I]`` and each sampled score is repeated I times (``repeat_interleave``)."""
    window = clip_length * interval
    clips, valid, scored, holds = [], [], [], []
    for w in range(num_frames // window):
        frames = list(range(w * window, (w + 1) * window))
        clips.append(frames[::interval])
        valid.append([True] * clip_length)
        for position in range(clip_length):
            for _ in range(interval):
                holds.append((w, position))
        scored += frames
    return clips, valid, scored, holds


@pytest.mark.parametrize("drop_tail", [False, True])
def test_clip_plans_match_a_slow_reimplementation(drop_tail):
    slow = slow_official if drop_tail else slow_standard
    for clip_length in (1, 3, 8):
        for interval in (1, 2, 3, 4, 5):
            for num_frames in range(0, 3 * clip_length * interval + 2):
                plan = plan_clips(num_frames, interval=interval, clip_length=clip_length, drop_tail=drop_tail)
                clips, valid, scored, holds = slow(num_frames, interval, clip_length)
                case = (num_frames, interval, clip_length)
                assert plan.clips.shape == (len(clips), clip_length), case
                np.testing.assert_array_equal(plan.clips.reshape(-1), np.ravel(clips).astype(int), str(case))
                np.testing.assert_array_equal(plan.valid.reshape(-1), np.ravel(valid).astype(bool), str(case))
                np.testing.assert_array_equal(plan.scored, scored, str(case))
                # Every flat position gets its own value: the expansion shows which one each frame took.
                per_sampled = np.arange(plan.clips.size, dtype=np.float64)
                expected = [c * clip_length + p for c, p in holds]
                np.testing.assert_array_equal(plan.expand(per_sampled), expected, str(case))
                # Padded positions are never a scored frame's source, and each frame holds a frame at or
                # before it, at most I - 1 frames back.
                assert plan.valid.reshape(-1)[plan.source].all(), case
                held = plan.clips.reshape(-1)[plan.source]
                assert ((plan.scored - held >= 0) & (plan.scored - held < interval)).all(), case


# -- the runner in model mode: which frame takes which clip's score -----------------------------------------


class Lengths(VadBenchmark):
    """In-memory videos of the given lengths; labels from a fixed pattern (no file is read)."""

    name = "lengths"
    has_pixel_gt = False

    def __init__(self, root, lengths, intervals):
        self.lengths, self.intervals = lengths, intervals
        super().__init__(root)

    @property
    def categories(self):
        return ["fire"]

    def load_videos(self):
        videos = []
        for i, length in enumerate(self.lengths):
            labels = ((np.arange(length) + 3 * i) % 7 < 3).astype(np.uint8)
            videos.append(TestVideo(name=f"v{i}", path=self.root / f"v{i}", frame_labels=labels))
        return videos


class IndexPredictor:
    """Scores each sampled frame by its own index (/ 1000): a frame's held score names its source frame."""

    num_workers = 0

    def __init__(self):
        self.clips = []

    def predict_video(self, path, clips, categories, *, source=None, keep_masks=None):
        self.clips.append(np.array(clips))
        return VideoPrediction(frame_scores=clips.reshape(-1) / 1000.0, mask_logits=None)


class FrameCount:
    """A decoded video of ``n`` frames (the runner only asks for its length)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


@pytest.mark.parametrize("protocol", ["standard", "lavida_official"])
def test_model_scores_are_held_from_the_sampled_frame_before(tmp_path, monkeypatch, protocol):
    lengths = (37, 24, 70, 23, 1)  # not multiples of I = 3 nor of the 24-frame window, and shorter ones
    bench = Lengths(tmp_path, lengths, {"standard": 3, "lavida_official": 3})
    monkeypatch.setattr(runner, "open_video", lambda path, fps=None: FrameCount(lengths[int(path.name[1:])]))
    predictor = IndexPredictor()
    chosen = bench.protocol(protocol)
    metrics = run_evaluation(
        benchmark=bench, protocol=chosen, output_dir=tmp_path / "out", predictor=predictor
    )

    slow = slow_official if chosen.drop_tail else slow_standard
    scored_videos = [n for n in lengths if slow(n, 3, 8)[2]]
    assert len(predictor.clips) == len(scored_videos)  # nothing is predicted for a video without a window
    all_scores, all_labels = [], []
    for video in bench.videos():
        clips, _, scored, holds = slow(video.num_frames, 3, 8)
        result = VideoResult.load(cached_result_path(tmp_path / "out", video.name))
        np.testing.assert_array_equal(result.scored, scored)
        expected = [clips[c][p] / 1000.0 for c, p in holds]
        np.testing.assert_array_equal(result.frame_scores, expected)
        np.testing.assert_array_equal(result.frame_labels, video.frame_labels[scored])
        all_scores += expected
        all_labels += video.frame_labels[scored].tolist()
    assert metrics["num_frames"] == len(all_scores) and metrics["num_videos"] == len(lengths)
    assert metrics["frame_auc_micro"] == pytest.approx(roc_auc_score(all_labels, all_scores), abs=1e-12)


def test_the_runner_hands_its_opened_video_to_the_predictor_with_workers_too(tmp_path, monkeypatch):
    """The runner opens each video to count its frames; with dataloader workers it used to pass nothing, so
    every worker opened the file again, which for a PyAV video is one more whole decode to count frames
    (lavida.data.video.FrameSource.for_worker: workers now read copies of it)."""
    lengths = (24, 17)
    bench = Lengths(tmp_path, lengths, {"standard": 1, "lavida_official": 1})
    opened = {}

    def open_counted(path, fps=None):
        opened[path.name] = FrameCount(lengths[int(path.name[1:])])
        return opened[path.name]

    monkeypatch.setattr(runner, "open_video", open_counted)
    predictor = IndexPredictor()
    predictor.num_workers = 2
    given = []
    predict = predictor.predict_video
    predictor.predict_video = lambda path, *args, source=None, **kwargs: (
        given.append((path.name, source)) or predict(path, *args, source=source, **kwargs)
    )
    run_evaluation(
        benchmark=bench, protocol=bench.protocol("standard"), output_dir=tmp_path / "out", predictor=predictor
    )
    assert given == [(name, opened[name]) for name in ("v0", "v1")]


# -- per-video results merged into the metrics ------------------------------------------------------------


def test_official_metrics_pool_the_kept_frames_in_order(tmp_path):
    """Scores-only, lavida_official at I = 2 (16-frame windows): each video counted once, tails and the
    too-short video left out, the rest pooled in video order; against sklearn on hand-cut arrays."""
    lengths = (40, 16, 9, 33, 50)  # windows: 2, 1, 0, 2, 3
    (tmp_path / "data").mkdir()
    bench = Lengths(tmp_path / "data", lengths, {"standard": 2, "lavida_official": 2})
    predictions = tmp_path / "preds"
    predictions.mkdir()
    rng = np.random.default_rng(7)
    scores, labels, macro = [], [], []
    for video, length in zip(bench.videos(), lengths, strict=True):
        saved = rng.random(length)
        np.save(predictions / f"{video.name}.npy", saved)
        kept = length // 16 * 16
        if kept:
            scores.append(saved[:kept])
            labels.append(video.frame_labels[:kept])
            padded_labels = np.concatenate(([0], video.frame_labels[:kept], [1]))
            macro.append(roc_auc_score(padded_labels, np.concatenate(([0.0], saved[:kept], [1.0]))))
    metrics = run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("lavida_official"),
        output_dir=tmp_path / "out",
        predictions_dir=predictions,
    )
    pooled_scores, pooled_labels = np.concatenate(scores), np.concatenate(labels)
    assert metrics["num_videos"] == 5 and metrics["num_frames"] == 32 + 16 + 32 + 48
    assert metrics["num_anomalous_frames"] == int(pooled_labels.sum())
    assert metrics["frame_auc_micro"] == roc_auc_score(pooled_labels, pooled_scores)
    assert metrics["frame_ap"] == pytest.approx(
        average_precision_score(pooled_labels, pooled_scores), abs=1e-12
    )
    assert metrics["frame_auc_macro"] == pytest.approx(np.mean(macro), abs=1e-12)
    rows = (tmp_path / "out" / "per_video.csv").read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [
        ["v0", "32"],
        ["v1", "16"],
        ["v2", "0"],
        ["v3", "32"],
        ["v4", "48"],
    ]


class Pixels(VadBenchmark):
    """Videos with pixel ground truth (a square on some frames); lengths chosen by the test."""

    name = "pixels"
    intervals = {"standard": 1, "lavida_official": 1}
    has_pixel_gt = True
    primary_metric = "pixel_auc"

    def __init__(self, root, lengths):
        self.lengths = lengths
        super().__init__(root)

    @property
    def categories(self):
        return ["fire"]

    def load_videos(self):
        videos = []
        for i, length in enumerate(self.lengths):
            masks = np.zeros((length, 8, 10), bool)
            for t in range(length):
                if (t + i) % 3 == 0:
                    masks[t, 1 + i % 3 : 5, 2 : 4 + t % 5] = True
            videos.append(
                TestVideo(
                    name=f"p{i}",
                    path=self.root / f"p{i}",
                    frame_labels=masks.any(axis=(1, 2)).astype(np.uint8),
                    pixel_masks=lambda idx, m=masks: m[idx],
                )
            )
        return videos


def critical_score(scores, mask):
    """The highest pixel score t at which a frame counts for the 40 % criterion, by a walk over its own
    scores: an anomalous frame is a TP at t when 5 * (anomalous pixels >= t) >= 2 * (anomalous pixels);
    a normal frame is a FP at t when any pixel is >= t."""
    if not mask.any():
        return float(scores.max())
    inside = scores[mask]
    return max(float(t) for t in inside if 5 * np.count_nonzero(inside >= t) >= 2 * inside.size)


@pytest.mark.parametrize("pixel_chunk", [1, 3, 16])
def test_official_pixel_metrics_pool_only_the_kept_frames(tmp_path, pixel_chunk):
    """Pixel statistics merged over videos, under drop_tail (8-frame windows at I = 1): sklearn on the
    pooled pixels of the kept frames, the TAO per-frame mean over their anomalous frames, and the 40 %
    criterion's AUC and EER from each kept frame's critical score; the same whatever number of frames
    each step of the pixel metrics takes (one is the least)."""
    (tmp_path / "data").mkdir()
    bench = Pixels(tmp_path / "data", (11, 19, 5, 8))  # kept frames: 8, 16, 0, 8
    predictions = tmp_path / "preds"
    predictions.mkdir()
    rng = np.random.default_rng(11)
    pooled_scores, pooled_labels, per_frame, critical, anomalous = [], [], [], [], []
    for video in bench.videos():
        # Anomalous pixels score higher on average, so that neither the AUCs nor the criterion is degenerate.
        maps = rng.random((video.num_frames, 8, 10)) / 2
        every = video.pixel_masks(np.arange(video.num_frames))
        maps[every] += rng.random(int(every.sum())) / 2
        np.savez(predictions / f"{video.name}.npz", frame_scores=maps.mean(axis=(1, 2)), pixel_scores=maps)
        kept = np.arange(video.num_frames // 8 * 8)
        masks = video.pixel_masks(kept)
        pooled_scores.append(maps[kept].reshape(-1))
        pooled_labels.append(masks.reshape(-1))
        per_frame += [
            roc_auc_score(m.reshape(-1), s.reshape(-1))
            for m, s in zip(masks, maps[kept], strict=True)
            if m.any()
        ]
        critical += [critical_score(s, m) for m, s in zip(masks, maps[kept], strict=True)]
        anomalous += [bool(m.any()) for m in masks]
    metrics = run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("lavida_official"),
        output_dir=tmp_path / "out",
        predictions_dir=predictions,
        # The maps' own size: no resizing to compare through.
        settings=EvalSettings(pixel_size=(8, 10), pixel_chunk=pixel_chunk),
    )
    expected = roc_auc_score(np.concatenate(pooled_labels), np.concatenate(pooled_scores))
    assert abs(metrics["pixel_auc"] - expected) <= metrics["pixel_auc_error_bound"] + 1e-12
    assert metrics["pixel_auc_per_frame"] == pytest.approx(np.mean(per_frame), abs=1e-12)
    assert 0 < sum(anomalous) < len(anomalous) == 32  # both kinds of frame for the criterion
    assert 0.2 < metrics["pixel_criterion_auc"] < 0.8 and 0.2 < metrics["pixel_criterion_eer"] < 0.8
    assert metrics["pixel_criterion_auc"] == pytest.approx(roc_auc_score(anomalous, critical), abs=1e-12)
    _, eer = slow_auc_eer(*roc_curve(anomalous, critical, drop_intermediate=False)[:2])
    assert metrics["pixel_criterion_eer"] == pytest.approx(eer, abs=1e-12)
    assert metrics["num_frames"] == 32


# -- RBDC/TBDC: frame counts and tracks of the scored frames ----------------------------------------------


def test_rbdc_counts_the_scored_frames_whatever_their_indices(tmp_path):
    """A result scored on frames 4..9 of a 10-frame video (``VideoResult.scored`` holds any raw indices):
    tracks on unscored frames are dropped and the FPR denominator is the 6 scored frames, as if the video
    were those 6 frames. Before the fix the tracks of frames 2 and 3 were kept and frame 9 was checked
    against a count of 6, so RBDC/TBDC were not computed at all."""
    track = np.array([[1, f, 2, 2, 6, 6] for f in range(2, 10)])
    regions = np.array([[f, 2, 2, 6, 6, 0.9] for f in range(4, 10)] + [[5, 20, 20, 25, 25, 0.95]], float)
    video = TestVideo(name="v", path=tmp_path / "v", frame_labels=np.ones(10, np.uint8), tracks=track)
    scored = np.arange(4, 10)
    result = VideoResult("v", scored, np.full(6, 0.5), np.ones(6, np.uint8), regions=regions)
    metrics, notes = report.compute_metrics(
        [result], videos=[video], benchmark=VideosMadeByTheTest(tmp_path, pixel_gt=True)
    )
    assert not [note for note in notes if "rbdc" in note], notes
    # The same video cut to its 6 scored frames, numbered from 0.
    shifted_track = track[track[:, 1] >= 4] - [0, 4, 0, 0, 0, 0]
    shifted_regions = regions - [4, 0, 0, 0, 0, 0]
    expected = rbdc_tbdc({"v": shifted_track}, {"v": shifted_regions}, {"v": 6})
    assert (metrics["rbdc"], metrics["tbdc"]) == pytest.approx(expected, abs=1e-12)


def test_rbdc_of_prefix_scored_frames_is_unchanged(tmp_path):
    """The usual case (scored = 0..F'-1, the official tail dropped): tracks past the tail are dropped and
    the frame count is F'."""
    track = np.array([[1, f, 2, 2, 6, 6] for f in range(3, 12)])
    regions = np.array([[f, 2, 2, 6, 6, 0.8] for f in range(3, 8)] + [[1, 20, 20, 25, 25, 0.9]], float)
    video = TestVideo(name="v", path=tmp_path / "v", frame_labels=np.ones(12, np.uint8), tracks=track)
    result = VideoResult("v", np.arange(8), np.full(8, 0.5), np.ones(8, np.uint8), regions=regions)
    metrics, _ = report.compute_metrics(
        [result], videos=[video], benchmark=VideosMadeByTheTest(tmp_path, pixel_gt=True)
    )
    expected = rbdc_tbdc({"v": track[track[:, 1] < 8]}, {"v": regions}, {"v": 8})
    assert (metrics["rbdc"], metrics["tbdc"]) == pytest.approx(expected, abs=1e-12)


def test_a_model_run_finds_regions_only_in_videos_with_tracks(tmp_path, monkeypatch):
    """RBDC/TBDC need the predicted regions of every video with ground-truth tracks (UBnormal's abnormal
    videos); a video without tracks gets none. The model predicts the 2×2 square at rows/columns 1–2 of a
    4×4 frame (logit +5, elsewhere −5): at the default level 0.5 that square is one region per frame,
    scored sigmoid(5)."""
    square = np.zeros((4, 4), bool)
    square[1:3, 1:3] = True

    class Tracked(Lengths):
        has_pixel_gt = True

        def load_videos(self):
            videos = super().load_videos()

            def masks(idx):
                return np.repeat(square[None], len(idx), axis=0)

            track = np.array([[1, f, 1, 1, 2, 2] for f in range(8)])  # (id, frame, x0, y0, x1, y1)
            return [
                dataclasses.replace(videos[0], pixel_masks=masks, tracks=track),
                dataclasses.replace(videos[1], pixel_masks=masks),
            ]

    class SquarePredictor(IndexPredictor):
        def predict_video(self, path, clips, categories, *, source=None, keep_masks=None):
            frames = super().predict_video(path, clips, categories).frame_scores
            logits = np.where(square, 5.0, -5.0).astype(np.float32)
            return VideoPrediction(
                frame_scores=frames, mask_logits=np.repeat(logits[None], clips.size, axis=0)
            )

    bench = Tracked(tmp_path, (8, 8), {"standard": 1, "lavida_official": 1})
    monkeypatch.setattr(runner, "open_video", lambda path, fps=None: FrameCount(8))
    run_evaluation(
        benchmark=bench,
        protocol=bench.protocol("standard"),
        output_dir=tmp_path / "out",
        predictor=SquarePredictor(),
    )
    tracked, untracked = (
        VideoResult.load(cached_result_path(tmp_path / "out", name)) for name in ("v0", "v1")
    )
    expected = [[f, 1, 1, 2, 2, 1 / (1 + np.exp(-5.0))] for f in range(8)]  # (frame, x0, y0, x1, y1, score)
    np.testing.assert_allclose(tracked.regions, expected, rtol=1e-6)
    assert untracked.regions is None


# -- the order in which a run's outputs are written ------------------------------------------------------


def test_metrics_json_is_written_last(tmp_path, monkeypatch):
    """lavida-tables takes metrics.json as a finished run: a run killed while writing report.md or
    per_video.csv must leave no metrics.json (not a fresh one beside a stale report, nor one without)."""
    (tmp_path / "data").mkdir()
    bench = Lengths(tmp_path / "data", (20, 30), {"standard": 2, "lavida_official": 2})
    predictions = save_ramp_scores(tmp_path / "preds", {v.name: v.num_frames for v in bench.videos()})
    out = tmp_path / "out"
    evaluate = dict(
        benchmark=bench, protocol=bench.protocol("standard"), output_dir=out, predictions_dir=predictions
    )
    first = run_evaluation(**evaluate)
    written = []
    original = report.write_text

    def record(path, text, **kwargs):
        written.append(path.name)
        return original(path, text, **kwargs)

    monkeypatch.setattr(report, "write_text", record)
    assert run_evaluation(**evaluate) == first  # everything cached: the outputs are rewritten
    assert written[-1] == "metrics.json"

    def dies_on_the_report(path, text, **kwargs):
        if path.name == "report.md":
            raise KeyboardInterrupt("killed")
        return original(path, text, **kwargs)

    monkeypatch.setattr(report, "write_text", dies_on_the_report)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(**evaluate, settings=EvalSettings(max_videos=1))  # cached too: nothing removed first
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(report, "write_text", original)
    assert run_evaluation(**evaluate) == first
    assert json.loads((out / "metrics.json").read_text()) == first


# -- settings the runner and lavida-eval accept ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_videos": 0}, r"max_videos must be a whole number ≥ 1 or null"),
        ({"max_videos": -1}, r"max_videos must be a whole number ≥ 1 or null"),
        ({"max_videos": 1.5}, r"max_videos must be a whole number ≥ 1 or null"),
        ({"pixel_chunk": 0}, r"pixel_chunk must be a whole number ≥ 1"),
        ({"pixel_chunk": -4}, r"pixel_chunk must be a whole number ≥ 1"),
    ],
)
def test_eval_settings_refuse_counts_below_one(settings, message):
    """max_videos=-1 used to evaluate every video but the last and count len + 1 videos left out;
    pixel_chunk=-4 skipped every frame of the pixel metrics (an empty range) without a word."""
    with pytest.raises(ValueError, match=message):
        EvalSettings(**settings)


def compose_eval(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module("lavida.configs", version_base=None):
        return compose("eval", overrides=["benchmark=ucsd_ped2", *overrides])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_videos=0", r"max_videos must be a whole number ≥ 1 or null.*max_videos=2"),
        ("max_videos=-3", r"max_videos must be a whole number ≥ 1 or null"),
        ("max_videos=two", r"max_videos must be a whole number ≥ 1 or null"),
        ("pixel_chunk=0", r"pixel_chunk must be a whole number ≥ 1.*pixel_chunk=16"),
        ("pixel_chunk=2.5", r"pixel_chunk must be a whole number ≥ 1"),
        ("clip_length=0", r"clip_length must be a whole number ≥ 1 or null.*clip_length=8"),
        ("clip_length=2.5", r"clip_length must be a whole number ≥ 1 or null"),
    ],
)
def test_eval_cli_names_a_bad_count(tmp_path, override, message):
    """Checked before any benchmark or model is loaded (the root does not exist here)."""
    from lavida.cli.eval import run

    cfg = compose_eval(f"benchmark.root={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'out'}", override)
    with pytest.raises(ValueError, match=message):
        run(cfg)


def test_eval_cli_takes_the_ends_of_each_range(tmp_path):
    """clip_length=1, pixel_size=[1,1] and region thresholds 0 and 1 are inside their ranges: a scores-only
    run takes them (and max_videos) and reports what it used."""
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    predictions = save_ramp_scores(
        tmp_path / "preds", {name: v.num_frames for name, v in tree.videos.items()}
    )
    cfg = compose_eval(
        f"benchmark.root={tree.root}",
        f"predictions={predictions}",
        f"output_dir={tmp_path / 'out'}",
        "clip_length=1",
        "pixel_size=[1,1]",
        "region_thresholds=[0,1]",
        "max_videos=1",
    )
    metrics = evaluate.run(cfg)
    assert metrics["clip_length"] == 1 and metrics["pixel_size"] == [1, 1]
    assert metrics["num_videos"] == 1 and metrics["videos_left_out"] == 1


@pytest.mark.parametrize(
    ("decoded", "clips", "messages"),
    [
        # Frame 9 does not exist: every index above 8 becomes 8, the last decodable frame, and the run says so.
        (
            9,
            [list(range(8)), [8] * 8],
            ["v0: ground truth has 10 frames but the video decodes 9; the last 1 reuse the final frame."],
        ),
        (10, [list(range(8)), [8] + [9] * 7], []),  # as many frames as labels: nothing to say
    ],
)
def test_a_decoded_length_at_or_one_below_the_labels(tmp_path, monkeypatch, caplog, decoded, clips, messages):
    """10 labelled frames at I = 1: the plan's clips are 0..7 and 8, 9 padded with 9 (standard protocol)."""
    bench = Lengths(tmp_path, (10,), {"standard": 1, "lavida_official": 1})
    monkeypatch.setattr(runner, "open_video", lambda path, fps=None: FrameCount(decoded))
    predictor = IndexPredictor()
    caplog.set_level(logging.WARNING, logger="lavida.eval.runner")
    run_evaluation(
        benchmark=bench, protocol=bench.protocol("standard"), output_dir=tmp_path / "out", predictor=predictor
    )
    np.testing.assert_array_equal(predictor.clips, [clips])
    assert [r.getMessage() for r in caplog.records if r.name == "lavida.eval.runner"] == messages


def test_pixel_ground_truth_is_not_predicted_for_a_benchmark_that_does_not_score_it(tmp_path, monkeypatch):
    """ShanghaiTech without pixel_metrics has masks but has_pixel_gt False: the model is not asked for masks."""

    class MasksUnscored(Lengths):
        def load_videos(self):
            return [
                dataclasses.replace(v, pixel_masks=lambda idx: np.zeros((len(idx), 4, 4), bool))
                for v in super().load_videos()
            ]

    bench = MasksUnscored(tmp_path, (8,), {"standard": 1, "lavida_official": 1})
    monkeypatch.setattr(runner, "open_video", lambda path, fps=None: FrameCount(8))
    asked = []
    predictor = IndexPredictor()
    predict = predictor.predict_video
    predictor.predict_video = lambda *args, keep_masks=None, **kwargs: (
        asked.append(keep_masks) or predict(*args, **kwargs)
    )
    run_evaluation(
        benchmark=bench, protocol=bench.protocol("standard"), output_dir=tmp_path / "out", predictor=predictor
    )
    assert asked == [False]
