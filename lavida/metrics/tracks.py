"""Ground-truth RBDC/TBDC tracks from UBnormal's per-frame object-id maps.

UBnormal (lilygeorgescu/UBnormal) annotates every frame of an abnormal video with a grey map of object
ids (0 = background) and lists the anomalous objects in ``{video}_tracks.txt`` as
``object_id,start_frame,end_frame`` (inclusive). The authors' ``scripts/create_tracks_for_tbdc_rbdc.py``
(``research/vad_eval.md`` §1.1, ``research/lavida_official.md`` §11) turns them into RBDC tracks: for
each listed object and each frame of its interval, the box of the **largest** contour (by bounding
rectangle area) of ``map == object_id``, written with an exclusive ``x_max = x + w``; tracks are
renumbered ``0 .. n-1`` in object-id order.

What we do, and why:

* default ``box="union"``: the inclusive bounds of *all* pixels of the id. An object split by an
  occluder (a person behind a pole, a car behind a tree) is still one object, and its ground-truth
  region should cover it; the largest piece alone would make a detector that boxes the whole object
  miss the IoU. ``box="largest_component"`` reproduces the reference's choice (8-connected components,
  largest bounding box; on equal areas the first in raster order, where OpenCV's contour order may
  pick another);
* inclusive ``x_max``/``y_max`` by default, the convention of the RBDC IoU; ``exclusive_max=True``
  writes the reference's ``x + w`` (one more) to reproduce its files exactly;
* a frame where the object has no pixel (the reference crashes there) gives no region:
  ``missing="skip"`` (default, logged) or ``"raise"``. A skipped frame also shortens the track for
  TBDC's ``alpha`` fraction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = ["object_boxes", "tracks_from_id_maps"]

logger = logging.getLogger(__name__)

BoxRule = Literal["union", "largest_component"]
Box = tuple[int, int, int, int]
IdMaps = Callable[[int], ArrayLike] | Sequence[ArrayLike] | Mapping[int, ArrayLike] | np.ndarray

_EIGHT = np.ones((3, 3), dtype=bool)


def object_boxes(
    id_map: ArrayLike, object_ids: Iterable[int], *, box: BoxRule = "union"
) -> dict[int, Box | None]:
    """Inclusive bounding box of each requested object id in one id map.

    Args:
        id_map: ``(H, W)`` integer map of object ids, 0 = background.
        object_ids: Ids to look up (positive integers).
        box: ``"union"``: bounds of all of the id's pixels. ``"largest_component"``: bounds of the
            8-connected component with the largest bounding box area (UBnormal reference script).

    Returns:
        ``{object_id: (x_min, y_min, x_max, y_max) or None}``; ``None`` when the id has no pixel.

    Raises:
        ValueError: If the map is not 2-D integer, an id is not a positive integer, or ``box`` is unknown.
    """
    arr = np.asarray(id_map)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"object_boxes: id_map must be a 2-D integer array of object ids, got shape {arr.shape} and dtype "
            f"{arr.dtype} (read the *_gt.png maps as single-channel greyscale)."
        )
    if box not in ("union", "largest_component"):
        raise ValueError(f"object_boxes: box must be 'union' or 'largest_component', got {box!r}.")
    ids = [int(i) for i in object_ids]
    if any(i <= 0 for i in ids):
        raise ValueError(f"object_boxes: object ids must be positive (0 is background), got {ids}.")
    result: dict[int, Box | None] = {}
    if not ids:
        return result
    if box == "union":
        # One pass over the map: find_objects gives, for every value 1..max, the bounds of its pixels.
        slices = ndimage.find_objects(arr.astype(np.intp, copy=False), max_label=max(ids))
        for i in ids:
            sl = slices[i - 1]
            result[i] = None if sl is None else (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)
        return result
    for i in ids:
        labels, n = ndimage.label(arr == i, structure=_EIGHT)
        if n == 0:
            result[i] = None
            continue
        comps = ndimage.find_objects(labels)
        # Area of the bounding rectangle (w * h), as cv.boundingRect in the reference; ties: first.
        areas = [(s[1].stop - s[1].start) * (s[0].stop - s[0].start) for s in comps]
        sl = comps[int(np.argmax(areas))]
        result[i] = (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)
    return result


def tracks_from_id_maps(
    id_maps: IdMaps,
    anomalies: ArrayLike,
    *,
    box: BoxRule = "union",
    exclusive_max: bool = False,
    missing: Literal["skip", "raise"] = "skip",
    where: str | None = None,
) -> NDArray[np.int64]:
    """RBDC/TBDC ground-truth tracks of one UBnormal video.

    Args:
        id_maps: The video's id maps, indexable by frame index: a ``(T, H, W)`` array, a sequence or
            mapping of ``(H, W)`` maps, or a callable ``frame -> (H, W) map`` (to read PNGs lazily).
            Each needed frame is fetched once.
        anomalies: ``(K, 3)`` rows ``(object_id, start_frame, end_frame)``, inclusive, as in
            ``{video}_tracks.txt`` (one ``(3,)`` row or an empty array also work).
        box: How a frame's region is boxed, see :func:`object_boxes`.
        exclusive_max: Write ``x_max + 1``, ``y_max + 1`` (the reference's ``x + w``) instead of inclusive bounds.
        missing: A frame without pixels of the object: ``"skip"`` it (logged) or ``"raise"``.
        where: What the anomalies came from (e.g. the tracks file), put first in the warning and the error
            so that one video among hundreds loaded in parallel can be found.

    Returns:
        ``(N, 6)`` int64 rows ``(track_id, frame, x_min, y_min, x_max, y_max)`` sorted by track then
        frame; track ids ``0 .. K-1`` follow the rows sorted by object id (stable), as the reference
        numbers them. ``(0, 6)`` when ``anomalies`` is empty.

    Raises:
        ValueError: On malformed ``anomalies`` (width, non-integers, start > end, negative frames, id <= 0)
            or, with ``missing="raise"``, on a frame where an object has no pixel.
    """
    if missing not in ("skip", "raise"):
        raise ValueError(f"tracks_from_id_maps: missing must be 'skip' or 'raise', got {missing!r}.")
    prefix = f"{where}: tracks_from_id_maps" if where else "tracks_from_id_maps"
    rows = np.asarray(anomalies, dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, 6), dtype=np.int64)
    if rows.ndim == 1 and rows.shape[0] == 3:
        rows = rows[None]
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise ValueError(
            f"tracks_from_id_maps: anomalies must have shape (K, 3) with rows (object_id, start, end), "
            f"got shape {rows.shape}."
        )
    if not np.isfinite(rows).all() or (rows != np.round(rows)).any():
        raise ValueError("tracks_from_id_maps: anomalies must hold whole numbers (object_id, start, end).")
    rows = rows.astype(np.int64)
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    bad = (rows[:, 0] <= 0) | (rows[:, 1] < 0) | (rows[:, 1] > rows[:, 2])
    if bad.any():
        raise ValueError(
            f"tracks_from_id_maps: anomaly row {rows[bad][0].tolist()} is invalid; expected object_id >= 1 and "
            "0 <= start <= end (inclusive frame interval)."
        )

    # Which objects are needed in which frame, so that every map is fetched once.
    needed: dict[int, list[int]] = {}
    for track_id, (_obj, start, end) in enumerate(rows):
        for frame in range(int(start), int(end) + 1):
            needed.setdefault(frame, []).append(track_id)
    get = id_maps if callable(id_maps) else id_maps.__getitem__
    out: list[tuple[int, int, int, int, int, int]] = []
    skipped: dict[int, int] = {}  # track -> frames without a pixel of its object
    for frame in sorted(needed):
        tracks = needed[frame]
        boxes = object_boxes(get(frame), {int(rows[t, 0]) for t in tracks}, box=box)
        for t in tracks:
            b = boxes[int(rows[t, 0])]
            if b is None:
                if missing == "raise":
                    raise ValueError(
                        f"{prefix}: object {int(rows[t, 0])} has no pixel in frame {frame}, inside its "
                        f"anomaly interval [{int(rows[t, 1])}, {int(rows[t, 2])}]."
                    )
                skipped[t] = skipped.get(t, 0) + 1
                continue
            out.append((t, frame, *b))
    if skipped:
        # Per object, so that a wrong id (in no frame at all: the whole track vanishes from RBDC/TBDC and
        # from the pixel ground truth) stands out from an object briefly hidden behind another.
        details = "; ".join(
            f"object {int(rows[t, 0])} [{int(rows[t, 1])}, {int(rows[t, 2])}] (track {t}) in {n} of its "
            f"{int(rows[t, 2] - rows[t, 1]) + 1} frames"
            for t, n in sorted(skipped.items())
        )
        logger.warning(
            "%s: %d (track, frame) pairs had no pixel of their object and were skipped: %s.",
            prefix,
            sum(skipped.values()),
            details,
        )
    result = np.array(out, dtype=np.int64).reshape(-1, 6)
    result = result[np.lexsort((result[:, 1], result[:, 0]))]
    if exclusive_max:
        result[:, 4:6] += 1
    return result
