"""lavida.synthetic.datasets: a set killed while its marker file is written is regenerated, not half-read.

``lavida-demo`` treats ``meta.json`` (training set) and ``synthetic_layout.json`` (test sets) as "this set
is finished" and skips generating it on a rerun, so a marker cut short by a kill would break every later
run of the same output directory.
"""

import json
import pathlib

import pytest

from lavida.synthetic.datasets import (
    SegmentationSetSpec,
    VadSetSpec,
    default_split,
    write_segmentation_set,
    write_vad_set,
)


class Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C arriving in the middle of a write."""


def _kill_half_way_through(monkeypatch, name: str) -> None:
    """Make the next text write whose target or temporary mentions ``name`` write half its text and die."""
    original = pathlib.Path.write_text

    def write_text(self, data, *args, **kwargs):
        if name in self.name:
            original(self, data[: len(data) // 2], *args, **kwargs)
            raise Killed
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


@pytest.mark.parametrize("kind", ["segmentation", "vad"])
def test_a_kill_while_writing_the_marker_leaves_no_marker(tmp_path, monkeypatch, kind):
    split = default_split(0)
    if kind == "segmentation":
        marker = "meta.json"

        def write():
            return write_segmentation_set(
                tmp_path, split, SegmentationSetSpec(videos=2, images=1, frames=2, seed=1)
            )
    else:
        marker = "synthetic_layout.json"

        def write():
            return write_vad_set(
                tmp_path,
                anomalies=split.seen_anomalies,
                normal=split.normal,
                spec=VadSetSpec(anomalous_videos=1, normal_videos=1, frames=8, seed=1),
            )

    with monkeypatch.context() as patch:
        _kill_half_way_through(patch, marker)
        with pytest.raises(Killed):
            write()
    assert not (tmp_path / marker).exists()  # a rerun sees an unfinished set and regenerates it
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left

    write()
    content = json.loads((tmp_path / marker).read_text())
    videos = content["videos"] if kind == "segmentation" else content
    assert len(videos) == 2
