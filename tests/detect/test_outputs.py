"""What lavida-detect writes per video (lavida.detect.outputs), written and read back without a model.

The detector tests check these files through whole runs of the tiny model, whose scores and masks are not
known in advance; these give the writers chosen scores, masks and intervals and compare every value
written with one worked out by hand.
"""

import csv
import json
import logging
import re

import av
import numpy as np
import pytest
from conftest import decode_sequentially, grey_ramp_indices, write_grey_ramp

from lavida.detect import outputs
from lavida.detect.intervals import Interval
from lavida.detect.outputs import (
    MaskWriter,
    ScoreWriter,
    VideoWriter,
    cut_segments,
    interval_records,
    overlay_frame,
    playable_codec,
    read_masks,
    write_summary,
)

# -- scores.csv / scores.jsonl --------------------------------------------------------------------------------


def _write_scores(folder, fps, threshold, scores):
    writer = ScoreWriter(folder, fps=fps, threshold=threshold)
    for index, score in enumerate(scores):
        writer.write(index, score)
    writer.close()
    rows = list(csv.reader((folder / "scores.csv").open(newline="", encoding="utf-8")))
    records = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    return rows, records


def test_score_rows_give_time_as_frame_over_fps_and_flag_scores_at_the_threshold(tmp_path):
    """At 4 fps frame 3 is shown at 3 / 4 = 0.75 s; a score equal to the threshold is anomalous
    (score >= threshold, as the intervals are); scores keep 6 decimals."""
    rows, records = _write_scores(tmp_path, 4.0, 0.5, [0.1234567, 0.5, 0.4999994, 1.0])
    assert rows == [
        ["frame", "time_s", "score", "anomalous"],
        ["0", "0.000", "0.123457", "0"],
        ["1", "0.250", "0.500000", "1"],
        ["2", "0.500", "0.499999", "0"],
        ["3", "0.750", "1.000000", "1"],
    ]
    assert records == [
        {"frame": 0, "time_s": 0.0, "score": 0.123457, "anomalous": False},
        {"frame": 1, "time_s": 0.25, "score": 0.5, "anomalous": True},
        {"frame": 2, "time_s": 0.5, "score": 0.499999, "anomalous": False},
        {"frame": 3, "time_s": 0.75, "score": 1.0, "anomalous": True},
    ]


def test_score_rows_without_a_frame_rate_leave_the_time_empty(tmp_path):
    rows, records = _write_scores(tmp_path, None, 0.25, [0.25, 0.2])
    assert rows[1:] == [["0", "", "0.250000", "1"], ["1", "", "0.200000", "0"]]
    assert records == [
        {"frame": 0, "time_s": None, "score": 0.25, "anomalous": True},
        {"frame": 1, "time_s": None, "score": 0.2, "anomalous": False},
    ]


# -- masks.jsonl ------------------------------------------------------------------------------------------------


def test_masks_read_back_as_written_keyed_by_frame(tmp_path):
    first = np.zeros((3, 5), bool)
    first[1, 2:4] = True
    second = np.ones((3, 5), bool)
    writer = MaskWriter(tmp_path)
    writer.write(7, first)
    writer.write(8, second)
    writer.close()
    masks = read_masks(tmp_path / "masks.jsonl")
    assert sorted(masks) == [7, 8]
    np.testing.assert_array_equal(masks[7], first)
    np.testing.assert_array_equal(masks[8], second)
    assert (tmp_path / "masks.jsonl").read_text().count("\n") == 2  # one line per frame


_NOT_A_RECORD = (
    "not a mask record {frame, rle: {size, counts}} (KeyError); read_masks reads the masks.jsonl that "
    "Detector.detect(..., output_dir=...) and lavida-detect write in each video's folder"
)
_CUT_SHORT = "an incomplete last line (a partial copy, or a video whose outputs are still written)"


