"""Evaluation sharded across two processes (`accelerate launch`) gives the single-process metrics."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_two_ranks_share_the_videos_and_agree(tmp_path):
    from eval.trees import write_ucsd_ped2_tree

    from lavida.eval.benchmarks import get_benchmark
    from lavida.eval.runner import run_evaluation

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    rng = np.random.default_rng(0)
    benchmark = get_benchmark("ucsd_ped2", tree.root)
    for video in benchmark.videos():
        np.save(predictions / f"{video.name}.npy", rng.random(video.num_frames).astype(np.float32))
    single = run_evaluation(
        benchmark=benchmark,
        protocol=benchmark.protocol("standard"),
        output_dir=tmp_path / "one",
        predictions_dir=predictions,
    )
    out = tmp_path / "two"
    out.mkdir()
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(Path(__file__).with_name("shard_worker.py")), str(tree.root), str(predictions), str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((out / "rank0.json").read_text())
    rank1 = json.loads((out / "rank1.json").read_text())
    assert rank0["processes"] == 2 and rank1["metrics"] == {}  # only rank 0 computes the metrics
    assert rank0["metrics"] == single
    assert len(list((out / "predictions").glob("*.npz"))) == len(benchmark.videos())
