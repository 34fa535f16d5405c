"""Frame streams for detection: files and frame folders, network streams and capture devices.

Files and folders are decoded in batches through ``lavida.data.video`` (decord); files decord cannot
open (AV1, unusual codecs) or seek in correctly, RTSP/HTTP/UDP URLs and capture devices are read frame
by frame with PyAV.
Either way frames arrive one at a time and nothing holds more than one batch, so memory does not grow
with the video's length.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from lavida.data.video import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    DecordVideo,
    VideoReadError,
    open_video,
    unreadable_video_error,
)
from lavida.file_names import safe_file_name

log = logging.getLogger(__name__)

_URL = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt)://", re.IGNORECASE)


@dataclass
class FrameStream:
    """A named sequence of frames.

    Attributes:
        name: For output folders (see :func:`stream_name`).
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


def stream_name(source: str | Path) -> str:
    """The output folder name of one source, on its own (:func:`output_names` separates clashes).

    A file's stem (``street.mp4`` → ``street``); a frame folder's full name (``cam1.part1`` stays
    ``cam1.part1``: its dots are not a suffix; ``.`` and ``..`` are named as the folders they mean); a URL
    or device with everything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``
    (``rtsp://cam/live`` → ``cam_live``). A name of dots only (the stem of ``..mp4`` is ``.``) becomes
    ``video`` (``stream`` for a URL): ``<output_dir>/.`` is the output folder itself, which the video's
    folder would replace whole, and ``<output_dir>/..`` its parent.
    """
    text = str(source)
    if is_live(text):
        name, fallback = safe_file_name(text.split("://", 1)[-1]).strip("_"), "stream"
    else:
        path, fallback = Path(text), "video"
        # abspath, not resolve: "." and "a/.." get the name of the folder they mean, and a symbolic link
        # keeps its own name.
        name = Path(os.path.abspath(path)).name if path.is_dir() else path.stem or path.name
    return name if name.strip(".") else fallback


def output_names(sources: Sequence[str | Path]) -> list[str]:
    """Distinct output folder names for the videos of one run, in the order given.

    Each source gets :func:`stream_name`. Where several would get the same name (``a.mp4`` and ``a.avi``
    in one folder, or a frame folder ``a`` beside ``a.mp4``), each of those files keeps its suffix after
    an underscore (``a_mp4``, ``a_avi``) while a folder or URL keeps its name; a name still taken after
    that gets ``_2``, ``_3``, ... in input order. Names are compared ignoring case (``A`` and ``a`` are one
    folder on macOS and Windows). Without clashes every source keeps its plain name, so a single input
    is always named by :func:`stream_name`.
    """
    sources = [str(source) for source in sources]
    names = [stream_name(source) for source in sources]
    counts = Counter(name.casefold() for name in names)
    for i, source in enumerate(sources):
        path = Path(source)
        if counts[names[i].casefold()] > 1 and not is_live(source) and path.is_file() and path.suffix:
            names[i] = f"{names[i]}_{path.suffix[1:]}"
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, number = name, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique


