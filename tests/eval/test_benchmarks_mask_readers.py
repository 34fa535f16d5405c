"""The ground-truth image readers shared by the loaders (``read_mask_image``: Ped2 and the mask-file
benchmarks; ``read_id_map``: UBnormal) on files Pillow cannot read."""

import re

import numpy as np
import pytest
from conftest import write_bomb_bmp, write_broken_png
from PIL import Image

from lavida.eval.benchmark import GroundTruthError
from lavida.eval.benchmarks._common import read_mask_image
from lavida.eval.benchmarks.ubnormal import IdMapMasks, read_id_map


def _broken_png(folder):
    return write_broken_png(folder / "0001_gt.png", shape=(40, 50))


def _bomb_bmp(folder):
    return write_bomb_bmp(folder / "001.bmp", shape=(40, 50))


@pytest.mark.parametrize("corrupt", [_broken_png, _bomb_bmp])
@pytest.mark.parametrize(
    ("reader", "what"), [(read_mask_image, "mask image"), (read_id_map, "object-id map")]
)
def test_corrupt_images_raise_ground_truth_error_naming_the_file(tmp_path, corrupt, reader, what):
    path = corrupt(tmp_path)
    with pytest.raises(GroundTruthError, match=re.escape(f"{path}: cannot read the {what}")) as error:
        reader(path)
    assert isinstance(error.value.__cause__, (SyntaxError, Image.DecompressionBombError))


def test_corrupt_id_map_outside_the_anomalies_names_the_file(tmp_path):
    """Outside every anomaly interval only the map's header is read (for its size); a corrupt header
    there must name the file too."""
    good = tmp_path / "good_0000_gt.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(good)
    bomb = _bomb_bmp(tmp_path)
    masks = IdMapMasks([good, bomb], np.array([[1, 0, 0]]))  # object 1 anomalous on frame 0 only
    assert masks(np.array([0])).shape == (1, 40, 50)
    with pytest.raises(GroundTruthError, match=re.escape(f"{bomb}: cannot read the object-id map")):
        masks(np.array([1]))
