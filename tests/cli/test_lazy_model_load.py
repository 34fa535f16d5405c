"""lavida-eval and lavida-detect load the model only for a video whose results are not already there.

A rerun that finds every result cached (to recompute the metrics after a crash in them, say) must not
pay the model load (minutes and ~17 GB for the paper's Qwen2-VL-7B + SAM2), and must write the same
files; a rerun with some results missing loads the model once and predicts only those.
"""

import json
import logging

import pytest
import torch
from accelerate import PartialState
from conftest import compose_cli_config, moving_square
from detect.cli_config import cli_config

import lavida.cli.detect as detect_cli
import lavida.cli.eval as evaluate
import lavida.models.checkpoint as checkpoints
from lavida.data.video import write_video

REPORTS = ("metrics.json", "report.md", "per_video.csv")


@pytest.fixture(scope="module")
def checkpoint(detect_checkpoint):
    return detect_checkpoint


def eval_config(tree, output_dir, checkpoint, **values):
    """lavida-eval's config on a UCSD Ped2 tree (CPU, no workers); ``values`` override its keys."""
    defaults = {
        "benchmark.root": str(tree.root),
        "checkpoint": str(checkpoint),
        "output_dir": str(output_dir),
        "num_workers": 0,
    }
    return compose_cli_config("eval", "benchmark=ucsd_ped2", **{**defaults, **values})


def count_loads(monkeypatch, *, refuse: bool = False) -> list[str]:
    """Record every checkpoint load (as lavida-eval and lavida-detect do it); ``refuse``: fail instead."""
    import lavida.models.checkpoint as module

    loads, original = [], module.load_checkpoint

    def load_checkpoint(directory, **options):
        if refuse:
            pytest.fail("the model was loaded")
        loads.append(str(directory))
        return original(directory, **options)

    monkeypatch.setattr(module, "load_checkpoint", load_checkpoint)
    return loads


def test_an_eval_rerun_with_every_result_cached_does_not_load_the_model(checkpoint, tmp_path, monkeypatch):
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run
    from lavida.eval.result_cache import cached_result_path
    from lavida.eval.video_result import VideoResult

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    out = tmp_path / "out"
    cfg = eval_config(tree, out, checkpoint)
    first = run(cfg)
    written = {name: (out / name).read_bytes() for name in REPORTS}
    # What the cache is keyed on, known without the model, as the loaded model reported it before (so
    # the caches of earlier runs stay valid): its dtype on the CPU and the mask gate.
    _, facts = VideoResult.read_fingerprint(cached_result_path(out, next(iter(tree.videos))))
    assert {key: json.loads(facts)["run"]["run"][key] for key in ("dtype", "gate_masks")} == {
        "dtype": "torch.float32",
        "gate_masks": True,
    }

    count_loads(monkeypatch, refuse=True)
    assert run(cfg) == first
    assert {name: (out / name).read_bytes() for name in REPORTS} == written


def test_an_eval_rerun_with_a_result_missing_loads_the_model_once(checkpoint, tmp_path, monkeypatch):
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run
    from lavida.eval import runner
    from lavida.eval.result_cache import cached_result_path

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    out = tmp_path / "out"
    cfg = eval_config(tree, out, checkpoint)
    first = run(cfg)
    missing = sorted(tree.videos)[-1]
    cached_result_path(out, missing).unlink()  # as if killed before this video was done

    loads, predicted, original = count_loads(monkeypatch), [], runner._predict
    monkeypatch.setattr(
        runner, "_predict", lambda video, *a: predicted.append(video.name) or original(video, *a)
    )
    assert run(cfg) == first
    assert loads == [str(checkpoint)] and predicted == [missing]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "float32"),  # CPU
        ({"dtype": "float16"}, "float16"),
        ({"dtype": "float16", "checkpoint_overrides": {"dtype": "bfloat16"}}, "bfloat16"),  # as loaded
    ],
)
def test_the_eval_dtype_known_before_the_load_is_the_loaded_models(checkpoint, tmp_path, values, expected):
    import torch

    from lavida.cli.eval import build_predictor, model_dtype

    cfg = eval_config(tmp_path, tmp_path / "out", checkpoint, **values)
    assert model_dtype(cfg) == expected
    assert build_predictor(cfg).dtype == getattr(torch, expected)


def test_the_eval_predictor_takes_the_configured_batch_workers_and_mask_gate(checkpoint, tmp_path):
    """Settings other than the defaults (batch_size 1, num_workers 0, gate_masks true of Predictor)."""
    cfg = eval_config(tmp_path, tmp_path / "out", checkpoint, batch_size=3, num_workers=1, gate_masks=False)
    predictor = evaluate.build_predictor(cfg)
    assert (predictor.batch_size, predictor.num_workers, predictor.gate_masks) == (3, 1, False)


