"""Source mixture and the data configs (official mixture, tiny twin, supplement Tab. 3 ablations)."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lavida.data.config import DataConfig
from lavida.data.mixture import OFFICIAL_WEIGHTS, REFER_FAMILY, Mixture
from lavida.data.sources import IMAGE_SOURCES, VIDEO_SOURCES

DATASETS = set(IMAGE_SOURCES) | set(VIDEO_SOURCES)  # the eleven datasets of B.1
CONFIG_DIR = Path(__file__).resolve().parents[2] / "lavida" / "configs" / "data"


def compose_data(name: str, overrides: list[str] | None = None) -> DataConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose(name, overrides=overrides or [])
    return DataConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))


def test_official_weights():
    assert set(OFFICIAL_WEIGHTS) == DATASETS
    assert sum(OFFICIAL_WEIGHTS.values()) == pytest.approx(1.0)
    assert sum(OFFICIAL_WEIGHTS[name] for name in VIDEO_SOURCES) == pytest.approx(0.70)
    assert sum(OFFICIAL_WEIGHTS[name] for name in REFER_FAMILY) == pytest.approx(0.10)


def test_draws_follow_the_weights():
    mixture = Mixture({"a": 2.0, "b": 1.0, "c": 1.0, "unused": 0.0})
    assert mixture.names == ("a", "b", "c")
    rng = np.random.default_rng(0)
    n = 20000
    names = [mixture.draw(rng) for _ in range(n)]
    for name, p in mixture.weights.items():
        count = names.count(name)
        assert abs(count - n * p) <= 4 * np.sqrt(n * p * (1 - p)), (name, count)


def test_official_mixture_proportions_and_determinism():
    mixture = Mixture(OFFICIAL_WEIGHTS)
    n = 10000
    draws = [
        mixture.draw(np.random.default_rng([7, i])) for i in range(n)
    ]  # per-item streams, as in training
    assert draws[:500] == [mixture.draw(np.random.default_rng([7, i])) for i in range(500)]
    for name, p in OFFICIAL_WEIGHTS.items():
        assert abs(draws.count(name) - n * p) <= 4 * np.sqrt(n * p * (1 - p)), name


def test_invalid_weights():
    with pytest.raises(ValueError, match="finite number"):
        Mixture({"a": -1.0})
    with pytest.raises(ValueError, match="finite number"):
        Mixture({"a": float("nan")})
    with pytest.raises(ValueError, match="no source with a positive weight"):
        Mixture({"a": 0.0})


def test_missing_sources_error_or_renormalise(caplog):
    mixture = Mixture({"a": 0.5, "b": 0.3, "c": 0.2})
    with pytest.raises(ValueError, match=r"\['c'\].*20%.*missing_sources=renormalize"):
        mixture.restricted({"a", "b"})
    with caplog.at_level(logging.WARNING, logger="lavida.data.mixture"):
        kept = mixture.restricted({"a", "b"}, on_missing="renormalize")
    assert "['c']" in caplog.text
    assert kept.weights == pytest.approx({"a": 0.625, "b": 0.375})
    assert mixture.restricted({"a", "b", "c"}) is mixture
    with pytest.raises(ValueError, match="None of"):
        mixture.restricted(set(), on_missing="renormalize")


def test_official_yaml_is_the_dataclass_default(monkeypatch):
    monkeypatch.delenv("LAVIDA_DATA_ROOT", raising=False)
    assert compose_data("official") == DataConfig()
    config = DataConfig()
    assert config.p == 0.5 and config.max_categories == 30 and config.clip_length == 8
    assert config.frame_labels == "presence" and config.weights() == pytest.approx(OFFICIAL_WEIGHTS)
    assert config.root_of("ade20k") is None  # relative root, no data root: unknown


def test_data_root_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAVIDA_DATA_ROOT", str(tmp_path))
    config = compose_data("official", ["sources.mevis.root=/elsewhere/MeViS"])
    assert config.root_of("ade20k") == tmp_path / "ADEChallengeData2016"
    assert config.root_of("mevis") == Path("/elsewhere/MeViS")


def test_official_caps_are_one_override_away():
    config = compose_data(
        "official", ["sources.mapillary.max_categories=20", "sources.cityscapes.max_categories=6"]
    )
    assert (
        config.sources["mapillary"].max_categories == 20 and config.sources["cityscapes"].max_categories == 6
    )
    assert config.sources["ade20k"].max_categories is None


# Supplement Tab. 3: the training sets of each row (experiment=ablation_data_<row>).
ABLATIONS = {
    "no_image": set(VIDEO_SOURCES),
    "image_only": set(IMAGE_SOURCES),
    "no_refdavis": DATASETS - {"refdavis"},
    "no_mevis": DATASETS - {"mevis"},
    "no_refvos": DATASETS - {"refvos"},
    "no_vos": DATASETS - {"vos"},
}


def compose_experiment_data(experiment: str, overrides: list[str]) -> DataConfig:
    from hydra import initialize_config_module

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    return DataConfig.from_dict(OmegaConf.to_container(cfg.data, resolve=True))


@pytest.mark.parametrize("data_group", [[], ["data=tiny"]], ids=["official", "tiny"])
@pytest.mark.parametrize("name,expected", ABLATIONS.items())
def test_ablation_experiments_select_the_right_sources(name, expected, data_group):
    """Also with data=tiny: a smoke run of an ablation must not silently train on every source."""
    config = compose_experiment_data(f"ablation_data_{name}", data_group)
    assert set(config.weights()) == expected
    for source in expected:  # the kept sources keep their official relative weights
        assert config.sources[source].weight == OFFICIAL_WEIGHTS[source]
    mixture = Mixture(config.weights())
    assert sum(mixture.weights.values()) == pytest.approx(1.0)


def test_every_ablation_experiment_is_listed():
    experiments = CONFIG_DIR.parent / "experiment"
    assert {
        path.stem.removeprefix("ablation_data_") for path in experiments.glob("ablation_data_*.yaml")
    } == set(ABLATIONS)


def _shape(value):
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return "leaf"


def test_tiny_twin_has_the_same_structure():
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        official = OmegaConf.to_container(compose("official"), resolve=True)
        tiny = OmegaConf.to_container(compose("tiny"), resolve=True)
    assert _shape(official) == _shape(tiny)
    assert DataConfig.from_dict(tiny).samples_per_epoch < DataConfig.from_dict(official).samples_per_epoch


def test_unknown_keys_are_rejected_with_the_valid_ones():
    data = DataConfig().to_dict()
    data["max_categorys"] = 3
    with pytest.raises(ValueError, match=r"data: unknown keys \['max_categorys'\].*max_categories"):
        DataConfig.from_dict(data)
    data = DataConfig().to_dict()
    data["sources"]["mevis"]["wieght"] = 1
    with pytest.raises(ValueError, match=r"data.sources.mevis: unknown keys \['wieght'\]"):
        DataConfig.from_dict(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([("p", 0.5)], r"data: expected a mapping, got list"),
        ({"sources": ["mevis"]}, r"data\.sources: expected a mapping, got list"),
        ({"sources": {"mevis": 0.25}}, r"data\.sources\.mevis: expected a mapping, got float"),
    ],
)
def test_a_section_that_is_not_a_mapping_is_named(data, problem):
    """A list or a bare weight where a mapping belongs (``sources: {mevis: 0.25}`` for ``{weight: 0.25}``)
    names the section, not a TypeError from deep in the dataclass."""
    with pytest.raises(TypeError, match=rf"^{problem}\.$"):
        DataConfig.from_dict(data)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"p": 1.5}, "data.p"),
        ({"strides": []}, "data.strides"),
        ({"frame_labels": "ones"}, "data.frame_labels"),
        ({"category_count": "balanced"}, "data.category_count"),
        ({"missing_sources": "ignore"}, "data.missing_sources"),
        ({"clip_length": 0}, "data.clip_length"),
    ],
)
def test_invalid_values_are_rejected(change, message):
    data = DataConfig().to_dict()
    data.update(change)
    with pytest.raises(ValueError, match=message):
        DataConfig.from_dict(data)


def test_a_listed_source_without_a_weight_is_left_out():
    """SourceConfig's weight defaults to 0, which leaves a source out (its dataset need not exist)."""
    config = DataConfig.from_dict({"sources": {"vos": {"root": "YouTube-VOS"}, "mevis": {"weight": 0.25}}})
    assert config.weights() == {"mevis": 0.25}