def _mask_line(frame):
    return json.dumps({"frame": frame, "rle": {"size": [1, 2], "counts": [0, 2]}}) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        # A single line without its newline cannot be the cut end of whole records: it is not a record.
        ('{"frame": 0}', 1, _NOT_A_RECORD),
        ('{"frame": 0}\n', 1, _NOT_A_RECORD),
        (_mask_line(0) + '{"frame": 1}\n' + _mask_line(2), 2, _NOT_A_RECORD),
        # After a whole record, a last line without its newline is a partial copy.
        (_mask_line(0) + _mask_line(1)[:-9], 2, _CUT_SHORT),
    ],
)
def test_bad_mask_lines_are_named_by_their_number_from_one(tmp_path, text, line, problem):
    path = tmp_path / "masks.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}, line {line}: {problem}.')}$"):
        read_masks(path)


# -- overlay frames -----------------------------------------------------------------------------------------------


def test_overlay_blends_the_mask_green_and_draws_threshold_and_scores_in_a_strip():
    """A 32 x 10 frame of value 31 (one pixel 0), the mask on pixel (5, 5), threshold 0.25, scores
    [0.75, 0.0, 1.0]. Worked by hand:
      masked pixel: 0.45 * 31 + 0.55 * (40, 230, 60) = (35.95, 140.45, 46.95) -> (35, 140, 46);
      strip: max(24, 32 // 5) = 24 rows of 24; threshold row round((1 - 0.25) * 23) = round(17.25) = 17;
      scores at the last 3 columns 7, 8, 9, rows round((1 - s) * 23) = 6, 23, 0, white;
      output 32 + 24 = 56 rows (even), 10 columns (even)."""
    frame = np.full((32, 10, 3), 31, np.uint8)
    frame[0, 0] = 0
    mask = np.zeros((32, 10), bool)
    mask[5, 5] = True
    out = overlay_frame(frame, mask, [0.75, 0.0, 1.0], 0.25)
    assert out.shape == (56, 10, 3) and out.dtype == np.uint8
    expected = np.full((32, 10, 3), 31, np.uint8)
    expected[0, 0] = 0
    expected[5, 5] = (35, 140, 46)
    np.testing.assert_array_equal(out[:32], expected)
    strip = np.full((24, 10, 3), 24, np.uint8)
    strip[17, :] = (200, 60, 60)
    strip[6, 7] = strip[23, 8] = strip[0, 9] = (255, 255, 255)
    np.testing.assert_array_equal(out[32:], strip)


def test_overlay_strip_scales_with_tall_frames_and_keeps_only_the_latest_scores():
    """A 130-row frame gets a strip of 130 // 5 = 26 rows (more than 24); 6 scores on 4 columns plot the
    last 4, one per column: rows round((1 - s) * 25) for s = 0.2, 0.6, 0.8, 1.0 -> 20, 10, 5, 0. No mask
    (None, or all False) leaves the frame as it was. Threshold 1.0 draws on row 0, under the last score."""
    frame = np.full((130, 4, 3), 90, np.uint8)
    for mask in (None, np.zeros((130, 4), bool)):
        out = overlay_frame(frame, mask, [0.9, 0.9, 0.2, 0.6, 0.8, 1.0], 1.0)
        assert out.shape == (156, 4, 3)
        np.testing.assert_array_equal(out[:130], frame)
        strip = np.full((26, 4, 3), 24, np.uint8)
        strip[0, :] = (200, 60, 60)
        strip[20, 0] = strip[10, 1] = strip[5, 2] = strip[0, 3] = (255, 255, 255)
        np.testing.assert_array_equal(out[130:], strip)


def test_overlay_keeps_the_threshold_line_and_scores_outside_0_1_on_the_strip_edges():
    """overlay_frame is public, so it clips: threshold -0.5 would be row round(1.5 * 23) = 34 and score
    1.5 row round(-0.5 * 23) = -12 (numpy would take it as row 12); they are drawn on rows 23 and 0, and
    score -0.5 on row 23."""
    out = overlay_frame(np.zeros((32, 4, 3), np.uint8), None, [1.5, -0.5], -0.5)
    strip = np.full((24, 4, 3), 24, np.uint8)
    strip[23, :] = (200, 60, 60)
    strip[0, 2] = strip[23, 3] = (255, 255, 255)
    np.testing.assert_array_equal(out[32:], strip)


