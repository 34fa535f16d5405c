"""The whole model: a mixed image/video batch forward + backward, and batching invariance."""

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_model_config, make_samples, tiny_processor_for
from torch import nn

from lavida.losses import LavidaLoss
from lavida.models import lavida as lavida_module
from lavida.models.adapters import MLPAdapter
from lavida.models.lavida import LavidaModel, check_base_weights, path_variable
from lavida.models.mask_decoder import SAM2_HINT
from lavida.models.outputs import LavidaOutput
from lavida.models.projector import MultiScaleSemanticProjector
from lavida.models.qwen_processor import QWEN_HINT
from lavida.models.weights import WeightsNotFoundError

CONFIGS = Path(__file__).resolve().parents[2] / "lavida" / "configs"


def test_forward_backward_mixed_batch(tiny_model):
    processor = tiny_processor_for(tiny_model)
    video, image = make_samples()
    batch = processor([video, image], train=True)
    out = tiny_model(batch)

    n = 8 + 1  # frames: 8 of the video, 1 image
    side = tiny_model.mask_decoder.image_size // 4  # SAM2's low-res masks: 4 × the 1/16 embedding
    assert out.mask_logits.shape == (n, 3, side, side)
    assert out.iou_pred.shape == (n, 3) and out.object_logits.shape == (n,)
    assert out.seg_features.shape == (2, tiny_model.mllm.hidden_size)
    losses = LavidaLoss()(
        lm_loss=out.lm_loss,
        mask_logits=out.mask_logits,
        iou_pred=out.iou_pred,
        object_logits=out.object_logits,
        target_masks=batch.target_masks,
    )
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()

    grads = {name: p.grad for name, p in tiny_model.named_parameters() if p.requires_grad}
    got = {name for name, grad in grads.items() if grad is not None and grad.abs().sum() > 0}
    # Every trained component learns from this one batch.
    for prefix in (
        "projector.",
        "mask_decoder.prompt_embedding.",
        "mask_decoder.sam.mask_decoder.transformer.",
        "mask_decoder.sam.mask_decoder.pred_obj_score_head.",
        "mask_decoder.sam.mask_decoder.iou_prediction_head.",
        "mask_decoder.sam.mask_decoder.conv_s0.",
        "mask_decoder.sam.prompt_encoder.no_mask_embed.",
    ):
        assert any(name.startswith(prefix) for name in got), prefix
    assert any("lora_B" in name for name in got)  # lora_A's gradient is 0 at step 0: B starts at zero
    assert sum("trainable_tokens_delta" in name for name in got) == 2
    # Frozen parts (B.2): no gradient, not trainable.
    for name, parameter in tiny_model.named_parameters():
        if name.startswith(("text_encoder.", "mask_decoder.sam.vision_encoder.")) or ".visual." in name:
            assert not parameter.requires_grad and parameter.grad is None, name


