"""The pixel pipeline into the two frozen vision models, against independent references.

- SAM2 branch: transformers' ``Sam2ImageProcessor`` with the SAM2.1 checkpoints' defaults (1024² — here a
  small S —, bilinear, antialiased, rescale 1/255, ImageNet mean/std; masks nearest-exact), the release's
  ``v2.Compose([Resize((S, S)), ConvertImageDtype(float32), Normalize(ImageNet)])`` on the uint8 frames
  (``train_acc.py::sam2_transform``), and Meta's ``SAM2Transforms`` (ToTensor, Resize, Normalize).
- MLLM branch: a processor loaded, as ``load_processor`` loads a model folder, from Qwen2-VL-7B-Instruct's
  ``preprocessor_config.json`` (patch 14, merge 2, temporal patch 2, OpenAI CLIP mean/std, rescale 1/255);
  the reference is the release's ``qwen_resize_video`` / ``qwen_resize_image`` (torchvision
  ``functional.resize`` of the uint8 frames, bicubic, antialiased, then ``.float()``) handed to transformers'
  ``Qwen2VLVideoProcessor`` / ``Qwen2VLImageProcessor`` with those defaults, and a hand-written patchify of
  the documented layout.
"""

import json

import numpy as np
import pytest
import torch
from conftest import QWEN2_VL_PREPROCESSOR, offline_lavida_processor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from lavida.data.processor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelBudget,
    sam_pixel_values,
    smart_resize,
)
from lavida.data.types import ClipSample

VISION_KEYS = (
    "min_pixels",
    "max_pixels",
    "patch_size",
    "temporal_patch_size",
    "merge_size",
    "image_mean",
    "image_std",
)
SIDE = 64  # SAM2's input side, small for speed (1024 with the real checkpoints)
BUDGET = PixelBudget(28 * 28 * 4, 28 * 28 * 12)


@pytest.fixture(scope="module")
def lavida_processor(tmp_path_factory):
    """A LavidaProcessor around a processor loaded from a folder holding the 7B's preprocessor config."""
    from lavida.models.qwen_processor import byte_level_tokenizer, load_processor

    folder = tmp_path_factory.mktemp("qwen2_vl_7b_like")
    byte_level_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(QWEN2_VL_PREPROCESSOR))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    (folder / "model.safetensors").write_bytes(b"")  # only its presence is checked
    return offline_lavida_processor(
        load_processor(folder),
        sam_image_size=SIDE,
        train_video_budget=BUDGET,
        test_video_budget=BUDGET,
        image_budget=BUDGET,
    )


