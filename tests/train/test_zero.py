"""DeepSpeed ZeRO through the project's launcher configs (lavida/configs/launcher/zero2|3.yaml).

Each run is one process under ``torch.distributed.run`` (tests/train/zero_worker.py): the tiny model in
bf16 with gradient checkpointing, as ``experiment=paper_main`` trains the real one. On the CPU DeepSpeed
runs with its CPU accelerator and gloo (``DS_ACCELERATOR=cpu``); the same test runs on a GPU with NCCL.
The runs check that DeepSpeed really drives the step (its engine, ZeRO stage, bf16 weights), that the
losses are finite, and that a run stopped after its step-2 checkpoint and resumed replays the next two
steps of an uninterrupted run: the weights, the optimizer state, the schedule and the data position all
come back through DeepSpeed's checkpoint.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lavida.models.checkpoint import HEADS_FILE

WORKER = Path(__file__).with_name("zero_worker.py")
REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("deepspeed")


def start(
    config: Path, data_root: Path, output_dir: Path, launcher: str, *, device: str, stop_after: int = 0
) -> subprocess.Popen:
    """Start one worker process under torch.distributed.run (``--standalone``: its own rendezvous port,
    so that two workers can run side by side); its console goes to ``<output_dir>.console``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator (gloo); on a GPU machine it finds CUDA
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        str(WORKER), str(config), str(data_root), str(output_dir), launcher, str(stop_after),
    ]  # fmt: skip
    with output_dir.with_suffix(".console").open("w") as console:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=console, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def finish(worker: subprocess.Popen, output_dir: Path) -> dict:
    """Wait for a worker started by :func:`start`; returns its report."""
    try:
        returncode = worker.wait(timeout=600)
    except subprocess.TimeoutExpired:
        stop(worker)
        raise
    console = output_dir.with_suffix(".console").read_text()
    assert returncode == 0, console[-8000:]
    return json.loads((output_dir / "worker_report.json").read_text())


def stop(worker: subprocess.Popen) -> None:
    """Stop a worker started by :func:`start` and the process it runs.

    SIGTERM, which torch.distributed.run passes on to its worker (SIGKILL would stop only the launcher);
    SIGKILL after a minute, so that a worker ignoring it cannot hide the error being reported.
    """
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def launch(
    config: Path, data_root: Path, output_dir: Path, launcher: str, *, device: str, stop_after: int = 0
):
    """One worker process, waited for; returns its report."""
    worker = start(config, data_root, output_dir, launcher, device=device, stop_after=stop_after)
    return finish(worker, output_dir)


def _trainable_heads(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:07d}" / "model" / HEADS_FILE))


