"""Two-process CPU DDP (gloo) through `accelerate launch`: two steps, identical parameters on both ranks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file


def _launch(*arguments: str, timeout: int) -> subprocess.CompletedProcess:
    """ddp_worker.py on two CPU processes (gloo)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(Path(__file__).with_name("ddp_worker.py")), *arguments,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def test_two_process_ddp_keeps_ranks_identical(synthetic_train_root, tiny_pretrained, tmp_path):
    config = tmp_path / "model.json"
    config.write_text(json.dumps(tiny_pretrained.to_dict()))
    out = tmp_path / "run"
    result = _launch(str(config), str(synthetic_train_root), str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = load_file(str(out / "trained_rank0_of_2.safetensors"))
    rank1 = load_file(str(out / "trained_rank1_of_2.safetensors"))
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # The ranks agree because DDP averaged their gradients, not because nothing happened: training
    # moved the weights away from where they started.
    initial = load_file(str(out / "initial_rank0_of_2.safetensors"))
    assert not torch.equal(initial["projector.out_proj.weight"], rank0["projector.out_proj.weight"])
    # The schedule counts optimizer steps: two, as in a single process (Accelerate's default would
    # advance it once per process per step, ending the warm-up and decay twice as early).
    from lavida.train.optim import warmup_decay_factor

    expected_lr = 1e-3 * warmup_decay_factor(  # the default log warm-up (B.3's WarmupDecayLR)
        2, warmup_steps=4, total_steps=2, warmup_type="log", decay="linear"
    )
    for rank in (0, 1):
        schedule = json.loads((out / f"schedule_rank{rank}.json").read_text())
        assert schedule["steps"] == 2, schedule
        assert schedule["frame_normalizer"] == 5.0, schedule  # (2 + 8) / 2, as SAM2 all-reduces its count
        # L_txt: this rank's token mean, weighted by its token count over the ranks' mean count.
        txt = schedule["txt"]
        expected = txt["plain"] * txt["tokens"] / txt["mean_tokens"]
        assert abs(txt["weighted"] - expected) <= 1e-5 * abs(expected), txt
        assert schedule["lr"] == expected_lr, schedule
    tokens = [json.loads((out / f"schedule_rank{r}.json").read_text())["txt"]["tokens"] for r in (0, 1)]
    assert tokens[1] == tokens[0] - 5  # the worker drops 5 answer tokens on rank 1
    assert json.loads((out / "schedule_rank0.json").read_text())["txt"]["mean_tokens"] == sum(tokens) / 2
    # The logged train/loss is the step's loss over both ranks (each rank's share is divided by the
    # normalisers over both), the mean of their losses, not rank 0's alone.
    ranks = [json.loads((out / f"schedule_rank{r}.json").read_text()) for r in (0, 1)]
    means = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"], strict=True)]
    assert len(means) == 2 and ranks[0]["losses"] != ranks[1]["losses"]
    for rank in ranks:
        assert rank["logged"] == pytest.approx(means, rel=1e-12)

    # The same command again: nothing is left to train, and both ranks must agree to keep final/ as it
    # is (the main process decides; a rank that saved on its own would wait for the other forever).
    final_meta = out / "final" / "meta.json"
    written = (final_meta.read_bytes(), final_meta.stat().st_mtime_ns)
    result = _launch(str(config), str(synthetic_train_root), str(out), "rerun", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        rerun = json.loads((out / f"rerun_rank{rank}.json").read_text())
        assert rerun == {"steps": 2, "final": str(out / "final")}
    assert (final_meta.read_bytes(), final_meta.stat().st_mtime_ns) == written