@pytest.mark.parametrize(
    "change",
    [
        {"p": 0.0},  # Eq. 2: p is a probability, both ends included (only normal / only anomalous samples)
        {"p": 1.0},
        {"max_categories": 1},  # each count's bound is "≥ 1"
        {"clip_length": 1},  # images are 1-frame clips
        {"visibility_tries": 1},
        {"samples_per_epoch": 1},
        {"max_attempts": 1},
        {"num_workers": 0},  # "≥ 0": 0 loads in the main process
        {"strides": [1]},
    ],
)
def test_values_on_a_bound_are_accepted(change):
    """Each bound admits the value its error message names."""
    data = DataConfig().to_dict()
    data.update(change)
    config = DataConfig.from_dict(data)
    assert {key: getattr(config, key) for key in change} == change


def test_source_values_on_a_bound_are_accepted():
    """A source's own weight 0 (left out), max_categories 1 and strides [1] are on their bounds."""
    source = DataConfig.from_dict(
        {"sources": {"vos": {"weight": 0.0, "max_categories": 1, "strides": [1]}}}
    ).sources
    assert (source["vos"].weight, source["vos"].max_categories, source["vos"].strides) == (0.0, 1, [1])


@pytest.mark.parametrize("strides", [[0], [2.0], [1, -2]])
def test_strides_must_be_positive_integers(strides):
    """A zero, negative or float stride is refused by name, not found later by the clip sampler."""
    message = f"data.strides must be a non-empty list of positive integers, got {strides}."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DataConfig(strides=strides)


