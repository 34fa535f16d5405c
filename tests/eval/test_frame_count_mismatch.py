"""A test video whose ground truth has more, or fewer, frames than its decoder finds (UBnormal's labels
follow its maps, not the decoder: vad_eval.md §1.1, §9): every labelled frame is scored, and the mismatch is
logged either way."""

import logging

import numpy as np
import pytest
from conftest import tiny_processor_for
from PIL import Image

from lavida.eval.benchmark import TestVideo, VadBenchmark
from lavida.eval.runner import run_evaluation

FRAMES = 9  # frame files on disk


class Miscounted(VadBenchmark):
    """One folder of 9 PNG frames, anomalous from frame 4, whose labels have ``labelled`` frames."""

    name = "miscounted"
    intervals = {"standard": 1, "lavida_official": 1}
    has_pixel_gt = False

    def __init__(self, root, labelled):
        self.labelled = labelled
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root)

    @property
    def categories(self):
        return ["red square"]

    def load_videos(self):
        folder = self.root / "v"
        folder.mkdir(exist_ok=True)
        for t in range(FRAMES):
            frame = np.full((24, 32, 3), 40, np.uint8)
            frame[4:12, 6:16] = (220, 20, 20) if t >= 4 else (40, 40, 40)
            Image.fromarray(frame).save(folder / f"{t:03d}.png")
        labels = (np.arange(self.labelled) >= 4).astype(np.uint8)
        return [TestVideo(name="v", path=folder, frame_labels=labels)]


@pytest.mark.parametrize(
    ("labelled", "logged"), [(12, "the last 3 reuse the final frame"), (6, "the last 3 are not scored")]
)
def test_frame_count_mismatch_is_scored_and_logged(tiny_model, tmp_path, caplog, labelled, logged):
    from lavida.inference import Predictor

    bench = Miscounted(tmp_path / "data", labelled)
    predictor = Predictor(model=tiny_model, processor=tiny_processor_for(tiny_model), batch_size=2)
    with caplog.at_level(logging.WARNING, logger="lavida.eval.runner"):
        metrics = run_evaluation(
            benchmark=bench,
            protocol=bench.protocol("standard"),
            output_dir=tmp_path / "out",
            predictor=predictor,
        )
    assert logged in caplog.text and f"{FRAMES}" in caplog.text
    assert metrics["num_frames"] == labelled  # every labelled frame scored, no more
