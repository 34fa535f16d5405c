"""lavida-info's and the key check's handling of misspelt keys."""

import pytest
from conftest import compose_cli_config


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