def check_zero_run_and_resume(synthetic_train_root, tiny_pretrained, tmp_path, *, device: str, launcher: str):
    config = tmp_path / "model.json"
    config.write_text(json.dumps(tiny_pretrained.to_dict()))
    # The uninterrupted run and the run stopped after step 2 are independent: they run side by side.
    out = tmp_path / "resumed"
    straight_worker = start(config, synthetic_train_root, tmp_path / "straight", launcher, device=device)
    first_worker = start(config, synthetic_train_root, out, launcher, device=device, stop_after=2)
    try:
        straight = finish(straight_worker, tmp_path / "straight")
        first = finish(first_worker, out)
    finally:
        for worker in (straight_worker, first_worker):
            if worker.poll() is None:  # the other one failed: stop this one too
                stop(worker)
    assert straight["engine"] == "DeepSpeedEngine" and straight["bf16"], straight
    assert straight["zero_stage"] == int(launcher[-1]), straight
    assert (
        straight["trainable_dtype"] == "torch.bfloat16"
    )  # DeepSpeed's bf16: bf16 weights, fp32 master copies
    assert straight["device"].startswith(device), straight
    assert (straight["started_at"], straight["stopped_at"], len(straight["losses"])) == (0, 4, 4)
    assert straight["all_finite"], straight["losses"]
    # DeepSpeed clipped and reported each step's gradient norm (gradient_clipping from train.optim).
    assert all(0 < step["grad_norm"] < float("inf") for step in straight["losses"]), straight["losses"]
    # DeepSpeed's own state (weights, fp32 master copies, optimizer moments) is in every checkpoint.
    deepspeed_state = tmp_path / "straight" / "checkpoints" / "step_0000002" / "accelerate"
    assert (deepspeed_state / "latest").is_file()
    # ...without the frozen weights, which a resume rebuilds from the base models (at 7B ~16 GB each time).
    written = sum(f.stat().st_size for f in deepspeed_state.rglob("*") if f.is_file())
    assert written < straight["frozen_bytes"] / 2, (written, straight["frozen_bytes"])
    # The weights moved between the two checkpoints: training happened, not just forward passes.
    early, late = _trainable_heads(tmp_path / "straight", 2), _trainable_heads(tmp_path / "straight", 4)
    assert early.keys() == late.keys() and early
    assert any(not torch.equal(early[name], late[name]) for name in early)
    assert all(t.numel() > 0 for t in late.values())  # whole tensors, not ZeRO shards

    assert (first["started_at"], first["stopped_at"], len(first["losses"])) == (0, 2, 2)
    resumed = launch(config, synthetic_train_root, out, launcher, device=device)
    assert (resumed["started_at"], resumed["stopped_at"], len(resumed["losses"])) == (2, 4, 2)
    replayed = first["losses"] + resumed["losses"]
    for step, (expected, got) in enumerate(zip(straight["losses"], replayed, strict=True), start=1):
        for key in ("loss", "loss_txt", "loss_seg", "grad_norm"):
            if device == "cpu":
                assert got[key] == expected[key], (step, key, got[key], expected[key])
            else:  # GPU kernels (atomics in backward) need not be bit-reproducible
                assert got[key] == pytest.approx(expected[key], rel=1e-2, abs=1e-4), (step, key)
    # The resumed run's step-4 weights are the uninterrupted run's: exactly on the CPU; on a GPU far
    # closer to them than the step-2 weights are (bf16 and non-reproducible kernels leave ulp-sized
    # differences, which Adam's normalised updates can spread to lr-sized ones on tiny gradients).
    resumed_late = _trainable_heads(out, 4)
    difference = _norm({name: resumed_late[name].float() - late[name].float() for name in late})
    moved = _norm({name: late[name].float() - early[name].float() for name in late})
    assert difference <= (0 if device == "cpu" else 0.5 * moved), (difference, moved)


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return float(sum(t.pow(2).sum() for t in tensors.values()) ** 0.5)


@pytest.mark.parametrize("launcher", ["zero2", "zero3"])
def test_zero_bf16_trains_and_resumes_exactly_on_cpu(
    synthetic_train_root, tiny_pretrained, tmp_path, launcher
):
    check_zero_run_and_resume(
        synthetic_train_root, tiny_pretrained, tmp_path, device="cpu", launcher=launcher
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("launcher", ["zero2", "zero3"])
def test_zero_bf16_trains_and_resumes_on_gpu(synthetic_train_root, tiny_pretrained, tmp_path, launcher):
    check_zero_run_and_resume(
        synthetic_train_root, tiny_pretrained, tmp_path, device="cuda", launcher=launcher
    )


def test_zero3_two_processes_whose_batches_differ_in_kind(tiny_pretrained, tmp_path):
    """Under ZeRO-3 every module call gathers parameters across processes, so both ranks must call each
    module equally often: a rank with a video and an image and a rank with two videos train together
    (the vision tower used to run once per kind: a collective mismatch on the second rank)."""
    config = tmp_path / "model.json"
    config.write_text(json.dumps(tiny_pretrained.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER.with_name("zero3_mix_worker.py")), str(config), str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["finite"] and len(report["losses"]) == 2, report