def test_sample_outputs_do_not_depend_on_batch_mates(tiny_model):
    """Padding, packing and per-sample compression must keep samples independent."""
    processor = tiny_processor_for(tiny_model)
    video, image = make_samples()
    tiny_model.eval()
    with torch.no_grad():
        together = tiny_model(processor([video, image], train=False))
        alone_video = tiny_model(processor([video], train=False))
        alone_image = tiny_model(processor([image], train=False))
    torch.testing.assert_close(together.object_logits[:8], alone_video.object_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together.object_logits[8:], alone_image.object_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together.mask_logits[:8], alone_video.mask_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(together.seg_features[1:], alone_image.seg_features, rtol=1e-4, atol=1e-5)


def test_predict_scores_and_best_masks(tiny_model):
    processor = tiny_processor_for(tiny_model)
    video, _ = make_samples()
    batch = processor([video], train=False)
    tiny_model.eval()
    raw = tiny_model(batch)
    prediction = tiny_model.predict(batch, gate_masks=False)
    torch.testing.assert_close(prediction.frame_scores, torch.sigmoid(raw.object_logits.detach().double()))
    best = raw.iou_pred.argmax(dim=1)
    for frame in range(8):
        torch.testing.assert_close(
            prediction.mask_logits[frame], raw.mask_logits[frame, best[frame]].detach()
        )
    gated = tiny_model.predict(batch, gate_masks=True)
    absent = raw.object_logits <= 0
    assert bool((gated.mask_logits[absent] == -1024.0).all())
    torch.testing.assert_close(gated.mask_logits[~absent], prediction.mask_logits[~absent])
    pixels = prediction.pixel_scores((64, 96))
    assert pixels.shape == (8, 64, 96) and float(pixels.min()) >= 0 and float(pixels.max()) <= 1


def test_qwen2_5_vl_twin_runs(tmp_path):
    """The Qwen2.5-VL option builds, saves, loads and runs end to end (its rope uses second_per_grid_ts)."""
    from conftest import compose_model_config

    from lavida.models.lavida import build_lavida
    from lavida.models.random_init import write_random_pretrained

    config = write_random_pretrained(compose_model_config("tiny", ["model/mllm=tiny_qwen2_5"]), tmp_path)
    model = build_lavida(config)
    assert type(model.mllm.hf_model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    video, image = make_samples()
    batch = tiny_processor_for(model)([video, image], train=True)
    out = model(batch)
    assert out.object_logits.shape == (9,) and torch.isfinite(out.lm_loss)

    # Frame order reaches the LLM: each 2-frame group of the 8-frame clip has its own temporal position
    # (without a frame rate transformers assumed 24 fps and all four groups shared one).
    video_batch = tiny_processor_for(model)([video], train=False)
    hf = model.mllm.hf_model
    positions, _ = hf.model.get_rope_index(
        input_ids=video_batch.input_ids,
        mm_token_type_ids=video_batch.mm_token_type_ids,
        video_grid_thw=video_batch.video_grid_thw,
        attention_mask=video_batch.attention_mask,
        second_per_grid_ts=video_batch.second_per_grid_ts,
    )
    temporal = positions[0, 0, video_batch.input_ids[0] == hf.config.video_token_id].unique()
    assert len(temporal) == int(video_batch.video_grid_thw[0, 0]) == 4, temporal.tolist()


def test_bfloat16_model_runs(tiny_pretrained):
    """A bf16 build (the GPU setting) runs: every weight bf16 except PEFT's adapters, which PEFT keeps
    in float32 on purpose (``autocast_adapter_dtype``)."""
    import dataclasses

    from lavida.models.lavida import build_lavida

    model = build_lavida(dataclasses.replace(tiny_pretrained, dtype="bfloat16")).eval()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    adapters = {name for name in dtypes if "lora_" in name or "trainable_tokens_delta" in name}
    assert adapters and all(dtypes[name] == torch.float32 for name in adapters)
    assert {dtype for name, dtype in dtypes.items() if name not in adapters} == {torch.bfloat16}
    video, _ = make_samples()
    with torch.no_grad():
        out = model(tiny_processor_for(model)([video], train=False).to("cpu", dtype=torch.bfloat16))
    assert out.object_logits.dtype == torch.bfloat16 and torch.isfinite(out.object_logits.float()).all()


def test_frame_scores_keep_the_ranking_of_large_object_logits():
    """float32's sigmoid is exactly 1.0 above a logit of ~16.6, which would tie frames the logits (the
    release's frame score) rank apart; the scores are float64."""
    from lavida.models.outputs import LavidaOutput, LavidaPrediction

    logits = torch.tensor([0.0, 12.0, 17.0, 18.0, 25.0, 30.0])
    assert torch.sigmoid(logits[2:]).unique().tolist() == [1.0]  # what float32 would give
    output = LavidaOutput(
        mask_logits=torch.zeros(6, 3, 4, 4),
        iou_pred=torch.zeros(6, 3),
        object_logits=logits,
        seg_features=torch.zeros(1, 8),
        lm_loss=None,
        visual_tokens=torch.zeros(1),
        kept_tokens=torch.zeros(1),
    )
    scores = LavidaPrediction.from_output(output).frame_scores
    assert scores.dtype == torch.float64
    assert (scores.diff() > 0).all(), scores.tolist()


# -- f_c padded per sample (Eq. 6), on stand-in components: no base model is needed ----------------------


class _RowsAsFeatures(nn.Module):
    """A text encoder whose feature of a category is its token row as floats (a row tells its category)."""

    def forward(self, tokens):
        return tokens.float()


def _model_with_rows_as_features():
    return LavidaModel(
        mllm=nn.Identity(),
        text_encoder=_RowsAsFeatures(),
        mask_decoder=nn.Identity(),
        projector=MLPAdapter(llm_dim=2, out_dim=2, hidden_dim=2),
    )


def test_category_features_are_each_samples_categories_in_batch_order_then_padding():
    """20 categories of 3 samples, interleaved: slot k of sample b holds b's k-th category in batch order
    (an unstable sort by owner reorders equal owners at this size), the rest zeros and masked out."""
    owner = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2, 2, 0, 1, 1, 2, 0, 1, 1])
    tokens = torch.arange(20).unsqueeze(1) * torch.tensor([1, 100])  # category i's feature: [i, 100 i]
    batch = SimpleNamespace(category_tokens=tokens, category_to_sample=owner, batch_size=3)
    f_c, mask = _model_with_rows_as_features()._category_features(batch)
    # The slow obvious way: each sample's categories in order, padded to the longest (8, sample 1).
    expected = torch.zeros(3, 8, 2)
    expected_mask = torch.zeros(3, 8, dtype=torch.bool)
    for sample in range(3):
        rows = [i for i in range(20) if owner[i] == sample]
        for slot, row in enumerate(rows):
            expected[sample, slot] = torch.tensor([row, 100 * row], dtype=torch.float)
            expected_mask[sample, slot] = True
    torch.testing.assert_close(f_c, expected, rtol=0, atol=0)
    assert mask.dtype == torch.bool and torch.equal(mask, expected_mask)