def open_stream(
    source: str | Path, *, fps: float | None = None, batch: int = 32, max_frames: int | None = None
) -> FrameStream:
    """Open a video file, a frame folder, a URL or a device as a :class:`FrameStream`.

    A file decord cannot open (AV1, unusual codecs) or cannot seek in correctly (reordered frames outside
    H.264 in MP4/Matroska, see ``lavida.data.video.DecordVideo``) is read with PyAV frame by frame, in
    order, in one pass (``lavida.data.video.PyAVVideo`` would decode it once more to count its frames). A
    file whose frames' timestamps stray more than a frame from frame / average fps (a variable frame rate)
    is named in a warning: lavida-detect's times assume a constant rate.

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
    path = Path(text)
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        try:
            video = DecordVideo(path)
        except VideoReadError as decord_error:
            log.info("decord does not read %s (%s); reading it with PyAV, frame by frame", path, decord_error)
            return _pyav_file(path, decord_error, max_frames=max_frames)
    else:
        video = open_video(path, fps=fps)  # a frame folder, or the error for a missing path or an image
    total = len(video) if max_frames is None else min(len(video), max_frames)
    if isinstance(video, DecordVideo) and video.fps:
        times = video.frame_times()
        if times is not None and total:
            errors = np.abs(times[:total] - times[0] - np.arange(total) / video.fps)
            worst = int(errors.argmax())
            if errors[worst] > 1 / video.fps:
                _warn_variable_rate(path, worst, float(times[worst] - times[0]), video.fps)

    def frames() -> Iterator[np.ndarray]:
        for start in range(0, total, batch):
            yield from video.get_frames(np.arange(start, min(start + batch, total)))

    # A frame folder's rate is the caller's (an int, a numpy float): the stream's is a float, as a file's is.
    fps = None if video.fps is None else float(video.fps)
    return FrameStream(name=stream_name(text), frames=frames(), fps=fps, num_frames=total)


def _warn_variable_rate(path: Path, frame: int, time_s: float, fps: float) -> None:
    log.warning(
        "%s: variable frame rate (or a wrong rate in the file): frame %d is shown at %.2f s, but "
        "lavida-detect's times (time_s, start_time, end_time) are frame / average fps = %d / %.3g = "
        "%.2f s; use frame numbers, or re-encode the video at a constant rate (ffmpeg -i IN -fps_mode "
        "cfr OUT.mp4).",
        path,
        frame,
        time_s,
        frame,
        fps,
        frame / fps,
    )


def _pyav_file(path: Path, decord_error: VideoReadError, *, max_frames: int | None) -> FrameStream:
    """A file decord cannot open, read with PyAV in order: memory holds one frame at a time."""
    import av

    try:
        container = av.open(str(path))
    except Exception as error:  # av raises many error classes (InvalidDataError, codec errors, ...)
        raise unreadable_video_error(path, decord_error, error) from error
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: the file has no video stream.")
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None
    total = stream.frames or None  # as the container states it (0: not stated); for the progress bar
    if total is not None and max_frames is not None:
        total = min(total, max_frames)
    frames = _decode(container, stream, str(path), max_frames=max_frames, check_rate=True)
    # The first frame is decoded now, so that a file neither decoder reads is refused here, as
    # open_video refuses it, with both decoders' reasons, and not midway through its outputs.
    try:
        first = [next(frames)] if max_frames != 0 else []
    except StopIteration:
        raise VideoReadError(f"{path}: the video has no frames.") from None
    except VideoReadError as error:
        raise unreadable_video_error(path, decord_error, error.__cause__ or error) from error
    return FrameStream(name=stream_name(path), frames=chain(first, frames), fps=fps, num_frames=total)


def _decode(
    container, stream, source: str, *, max_frames: int | None, check_rate: bool
) -> Iterator[np.ndarray]:
    """The frames of ``stream``, decoded one at a time; closes ``container`` when done or closed.

    With ``check_rate``, the first frame shown more than a frame away from frame / average fps is
    named in a warning (a variable frame rate).
    """
    fps = float(stream.average_rate) if stream.average_rate else None
    start, warned = None, not (check_rate and fps)
    try:
        count = 0
        for frame in container.decode(stream):
            if not warned and frame.time is not None:
                start = frame.time if start is None else start
                if abs(frame.time - start - count / fps) > 1 / fps:
                    _warn_variable_rate(Path(source), count, frame.time - start, fps)
                    warned = True
            yield frame.to_ndarray(format="rgb24")
            count += 1
            if max_frames is not None and count >= max_frames:
                break  # before decoding another frame: a live stream may send none for a while
    except Exception as error:  # av raises many error classes
        raise VideoReadError(f"{source}: decoding failed after {count} frame(s) ({error}).") from error
    finally:
        container.close()


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
    frames = _decode(container, stream, source, max_frames=max_frames, check_rate=False)
    return FrameStream(name=stream_name(source), frames=frames, fps=fps, num_frames=None)


def expand_inputs(source: str | Path) -> list[str]:
    """The videos an ``input=`` names: a URL/device, a video file, a folder of frames (one video), or a
    folder of videos and/or frame folders (each one video), in name order.

    A folder that holds video files is a folder of videos even if images lie beside them (a
    ``thumbnail.jpg``): those images are ignored, with a warning that says how many. Files that are
    neither videos (``VIDEO_SUFFIXES``) nor images are ignored too, with a warning that names them. Give
    each video its own output name with :func:`output_names`.

    Raises:
        VideoReadError: no such path; a folder with nothing to read; or a folder with images and frame
            folders but no videos, which could be one video or several (the message names both).
    """
    text = str(source)
    if is_live(text):
        return [text]
    path = Path(source)
    if path.is_file():
        return [text]
    if not path.is_dir():
        raise VideoReadError(f"{path}: no such file, folder, URL or device.")
    children = sorted(child for child in path.iterdir() if not child.name.startswith("."))
    videos = [child for child in children if child.is_file() and child.suffix.lower() in VIDEO_SUFFIXES]
    images = [child for child in children if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES]
    folders = [child for child in children if child.is_dir() and _holds_images(child)]
    if images and not videos:
        if folders:
            # Either the images are one video and the subfolders are extra (masks?), or the images are
            # strays (a preview.jpg) beside frame folders: guessing wrong drops videos unseen.
            raise VideoReadError(
                f"{path}: holds {len(images)} image file(s) ({_names(images)}) beside {len(folders)} "
                f"frame folder(s) ({_names(folders)}), so it is unclear whether it is one video or a folder "
                "of videos. To process the frame folders, move the images out (or into a subfolder of "
                "their own); to process the images as one video, move the subfolders out."
            )
        return [text]  # a folder of frames is one video
    if images:
        log.warning(
            "%s: ignoring %d image file(s) beside its %d video file(s); to process frames, put them in "
            "a subfolder of their own.",
            path,
            len(images),
            len(videos),
        )
    known = set(videos + images)
    others = [child for child in children if child.is_file() and child not in known]
    if others:
        log.warning(
            "%s: ignoring %d file(s) that are neither videos nor images: %s (video files end in %s).",
            path,
            len(others),
            _names(others),
            ", ".join(VIDEO_SUFFIXES),
        )
    empty = [child for child in children if child.is_dir() and child not in folders]
    if empty:
        log.warning(
            "%s: ignoring %d subfolder(s) that hold no frames: %s (subfolders are not searched for videos; "
            "give such a folder as input of its own).",
            path,
            len(empty),
            _names(empty),
        )
    entries = [str(child) for child in children if child in videos or child in folders]  # in name order
    if not entries:
        raise VideoReadError(f"{path}: the folder holds no video files, frames or frame folders.")
    return entries


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    """``a.jpg, b.jpg`` — the first ``limit`` names, then how many more."""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(p.name for p in paths[:limit]) + more


def _holds_images(folder: Path) -> bool:
    # Not list_frame_files: a folder it rejects (two files for one frame) must still be listed, so
    # that lavida-detect skips it with the reason in index.json instead of dropping it unseen.
    return any(
        child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES and not child.name.startswith(".")
        for child in folder.iterdir()
    )
