"""The tiny CLIP's contrastive stand-in pretraining: it learns, and its text tower loads like real weights."""

import re

import numpy as np
import pytest
import torch
from conftest import FakeSegSource, seg_record, write_synthetic_train

import lavida.synthetic.pretrain_clip as pretrain_clip_module
from lavida.data.sources.base import write_manifest
from lavida.data.sources.synthetic import SyntheticSource
from lavida.models.text_encoder import build_category_encoder
from lavida.synthetic.pretrain_clip import _crop, _instances, pretrain_clip


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    return write_synthetic_train(tmp_path_factory.mktemp("synthetic_train"), videos=8, images=24, frames=4)


def test_pretraining_learns_and_saves_a_loadable_text_tower(tmp_path, train_root, tiny_pretrained):
    import shutil

    text = tiny_pretrained.text_encoder
    clip_file = tmp_path / "open_clip_model.safetensors"
    shutil.copy(text.pretrained, clip_file)

    def features():
        encoder = build_category_encoder(
            model_name=text.model_name, pretrained=str(clip_file), arch=text.arch
        )
        return encoder(encoder.tokenize(["red circle", "red square", "blue circle"]))

    before = features()
    result = pretrain_clip(
        clip_file, train_root, model_name=text.model_name, arch=text.arch, steps=80, batch_size=16
    )
    after = features()  # through the production loader: the file still holds a complete text tower
    assert not torch.allclose(before, after)
    # Contrastive loss ln(16) ≈ 2.77 at chance; it must fall clearly within 80 steps.
    assert result["loss"] < 0.7 * result["initial_loss"]
    assert result["accuracy"] > result["initial_accuracy"]
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_pretraining_refuses_a_training_set_of_one_description(tmp_path, tiny_pretrained):
    """A contrastive loss over one description has no negative: the manifest is named, with the fix."""
    manifest = SyntheticSource(tmp_path).manifest_path()
    write_manifest([seg_record("v0", "red circle", frames=2), seg_record("i0", "red circle")], manifest)
    text = tiny_pretrained.text_encoder
    with pytest.raises(ValueError) as error:
        pretrain_clip(text.pretrained, tmp_path, model_name=text.model_name, arch=text.arch, steps=1)
    assert str(error.value) == (
        f"{manifest}: contrastive pretraining needs at least 2 distinct object descriptions, found 1; "
        "regenerate the synthetic training set (lavida.synthetic.datasets)."
    )


def test_instances_group_every_record_and_target_by_description():
    """Every (record, target index) of a description is a candidate crop, in manifest order."""
    first, second = seg_record("v0000", "red circle", "blue square"), seg_record("i0000", "red circle")
    assert _instances([first, second]) == {
        "red circle": [(first, 0), (second, 0)],
        "blue square": [(first, 1)],
    }


def test_crop_is_the_bounding_box_plus_a_2_pixel_margin():
    """10×12 frame whose pixel (y, x) holds grey 10·y + x in channel 0 (y, x in channels 1, 2). The
    object covers rows 4–6 and columns 5–7 on the second frame (the first frame shows it nowhere): with
    the margin the crop is rows 2–8, columns 3–9, 7×7, so side 7 leaves it unresized."""
    y, x = np.mgrid[0:10, 0:12]
    frame = np.stack([10 * y + x, y, x], axis=-1).astype(np.uint8)
    mask = np.zeros((10, 12), dtype=bool)
    mask[4:7, 5:8] = True
    record = seg_record("v0000", "red circle", frames=2)
    source = FakeSegSource({("v0000", "red circle"): [np.zeros_like(mask), mask]}, {"v0000": [frame, frame]})
    crop = _crop(source, [(record, 0)], 7, np.random.default_rng(0))
    expected = torch.from_numpy(frame[2:9, 3:10]).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(crop, expected)


def test_crop_clips_its_margin_at_the_frame_border_and_resizes_bilinearly():
    """2×2 frame, object on pixel (0, 0): the margin covers the whole frame (clipped at 0 and 2).
    Channel 0 holds 80·y + 40·x (0, 40 / 80, 120). Bilinear resizing to 4×4 with half-pixel centres
    (align_corners=False) samples y, x at (i + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to 0,
    0.25, 0.75, 1; a linear ramp is reproduced exactly, so the output is 80·py + 40·px."""
    frame = np.zeros((2, 2, 3), dtype=np.uint8)
    frame[..., 0] = [[0, 40], [80, 120]]
    mask = np.array([[True, False], [False, False]])
    source = FakeSegSource({("i0000", "red circle"): [mask]}, {"i0000": [frame]})
    crop = _crop(source, [(seg_record("i0000", "red circle"), 0)], 4, np.random.default_rng(0))
    p = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = torch.zeros(3, 4, 4)
    expected[0] = (80 * p[:, None] + 40 * p[None, :]) / 255.0
    torch.testing.assert_close(crop, expected)


def test_crop_gives_up_after_100_draws_without_a_visible_instance():
    """A description never visible: exactly 100 masks are tried, then a clear error names it."""
    mask = np.zeros((4, 4), dtype=bool)
    source = FakeSegSource(
        {("v0000", "red circle"): [mask, mask]}, {"v0000": [np.zeros((4, 4, 3), np.uint8)] * 2}
    )
    record = seg_record("v0000", "red circle", frames=2)
    message = "synthetic_train: no visible instance of 'red circle' found in 100 draws."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _crop(source, [(record, 0)], 4, np.random.default_rng(0))
    assert source.mask_loads == 100


class _StopHere(Exception):
    pass


@pytest.mark.parametrize("steps", [0, -1])
def test_pretraining_refuses_fewer_than_one_step(steps):
    """The returned losses average the last steps: zero or negative steps are refused up front."""
    message = f"steps must be at least 1, got {steps} (the returned losses average the last steps)."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        pretrain_clip("clip.safetensors", "train", model_name="tiny", arch={}, steps=steps)


def test_pretraining_accepts_a_single_step(monkeypatch):
    """One step passes the check and goes on to set up the model (stopped there by a stub)."""

    def stop(*args, **kwargs):
        raise _StopHere

    monkeypatch.setattr(pretrain_clip_module, "register_clip_config", stop)
    with pytest.raises(_StopHere):
        pretrain_clip("clip.safetensors", "train", model_name="tiny", arch={}, steps=1)
