"""benchmarks/runtime.py: what its agreement check and FLOP counts can claim.

Each test reproduces a defect on the tiny CPU model (or on synthetic outputs).
"""

import dataclasses

import pytest
import torch
from conftest import load_benchmark_script


@pytest.fixture(scope="module")
def bench():
    return load_benchmark_script("runtime")


@pytest.fixture(scope="module")
def reference_measurement(bench):
    """The fp32 reference outputs of the tiny random-weight model: ratio 1, clip length 8."""
    device = torch.device("cpu")
    with bench.quiet_libraries():
        config = bench.compose_config("tiny")
        model = bench.build_random_model(config, device, torch.float32, seed=0)
    processor = bench.make_processor(model, bench.PRESETS["tiny"].budget)
    batch, _ = bench.prepare_batch(processor, bench.synthetic_clip(8, 240, 136), device, repeats=1)
    hooks = bench.StageHooks(model)
    bench.set_compression(model, 1.0, config, hooks)
    reference = next(
        m for m in bench.mode_specs(bench.parse_args(["--tiny"]), device) if m.name == "reference"
    )
    with bench.quiet_libraries(), bench.applied(model, reference):
        return bench.measure(
            model, batch, hooks, reference, ratio=1.0, clip_length=8, device=device, warmup=0, repeats=1
        )


def _with_outputs(measurement, **changes):
    return dataclasses.replace(
        measurement, mode="fast", outputs={**measurement.outputs, **changes}, kept=list(measurement.kept)
    )


def test_a_pass_at_bf16_does_not_vouch_for_frame_scores_a_frame_shift_would_pass(
    bench, reference_measurement
):
    """Random weights give every frame nearly the same object logit (one bias, ±1 %), so a fast mode
    that scored the wrong frame (object logits shifted by one frame) passed the bf16 tolerance as
    "pass" with no qualification: the frame-score criteria could not have caught it."""
    ref = reference_measurement
    shifted = torch.roll(ref.outputs["object_logits"], 1)
    fast = _with_outputs(ref, object_logits=shifted, frame_scores=torch.sigmoid(shifted.double()))
    result = bench.compare_outputs(ref, fast, bench.TOLERANCES[torch.bfloat16])
    assert result["object_logits_rel_l2"] < 0.1  # the defect: within the bf16 tolerance
    assert result["frame_scores_judged"] is False
    assert result["verdict"] != "pass" and "frame scores not judged" in result["verdict"]
    assert result["frame_shift_object_logits_rel_l2"] == pytest.approx(result["object_logits_rel_l2"])
    # The masks of the same random model do vary by frame: a mask shift is still caught.
    assert result["masks_judged"] is True
    masks = _with_outputs(ref, mask_logits=torch.roll(ref.outputs["mask_logits"], 1, dims=0))
    assert bench.compare_outputs(ref, masks, bench.TOLERANCES[torch.bfloat16])["passed"] is False
    # In fp32 the tolerance is far below a frame shift: the same error is a failure.
    strict = bench.compare_outputs(ref, fast, bench.TOLERANCES[torch.float32])
    assert strict["frame_scores_judged"] is True and strict["passed"] is False


def test_the_overall_verdict_says_how_many_frame_score_checks_were_judged(bench, reference_measurement):
    ref = reference_measurement
    measurements = [ref, _with_outputs(ref)]
    modes = [
        bench.Mode(name, torch.bfloat16, "sdpa", False, False, False, False) for name in ("reference", "fast")
    ]
    report = bench.agreement_report(measurements, modes)
    assert (
        report["agreement_verdict"]
        == "pass (1 of 1 configurations judged; frame scores judged in 0 of them, masks in 1)"
    )
    fp32 = [dataclasses.replace(m, dtype=torch.float32) for m in modes]
    assert (
        bench.agreement_report(measurements, fp32)["agreement_verdict"]
        == "pass (1 of 1 configurations judged)"
    )


def test_non_finite_fast_outputs_fail_even_when_kept_tokens_differ(bench, reference_measurement):
    """NaN outputs are a failure, not rounding: a differing kept-token set must not excuse them."""
    ref = dataclasses.replace(reference_measurement, kept=[torch.arange(4)])
    nan = torch.full_like(ref.outputs["object_logits"], float("nan"))
    fast = dataclasses.replace(
        _with_outputs(ref, object_logits=nan, frame_scores=nan.double()), kept=[torch.arange(1, 5)]
    )
    result = bench.compare_outputs(ref, fast, bench.TOLERANCES[torch.bfloat16])
    assert result["kept_overlap"] < 1 and result["finite"] is False
    assert result["passed"] is False and result["verdict"] == "FAIL"


@torch.library.custom_op("lavida_review::opaque_attention", mutates_args=())
def _opaque_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """An attention kernel FlopCounterMode cannot see into, as the flash-attn package's."""
    return torch.nn.functional.scaled_dot_product_attention(query, key, value)


@_opaque_attention.register_fake
def _(query, key, value):
    return torch.empty_like(query)


def _opaque_attention_forward(module, query, key, value, attention_mask=None, **kwargs):
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return _opaque_attention(query, key, value).transpose(1, 2).contiguous(), None


def test_flops_count_attention_whatever_kernel_the_mode_uses(bench):
    """``--fast-attn flash_attention_2`` runs attention in the flash-attn package's kernels, whose FLOPs
    FlopCounterMode does not see: fast's FLOPs (and TFLOP/s, MFU) lost every attention product. An
    opaque registered attention stands in for flash-attn here."""
    from transformers import AttentionInterface

    AttentionInterface.register("lavida_review_opaque", _opaque_attention_forward)
    common = ["--tiny", "--modes", "fast", "--ratios", "1", "--clip-lengths", "4"]
    common += ["--warmup", "0", "--repeats", "1", "--processing-repeats", "1"]
    sdpa = bench.main([*common, "--fast-attn", "sdpa"])["results"][0]
    opaque = bench.main([*common, "--fast-attn", "lavida_review_opaque"])["results"][0]
    assert opaque["flops_per_frame"] == pytest.approx(sdpa["flops_per_frame"], rel=1e-9)