def test_a_sample_without_categories_is_refused_also_the_last():
    """The last sample's count exists only through bincount's minlength: without it the empty last
    sample would go unnoticed and get an all-padding (all-masked) f_c."""
    tokens = torch.arange(3).unsqueeze(1)
    batch = SimpleNamespace(category_tokens=tokens, category_to_sample=torch.tensor([0, 0, 1]), batch_size=3)
    with pytest.raises(ValueError) as error:
        _model_with_rows_as_features()._category_features(batch)
    assert str(error.value) == "Every sample needs at least one category; some sample has none."


# -- base-model paths: the variables the shipped configs read, and the checks before anything loads ------


@pytest.mark.parametrize(
    ("group_file", "section"),
    [
        ("mllm/qwen2vl_7b.yaml", "mllm"),
        ("mllm/qwen2_5vl_7b.yaml", "mllm"),
        ("text_encoder/clip_b32.yaml", "text_encoder"),
        ("mask_decoder/sam2.1_hiera_s.yaml", "mask_decoder"),
    ],
)
def test_path_variable_is_the_one_the_shipped_config_reads(group_file, section):
    """Errors name the variable the README tells users to set: the one in the group file's oc.env."""
    text = (CONFIGS / "model" / group_file).read_text()
    variable = re.search(r"pretrained: \$\{oc\.env:(\w+),null\}", text).group(1)
    family = re.search(r"^family: (\w+)", text, re.MULTILINE)
    assert path_variable(section, family.group(1) if family else "qwen2_vl") == variable


def test_required_weights_without_paths_are_named_in_one_message(monkeypatch, tmp_path):
    """The Qwen2.5-VL option of the paper's model with no variable set: one error, whole."""
    for variable in ("LAVIDA_QWEN2_5VL_PATH", "LAVIDA_SAM2_PATH", "LAVIDA_CLIP_PATH"):
        monkeypatch.delenv(variable, raising=False)
    config = compose_model_config("lavida", ["model/mllm=qwen2_5vl_7b"])
    with pytest.raises(WeightsNotFoundError) as error:
        check_base_weights(config)
    assert str(error.value) == (
        "No local weights are configured for:\n"
        "  - model.mllm.pretrained (environment variable LAVIDA_QWEN2_5VL_PATH)\n"
        "  - model.text_encoder.pretrained (environment variable LAVIDA_CLIP_PATH)\n"
        "  - model.mask_decoder.pretrained (environment variable LAVIDA_SAM2_PATH)\n"
        "LAVIDA fine-tunes pretrained base models and never downloads them: set the variables to the "
        "local copies (README, step 1), or pass model.<part>.pretrained=PATH. Random base models are "
        "only for smoke runs: model.base_weights=optional."
    )
    # Only the unset one is named.
    given = dataclasses.replace(
        config,
        text_encoder=dataclasses.replace(config.text_encoder, pretrained=None),
        mllm=dataclasses.replace(config.mllm, pretrained=str(tmp_path / "set")),
        mask_decoder=dataclasses.replace(config.mask_decoder, pretrained=str(tmp_path / "set")),
    )
    with pytest.raises(WeightsNotFoundError) as error:
        check_base_weights(given)
    assert "environment variable LAVIDA_CLIP_PATH" in str(error.value)
    assert "mllm" not in str(error.value) and "mask_decoder" not in str(error.value)


