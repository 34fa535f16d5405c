"""LavidaProcessor: pixel budgets, label masking, SAM2 branch, collation."""

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_samples, offline_lavida_processor, tiny_processor_for

from lavida.data.processor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LavidaProcessor,
    PixelBudget,
    check_frames,
    smart_resize,
)
from lavida.data.types import ClipSample
from lavida.models.qwen_processor import load_processor


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
    # Every tensor goes to the device, the integer ones too; the dtype reaches the pixel tensors only.
    on_meta = batch.to("meta", dtype=torch.float16)
    tensors = {name: value for name, value in vars(on_meta).items() if isinstance(value, torch.Tensor)}
    assert {"input_ids", "frame_to_sample", "target_masks", "pixel_values_videos"} <= tensors.keys()
    assert all(value.device.type == "meta" for value in tensors.values())
    assert {name for name, value in tensors.items() if value.dtype == torch.float16} == {
        "pixel_values",
        "pixel_values_videos",
        "sam_pixel_values",
    }


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
    with pytest.raises(ValueError, match=r"Masks must be \(T, H, W\); got shape \(2, 32, 32, 1\)"):
        processor.encode(
            ClipSample(frames=frames, categories=["x"], masks=np.ones((2, 32, 32, 1))), train=True
        )


def test_collate_one_sample_is_that_sample_unpadded(processor):
    """A batch of one is the encoded sample itself: no padding,
    every token attended, and the same ids, token types and answer labels."""
    video, _ = make_samples()
    encoded = processor.encode(video, train=True, rng=np.random.default_rng(0))
    batch = processor.collate([encoded])
    assert torch.equal(batch.input_ids[0], encoded.input_ids)
    assert torch.equal(batch.mm_token_type_ids[0], encoded.mm_token_type_ids)
    assert torch.equal(batch.labels[0], encoded.labels)
    assert batch.attention_mask.tolist() == [[1] * encoded.input_ids.shape[0]]


def test_collate_concatenates_every_per_frame_field_in_sample_order(processor):
    """Masks, frame labels, SAM2 pixels and category tokens of a mixed batch are the samples' own, stacked in
    order (video's 8 frames, then the image's 1), so frame i's target matches its frame_to_sample entry."""
    video, image = make_samples()
    parts = [processor.encode(sample, train=True) for sample in (video, image)]
    batch = processor.collate(parts)
    for field in ("target_masks", "frame_labels", "sam_pixel_values", "category_tokens"):
        expected = torch.cat([getattr(part, field) for part in parts])
        assert torch.equal(getattr(batch, field), expected), field
    assert torch.equal(batch.pixel_values_videos, parts[0].pixel_values)
    assert torch.equal(batch.pixel_values, parts[1].pixel_values)
    # The mask presence labels, taken independently from the source masks of make_samples.
    presence = [float(m.any()) for m in video.masks] + [float(image.masks[0].any())]
    assert batch.frame_labels.tolist() == presence


def test_collate_refuses_masks_on_only_some_samples(processor):
    """Silently dropping the targets of a whole batch because one sample lacks them would train on nothing;
    collate says so instead (frame labels likewise)."""
    video, image = make_samples()
    with_masks = processor.encode(video, train=True)
    without = processor.encode(
        ClipSample(frames=image.frames, categories=["dog"], is_video=False), train=True
    )
    with pytest.raises(ValueError, match="Some samples have target masks and others not"):
        processor.collate([with_masks, without])


def _byte_level_processor(family="qwen2_vl", train=784, test=7056, image=12544):
    """The offline byte-level processor with each budget one exact area."""
    return offline_lavida_processor(
        family=family,
        sam_image_size=32,
        train_video_budget=PixelBudget(train, train),
        test_video_budget=PixelBudget(test, test),
        image_budget=PixelBudget(image, image),
    )


def test_qwen2_5_clip_groups_are_one_second_apart():
    """Qwen2.5-VL spaces its 2-frame groups by second_per_grid_ts: frame lists are taken at 2 fps
    (qwen-vl-utils' rate), so each group of temporal_patch_size = 2 frames spans 2 / 2 = 1.0 s."""
    processor = _byte_level_processor("qwen2_5_vl")
    frames = np.zeros((8, 56, 56, 3), dtype=np.uint8)
    encoded = processor.encode(ClipSample(frames=frames, categories=["x"], is_video=True), train=False)
    assert encoded.second_per_grid_ts.tolist() == [1.0]
    batch = processor.question_batch(frames, "What happens?")
    assert batch.second_per_grid_ts.tolist() == [1.0]


