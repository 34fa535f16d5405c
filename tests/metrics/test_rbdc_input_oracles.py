"""The inputs of RBDC/TBDC: extract_regions and the UBnormal track builder against flood-fill loops.

The oracles walk the pixels one by one (a stack-based flood fill for connected components, a scan for
bounds); they share nothing with the scipy.ndimage calls the library makes.
"""

from __future__ import annotations

import numpy as np
import pytest

from lavida.metrics import extract_regions, object_boxes, tracks_from_id_maps

FOUR = ((-1, 0), (1, 0), (0, -1), (0, 1))
EIGHT = FOUR + ((-1, -1), (-1, 1), (1, -1), (1, 1))


def flood_components(mask, connectivity):
    """Connected components of a 2-D bool mask, each a list of (y, x), in raster order of first pixel."""
    steps = EIGHT if connectivity == 8 else FOUR
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for y in range(height):
        for x in range(width):
            if not mask[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            stack, members = [(y, x)], []
            while stack:
                cy, cx = stack.pop()
                members.append((cy, cx))
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            components.append(members)
    return components


def bounds(members):
    ys = [p[0] for p in members]
    xs = [p[1] for p in members]
    return min(xs), min(ys), max(xs), max(ys)


def regions_oracle(maps, thresholds, score, min_area, connectivity, frames):
    rows = []
    for level in thresholds:
        for t, frame in enumerate(frames):
            for members in flood_components(maps[t] >= level, connectivity):
                if len(members) < min_area:
                    continue
                values = [maps[t][p] for p in members]
                value = {"max": max(values), "mean": sum(values) / len(values), "threshold": level}[score]
                rows.append([frame, *bounds(members), value])
    return np.array(rows, dtype=float).reshape(-1, 6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("score", ["max", "mean", "threshold"])
def test_extract_regions_matches_flood_fill(seed, connectivity, score):
    rng = np.random.default_rng(seed)
    maps = rng.random((3, 9, 11))
    thresholds = [0.55, 0.8]
    frames = [4, 7, 9]
    min_area = int(rng.integers(1, 3))
    expected = regions_oracle(maps, thresholds, score, min_area, connectivity, frames)
    assert len(expected) > 5  # the random maps do produce several components
    for batch in (1, 2, 32):
        got = extract_regions(
            maps,
            thresholds=thresholds,
            score=score,
            min_area=min_area,
            connectivity=connectivity,
            frames=frames,
            frames_per_batch=batch,
        )
        np.testing.assert_array_equal(got[:, :5], expected[:, :5])
        np.testing.assert_allclose(got[:, 5], expected[:, 5], rtol=0, atol=1e-12)


def id_maps(seed):
    """(4, 10, 12) object-id maps: ids 1-4 as scattered pixels, so objects come in several pieces."""
    rng = np.random.default_rng(seed)
    maps = rng.integers(1, 5, (4, 10, 12)).astype(np.uint8)
    maps[rng.random(maps.shape) < 0.75] = 0
    maps[2][maps[2] == 3] = 0  # object 3 is absent from frame 2
    return maps


def largest_component_box(id_map, object_id):
    """Bounds of the 8-connected piece with the largest bounding box (w * h); first one on ties."""
    best, best_area = None, 0
    for members in flood_components(id_map == object_id, 8):
        x0, y0, x1, y1 = bounds(members)
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        if area > best_area:
            best, best_area = (x0, y0, x1, y1), area
    return best


def union_box(id_map, object_id):
    found = [
        (y, x) for y in range(id_map.shape[0]) for x in range(id_map.shape[1]) if id_map[y, x] == object_id
    ]
    return bounds(found) if found else None


@pytest.mark.parametrize("seed", range(3))
def test_object_boxes_match_pixel_scan(seed):
    for frame in id_maps(seed):
        ids = [1, 2, 3, 4, 9]
        assert object_boxes(frame, ids) == {i: union_box(frame, i) for i in ids}
        assert object_boxes(frame, ids, box="largest_component") == {
            i: largest_component_box(frame, i) for i in ids
        }


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("box", ["union", "largest_component"])
def test_tracks_from_id_maps_match_loop(seed, box, caplog):
    maps = id_maps(seed)
    # Listed out of id order, object 2 twice (two intervals = two tracks, as the reference numbers rows).
    anomalies = [[4, 1, 3], [2, 0, 1], [3, 1, 3], [2, 3, 3]]
    boxer = union_box if box == "union" else largest_component_box
    expected = []
    ordered = sorted(anomalies, key=lambda row: row[0])  # stable, like the reference's list.sort
    for track_id, (object_id, start, end) in enumerate(ordered):
        for frame in range(start, end + 1):
            b = boxer(maps[frame], object_id)
            if b is not None:  # object 3 in frame 2: skipped (and logged)
                expected.append([track_id, frame, *b])
    got = tracks_from_id_maps(maps, anomalies, box=box)
    np.testing.assert_array_equal(got, expected)
    exclusive = tracks_from_id_maps(maps, anomalies, box=box, exclusive_max=True)
    np.testing.assert_array_equal(exclusive[:, :4], got[:, :4])
    np.testing.assert_array_equal(exclusive[:, 4:], got[:, 4:] + 1)
    assert "1 (track, frame) pairs" in caplog.text
