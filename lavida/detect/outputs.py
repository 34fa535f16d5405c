"""What ``lavida-detect`` writes per video, streamed frame by frame.

<out>/<video>/scores.csv       frame, time_s, score, anomalous (time_s = frame / fps, see below)
<out>/<video>/scores.jsonl     one JSON object per frame, flushed as soon as the frame is final
<out>/<video>/scores.json      all scores at once (written at the end)
<out>/<video>/masks.jsonl      one line per frame: {"frame": i, "rle": COCO RLE of score ≥ threshold}
<out>/<video>/overlay.mp4      frames with the predicted mask (green) and the score curve
<out>/<video>/segments/*.mp4   (save="anomalous") segment_k.mp4: the overlay of summary interval k only
<out>/<video>/scores.png       score plot with the threshold line and detected intervals
<out>/<video>/summary.json     intervals (start, end, peak score), categories, settings
<out>/<video>/summary.md       the same, for people

While a video runs, these files are written into a hidden staging folder beside its folder,
``<out>/.<video>.<host>.<pid>.<random>.tmp/``, which replaces ``<out>/<video>/`` as a whole when the video
is done (``lavida.atomic.atomic_dir``): follow a running video's scores.jsonl there (``tail -f``). A
run that fails leaves the earlier ``<out>/<video>/`` as it was and deletes its staging folder (one left
by a killed process goes at the next run of that video on the same machine); a live stream stopped
with Ctrl-C is finished normally.

Times (``time_s``, intervals' ``start_time``/``end_time``) assume a constant frame rate: frame index /
the video's average fps, not the frames' own timestamps. On a variable-frame-rate file they are off
(``lavida.detect.stream.open_stream`` logs a warning when the timestamps stray by more than a frame);
frame numbers are not affected.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lavida.atomic import write_json, write_text
from lavida.data.sources.masks import decode_rle, encode_rle
from lavida.data.video import MPEG4_NEAR_LOSSLESS, video_rate
from lavida.detect.intervals import Interval

log = logging.getLogger(__name__)


class ScoreWriter:
    """scores.csv and scores.jsonl, one row per frame, flushed as frames become final.

    ``time_s`` is frame / ``fps`` (a constant rate is assumed; empty without ``fps``).
    """

    def __init__(self, folder: Path, *, fps: float | None, threshold: float) -> None:
        self.fps, self.threshold = fps, threshold
        self._csv_file = (folder / "scores.csv").open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["frame", "time_s", "score", "anomalous"])
        self._jsonl = (folder / "scores.jsonl").open("w", encoding="utf-8")

    def write(self, index: int, score: float) -> None:
        time_s = index / self.fps if self.fps else None
        anomalous = int(score >= self.threshold)
        self._csv.writerow([index, "" if time_s is None else f"{time_s:.3f}", f"{score:.6f}", anomalous])
        record = {"frame": index, "time_s": time_s, "score": round(score, 6), "anomalous": bool(anomalous)}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        self._csv_file.close()
        self._jsonl.close()


class MaskWriter:
    """masks.jsonl: the binary mask of every frame as a COCO RLE (the detector writes probability ≥ its
    threshold)."""

    def __init__(self, folder: Path) -> None:
        self._file = (folder / "masks.jsonl").open("w", encoding="utf-8")

    def write(self, index: int, mask: np.ndarray) -> None:
        self._file.write(json.dumps({"frame": index, "rle": encode_rle(mask)}) + "\n")

    def close(self) -> None:
        self._file.close()


def read_masks(path: str | Path) -> dict[int, np.ndarray]:
    """masks.jsonl → {frame: (H, W) bool}.

    Raises:
        ValueError: a line is not a mask record (another of the video's files given, say), or the last one
            is cut short (a partial copy); naming the file and the line.
    """
    masks = {}
    with Path(path).open("rb") as handle:  # bytes: another (binary) file is named, not a bare decode error
        for number, raw in enumerate(handle, start=1):
            try:
                entry = json.loads(raw.decode("utf-8"))
                height, width = entry["rle"]["size"]
                masks[entry["frame"]] = decode_rle(entry["rle"], (height, width))
            except (ValueError, KeyError, TypeError) as error:
                # Only a file's last line can lack its newline: after whole records, a partial copy.
                if not raw.endswith(b"\n") and number > 1:
                    problem = (
                        "an incomplete last line (a partial copy, or a video whose outputs are still written)"
                    )
                else:
                    problem = (
                        f"not a mask record {{frame, rle: {{size, counts}}}} ({type(error).__name__}); "
                        "read_masks reads the masks.jsonl that Detector.detect(..., output_dir=...) and "
                        "lavida-detect write in each video's folder"
                    )
                raise ValueError(f"{path}, line {number}: {problem}.") from error
    return masks


def overlay_frame(
    frame: np.ndarray, mask: np.ndarray | None, history: list[float], threshold: float
) -> np.ndarray:
    """The frame with the mask blended in green and a strip below plotting recent scores.

    Returns (H + strip, W, 3) uint8 with even sides (video encoders need them).
    """
    image = frame.astype(np.float32)
    if mask is not None and mask.any():
        image[mask] = 0.45 * image[mask] + 0.55 * np.array([40, 230, 60], dtype=np.float32)
    height, width = frame.shape[:2]
    strip_height = max(24, height // 5)
    strip = np.full((strip_height, width, 3), 24, dtype=np.float32)
    # Clipped: Detector refuses thresholds outside [0, 1], but overlay_frame is public.
    line_y = min(max(int(round((1 - threshold) * (strip_height - 1))), 0), strip_height - 1)
    strip[line_y, :] = (200, 60, 60)
    recent = history[-width:]
    xs = np.arange(width - len(recent), width)
    ys = np.clip(np.round((1 - np.asarray(recent)) * (strip_height - 1)).astype(int), 0, strip_height - 1)
    strip[ys, xs] = (255, 255, 255)
    composed = np.concatenate([image, strip], axis=0).clip(0, 255).astype(np.uint8)
    even_h, even_w = composed.shape[0] // 2 * 2, composed.shape[1] // 2 * 2
    return composed[:even_h, :even_w]


# H.264 plays in browsers, notebooks and editors, where MPEG-4 part 2 plays only in VLC-like players.
# CRF 18 is visually lossless; "veryfast" keeps encoding far below the model's time per frame.
PLAYABLE_CODEC, PLAYABLE_OPTIONS = "libx264", {"crf": "18", "preset": "veryfast"}
FALLBACK_CODEC, FALLBACK_OPTIONS = "mpeg4", MPEG4_NEAR_LOSSLESS


def playable_codec() -> tuple[str, dict[str, str]]:
    """H.264 where this PyAV build has libx264 (the pinned one does), else near-lossless MPEG-4 part 2."""
    import av

    if PLAYABLE_CODEC in av.codecs_available:
        return PLAYABLE_CODEC, dict(PLAYABLE_OPTIONS)
    log.warning(
        "This PyAV build has no libx264 encoder: overlays are written as MPEG-4 part 2, which browsers and "
        "notebooks do not play (VLC does). Install the PyAV of requirements.lock for H.264."
    )
    return FALLBACK_CODEC, dict(FALLBACK_OPTIONS)


class VideoWriter:
    """An mp4 written frame by frame with PyAV (opened lazily on the first frame).

    Args:
        path: The file to write.
        fps: Frame rate, kept exact (7.5 stays 7.5, see ``video_rate``); 25 when unknown.
        codec: The encoder; by default H.264 (:func:`playable_codec`).
        options: Encoder options; by default those of the codec chosen (quantiser 2 for near-lossless
            ``mpeg4``: ``MPEG4_NEAR_LOSSLESS``).
    """

    def __init__(
        self,
        path: Path,
        *,
        fps: float | None,
        codec: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        self.path, self.fps = path, fps or 25.0
        if codec is None:
            codec, default_options = playable_codec()
        else:
            default_options = dict(FALLBACK_OPTIONS) if codec == FALLBACK_CODEC else {}
        self.codec, self.options = codec, options if options is not None else default_options
        self._container = self._stream = None

    def write(self, frame: np.ndarray) -> None:
        import av

        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), "w")
            self._stream = self._container.add_stream(self.codec, rate=video_rate(self.fps))
            self._stream.height, self._stream.width = frame.shape[:2]
            self._stream.pix_fmt = "yuv420p"
            if self.options:
                self._stream.options = dict(self.options)
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None


def cut_segments(
    video: Path, intervals: Sequence[Interval], folder: Path, *, fps: float | None
) -> list[Path]:
    """Copy the frames of interval k of ``video`` to ``<folder>/segment_<k:03d>.mp4``, for every k.

    ``video`` is decoded once, front to back, so memory holds one frame whatever its length. Frame
    indices count the decoded frames from 0, as the intervals do.

    Returns:
        The segment files written, in interval order (none, and no folder, without intervals). An
        interval that starts past the last decodable frame has no file and is not listed; a warning
        says so.
    """
    import av

    paths = [folder / f"segment_{number:03d}.mp4" for number in range(len(intervals))]
    if not paths:
        return paths
    number, writer, decoded = 0, None, 0
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            decoded = index + 1
            while number < len(intervals) and index > intervals[number].end:
                if writer is not None:
                    writer.close()
                    writer = None
                number += 1
            if number == len(intervals):
                break
            if index >= intervals[number].start:
                writer = writer or VideoWriter(paths[number], fps=fps)
                writer.write(frame.to_ndarray(format="rgb24"))
    if writer is not None:
        writer.close()
    if decoded <= intervals[-1].end:
        log.warning(
            "%s: only %d frame(s) could be decoded, but the last interval ends at frame %d; its segments "
            "are short or missing.",
            video,
            decoded,
            intervals[-1].end,
        )
    return [path for path in paths if path.exists()]


def interval_records(
    intervals: Sequence[Interval], *, fps: float | None, explanations: dict[int, str] | None = None
) -> list[dict]:
    """Intervals as summary.json and lavida-detect's index.json list them: ``Interval.to_dict(fps)``,
    plus ``explanation`` where interval k has one (``explanations[k]``)."""
    explanations = explanations or {}
    return [
        {**interval.to_dict(fps), **({"explanation": explanations[i]} if i in explanations else {})}
        for i, interval in enumerate(intervals)
    ]


def write_summary(
    folder: Path,
    *,
    video: str,
    scores: np.ndarray,
    intervals: list[Interval],
    categories: list[str],
    fps: float | None,
    settings: dict,
    explanations: dict[int, str] | None = None,
) -> dict:
    """summary.json, summary.md, scores.json and scores.png for one video."""
    summary = {
        "video": video,
        "frames": int(scores.size),
        "fps": fps,
        "categories": categories,
        "settings": settings,
        "max_score": float(scores.max()) if scores.size else None,
        "intervals": interval_records(intervals, fps=fps, explanations=explanations),
    }
    write_json(folder / "summary.json", summary, indent=1)
    write_json(
        folder / "scores.json",
        {"video": video, "fps": fps, "categories": categories, "scores": scores.round(6).tolist()},
        indent=1,
    )
    lines = [
        f"# {video}",
        "",
        f"{scores.size} frames, categories: {', '.join(categories)}; threshold {settings.get('threshold')}.",
        "",
    ]
    if intervals:
        lines += ["| # | start | end | peak score | explanation |", "|---:|---:|---:|---:|---|"]
        for i, interval in enumerate(intervals):
            # The end column is the last frame, shown at end / fps; the interval ends a frame later, at
            # end_time = (end + 1) / fps, which "19 (2.00s)" at 10 fps passed off as frame 19's time.
            span = (
                f"{interval.start} ({interval.start / fps:.2f}s)" if fps else str(interval.start),
                f"{interval.end} (ends at {(interval.end + 1) / fps:.2f}s)" if fps else str(interval.end),
            )
            note = (explanations or {}).get(i, "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {i} | {span[0]} | {span[1]} | {interval.peak_score:.3f} | {note} |")
    else:
        lines.append("No frame reached the threshold.")
    write_text(folder / "summary.md", "\n".join(lines) + "\n")
    _plot(folder / "scores.png", scores, intervals, settings.get("threshold", 0.5), video)
    return summary


def _plot(path: Path, scores: np.ndarray, intervals: list[Interval], threshold: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 2.4))
    for interval in intervals:
        # Scores are drawn at x = frame: half a frame either side shades the interval's points and no
        # other (start..end + 1 took in the next frame, below the threshold).
        axis.axvspan(interval.start - 0.5, interval.end + 0.5, color="pink", alpha=0.6, linewidth=0)
    axis.plot(np.arange(scores.size), scores, color="tab:blue", linewidth=1.2, label="anomaly score")
    axis.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    axis.set_ylim(0, 1)
    axis.set_xlabel("frame")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