def test_each_mode_takes_its_own_pixel_budget():
    """Training clips, test clips and images are resized to their own per-frame budgets (official: 32–64,
    160–192 × 28²·8 px and 32–1024 × 28² px). A 56×56 frame under exact areas of 28², 84² and 112² px
    (Qwen's smart_resize: scale by sqrt(target / 56²), then floor / ceil to multiples of 28) becomes
    28×28, 84×84 and 112×112: grids of 2, 6 and 8 patches of 14 a side."""
    processor = _byte_level_processor()
    frames = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    clip = ClipSample(frames=frames, categories=["x"], is_video=True)
    image = ClipSample(frames=frames[:1], categories=["x"], is_video=False)
    assert processor.encode(clip, train=True).grid_thw.tolist() == [[1, 2, 2]]
    assert processor.encode(clip, train=False).grid_thw.tolist() == [[1, 6, 6]]
    assert processor.encode(image, train=True).grid_thw.tolist() == [[1, 8, 8]]
    assert processor.encode(image, train=False).grid_thw.tolist() == [[1, 8, 8]]
    assert processor.question_batch(frames, "Why?").video_grid_thw.tolist() == [[1, 6, 6]]
    assert processor.question_batch(frames[:1], "Why?").image_grid_thw.tolist() == [[1, 8, 8]]


