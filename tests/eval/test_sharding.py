"""Evaluation sharded across two processes (`accelerate launch`) gives the single-process metrics."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import free_port


def test_two_ranks_share_the_videos_and_agree(tmp_path):
    from eval.trees import ped2_scores_only

    from lavida.eval.benchmarks import get_benchmark

    tree, predictions, single = ped2_scores_only(tmp_path)
    benchmark = get_benchmark("ucsd_ped2", tree.root)
    out = tmp_path / "two"
    out.mkdir()
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
        "--dynamo_backend", "no",
        str(Path(__file__).with_name("shard_worker.py")), str(tree.root), str(predictions), str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = json.loads((out / "rank0.json").read_text())
    rank1 = json.loads((out / "rank1.json").read_text())
    assert rank0["processes"] == 2 and rank1["metrics"] == {}  # only rank 0 computes the metrics
    assert rank0["metrics"] == single
    assert len(list((out / "predictions").glob("*.npz"))) == len(benchmark.videos())
