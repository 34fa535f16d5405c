"""benchmarks/runtime.py: the tiny model end to end on the CPU (tables, JSON, mode agreement, FLOPs).

``benchmarks/`` is not a package, so the script is imported from its file. One module-scoped run
covers every mode × ratio × clip length; the timings are only checked for being finite and positive
(benchmarks are scripts, not timed tests: DESIGN §8).
"""

import json
import math

import pytest
import torch
from conftest import load_benchmark_script

MODES = ("reference", "fast")
RATIOS = (1.0, 0.5, 0.2, 0.1)
LENGTHS = (4, 8, 12, 16)


def load_benchmark():
    """Import benchmarks/runtime.py as a module."""
    return load_benchmark_script("runtime")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    """One tiny CPU run over the full grid; returns (returned report, report read back from --out)."""
    out = tmp_path_factory.mktemp("runtime") / "runtime.json"
    report = bench.main(
        ["--tiny", "--warmup", "0", "--repeats", "1", "--processing-repeats", "1", "--out", str(out)]
    )
    return report, json.loads(out.read_text())


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_mode_ratio_and_clip_length_is_reported(tiny_run, bench):
    report, written = tiny_run
    assert written["results"] == json.loads(json.dumps(report["results"]))
    results = {(r["mode"], r["ratio"], r["clip_length"]): r for r in written["results"]}
    assert set(results) == {(m, r, t) for m in MODES for r in RATIOS for t in LENGTHS}
    for (mode, ratio, length), r in results.items():
        where = f"{mode} ratio {ratio} clip {length}"
        for key in ("ms_per_frame", "ms_per_clip", "fps", "processing_ms_per_frame", "flops_per_frame"):
            assert _finite_positive(r[key]), (where, key, r[key])
        stages = r["stages_ms_per_frame"]
        assert set(stages) == set(bench.FINE_STAGES)
        assert all(math.isfinite(v) and v >= 0 for v in stages.values()), (where, stages)
        for name in (
            "qwen_vit",
            "sam2_image_encoder",
            "language_model",
            "clip_text",
            "projector",
            "mask_decoder",
        ):
            assert stages[name] > 0, (where, name)
        assert (stages["compression"] > 0) == (ratio < 1), (where, stages["compression"])
        # The paper's four columns partition the forward: they add up to the measured total.
        groups = r["groups_ms_per_frame"]
        assert set(groups) == {"visual_embedding", "llm_forward", "mask_decoding", "others"}
        assert sum(groups.values()) == pytest.approx(r["ms_per_frame"], rel=0.05)
        assert r["fps"] == pytest.approx(1e3 / r["ms_per_frame"])
        assert r["visual_tokens"] == 28 * length // 2  # 196×112 frames: 28 merged tokens per frame pair
        assert r["kept_tokens"] == max(1, math.floor(r["visual_tokens"] * ratio))
        assert r["text_tokens"] > 0
        assert r["peak_memory_gib"] is None and r["mfu"] is None  # CPU: no GPU memory, no peak FLOP/s
    assert written["meta"]["device"] == "cpu" and written["meta"]["modes"] == list(MODES)
    assert {(s["ratio"], s["clip_length"]) for s in written["speedups"]} == {
        (r, t) for r in RATIOS for t in LENGTHS
    }
    assert all(_finite_positive(s["speedup"]) for s in written["speedups"])