def test_each_given_base_model_path_is_checked(tmp_path):
    """With optional base weights, a path that is given must still hold its model: the MLLM folder, the
    CLIP file and the SAM2 folder are each checked (with their own name, files and hint)."""
    tiny = compose_model_config("tiny")
    assert tiny.base_weights == "optional"
    missing = tmp_path / "nothing_here"

    def with_paths(mllm=None, text_encoder=None, mask_decoder=None):
        return dataclasses.replace(
            tiny,
            mllm=dataclasses.replace(tiny.mllm, pretrained=mllm),
            text_encoder=dataclasses.replace(tiny.text_encoder, pretrained=text_encoder),
            mask_decoder=dataclasses.replace(tiny.mask_decoder, pretrained=mask_decoder),
        )

    check_base_weights(with_paths())  # nothing given: random base models, nothing to check
    qwen_files = "  - config.json\n  - model.safetensors or model.safetensors.index.json\n"
    with pytest.raises(WeightsNotFoundError) as error:
        check_base_weights(with_paths(mllm=str(missing)))
    assert str(error.value).startswith(
        f"qwen2_vl model: expected a local directory at '{missing}', but it does not exist.\n"
        f"It must contain:\n{qwen_files}"
    )
    assert str(error.value).endswith(QWEN_HINT)
    with pytest.raises(WeightsNotFoundError, match="CLIP text encoder"):
        check_base_weights(with_paths(text_encoder=str(missing)))
    with pytest.raises(WeightsNotFoundError) as error:
        check_base_weights(with_paths(mask_decoder=str(missing)))
    assert str(error.value).startswith(f"SAM2: expected a local directory at '{missing}'")
    assert str(error.value).endswith(SAM2_HINT)


# -- build_lavida: each configured value reaches its component (stand-in builders record their arguments) --


class _StandInBuilders:
    """Replaces the three base-model builders of lavida.models.lavida by stand-ins that record their
    keyword arguments and return empty modules of the given widths (no base model is built)."""

    LLM_DIM, TEXT_DIM, VISION_DIM = 24, 12, 10

    def __init__(self, monkeypatch):
        self.calls = {}
        for name, attribute, value in (
            ("build_semantic_extractor", "hidden_size", self.LLM_DIM),
            ("build_category_encoder", "dim", self.TEXT_DIM),
            ("build_mask_decoder", "feature_dim", self.VISION_DIM),
        ):
            monkeypatch.setattr(lavida_module, name, self._stand_in(name, attribute, value))

    def _stand_in(self, name, attribute, value):
        def build(**kwargs):
            self.calls[name] = kwargs
            module = nn.Module()
            setattr(module, attribute, value)
            return module

        return build


# Every projector value differs from MultiScaleSemanticProjector's default, so a dropped argument shows.
PROJECTOR_OVERRIDES = [
    "model.projector.hidden_dim=16",
    "model.projector.num_queries=3",
    "model.projector.num_layers=2",
    "model.projector.num_heads=2",
    "model.projector.mlp_dim=20",
    "model.projector.cross_attn_heads=4",
    "model.projector.attention_downsample_rate=1",
    "model.projector.out_dim=8",
    "model.projector.eq7=official",
]


