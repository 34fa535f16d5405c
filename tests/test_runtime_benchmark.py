"""benchmarks/runtime.py: the tiny model end to end on the CPU (tables, JSON, mode agreement, FLOPs).

``benchmarks/`` is not a package, so the script is imported from its file. One module-scoped run
covers every mode × ratio × clip length; the timings are only checked for being finite and positive
(benchmarks are scripts that print figures, not timed tests).
"""

import dataclasses
import json
import math
from typing import Any

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


# -- regressions ----------------------------------------------------------------------------------------

SMALL_GRID = ["--tiny", "--ratios", "1", "--clip-lengths", "2", "4", "--warmup", "0", "--repeats", "1"]
SMALL_GRID += ["--processing-repeats", "1"]


def test_only_the_measured_clip_lengths_batch_is_kept_on_the_device(bench, monkeypatch):
    """While one configuration is measured, no other clip length's device batch is alive.

    The batch handed to ``measure`` is the device copy; once its clip length is done it must be
    released (only a CPU copy may stay), so a GPU's resident and peak memory hold one input batch,
    not every clip length's. On the CPU the copies share storage, so the device batches are tracked
    as objects: each must be dead by the time another clip length is measured.
    """
    import gc
    import weakref

    real_measure = bench.measure
    seen: list[tuple[int, weakref.ref]] = []
    alive_at_measure: list[tuple[str, int, list[int]]] = []

    def spy(model, batch, hooks, mode, *, clip_length, **kwargs):
        gc.collect()
        alive = [t for t, ref in seen if t != clip_length and ref() is not None]
        alive_at_measure.append((mode.name, clip_length, alive))
        seen.append((clip_length, weakref.ref(batch)))
        return real_measure(model, batch, hooks, mode, clip_length=clip_length, **kwargs)

    monkeypatch.setattr(bench, "measure", spy)
    bench.main(SMALL_GRID)
    assert [(mode, t) for mode, t, _ in alive_at_measure] == [
        ("reference", 2),
        ("reference", 4),
        ("fast", 2),
        ("fast", 4),
    ]
    assert all(not alive for _, _, alive in alive_at_measure), alive_at_measure


