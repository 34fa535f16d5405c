"""benchmarks/data.py: its loader clock covers exactly the counted batches; bad counts are usage errors."""

import time
from types import SimpleNamespace

import pytest
from conftest import load_benchmark_script


def test_loader_clock_covers_exactly_the_counted_batches():
    """Each batch takes at least 50 ms to arrive, so 4 counted batches cannot take less than 200 ms
    (starting the clock after a counted batch would give ~150 ms, a rate 4/3 too high)."""
    data = load_benchmark_script("data")

    def loader():
        for _ in range(2 + 4):
            time.sleep(0.05)
            yield SimpleNamespace(items=[0, 1], batch=SimpleNamespace(num_frames=16))

    clips, frames, elapsed = data.measure_loader(loader(), warmup=2)
    assert (clips, frames) == (8, 64)
    assert elapsed >= 4 * 0.05
    clips, _, elapsed = data.measure_loader(loader(), warmup=0)
    assert clips == 12 and elapsed >= 6 * 0.05


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--videos", "0"), ("--images", "0"), ("--height", "0"), ("--batches", "0"), ("--workers", "-1")],
)
def test_counts_out_of_range_are_usage_errors_naming_the_flag(monkeypatch, capsys, flag, value):
    """``--videos 0`` wrote nothing and was then refused as a missing dataset root (``synthetic: dataset
    root '.../videos' does not exist. See data/README.md for what to download.``)."""
    data = load_benchmark_script("data")
    monkeypatch.setattr("sys.argv", ["data.py", flag, value])
    with pytest.raises(SystemExit) as raised:
        data.main()
    assert raised.value.code == 2
    assert f"argument {flag}: expected a whole number ≥" in capsys.readouterr().err