def test_clip_length_decides_video_or_image(processor):
    """Two frames already make a video (one temporal patch of 2 frames, video tokens); a one-frame clip
    flagged as video goes to the MLLM as an image (a video needs temporal_patch_size = 2 frames)."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    two = processor.encode(ClipSample(frames=frames, categories=["x"], is_video=True), train=False)
    h, w = smart_resize(64, 96, factor=28, budget=processor.budgets["test"])
    assert two.is_video and two.grid_thw.tolist() == [[1, h // 14, w // 14]]  # 2 frames / temporal patch 2
    assert int((two.mm_token_type_ids == 2).sum()) == (h // 28) * (w // 28)  # video tokens, 2×2 merge

    one = processor.encode(ClipSample(frames=frames[:1], categories=["x"], is_video=True), train=False)
    h, w = smart_resize(64, 96, factor=28, budget=processor.budgets["image"])
    assert not one.is_video and one.grid_thw.tolist() == [[1, h // 14, w // 14]]
    assert int((one.mm_token_type_ids == 1).sum()) == (h // 28) * (w // 28)  # image tokens
    assert one.second_per_grid_ts is None


def test_given_frame_labels_override_mask_presence(processor):
    """A source's own per-frame labels (e.g. an annotated frame with an empty mask) win over the presence
    read off the masks; they arrive as float, one per frame."""
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, :8, :8] = True  # presence would say [1, 0]
    sample = ClipSample(
        frames=frames,
        categories=["x"],
        is_video=True,
        masks=masks,
        frame_labels=np.array([0, 1], dtype=np.int64),
    )
    encoded = processor.encode(sample, train=True)
    assert encoded.frame_labels.dtype == torch.float32
    assert encoded.frame_labels.tolist() == [0.0, 1.0]


def test_question_batch_prompt_and_visual_inputs(processor):
    """The explanation prompt (Detector.explain) is the chat format up to the assistant header, with one
    <|video_pad|> per merged patch of a clip (test budget) or <|image_pad|> per merged patch of a frame (image
    budget); the segmentation fields are empty."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    for clip, pad, budget in ((frames, "<|video_pad|>", "test"), (frames[:1], "<|image_pad|>", "image")):
        h, w = smart_resize(64, 96, factor=28, budget=processor.budgets[budget])
        batch = processor.question_batch(clip, "What is burning?")
        expected = (
            f"<|im_start|>system\n{processor.templates.system}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            + pad * ((h // 28) * (w // 28))  # 2 frames = 1 temporal patch; 2×2 spatial merge
            + "<|vision_end|>What is burning?<|im_end|>\n<|im_start|>assistant\n"
        )
        assert processor.tokenizer.decode(batch.input_ids[0]) == expected
        assert batch.attention_mask.tolist() == [[1] * batch.input_ids.shape[1]]
        grid = batch.video_grid_thw if pad == "<|video_pad|>" else batch.image_grid_thw
        assert grid.tolist() == [[1, h // 14, w // 14]]
        assert (batch.pixel_values is None) == (pad == "<|video_pad|>")
        assert (batch.pixel_values_videos is None) == (pad == "<|image_pad|>")
        side = processor.sam_image_size
        assert batch.sam_pixel_values.shape == (0, 3, side, side) and batch.category_tokens.shape == (0, 77)
        assert batch.frame_to_sample.numel() == batch.category_to_sample.numel() == 0


def test_for_model_takes_the_configured_budgets(processor):
    """The budgets come from the model's InputConfig (tiny.yaml: 3136–12544 px for all three), and default
    to the official ones (lavida_official.md §2) without one."""
    tiny = PixelBudget(3136, 12544)  # lavida/configs/model/tiny.yaml
    assert processor.budgets == {"train": tiny, "test": tiny, "image": tiny}
    model = SimpleNamespace(
        mllm=SimpleNamespace(processor=processor.qwen),
        text_encoder=SimpleNamespace(tokenizer=processor.clip_tokenizer),
        mask_decoder=SimpleNamespace(image_size=48),
    )
    official = {
        "train": PixelBudget(200_704, 401_408),
        "test": PixelBudget(1_003_520, 1_204_224),
        "image": PixelBudget(25_088, 802_816),
    }
    default = LavidaProcessor.for_model(model)
    assert default.budgets == official
    bare = LavidaProcessor(
        qwen_processor=processor.qwen, clip_tokenizer=processor.clip_tokenizer, sam_image_size=48
    )
    assert bare.budgets == official
    assert default.sam_image_size == 48 and default.factor == 28  # patch 14 × merge 2


def test_image_sample_error_counts_the_frames(processor):
    """The refusal of a several-frame image sample names its frame count (2 here, not the 3 channels)."""
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="one frame, but got 2 frames"):
        processor.encode(ClipSample(frames=frames, categories=["x"], is_video=False), train=False)


@pytest.mark.parametrize(
    "frames,error,hint",
    [
        ([np.zeros((4, 4, 3), np.uint8)], TypeError, "got list; stack a list of (H, W, 3) frames"),
        ("clip.mp4", TypeError, "got str."),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), ValueError, "pass one clip at a time, e.g. frames[0]"),
        (np.zeros((4, 4, 3), np.uint8), ValueError, "add the time axis: frames[None]"),
        (
            np.zeros((2, 3, 4, 4), np.uint8),
            ValueError,
            "the colour channels go last: frames.transpose(0, 2, 3, 1)",
        ),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ValueError, "frames.permute(0, 2, 3, 1)"),
        (np.zeros((2, 4, 4), np.uint8), ValueError, "repeat them 3 times on the last axis"),
        (np.zeros((2, 4, 4, 4), np.uint8), ValueError, "repeat them 3 times on the last axis"),
        (np.zeros((0, 4, 4, 3), np.uint8), ValueError, "at least one frame of at least one pixel"),
        (np.zeros((2, 4, 0, 3), np.uint8), ValueError, "at least one frame of at least one pixel"),
        (np.zeros((2, 4, 4, 3), bool), ValueError, "convert them with (frames * 255).astype(np.uint8)"),
        (torch.zeros(2, 4, 4, 3, dtype=torch.bool), ValueError, "(frames * 255).to(torch.uint8)"),
        (
            np.ones((2, 4, 4, 3), np.float32),
            ValueError,
            "floats scaled to 1: convert them with (frames * 255).round()",
        ),
        (torch.full((2, 4, 4, 3), 2.0), ValueError, "frames.round().clip(0, 255).to(torch.uint8)"),
        (np.full((2, 4, 4, 3), 1.5, np.float32), ValueError, "float values in [0, 255] with frames.round()"),
        (
            np.zeros((2, 4, 4, 3), np.int16),
            ValueError,
            "convert them with frames.clip(0, 255).astype(np.uint8)",
        ),
    ],
)
def test_check_frames_names_the_fix(frames, error, hint):
    """Each wrong clip gets the one conversion that fixes it (the Detector's and the datasets' common gate)."""
    with pytest.raises(error, match=re.escape(hint)):
        check_frames(frames)