def test_out_is_written_after_every_configuration(bench, monkeypatch, tmp_path):
    """An interrupted run keeps, in ``--out``, every configuration it finished (written atomically)."""
    real_measure = bench.measure
    calls = []

    def interrupted_at_the_third(*args, **kwargs):
        calls.append(kwargs["clip_length"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(bench, "measure", interrupted_at_the_third)
    out = tmp_path / "partial.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main([*SMALL_GRID, "--out", str(out)])
    written = json.loads(out.read_text())
    assert [(r["mode"], r["clip_length"]) for r in written["results"]] == [("reference", 2), ("reference", 4)]
    assert written["meta"]["complete"] is False
    assert (
        "### All configurations" in written["markdown"]
        and "**Partial: 2 configurations" in written["markdown"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["partial.json"]  # no temporary file left behind

    monkeypatch.setattr(bench, "measure", real_measure)
    bench.main([*SMALL_GRID, "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["meta"]["complete"] is True and len(written["results"]) == 4
    assert "Partial" not in written["markdown"]
    assert written["agreement_verdict"].startswith("pass (2 of 2")


@pytest.mark.parametrize("reference, fast", [("float16", "bfloat16"), ("bfloat16", "float16")])
def test_float16_with_bfloat16_is_refused(bench, reference, fast):
    """Neither 16-bit dtype holds the other's values, so the modes could not share one set of weights."""
    args = bench.parse_args(["--tiny", "--reference-dtype", reference, "--fast-dtype", fast])
    with pytest.raises(SystemExit, match="float16.*bfloat16|bfloat16.*float16") as raised:
        bench.mode_specs(args, torch.device("cpu"))
    assert "float32" in str(raised.value)


@pytest.mark.parametrize("reference, fast", [("bfloat16", "float32"), ("float32", "float16")])
def test_switching_modes_keeps_every_weight_value(bench, reference, fast):
    """The model is built in the lower precision and cast up, exactly: every weight keeps its value."""
    args = bench.parse_args(["--tiny", "--reference-dtype", reference, "--fast-dtype", fast])
    modes = bench.mode_specs(args, torch.device("cpu"))
    assert modes[0].dtype != torch.float32 and modes[1].dtype == torch.float32
    with bench.quiet_libraries():
        model = bench.build_random_model(bench.compose_config("tiny"), torch.device("cpu"), modes[0].dtype, 0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with bench.applied(model, dataclasses.replace(modes[1], merge_lora=False)):
        for name, p in model.named_parameters():
            assert p.dtype == torch.float32, name
            assert torch.equal(p.detach().double(), before[name].double()), name


def test_lora_is_random_so_the_agreement_check_covers_the_merge(bench):
    """Every lora_B is nonzero, merging changes the base weights, fast (merged) agrees with reference
    (adapters) within the fp32 tolerance, and dropping the adapters would fail that tolerance."""
    device = torch.device("cpu")
    config = bench.compose_config("tiny")
    with bench.quiet_libraries():
        model = bench.build_random_model(config, device, torch.float32, seed=0)
    lora_b = {name: p for name, p in model.named_parameters() if "lora_B" in name}
    assert lora_b and all(bool((p != 0).all()) for p in lora_b.values()), list(lora_b)
    processor = bench.make_processor(model, bench.PRESETS["tiny"].budget)
    batch, _ = bench.prepare_batch(processor, bench.synthetic_clip(4, 240, 136), device, repeats=1)
    hooks = bench.StageHooks(model)
    bench.set_compression(model, 1.0, config, hooks)
    args = bench.parse_args(["--tiny"])
    reference, fast = sorted(bench.mode_specs(args, device), key=lambda m: m.name != "reference")
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    assert base

    def run(mode):
        return bench.measure(
            model, batch, hooks, mode, ratio=1.0, clip_length=4, device=device, warmup=0, repeats=1
        )

    with bench.applied(model, reference):
        ref = run(reference)
    with bench.applied(model, fast):
        merged_changed = any(not torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
        got = run(fast)
    assert merged_changed, "merge_adapter left every base weight unchanged"
    tolerance = bench.TOLERANCES[torch.float32]
    assert bench.compare_outputs(ref, got, tolerance)["passed"] is True
    with model.mllm.model.disable_adapter():  # what a fast mode that lost the adapters would compute
        no_lora = run(reference)
    assert bench.compare_outputs(ref, no_lora, tolerance)["passed"] is False


@pytest.mark.parametrize("value", ["240", "240x", "240*136", "x136", "0x136", "240x136x3"])
def test_malformed_frame_size_is_a_usage_error(bench, value, capsys):
    with pytest.raises(SystemExit) as raised:
        bench.parse_args(["--tiny", "--frame-size", value])
    assert raised.value.code == 2
    assert "--frame-size: expected WxH" in capsys.readouterr().err


def test_frame_size_is_width_by_height(bench):
    assert bench.parse_args(["--tiny", "--frame-size", "240x136"]).frame_size == (240, 136)
    assert bench.parse_args(["--tiny", "--frame-size", "856X480"]).frame_size == (856, 480)


def test_cuda_timing_and_memory_calls_name_the_device(bench, monkeypatch):
    """With --device cuda:1, every torch.cuda call of the timing and memory code names cuda:1 (a call
    without a device would act on the current device, cuda:0). CUDA is faked: no GPU needed."""
    import contextlib
    from types import SimpleNamespace

    device = torch.device("cuda", 1)
    calls: list[tuple[str, Any]] = []
    current = [torch.device("cuda", 0)]

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self, stream=None):
            calls.append(("Event.record", stream))

        def elapsed_time(self, other):
            return 1.0

    @contextlib.contextmanager
    def fake_device(target):
        previous, current[0] = current[0], torch.device(target)
        try:
            yield
        finally:
            current[0] = previous

    def recorder(name):
        def call(device=None):
            calls.append((name, device))
            return 0

        return call

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "device", fake_device)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream", device))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache", current[0])))
    for name in ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, recorder(name))

    def fake_forward(model, batch, clock, *, per_frame_decode):
        for stage in ("mllm", "sam2_image_encoder", "mask_decoder"):
            with clock.stage(stage):
                pass
        output = SimpleNamespace(
            object_logits=torch.zeros(2, 1),
            mask_logits=torch.zeros(2, 3, 4, 4),
            iou_pred=torch.zeros(2, 3),
            visual_tokens=torch.tensor([4]),
            kept_tokens=torch.tensor([4]),
        )
        return output, SimpleNamespace(frame_scores=torch.zeros(2))

    monkeypatch.setattr(bench, "staged_forward", fake_forward)
    mode = bench.Mode(
        name="fast",
        dtype=torch.bfloat16,
        attn="sdpa",
        math_sdpa=False,
        per_frame_decode=False,
        merge_lora=False,
        compile=False,
    )
    batch = SimpleNamespace(attention_mask=torch.ones(1, 10))
    hooks = SimpleNamespace(clock=None)
    bench.measure(None, batch, hooks, mode, ratio=1.0, clip_length=2, device=device, warmup=1, repeats=1)
    processor = lambda samples, train: SimpleNamespace(to=lambda target: "batch on " + str(target))  # noqa: E731
    bench.prepare_batch(processor, bench.synthetic_clip(2, 32, 32), device, repeats=1)

    names = {name for name, _ in calls}
    assert {"Event.record", "synchronize", "empty_cache", "memory_allocated", "max_memory_allocated"} <= names
    assert "reset_peak_memory_stats" in names
    for name, where in calls:
        want = ("stream", device) if name == "Event.record" else device
        assert where == want, (name, where)


def test_the_full_model_without_cuda_is_refused_before_it_is_built(bench, monkeypatch, capsys):
    """Without --tiny and without CUDA the script fell back to the CPU and built the 8.45 B model in fp32
    (~34 GB), which ended in an allocator error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(bench, "build_random_model", no_build)
    monkeypatch.setattr(bench, "compose_config", no_build)
    with pytest.raises(SystemExit) as raised:
        bench.main([])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--tiny" in err and "--device cuda" in err

    # Asked for by name, the CPU is the user's choice; the tiny model defaults to it.
    assert bench.parse_args(["--device", "cpu"]).device == "cpu"
    assert bench.parse_args(["--model", "tiny"]).device == "cpu"
    assert bench.parse_args(["--tiny"]).device == "cpu"


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--warmup", "-1"), ("--repeats", "0"), ("--processing-repeats", "0"), ("--threads", "0")],
)
def test_counts_out_of_range_are_usage_errors_naming_the_flag(bench, capsys, flag, value):
    """``--warmup -1`` was accepted, and the report said "after -1 warm-up"."""
    with pytest.raises(SystemExit) as raised:
        bench.parse_args(["--tiny", flag, value])
    assert raised.value.code == 2
    assert f"argument {flag}: expected a whole number ≥" in capsys.readouterr().err