def _frames(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _chw(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


# -- SAM2 branch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(37, 53), (90, 70), (240, 360)])
def test_sam2_pixels_match_transformers_sam2_image_processor(lavida_processor, height, width):
    """The whole encode path against transformers' Sam2ImageProcessor (SAM2.1 defaults, S×S): resize in the
    uint8 domain (bilinear, antialiased), rescale 1/255, ImageNet mean/std, RGB, float32. Before the fix
    the resize ran on [0, 1] floats: up to one grey level off (0.017 after normalisation)."""
    from transformers import Sam2ImageProcessor

    frames = _frames((2, height, width, 3))
    encoded = lavida_processor.encode(ClipSample(frames=frames, categories=["x"], is_video=True), train=False)
    reference = Sam2ImageProcessor(size={"height": SIDE, "width": SIDE})(
        images=list(frames), return_tensors="pt"
    )
    assert encoded.sam_pixel_values.dtype == torch.float32
    torch.testing.assert_close(encoded.sam_pixel_values, reference["pixel_values"], atol=2e-6, rtol=0)


@pytest.mark.parametrize("height,width", [(37, 53), (300, 200)])
def test_sam2_pixels_match_the_release_transform(height, width):
    """The release's sam2_transform (train_acc.py) on the uint8 TCHW clip."""
    frames = _chw(_frames((3, height, width, 3), seed=1))
    release = v2.Compose(
        [
            v2.Resize((SIDE, SIDE)),
            v2.ConvertImageDtype(torch.float32),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )
    torch.testing.assert_close(sam_pixel_values(frames, SIDE), release(frames), atol=2e-6, rtol=0)


def test_sam2_pixels_without_resize_equal_meta_sam2transforms():
    """At S×S there is no resize: Meta's SAM2Transforms (ToTensor → [0, 1], Normalize ImageNet) exactly;
    channel order kept (a red frame is high in channel 0 only)."""
    from torchvision.transforms import Normalize, ToTensor

    frames = _frames((2, SIDE, SIDE, 3), seed=2)
    meta = torch.stack([Normalize(IMAGENET_MEAN, IMAGENET_STD)(ToTensor()(frame)) for frame in frames])
    torch.testing.assert_close(sam_pixel_values(_chw(frames), SIDE), meta, atol=1e-6, rtol=0)
    red = np.zeros((1, SIDE, SIDE, 3), dtype=np.uint8)
    red[..., 0] = 255
    pixel = sam_pixel_values(_chw(red), SIDE)[0, :, 0, 0]
    expected = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixel, expected)


@pytest.mark.parametrize("height,width", [(37, 53), (240, 360)])
def test_target_masks_match_transformers_sam2_segmentation_maps(lavida_processor, height, width):
    """Masks go to S×S by nearest-exact, as Sam2ImageProcessor's segmentation maps (NEAREST → NEAREST_EXACT):
    binary, pixel-centre aligned with the bilinear image resize."""
    from transformers import Sam2ImageProcessor

    rng = np.random.default_rng(3)
    masks = rng.random((2, height, width)) > 0.5
    frames = _frames((2, height, width, 3))
    sample = ClipSample(frames=frames, categories=["x"], is_video=True, masks=masks)
    encoded = lavida_processor.encode(sample, train=True)
    reference = Sam2ImageProcessor(
        size={"height": SIDE, "width": SIDE}, mask_size={"height": SIDE, "width": SIDE}
    )(images=list(frames), segmentation_maps=[m.astype(np.uint8) for m in masks], return_tensors="pt")[
        "labels"
    ]
    assert torch.equal(encoded.target_masks, reference.float())


# -- MLLM branch ---------------------------------------------------------------------------------------------


def _release_resize(frames: np.ndarray, budget: PixelBudget) -> torch.Tensor:
    """The release's qwen_resize_video / qwen_resize_image: torchvision resize of the uint8 frames, .float()."""
    height, width = smart_resize(frames.shape[1], frames.shape[2], factor=28, budget=budget)
    resized = TF.resize(
        _chw(frames), [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True
    )
    return resized.float()


def _patchify(frames: torch.Tensor, mean, std, *, temporal=2, patch=14, merge=2):
    """Qwen2-VL's documented patch layout, written out: (T, 3, H, W) in [0, 255] → (N, 3·2·14·14), grid."""
    x = (frames / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    if x.shape[0] % temporal:
        x = torch.cat([x, x[-1:].repeat(temporal - x.shape[0] % temporal, 1, 1, 1)])
    t, c, h, w = x.shape[0] // temporal, 3, x.shape[2] // patch, x.shape[3] // patch
    x = x.reshape(t, temporal, c, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, c * temporal * patch * patch), [[t, h, w]]


@pytest.mark.parametrize("height,width", [(50, 70), (120, 90)])
def test_qwen_video_pixels_match_the_release_and_transformers(lavida_processor, height, width):
    """pixel_values_videos and video_grid_thw of an 8-frame clip equal the release's path (uint8 torchvision
    bicubic resize, then transformers' Qwen2VLVideoProcessor with the 7B's defaults) and the hand-written
    patchify. Before the fix the bicubic ran on floats: up to 16–22 grey levels off on noise (0.22–0.30
    after normalisation) where torchvision's uint8 kernel (the release's, qwen-vl-utils') clamps between
    its two passes, as PIL does."""
    from transformers import Qwen2VLVideoProcessor

    frames = _frames((8, height, width, 3), seed=4)
    encoded = lavida_processor.encode(ClipSample(frames=frames, categories=["x"], is_video=True), train=False)
    resized = _release_resize(frames, BUDGET)
    config = {key: QWEN2_VL_PREPROCESSOR[key] for key in VISION_KEYS}
    reference = Qwen2VLVideoProcessor(**config, do_sample_frames=False, cap_pixels_per_frame=False)(
        videos=[resized], return_tensors="pt"
    )
    assert encoded.grid_thw.tolist() == reference["video_grid_thw"].tolist()
    torch.testing.assert_close(encoded.pixel_values, reference["pixel_values_videos"], atol=1e-5, rtol=0)
    manual, grid = _patchify(resized, config["image_mean"], config["image_std"])
    assert encoded.grid_thw.tolist() == grid
    torch.testing.assert_close(encoded.pixel_values, manual, atol=1e-5, rtol=0)


def test_qwen_image_pixels_match_the_release_and_transformers(lavida_processor):
    """pixel_values and image_grid_thw of an image: the release's qwen_resize_image, then transformers'
    Qwen2VLImageProcessor with the 7B's defaults (temporal patch: the image repeated), and the patchify."""
    from transformers import Qwen2VLImageProcessor

    frames = _frames((1, 61, 47, 3), seed=5)
    encoded = lavida_processor.encode(
        ClipSample(frames=frames, categories=["x"], is_video=False), train=False
    )
    resized = _release_resize(frames, BUDGET)
    config = {key: QWEN2_VL_PREPROCESSOR[key] for key in VISION_KEYS}
    reference = Qwen2VLImageProcessor(**config)(images=[resized[0]], return_tensors="pt")
    assert encoded.grid_thw.tolist() == reference["image_grid_thw"].tolist()
    torch.testing.assert_close(encoded.pixel_values, reference["pixel_values"], atol=1e-5, rtol=0)
    manual, grid = _patchify(resized, config["image_mean"], config["image_std"])
    assert encoded.grid_thw.tolist() == grid
    torch.testing.assert_close(encoded.pixel_values, manual, atol=1e-5, rtol=0)


@pytest.mark.parametrize("height,width,budget", [(50, 70, BUDGET), (480, 856, PixelBudget(200_704, 401_408))])
def test_qwen_frames_resized_like_pil_bicubic(height, width, budget):
    """Qwen2-VL met PIL's bicubic in training (transformers' slow processor; qwen-vl-utils' image path); the
    release's torchvision uint8 resize matches it within 2 grey levels. Before the fix: 15–26 levels."""
    from PIL import Image

    from lavida.data.processor import _resize_uint8

    frame = _frames((1, height, width, 3), seed=6)
    size = smart_resize(height, width, factor=28, budget=budget)
    pil = np.asarray(Image.fromarray(frame[0]).resize(size[::-1], Image.BICUBIC))
    ours = _resize_uint8(_chw(frame), size)[0].permute(1, 2, 0).numpy()
    assert ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - pil.astype(int)).max() <= 2


def test_sam_pixel_values_refuses_float_frames():
    """A float clip (e.g. already in [0, 1]) would be divided by 255 again; only uint8 frames are taken."""
    with pytest.raises(ValueError, match="uint8"):
        sam_pixel_values(torch.rand(1, 3, 8, 8), SIDE)