@pytest.mark.parametrize(
    "frames", [np.zeros((1, 4, 4, 3), np.uint8), torch.zeros(2, 3, 5, 3, dtype=torch.uint8)]
)
def test_check_frames_accepts_uint8_rgb_clips(frames):
    """A (T, H, W, 3) uint8 clip passes, including one whose height happens to be 3 (not channels-first)."""
    assert check_frames(frames) is None


def test_pixel_budget_bounds():
    """A budget may be one exact area (min = max) but not empty, inverted or zero."""
    assert PixelBudget(1, 1).max_pixels == 1
    for low, high in ((0, 10), (11, 10), (-1, 10)):
        with pytest.raises(ValueError, match="0 < min_pixels <= max_pixels"):
            PixelBudget(low, high)


def test_frames_already_at_the_budgets_size_reach_the_vit_unresized():
    """A 28×28 clip under an exact 28² px budget needs no resize (smart_resize keeps 28×28) and is passed on
    as it is: the patches hold exactly the clip's pixels, each channel normalised by the processor's own mean
    and std (the patchify only reorders them: (C, t = 2, 14, 14) per patch)."""
    processor = _byte_level_processor(train=784)
    frames = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    encoded = processor.encode(ClipSample(frames=frames, categories=["x"], is_video=True), train=True)
    assert encoded.grid_thw.tolist() == [[1, 2, 2]]
    patches = encoded.pixel_values.reshape(-1, 3, 2, 14, 14)
    image_processor = processor.qwen.image_processor
    for c in range(3):
        expected = (frames[..., c] / 255 - image_processor.image_mean[c]) / image_processor.image_std[c]
        torch.testing.assert_close(
            patches[:, c].flatten().sort().values,
            torch.from_numpy(np.sort(expected, axis=None)).float(),
            rtol=0,
            atol=1e-5,
        )


def test_a_tokenizer_without_a_pad_token_is_refused():
    """Batches are right-padded with the pad token; without one, collate could not build them."""
    qwen = load_processor(None, family="qwen2_vl")
    qwen.tokenizer.pad_token = None
    with pytest.raises(ValueError, match=r"tokenizer has no pad token; set tokenizer\.pad_token"):
        offline_lavida_processor(qwen)


def test_collate_refuses_an_empty_list_and_labels_on_only_some_samples(processor):
    video, image = make_samples()
    with pytest.raises(ValueError, match=r"collate\(\) got an empty list of samples"):
        processor.collate([])
    trained = processor.encode(video, train=True, rng=np.random.default_rng(0))
    evaluated = processor.encode(image, train=False)
    with pytest.raises(ValueError, match="Some samples have answer labels and others not"):
        processor.collate([trained, evaluated])


def test_collate_refuses_videos_of_which_only_some_carry_timings(processor):
    """Qwen2.5-VL's processor gives each video its seconds per temporal group, Qwen2-VL's none; a batch mixing
    the two would have lost the timings of all its videos."""
    video, _ = make_samples()
    plain = processor.encode(video, train=False)
    assert plain.second_per_grid_ts is None  # the Qwen2-VL twin
    timed = dataclasses.replace(plain, second_per_grid_ts=torch.tensor([1.0]))
    assert torch.equal(processor.collate([timed, timed]).second_per_grid_ts, torch.tensor([1.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"^Some samples have video timings \(Qwen2\.5-VL's second_per_grid_ts"
    ):
        processor.collate([timed, plain])


def test_answer_labels_are_refused_when_the_answer_is_not_the_conversations_tail():
    """Where the tokenizer merges the answer's first characters with the assistant header, the answer's
    own tokens are not the conversation's last ones, and masking the labels by length would supervise the
    wrong tokens: refused. (The offline byte-level tokenizer merges nothing, so the tail is changed.)"""
    lavida = offline_lavida_processor()
    input_ids = lavida.tokenizer("<|im_start|>assistant\nSure, it is <SEG>.", return_tensors="pt")[
        "input_ids"
    ][0]
    assert lavida._answer_labels(input_ids, "it is <SEG>.").ne(-100).sum() > 0
    with pytest.raises(ValueError, match="tokenised answer is not the tail of the tokenised conversation"):
        lavida._answer_labels(input_ids, "Sure, it is <SEG>!")