def test_tables_show_the_papers_numbers(tiny_run):
    markdown = tiny_run[1]["markdown"]
    assert "CPU run" in markdown
    for number in (
        "7.33",
        "58.65",
        "26.96",
        "44.08",
        "4.07",
        "31.71",
        "26.78",
        "4.78",
        "11.31",
        "165.27",
        "54.1 %",
    ):
        assert number in markdown, number
    for heading in (
        "Per-module",
        "Fine stages",
        "Compression ratio",
        "Clip length",
        "All configurations",
        "Agreement",
    ):
        assert f"### {heading}" in markdown, heading
    all_configs = markdown.split("### All configurations")[1].split("###")[0]
    rows = [line for line in all_configs.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(RATIOS) * len(LENGTHS)


def test_reference_and_fast_outputs_agree_on_cpu(tiny_run):
    """Both modes are fp32 on the CPU: per-frame vs batched decoding and eager vs SDPA agree to 1e-4."""
    report = tiny_run[1]
    assert report["tolerance"] == {"dtype": "float32", "rel_l2": 1e-4, "score_abs": 1e-4}
    assert len(report["agreement"]) == len(RATIOS) * len(LENGTHS)
    for a in report["agreement"]:
        assert a["finite"] and a["kept_overlap"] == 1.0, a
        assert a["passed"] is True, a
    assert report["agreement_verdict"].startswith("pass (16 of 16")


def test_flops_per_frame_scale_with_clip_length_and_ratio(tiny_run):
    results = {(r["mode"], r["ratio"], r["clip_length"]): r for r in tiny_run[1]["results"]}
    for mode in MODES:
        for ratio in RATIOS:
            rows = [results[(mode, ratio, t)] for t in LENGTHS]
            assert all(_finite_positive(r["flops_per_frame"]) for r in rows)
            # A clip costs more the more frames it has...
            per_clip = [r["flops_per_frame"] * r["clip_length"] for r in rows]
            assert per_clip == sorted(per_clip) and len(set(per_clip)) == len(per_clip), (
                mode,
                ratio,
                per_clip,
            )
            # ...and every per-frame stage costs the same per frame whatever the clip length (the ViT
            # attends within frame pairs, SAM2 encodes and decodes each frame on its own), up to a
            # per-call constant (the decoder's image-wide positional grid, < 0.1 %).
            for stage in ("qwen_vit", "sam2_image_encoder", "mask_decoder"):
                per_frame = [r["stage_flops_per_frame"][stage] for r in rows]
                assert per_frame[0] > 0
                assert max(per_frame) == pytest.approx(min(per_frame), rel=1e-3), (
                    mode,
                    ratio,
                    stage,
                    per_frame,
                )
        # Compression shortens the LLM's input: its FLOPs fall with the ratio (Tab. 4's trend).
        for t in LENGTHS:
            llm = [results[(mode, r, t)]["stage_flops_per_frame"]["language_model"] for r in RATIOS]
            assert llm == sorted(llm, reverse=True) and len(set(llm)) == len(llm), (mode, t, llm)


def test_staged_forward_is_the_models_forward(bench):
    """The benchmark times the library's computation: batched stages give exactly model(batch)."""
    device = torch.device("cpu")
    config = bench.compose_config("tiny")
    model = bench.build_random_model(config, device, torch.float32, seed=0)
    processor = bench.make_processor(model, bench.PRESETS["tiny"].budget)
    batch, _ = bench.prepare_batch(processor, bench.synthetic_clip(8, 240, 136), device, repeats=1)
    with torch.inference_mode():
        expected = model(batch)
        batched, prediction = bench.staged_forward(
            model, batch, bench.StageClock(device), per_frame_decode=False
        )
        per_frame, _ = bench.staged_forward(model, batch, bench.StageClock(device), per_frame_decode=True)
    assert torch.equal(batched.mask_logits, expected.mask_logits)
    assert torch.equal(batched.object_logits, expected.object_logits)
    torch.testing.assert_close(prediction.frame_scores, torch.sigmoid(expected.object_logits.double()))
    torch.testing.assert_close(per_frame.mask_logits, expected.mask_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(per_frame.object_logits, expected.object_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_bf16_modes_agree_on_gpu(bench, tmp_path):
    """On CUDA both modes run in bf16 (eager + per-frame vs SDPA + batched): the bf16 tolerance holds."""
    report = bench.main(
        [
            "--tiny",
            "--device",
            "cuda",
            "--ratios",
            "1",
            "0.2",
            "--clip-lengths",
            "4",
            "8",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert report["tolerance"]["dtype"] == "bfloat16"
    assert report["agreement_verdict"].startswith("pass")
    for r in report["results"]:
        assert _finite_positive(r["peak_memory_gib"]) and _finite_positive(r["mfu"]), r


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_full_model_runs_on_gpu(bench, tmp_path):
    """The full-size model at the paper's setting, one configuration (needs ~25 GB of GPU memory)."""
    report = bench.main(
        [
            "--model",
            "lavida",
            "--device",
            "cuda",
            "--ratios",
            "0.2",
            "--clip-lengths",
            "8",
            "--warmup",
            "1",
            "--repeats",
            "2",
        ]
    )
    (ref, fast) = sorted(report["results"], key=lambda r: r["mode"] != "reference")
    assert ref["visual_tokens"] == 5184 and ref["kept_tokens"] == 1036
    assert report["meta"]["mllm_frame_size"] == [1344, 756] and report["meta"]["sam_size"] == 1024
    assert report["agreement_verdict"].startswith("pass")
    assert fast["fps"] > 0 and ref["fps"] > 0