class _FixedUniform:
    """An ``rng`` whose uniform draw is given: pins which source each point of [0, 1) selects."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_each_source_owns_a_half_open_interval_of_the_uniform():
    """Source i owns [cdf[i-1], cdf[i]): a draw exactly on a boundary belongs to the next source, so each
    source's share of [0, 1) is exactly its weight (np.searchsorted side="right")."""
    mixture = Mixture({"a": 0.5, "b": 0.25, "c": 0.25})
    draws = {value: mixture.draw(_FixedUniform(value)) for value in (0.0, 0.4999, 0.5, 0.7499, 0.75, 0.9999)}
    assert draws == {0.0: "a", 0.4999: "a", 0.5: "b", 0.7499: "b", 0.75: "c", 0.9999: "c"}


def test_the_largest_uniform_below_one_draws_the_last_source():
    """Seven equal weights sum to 1 - 2.2e-16 in floating point; a draw above that must still land in the
    last source's interval, not past the end of the list."""
    mixture = Mixture({f"s{i}": 1.0 for i in range(7)})
    largest_below_one = float(np.nextafter(1.0, 0.0))
    assert float(np.cumsum(mixture.probabilities)[-1]) < largest_below_one  # the case this test is about
    assert mixture.draw(_FixedUniform(largest_below_one)) == "s6"


def test_an_unknown_on_missing_is_refused_by_name():
    """Only "error" and "renormalize" exist (data.missing_sources); another word must not renormalise."""
    message = "on_missing must be 'error' or 'renormalize', got 'ignore'."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Mixture({"a": 0.5, "b": 0.5}).restricted({"a"}, on_missing="ignore")


def test_repr_lists_each_source_with_its_probability():
    assert repr(Mixture({"a": 3.0, "b": 1.0})) == "Mixture(a=0.750, b=0.250)"
