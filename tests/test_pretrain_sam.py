"""The tiny SAM2's point-prompt pretraining keeps its deepest feature level usable.

At the encoder's full learning rate the deepest level (the decoder's image embedding and the
projector's f_v) turns within ~50 steps into one large vector shared by every location: per-location
norm ~165 against a spatial spread of ~0.1. Decoder tokens then all read the same thing, and the
object score cannot learn. ``encoder_lr_scale`` (default 0.1) prevents it; the second case shows that
the measurement catches the failure.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_benchmark_script
from omegaconf import OmegaConf

import lavida.configs
from lavida.data.processor import sam_pixel_values
from lavida.data.sources.base import read_manifest, write_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.models.mask_decoder import build_mask_decoder, load_sam2
from lavida.synthetic.datasets import SegmentationSetSpec, default_split, write_segmentation_set
from lavida.synthetic.pretrain_sam import pretrain_sam

TINY_SAM2 = Path(lavida.configs.__file__).parent / "model" / "mask_decoder" / "tiny.yaml"


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_train")
    write_segmentation_set(root, default_split(0), SegmentationSetSpec(videos=8, images=8, frames=4))
    source = SyntheticSource(root)
    write_manifest(source.index(), source.manifest_path())
    return root


def _deepest_level_spread(sam_dir, train_root) -> float:
    """Spatial spread / per-location norm of the deepest level (0: every location carries the same
    vector), measured by the diagnostics script's ``deepest_level_spread`` on the first frames."""
    source = SyntheticSource(train_root)
    frames = np.stack(
        [source.load_frames(record, [0])[0] for record in read_manifest(source.manifest_path())]
    )
    pixels = sam_pixel_values(torch.from_numpy(frames).permute(0, 3, 1, 2), 128)
    decoder = build_mask_decoder(pretrained=str(sam_dir), prompt_dim=8)
    norm, spread = load_benchmark_script("demo_diagnostics").deepest_level_spread(decoder, pixels)
    return spread / norm


@pytest.mark.parametrize(("encoder_lr_scale", "healthy"), [(None, True), (1.0, False)])
def test_pretraining_keeps_deepest_level_spatially_varied(tmp_path, train_root, encoder_lr_scale, healthy):
    arch = OmegaConf.to_container(OmegaConf.load(TINY_SAM2))["arch"]
    torch.manual_seed(0)
    sam_dir = tmp_path / "sam2"
    load_sam2(arch=arch).save_pretrained(str(sam_dir))
    before = _deepest_level_spread(sam_dir, train_root)
    options = {} if encoder_lr_scale is None else {"encoder_lr_scale": encoder_lr_scale}
    pretrain_sam(sam_dir, train_root, steps=60, batch_size=8, **options)
    after = _deepest_level_spread(sam_dir, train_root)
    # Measured: random init 0.23; after 60 steps 0.083 at the default scale, 0.0006 at scale 1.0.
    assert before > 0.1
    if healthy:
        assert after > 0.03
    else:
        assert after < 0.01
