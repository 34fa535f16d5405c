"""benchmarks/benchmark_loaders.py: what opening a test benchmark at its real size costs, in file reads."""

from conftest import load_benchmark_script


def test_the_loader_benchmark_counts_the_ped2_reads(tmp_path):
    """On its real-size Ped2 tree (12 clips, 2,010 masks, tiny files): each clip's first frame is read once
    (its size) and each mask twice, at load (the frame labels) and when the runner asks for the pixel
    ground truth (a double read of 0.2 s in all, left as it is). Counts only: timings are not checked."""
    script = load_benchmark_script("benchmark_loaders")
    script.write_ucsd_ped2(tmp_path, (8, 8))
    row = script.measure("ucsd_ped2", tmp_path, repeat=1, memory=False)
    assert (row["videos"], row["frames"]) == (12, 2010)
    assert row["files read"] == 2010 + 12
    assert row["reads"] == 2 * 2010 + 12 and row["read >1"] == 2010