def test_build_passes_each_configured_value_to_its_builder(monkeypatch, tmp_path):
    builders = _StandInBuilders(monkeypatch)
    overrides = [
        "model.compression.ratio=0.3",
        "model.compression.k=5",
        "model.compression.density=lof",
        "model.mllm.gradient_checkpointing=true",
        "model.mllm.attn_implementation=eager",
        "model.mask_decoder.prompt_embedding=none",
        "model.mask_decoder.train_image_encoder=true",
        f"model.text_encoder.pretrained={tmp_path / 'clip.safetensors'}",
        "model.dtype=bfloat16",
        "model.projector.out_dim=8",
    ]
    config = compose_model_config("tiny", overrides)
    monkeypatch.setattr(lavida_module, "check_base_weights", lambda config: None)  # no file at that path
    model = lavida_module.build_lavida(config)
    m, t, d = config.mllm, config.text_encoder, config.mask_decoder
    mllm = builders.calls["build_semantic_extractor"]
    compressor = mllm.pop("compressor")
    assert mllm == {
        "family": m.family,
        "pretrained": m.pretrained,
        "arch": m.arch,
        "lora": m.lora,
        "positions": m.positions,
        "dtype": "bfloat16",
        "attn_implementation": "eager",
        "gradient_checkpointing": True,
    }
    assert (compressor.ratio, compressor.k, compressor.density) == (0.3, 5, "lof")
    assert builders.calls["build_category_encoder"] == {
        "model_name": t.model_name,
        "pretrained": str(tmp_path / "clip.safetensors"),
        "arch": t.arch,
        "dtype": "bfloat16",
    }
    assert builders.calls["build_mask_decoder"] == {
        "pretrained": d.pretrained,
        "arch": d.arch,
        "prompt_dim": 8,  # the projector's D_m
        "prompt_embedding": "none",
        "train_image_encoder": True,
        "dtype": "bfloat16",
    }
    assert model.projector_dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("enabled", "ratio", "compressed"),
    [(True, 0.5, True), (True, 1.0, False), (False, 0.5, False)],
)
def test_compression_is_built_only_when_enabled_below_ratio_one(monkeypatch, enabled, ratio, compressed):
    """Ratio 1.0 keeps every token (Tab. 5's "1.0" row): no compressor, as when compression is off."""
    builders = _StandInBuilders(monkeypatch)
    overrides = [f"model.compression.enabled={enabled}", f"model.compression.ratio={ratio}"]
    lavida_module.build_lavida(compose_model_config("tiny", overrides))
    compressor = builders.calls["build_semantic_extractor"]["compressor"]
    assert (compressor is not None) == compressed


@pytest.mark.parametrize(("kind", "two_way"), [("multiscale", True), ("qformer", False)])
def test_built_projector_is_the_configured_one(monkeypatch, kind, two_way):
    """Tab. 4: the proposed projector (two-way blocks) or the Q-Former (one-way), with every configured
    size: the built one computes what a projector built by hand from the same values computes."""
    _StandInBuilders(monkeypatch)
    config = compose_model_config("tiny", [*PROJECTOR_OVERRIDES, f"model.projector.kind={kind}"])
    built = lavida_module.build_lavida(config).projector.eval()
    widths = _StandInBuilders
    by_hand = MultiScaleSemanticProjector(
        llm_dim=widths.LLM_DIM,
        text_dim=widths.TEXT_DIM,
        vision_dim=widths.VISION_DIM,
        out_dim=8,
        hidden_dim=16,
        num_queries=3,
        num_layers=2,
        num_heads=2,
        mlp_dim=20,
        cross_attn_heads=4,
        attention_downsample_rate=1,
        eq7="official",
        two_way=two_way,
    ).eval()
    by_hand.load_state_dict(built.state_dict())  # strict: the same modules of the same shapes
    g = torch.Generator().manual_seed(0)
    inputs = {
        "f_sem": torch.randn(2, widths.LLM_DIM, generator=g),
        "f_c": torch.randn(2, 3, widths.TEXT_DIM, generator=g),
        "category_mask": torch.tensor([[True, True, False], [True, True, True]]),
        "f_v": torch.randn(3, 4, widths.VISION_DIM, generator=g),
        "f_v_pos": torch.randn(3, 4, widths.VISION_DIM, generator=g),
        "frame_to_sample": torch.tensor([1, 0, 1]),
    }
    with torch.no_grad():
        torch.testing.assert_close(built(**inputs), by_hand(**inputs), rtol=0, atol=0)


def test_mlp_kind_builds_tab4_mlp_adapter_from_a_config_dict(monkeypatch):
    """Tab. 4's "MLP" row, the configuration given as a dict (as read from a checkpoint's JSON)."""
    _StandInBuilders(monkeypatch)
    config = compose_model_config("tiny", ["model.projector.kind=mlp", *PROJECTOR_OVERRIDES])
    projector = lavida_module.build_lavida(dataclasses.asdict(config)).projector
    assert isinstance(projector, MLPAdapter)
    first, second = projector.mlp[0], projector.mlp[2]
    assert (first.in_features, first.out_features) == (_StandInBuilders.LLM_DIM, 16)  # hidden_dim
    assert (second.in_features, second.out_features) == (16, 8)  # out_dim


def test_an_unknown_projector_kind_is_refused_by_name(monkeypatch):
    _StandInBuilders(monkeypatch)
    config = dataclasses.replace(
        compose_model_config("tiny"),
        projector=dataclasses.replace(compose_model_config("tiny").projector, kind="perceiver"),
    )
    with pytest.raises(ValueError) as error:
        lavida_module.build_lavida(config)
    assert str(error.value) == "model.projector.kind must be multiscale, qformer or mlp; got 'perceiver'."