def test_overlay_trims_odd_sides_to_even():
    """31 rows + a 24-row strip = 55, and 11 columns: the encoders need even sides, so 54 x 10."""
    frame = np.arange(31 * 11 * 3, dtype=np.int64).reshape(31, 11, 3).astype(np.uint8)
    out = overlay_frame(frame, None, [], 0.5)
    assert out.shape == (54, 10, 3)
    np.testing.assert_array_equal(out[:31], frame[:, :10])


# -- video files ------------------------------------------------------------------------------------------------


def _codec_and_rate(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, stream.average_rate


def test_playable_codec_is_h264_where_available_else_near_lossless_mpeg4(monkeypatch, caplog):
    assert "libx264" in av.codecs_available  # the pinned PyAV has it
    assert playable_codec() == ("libx264", {"crf": "18", "preset": "veryfast"})
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    with caplog.at_level(logging.WARNING, logger="lavida.detect.outputs"):
        assert playable_codec() == ("mpeg4", {"qmin": "2", "qmax": "2"})
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING


def test_video_writer_defaults(tmp_path):
    """Without a rate the writer uses 25 fps; codec None picks playable_codec(); mpeg4 alone gets the
    near-lossless options; options given win."""
    assert VideoWriter(tmp_path / "a.mp4", fps=None).fps == 25.0
    default = VideoWriter(tmp_path / "a.mp4", fps=5)
    assert (default.codec, default.options) == ("libx264", {"crf": "18", "preset": "veryfast"})
    mpeg4 = VideoWriter(tmp_path / "a.mp4", fps=5, codec="mpeg4")
    assert mpeg4.options == {"qmin": "2", "qmax": "2"}
    assert VideoWriter(tmp_path / "a.mp4", fps=5, codec="libx264").options == {}
    assert VideoWriter(tmp_path / "a.mp4", fps=5, codec="mpeg4", options={}).options == {}


def test_video_writer_writes_every_frame_at_its_rate_and_closes_once(tmp_path):
    """Grey frames 0, 40, 80, 120 written at 7.5 fps with near-lossless mpeg4 decode within 2 of
    their value; closing twice is harmless; a writer never written to writes no file."""
    frames = np.stack([np.full((16, 16, 3), 40 * t, np.uint8) for t in range(4)])
    path = tmp_path / "a" / "b" / "o.mp4"  # folders made as needed
    writer = VideoWriter(path, fps=7.5, codec="mpeg4")
    for frame in frames:
        writer.write(frame)
    writer.close()
    writer.close()
    assert _codec_and_rate(path) == ("mpeg4", 7.5)
    decoded = decode_sequentially(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).max() <= 2
    unused = VideoWriter(tmp_path / "none.mp4", fps=5)
    unused.close()
    assert not (tmp_path / "none.mp4").exists()


def test_video_writer_without_a_rate_writes_25_fps(tmp_path):
    writer = VideoWriter(tmp_path / "o.mp4", fps=None, codec="mpeg4")
    writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.close()
    assert _codec_and_rate(tmp_path / "o.mp4") == ("mpeg4", 25)


# -- segments -----------------------------------------------------------------------------------------------------


def _interval(start, end):
    return Interval(start, end, start, 0.9, 0.9)


def _frame_indices(path):
    return grey_ramp_indices(decode_sequentially(path))


def test_segments_hold_exactly_the_frames_of_each_interval(tmp_path, caplog):
    """Intervals 1..2, 4..4 and 5..7 of an 8-frame video: segment k holds those frames, in order."""
    video = write_grey_ramp(tmp_path / "v.mp4", 8)
    intervals = [_interval(1, 2), _interval(4, 4), _interval(5, 7)]
    with caplog.at_level(logging.WARNING, logger="lavida.detect.outputs"):
        paths = cut_segments(video, intervals, tmp_path / "segments", fps=10)
    assert paths == [tmp_path / "segments" / f"segment_{k:03d}.mp4" for k in range(3)]
    assert [_frame_indices(path) for path in paths] == [[1, 2], [4], [5, 6, 7]]
    assert caplog.records == []  # the last interval ends at the last frame: nothing missing
    # Frames after the last interval end the cut: frame 3 of the video is past interval 1..2.
    (path,) = cut_segments(video, [_interval(1, 2)], tmp_path / "first", fps=10)
    assert _frame_indices(path) == [1, 2]


def test_segments_stop_at_the_last_interval_and_warn_when_the_video_is_shorter(tmp_path, caplog):
    """Intervals 0..0, 1..1 and 3..5 on a 5-frame video: frames 3 and 4 exist, frame 5 does not (5 frames
    decoded <= last end 5: warned). A last interval ending at frame 4 is complete (5 > 4: no warning)."""
    video = write_grey_ramp(tmp_path / "v.mp4", 5)
    with caplog.at_level(logging.WARNING, logger="lavida.detect.outputs"):
        paths = cut_segments(
            video, [_interval(0, 0), _interval(1, 1), _interval(3, 5)], tmp_path / "s", fps=10
        )
    assert [_frame_indices(path) for path in paths] == [[0], [1], [3, 4]]
    assert [record.getMessage() for record in caplog.records] == [
        f"{video}: only 5 frame(s) could be decoded, but the last interval ends at frame 5; its segments "
        "are short or missing."
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lavida.detect.outputs"):
        paths = cut_segments(
            video, [_interval(0, 0), _interval(2, 2), _interval(4, 4)], tmp_path / "t", fps=10
        )
    assert [_frame_indices(path) for path in paths] == [[0], [2], [4]]
    assert caplog.records == []


def test_segments_past_the_last_decodable_frame_are_not_listed(tmp_path):
    """Intervals 1..1 and 6..7 on a 5-frame video: only the first has frames, so only its file exists
    and only it is returned (the caller must not be handed a path to a file that was never written)."""
    video = write_grey_ramp(tmp_path / "v.mp4", 5)
    paths = cut_segments(video, [_interval(1, 1), _interval(6, 7)], tmp_path / "s", fps=10)
    assert paths == [tmp_path / "s" / "segment_000.mp4"]
    assert sorted(path.name for path in (tmp_path / "s").iterdir()) == ["segment_000.mp4"]


class _NoFrames:
    """What av.open gives for a video file in which no frame decodes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def decode(self, video):
        return iter(())


def test_a_video_of_no_decodable_frames_is_warned_about_with_a_count_of_zero(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(av, "open", lambda path: _NoFrames())
    video = tmp_path / "v.mp4"
    with caplog.at_level(logging.WARNING, logger="lavida.detect.outputs"):
        paths = cut_segments(video, [_interval(0, 1)], tmp_path / "s", fps=10)
    assert paths == []
    assert [record.getMessage() for record in caplog.records] == [
        f"{video}: only 0 frame(s) could be decoded, but the last interval ends at frame 1; its segments "
        "are short or missing."
    ]
    assert not (tmp_path / "s").exists()  # nothing to write


def test_no_intervals_make_no_segments_folder(tmp_path):
    video = write_grey_ramp(tmp_path / "v.mp4", 3)
    assert cut_segments(video, [], tmp_path / "segments", fps=10) == []
    assert not (tmp_path / "segments").exists()


# -- summaries ----------------------------------------------------------------------------------------------------


def test_interval_records_add_times_and_only_the_explanations_they_have():
    """Frames 2..4 at 2 fps: start_time 2 / 2 = 1.0, end_time (4 + 1) / 2 = 2.5."""
    intervals = [Interval(2, 4, 3, 0.9, 0.8), Interval(6, 6, 6, 0.7, 0.7)]
    base = [
        {"start": 2, "end": 4, "peak_frame": 3, "peak_score": 0.9, "mean_score": 0.8},
        {"start": 6, "end": 6, "peak_frame": 6, "peak_score": 0.7, "mean_score": 0.7},
    ]
    assert interval_records(intervals, fps=None) == base
    assert interval_records(intervals, fps=2.0, explanations={1: "a fight"}) == [
        {**base[0], "start_time": 1.0, "end_time": 2.5},
        {**base[1], "start_time": 3.0, "end_time": 3.5, "explanation": "a fight"},
    ]


@pytest.fixture
def plots(monkeypatch):
    """The arguments of each score plot, which is not drawn (matplotlib takes most of a second;
    tests/detect/test_detect_user_videos.py draws one)."""
    calls = []
    monkeypatch.setattr(outputs, "_plot", lambda *args: calls.append(args))
    return calls


def test_summary_files_list_the_intervals_and_scores(tmp_path, plots):
    """Scores [0.1, 0.9, 0.8, 0.2] at 2 fps with interval 1..2: summary.md shows 1 (0.50s) and the end
    at (2 + 1) / 2 = 1.50 s; '|' and newlines in an explanation would break the table row."""
    scores = np.array([0.1, 0.9, 0.8, 0.2])
    intervals = [Interval(1, 2, 1, 0.9, 0.85)]
    settings = {"threshold": 0.5, "min_interval": 1}
    summary = write_summary(
        tmp_path,
        video="v.mp4",
        scores=scores,
        intervals=intervals,
        categories=["fire", "fight"],
        fps=2.0,
        settings=settings,
        explanations={0: "a|b\nc"},
    )
    record = {
        "start": 1,
        "end": 2,
        "peak_frame": 1,
        "peak_score": 0.9,
        "mean_score": 0.85,
        "start_time": 0.5,
        "end_time": 1.5,
        "explanation": "a|b\nc",
    }
    assert summary == {
        "video": "v.mp4",
        "frames": 4,
        "fps": 2.0,
        "categories": ["fire", "fight"],
        "settings": settings,
        "max_score": 0.9,
        "intervals": [record],
    }
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert json.loads((tmp_path / "scores.json").read_text()) == {
        "video": "v.mp4",
        "fps": 2.0,
        "categories": ["fire", "fight"],
        "scores": [0.1, 0.9, 0.8, 0.2],
    }
    assert (tmp_path / "summary.md").read_text() == (
        "# v.mp4\n"
        "\n"
        "4 frames, categories: fire, fight; threshold 0.5.\n"
        "\n"
        "| # | start | end | peak score | explanation |\n"
        "|---:|---:|---:|---:|---|\n"
        "| 0 | 1 (0.50s) | 2 (ends at 1.50s) | 0.900 | a/b c |\n"
    )
    assert plots == [(tmp_path / "scores.png", scores, intervals, 0.5, "v.mp4")]


def test_summary_without_intervals_or_frame_rate(tmp_path, plots):
    """No interval: a line saying so; without fps the frames alone; scores rounded to 6 decimals."""
    scores = np.array([0.1234567, 0.2])
    summary = write_summary(
        tmp_path,
        video="cam",
        scores=scores,
        intervals=[],
        categories=["x"],
        fps=None,
        settings={"threshold": 0.5},
    )
    assert summary["max_score"] == 0.2 and summary["intervals"] == [] and summary["frames"] == 2
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == [0.123457, 0.2]
    assert (tmp_path / "summary.md").read_text() == (
        "# cam\n\n2 frames, categories: x; threshold 0.5.\n\nNo frame reached the threshold.\n"
    )
    summary = write_summary(
        tmp_path,
        video="cam",
        scores=np.array([0.1, 0.7, 0.7]),
        intervals=[Interval(1, 2, 1, 0.7, 0.7)],
        categories=["x"],
        fps=None,
        settings={"threshold": 0.5},
    )
    assert (tmp_path / "summary.md").read_text().splitlines()[-1] == "| 0 | 1 | 2 | 0.700 |  |"


def test_summary_of_no_frames_has_no_max_score(tmp_path, plots):
    """Without a threshold in the settings the plot draws its line at 0.5, the detector's default."""
    summary = write_summary(
        tmp_path, video="v", scores=np.zeros(0), intervals=[], categories=["x"], fps=None, settings={}
    )
    assert summary["max_score"] is None and summary["frames"] == 0
    assert plots[0][3] == 0.5
