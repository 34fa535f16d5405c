"""lavida-info's and the key check's handling of misspelt keys."""

import pytest
from conftest import compose_cli_config

from lavida.cli.keys import reject_unknown_keys


def compose(config: str, *overrides: str):
    return compose_cli_config(config, *overrides)


def test_info_refuses_a_misspelt_key_naming_the_nearest(monkeypatch):
    """lavida-info ran with ``+modle=tiny`` and printed the default model's counts without a word."""
    import lavida.cli.info as info

    def no_build(config):
        raise AssertionError("the model was built despite the misspelt key")

    monkeypatch.setattr(info, "build_lavida", no_build)
    cfg = compose("info", "+modle=tiny")
    with pytest.raises(ValueError, match=r"'modle' \(did you mean 'model'\?\)") as error:
        info.run(cfg)
    # Hydra's own "override hydra/job_logging" entry is not a key the user can set.
    assert str(error.value).endswith("Valid keys: ['model'].")


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("model", "model"),
        ("model/mllm", "model"),
        ("/data", "data"),
        ("optional local", "local"),
        ("override hydra/job_logging", "hydra"),
    ],
)
def test_defaults_entries_name_the_key_they_fill(entry, key):
    from lavida.cli.keys import _group_key

    assert _group_key(entry) == key


def test_at_most_three_close_matches_are_offered():
    """``checkinterval`` is close to four of detect.yaml's keys (difflib ratio >= 0.6: interval 0.76,
    checkpoint 0.70, min_interval 0.64, checkpoint_overrides 0.61); the three closest are named, closest
    first."""
    cfg = compose("detect", "+checkinterval=2")
    with pytest.raises(ValueError) as error:
        reject_unknown_keys(cfg, config_name="detect")
    assert str(error.value) == (
        "lavida-detect: unknown key(s) 'checkinterval' (did you mean 'interval' or 'checkpoint' or "
        "'min_interval'?); a leading + adds a key that detect.yaml does not define, and nothing reads it. "
        "Valid keys: ['aggregation', 'base_model_check', 'categories', 'checkpoint', 'checkpoint_overrides', "
        "'clip_length', 'device', 'dtype', 'explain', 'fps', 'input', 'interval', 'max_frames', 'merge_gap', "
        "'min_interval', 'output_dir', 'overlay', 'resume', 'save', 'stride', 'threshold']."
    )
