"""Run by test_sharding.py under `accelerate launch`: scores-only evaluation split across two ranks."""

import json
import sys

from lavida.eval.benchmarks import get_benchmark
from lavida.eval.runner import run_evaluation


def main(root: str, predictions: str, output_dir: str) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=True)
    benchmark = get_benchmark("ucsd_ped2", root)
    metrics = run_evaluation(
        benchmark=benchmark,
        protocol=benchmark.protocol("standard"),
        output_dir=output_dir,
        predictions_dir=predictions,
    )
    with open(f"{output_dir}/rank{state.process_index}.json", "w", encoding="utf-8") as handle:
        json.dump({"processes": state.num_processes, "metrics": metrics}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
