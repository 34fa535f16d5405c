"""Frame streams for detection: files and frame folders, network streams and capture devices.

Files and folders are decoded in batches through ``lavida.data.video`` (decord, PyAV as fallback);
RTSP/HTTP/UDP URLs and capture devices are read frame by frame with PyAV. Either way frames arrive
one at a time and nothing holds more than one batch, so memory does not grow with the video's length.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lavida.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReadError, list_frame_files, open_video

log = logging.getLogger(__name__)

_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt)://", re.IGNORECASE)


@dataclass
class FrameStream:
    """A named sequence of frames.

    Attributes:
        name: For output folders (the file or folder stem, or a sanitised URL).
        frames: Iterator of (H, W, 3) uint8 frames, in order.
        fps: Frame rate if known.
        num_frames: Length if known (None for live streams).
    """

    name: str
    frames: Iterator[np.ndarray]
    fps: float | None
    num_frames: int | None


def is_live(source: str) -> bool:
    """True for network URLs and capture devices (``/dev/video*``, ``device:N``)."""
    return bool(_URL.match(source)) or source.startswith("/dev/video") or source.startswith("device:")


def open_stream(
    source: str | Path, *, fps: float | None = None, batch: int = 32, max_frames: int | None = None
) -> FrameStream:
    """Open a video file, a frame folder, a URL or a device as a :class:`FrameStream`.

    Args:
        source: Path, URL (rtsp://, http://, ...) or device (``/dev/video0``, ``device:0``).
        fps: Frame rate for frame folders (they store none).
        batch: Frames decoded per call for files.
        max_frames: Stop after this many frames (live streams never end by themselves).

    Raises:
        VideoReadError: the source cannot be opened or decoded (the message names it).
    """
    text = str(source)
    if is_live(text):
        return _live(text, max_frames=max_frames)
    video = open_video(source, fps=fps)

    def frames() -> Iterator[np.ndarray]:
        end = len(video) if max_frames is None else min(len(video), max_frames)
        for start in range(0, end, batch):
            yield from video.get_frames(np.arange(start, min(start + batch, end)))

    total = len(video) if max_frames is None else min(len(video), max_frames)
    return FrameStream(
        name=Path(text).stem or Path(text).name, frames=frames(), fps=video.fps, num_frames=total
    )


def _live(source: str, *, max_frames: int | None) -> FrameStream:
    import av

    options = {"rtsp_transport": "tcp"} if source.lower().startswith("rtsp") else {}
    try:
        if source.startswith("device:"):
            container = av.open(f"/dev/video{source.split(':', 1)[1]}", format="v4l2")
        elif source.startswith("/dev/video"):
            container = av.open(source, format="v4l2")
        else:
            container = av.open(source, options=options, timeout=10.0)
    except Exception as error:  # av raises many error classes
        raise VideoReadError(f"{source}: cannot open the stream ({error}).") from error
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{source}: the stream has no video track.")
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None

    def frames() -> Iterator[np.ndarray]:
        try:
            for count, frame in enumerate(container.decode(stream)):
                if max_frames is not None and count >= max_frames:
                    break
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", source.split("://", 1)[-1]).strip("_") or "stream"
    return FrameStream(name=name, frames=frames(), fps=fps, num_frames=None)


def expand_inputs(source: str | Path) -> list[str]:
    """The videos an ``input=`` names: a URL/device, a video file, a folder of frames (one video), or a
    folder of videos and/or frame folders (each one video), in name order."""
    text = str(source)
    if is_live(text):
        return [text]
    path = Path(source)
    if path.is_file():
        return [text]
    if not path.is_dir():
        raise VideoReadError(f"{path}: no such file, folder, URL or device.")
    has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if not p.name.startswith("."))
    if has_images:
        return [text]  # a folder of frames is one video
    entries = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix.lower() in VIDEO_SUFFIXES:
            entries.append(str(child))
        elif child.is_dir() and list_frame_files(child):
            entries.append(str(child))
    if not entries:
        raise VideoReadError(f"{path}: the folder holds no video files, frames or frame folders.")
    return entries