# -- predict(): eval mode for the forward, the mode restored, gated by default -----------------------------


class _FixedOutputModel(LavidaModel):
    """A LavidaModel whose forward returns a fixed output and records the mode it ran in."""

    def forward(self, batch):
        self.modes.append(self.training)
        mask_logits = torch.stack([torch.full((2, 2, 2), 3.0), torch.full((2, 2, 2), 5.0)])
        mask_logits[:, 1] = -7.0  # mask 1 of each frame; mask 0 of frame 0 and 1 hold 3 and 5
        return LavidaOutput(
            mask_logits=mask_logits,
            iou_pred=torch.tensor([[0.2, 0.9], [0.8, 0.1]]),  # best: mask 1, then mask 0
            object_logits=torch.tensor([-0.5, 2.0]),  # frame 0 predicted empty
            seg_features=torch.zeros(1, 2),
            lm_loss=None,
            visual_tokens=torch.zeros(1),
            kept_tokens=torch.zeros(1),
        )


@pytest.mark.parametrize("training", [True, False])
def test_predict_runs_in_eval_mode_restores_the_mode_and_gates_by_default(training):
    model = _FixedOutputModel(
        mllm=nn.Identity(), text_encoder=nn.Identity(), mask_decoder=nn.Identity(), projector=nn.Identity()
    )
    model.modes = []
    model.train(training)
    prediction = model.predict(batch=None)  # docs/fidelity.md: predictions are gated (gate_masks=True)
    assert model.modes == [False] and model.training == training
    # Frame 0: best mask 1 (-7), gated to -1024 (object logit ≤ 0); frame 1: best mask 0 (5), kept.
    torch.testing.assert_close(prediction.mask_logits[0], torch.full((2, 2), -1024.0))
    torch.testing.assert_close(prediction.mask_logits[1], torch.full((2, 2), 5.0))
    ungated = model.predict(batch=None, gate_masks=False)
    torch.testing.assert_close(ungated.mask_logits[0], torch.full((2, 2), -7.0))


# -- forward(): dtypes at the SAM2 boundary ------------------------------------------------------------------


class _StandInSam2(nn.Module):
    """A bfloat16 SAM2 stand-in that records the dtype of its image input and of the prompt f_proj."""

    def __init__(self):
        super().__init__()
        self.sam = nn.Module()
        self.sam.no_memory_embedding = nn.Parameter(torch.zeros(1, dtype=torch.bfloat16))
        self.seen = {}

    def encode_images(self, pixels):
        self.seen["pixels"] = pixels.dtype
        f_v = torch.zeros(pixels.shape[0], 4, 3, dtype=torch.bfloat16)
        return SimpleNamespace(tokens=lambda: (f_v, f_v))

    def forward(self, features, f_proj):
        self.seen["prompt"] = f_proj.dtype
        frames = f_proj.shape[0]
        return SimpleNamespace(
            mask_logits=torch.zeros(frames, 3, 2, 2),
            iou_pred=torch.zeros(frames, 3),
            object_logits=f_proj[:, 0],
        )


def test_float32_pixels_and_prompts_reach_a_bfloat16_sam2_in_its_dtype():
    """The processor emits float32 pixels; a bf16 SAM2 (the GPU setting) gets them and f_proj in bf16. A
    float32 projector gets its inputs in float32, also f_sem from a bf16 LLM."""
    mask_decoder = _StandInSam2()
    f_sem = torch.ones(1, 2, dtype=torch.bfloat16)
    semantic = SimpleNamespace(seg_features=f_sem, lm_loss=None, visual_tokens=None, kept_tokens=None)
    model = LavidaModel(
        mllm=lambda batch: semantic,
        text_encoder=_RowsAsFeatures(),
        mask_decoder=mask_decoder,
        projector=MLPAdapter(llm_dim=2, out_dim=2, hidden_dim=2),
    )
    batch = SimpleNamespace(
        sam_pixel_values=torch.zeros(2, 3, 8, 8),
        category_tokens=torch.zeros(1, 3),
        category_to_sample=torch.tensor([0]),
        batch_size=1,
        frame_to_sample=torch.tensor([0, 0]),
    )
    output = model(batch)
    assert mask_decoder.seen == {"pixels": torch.bfloat16, "prompt": torch.bfloat16}
    assert output.object_logits.dtype == torch.bfloat16
