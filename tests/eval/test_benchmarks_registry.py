"""The benchmark registry, the shipped category lists and the per-benchmark constants."""

import subprocess
import sys

import pytest

from lavida.eval.benchmark import VadBenchmark
from lavida.eval.benchmarks import BENCHMARKS, benchmark_class, get_benchmark

# (key, interval standard, interval lavida_official, primary metric, number of test categories)
EXPECTED = [
    ("ubnormal", 4, 4, "frame_auc_micro", 20),
    ("shanghaitech", 2, 2, "frame_auc_micro", 18),
    ("ucf_crime", 32, 128, "frame_auc_micro", 13),
    ("xd_violence", 32, 128, "frame_ap", 6),
    ("ucsd_ped2", 1, 1, "pixel_auc", 5),
]


@pytest.mark.parametrize(("key", "standard", "official", "metric", "num_categories"), EXPECTED)
def test_registered_classes(key, standard, official, metric, num_categories, tmp_path):
    cls = benchmark_class(key)
    assert issubclass(cls, VadBenchmark) and cls.name == key
    assert cls.intervals == {"standard": standard, "lavida_official": official}
    assert cls.primary_metric == metric
    kwargs = {"annotation_file": tmp_path / "none.txt"} if key == "ucf_crime" else {}
    if key == "ucsd_ped2":
        (tmp_path / "Test").mkdir()
    bench = get_benchmark(key, tmp_path, **kwargs)
    categories = bench.categories
    assert len(categories) == num_categories == len(set(categories))
    assert all(c == c.strip() and c for c in categories)


def test_registry_names_and_aliases():
    assert list(BENCHMARKS) == ["ubnormal", "shanghaitech", "ucf_crime", "xd_violence", "ucsd_ped2"]
    assert benchmark_class("ucfcrime").name == "ucf_crime"
    assert benchmark_class("XD-Violence").name == "xd_violence"
    assert benchmark_class("ucsdped").name == "ucsd_ped2"
    with pytest.raises(
        ValueError, match="Unknown benchmark 'avenue'; expected one of: ubnormal, shanghaitech"
    ):
        get_benchmark("avenue", ".")


def test_a_misspelt_protocol_is_refused_with_the_valid_ones(tmp_path):
    bench = get_benchmark("shanghaitech", tmp_path)
    with pytest.raises(
        ValueError, match=r"^Unknown protocol 'lavida_offical'; expected 'standard' or 'lavida_official'\.$"
    ):
        bench.protocol("lavida_offical")


def test_missing_root_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_benchmark("shanghaitech", tmp_path / "nowhere")


def test_category_lists_are_the_releases():
    assert benchmark_class("ucf_crime").categories.fget(None)[7] == "road accidents"
    ubnormal = benchmark_class("ubnormal").categories.fget(None)
    assert ubnormal[10] == "rotating 360 degrees" and ubnormal[-1] == "driving outside lane"


def test_importing_the_registry_imports_no_loader():
    code = (
        "import sys, lavida.eval.benchmarks as b; "
        "print(sorted(m for m in sys.modules if m.startswith('lavida.eval.benchmarks.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