def test_the_eval_model_loads_on_this_processs_device_and_the_log_says_where(
    checkpoint, tmp_path, monkeypatch, caplog
):
    """Under ``accelerate launch`` each process loads onto its own device (cuda:<rank>), which only
    Accelerate knows; the log line names the checkpoint, the device and the dtype."""
    devices, original = [], checkpoints.load_checkpoint

    def load_checkpoint(directory, **options):
        devices.append(options["device"])
        return original(directory, **options)

    monkeypatch.setattr(checkpoints, "load_checkpoint", load_checkpoint)
    caplog.set_level(logging.INFO, logger="lavida.cli.eval")
    evaluate.build_predictor(eval_config(tmp_path, tmp_path / "out", checkpoint))
    assert devices == [PartialState().device]
    assert f"Loaded {checkpoint} on {PartialState().device} (torch.float32)" in caplog.messages


def test_eval_resolves_interpolations_in_checkpoint_overrides(
    checkpoint, tiny_pretrained, tmp_path, monkeypatch
):
    """``+checkpoint_overrides.mask_decoder.pretrained=${oc.env:SAM2_DIR}`` names the weights by their value,
    not by the text of the interpolation; likewise a dtype."""
    monkeypatch.setenv("LAVIDA_TEST_SAM2", str(tiny_pretrained.mask_decoder.pretrained))
    monkeypatch.setenv("LAVIDA_TEST_DTYPE", "float16")
    overrides = {
        "dtype": "${oc.env:LAVIDA_TEST_DTYPE}",
        "mask_decoder": {"pretrained": "${oc.env:LAVIDA_TEST_SAM2}"},
    }
    cfg = eval_config(tmp_path, tmp_path / "out", checkpoint, checkpoint_overrides=overrides)
    assert evaluate.model_dtype(cfg) == "float16"
    assert evaluate.build_predictor(cfg).dtype == torch.float16


def test_a_model_loaded_in_another_dtype_than_recorded_is_refused(checkpoint, tmp_path, monkeypatch):
    """The cache fingerprint records the dtype before the load: a model that loads in another one (a
    loader that ignored the dtype override) must not have its results cached under the recorded one."""
    original = checkpoints.load_checkpoint

    def load_in_half_precision(directory, **options):
        model, config = original(directory, **options)
        return model.to(torch.float16), config

    monkeypatch.setattr(checkpoints, "load_checkpoint", load_in_half_precision)
    with pytest.raises(RuntimeError, match=r"loaded in torch\.float16, not in float32 as recorded"):
        evaluate.build_predictor(eval_config(tmp_path, tmp_path / "out", checkpoint))


def test_a_dtype_the_model_cannot_load_in_is_refused_before_the_benchmark_loads(checkpoint, tmp_path):
    """Not at the first video to predict, minutes into probing the benchmark, or never when all are cached."""
    from lavida.cli.eval import run

    for values, named in (
        ({"dtype": "bf16"}, "dtype"),
        ({"checkpoint_overrides": {"dtype": "int8"}}, r"checkpoint_overrides\.dtype"),
    ):
        cfg = eval_config(tmp_path / "no_such_root", tmp_path / "out", checkpoint, **values)
        with pytest.raises(ValueError, match=rf"^{named} must be one of float32, bfloat16, float16; got"):
            run(cfg)


def test_the_default_dtype_is_bfloat16_on_a_gpu_and_overrides_win():
    import torch

    from lavida.inference import load_dtype

    assert load_dtype(torch.device("cuda")) == "bfloat16"
    assert load_dtype(torch.device("cpu")) == "float32"
    assert load_dtype(torch.device("cuda"), dtype="float16") == "float16"
    assert (
        load_dtype(torch.device("cpu"), dtype="float16", config_overrides={"dtype": "bfloat16"}) == "bfloat16"
    )
    with pytest.raises(ValueError, match=r"checkpoint_overrides\.dtype must be one of .*got None"):
        load_dtype(torch.device("cpu"), dtype="float32", config_overrides={"dtype": None})


def test_a_detect_rerun_reusing_every_video_does_not_load_the_model(checkpoint, tmp_path, monkeypatch):
    from lavida.cli.detect import run

    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a.mp4", moving_square(4), fps=4)
    write_video(inputs / "b.mp4", moving_square(6), fps=6)
    cfg = cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False)
    first = run(cfg)
    # What a video's outputs are keyed on, known without the model, as the loaded model reported it.
    made = json.loads((tmp_path / "out" / "a" / "run.json").read_text())
    assert (made["dtype"], made["device"], made["clip_length"]) == ("torch.float32", "cpu", 8)

    with monkeypatch.context() as patch:
        count_loads(patch, refuse=True)
        assert run(cfg) == first

    (tmp_path / "out" / "b" / "run.json").unlink()  # as if killed before b's folder was complete
    loads = count_loads(monkeypatch)
    assert run(cfg) == first and loads == [str(checkpoint)]


def test_a_detect_run_loads_the_model_once_for_all_its_videos(checkpoint, tmp_path, monkeypatch):
    inputs = tmp_path / "videos"
    inputs.mkdir()
    write_video(inputs / "a.mp4", moving_square(2), fps=2)
    write_video(inputs / "b.mp4", moving_square(3), fps=3)
    loads = count_loads(monkeypatch)
    index = detect_cli.run(cli_config(inputs, "fire", checkpoint, tmp_path / "out", overlay=False))
    assert [entry["frames"] for entry in index["videos"]] == [2, 3] and loads == [str(checkpoint)]
