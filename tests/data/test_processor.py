"""LavidaProcessor: pixel budgets, label masking, SAM2 branch, collation."""

import numpy as np
import pytest
import torch
from conftest import make_samples, tiny_processor_for

from lavida.data.processor import IMAGENET_MEAN, IMAGENET_STD, PixelBudget, smart_resize
from lavida.data.types import ClipSample


@pytest.fixture(scope="module")
def processor(tiny_pretrained):
    from lavida.models.lavida import build_lavida

    return tiny_processor_for(build_lavida(tiny_pretrained))


@pytest.mark.parametrize("height,width", [(480, 856), (240, 360), (1080, 1920), (64, 64)])
def test_official_pixel_budgets(height, width):
    """Both sides multiples of 28, area within the official per-frame budgets, aspect kept."""
    for budget in (PixelBudget(200_704, 401_408), PixelBudget(1_003_520, 1_204_224)):
        h, w = smart_resize(height, width, factor=28, budget=budget)
        assert h % 28 == 0 and w % 28 == 0
        assert budget.min_pixels <= h * w <= budget.max_pixels
        assert abs(h / w - height / width) < 0.1
    # The official example: ShanghaiTech 856×480 → 1344×756 under the test budget (lavida_official.md §2).
    assert smart_resize(480, 856, factor=28, budget=PixelBudget(1_003_520, 1_204_224)) == (756, 1344)


def test_video_grid_and_token_count(processor):
    video, _ = make_samples()
    encoded = processor.encode(video, train=False)
    h, w = smart_resize(64, 96, factor=28, budget=processor.budgets["test"])
    assert encoded.grid_thw.tolist() == [[4, h // 14, w // 14]]  # 8 frames → temporal patch 2
    video_tokens = int((encoded.mm_token_type_ids == 2).sum())
    assert video_tokens == 4 * (h // 28) * (w // 28)  # after the 2×2 merger
    assert encoded.labels is None


def test_labels_cover_only_the_answer(processor):
    video, _ = make_samples()
    encoded = processor.encode(video, train=True, rng=np.random.default_rng(0))
    supervised = encoded.input_ids[encoded.labels != -100]
    text = processor.tokenizer.decode(supervised)
    assert text.endswith("<|im_end|>") and "<SEG>" in text
    assert text in [answer + "<|im_end|>" for answer in processor.templates.answer]
    assert torch.equal(encoded.labels[encoded.labels != -100], supervised)


def test_sam_branch_normalisation_and_masks(processor):
    frames = np.full((2, 40, 60, 3), 255, dtype=np.uint8)
    masks = np.zeros((2, 40, 60), dtype=bool)
    masks[0, :20, :30] = True  # top-left quarter of frame 0
    sample = ClipSample(frames=frames, categories=["x"], is_video=True, masks=masks)
    encoded = processor.encode(sample, train=True)
    side = processor.sam_image_size
    assert encoded.sam_pixel_values.shape == (2, 3, side, side)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(encoded.sam_pixel_values[0, :, 5, 5], expected)
    assert encoded.target_masks.shape == (2, side, side)
    assert encoded.target_masks[0].mean().item() == pytest.approx(0.25, abs=0.01)
    assert encoded.frame_labels.tolist() == [1.0, 0.0]  # per-frame mask presence


def test_frame_labels_come_from_the_masks_before_resizing(processor):
    """A one-pixel target in a 400x400 frame vanishes when the mask is shrunk to SAM2's input, yet it is in the
    frame: presence is taken at the source resolution, as TrainDataset does (docs/fidelity.md)."""
    frames = np.zeros((2, 400, 400, 3), dtype=np.uint8)
    masks = np.zeros((2, 400, 400), dtype=bool)
    masks[0, 100, 100] = True  # off the grid that nearest-exact keeps (every 6.25th pixel)
    sample = ClipSample(frames=frames, categories=["x"], is_video=True, masks=masks)
    encoded = processor.encode(sample, train=True)
    assert encoded.target_masks[0].sum() == 0  # the resized mask lost it ...
    assert encoded.frame_labels.tolist() == [1.0, 0.0]  # ... the label did not


def test_collate_mixed_batch(processor):
    video, image = make_samples()
    batch = processor([video, image], train=True)
    assert batch.batch_size == 2 and batch.num_frames == 9
    assert batch.frame_to_sample.tolist() == [0] * 8 + [1]
    assert batch.category_to_sample.tolist() == [0, 0, 0, 1]
    assert batch.category_tokens.shape == (4, 77)
    assert batch.video_grid_thw.shape == (1, 3) and batch.image_grid_thw.shape == (1, 3)
    lengths = batch.attention_mask.sum(dim=1)
    for row in range(2):  # right padding: ones then zeros, pad ids and ignored labels after
        n = int(lengths[row])
        assert bool(batch.attention_mask[row, :n].all()) and not bool(batch.attention_mask[row, n:].any())
        assert bool((batch.labels[row, n:] == -100).all())
    moved = batch.to("cpu", dtype=torch.float64)
    assert moved.sam_pixel_values.dtype == torch.float64 and moved.input_ids.dtype == torch.long


def test_bad_inputs(processor):
    # Every path into the model (training, evaluation, Detector) meets the same check, with the fix spelt out.
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8.*\(frames \* 255\)\.round\(\)\.astype"):
        processor.encode(ClipSample(frames=np.zeros((2, 8, 8, 3), np.float32), categories=["x"]), train=False)
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="2 frames but 3 masks"):
        processor.encode(ClipSample(frames=frames, categories=["x"], masks=np.zeros((3, 32, 32))), train=True)
    with pytest.raises(ValueError, match="2 frames but 3 frame labels"):
        processor.encode(ClipSample(frames=frames, categories=["x"], frame_labels=np.ones(3)), train=True)
    with pytest.raises(ValueError, match="category list is empty"):
        processor.encode(ClipSample(frames=frames, categories=[" "]), train=False)
