"""Building the model prints what the user needs, not the libraries' own chatter (new-user walkthrough)."""

import logging
import warnings

import pytest


def test_building_the_model_raises_no_is_gradient_checkpointing_notice(tiny_pretrained):
    """PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps the MLLM; every CLI run
    printed the FutureWarning (pyproject.toml used to ignore it under pytest only)."""
    from lavida.models.lavida import build_lavida

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_lavida(tiny_pretrained)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def _build_text_tower(config, *, with_weights: bool):
    from lavida.models.text_encoder import build_category_encoder

    t = config.text_encoder
    pretrained = t.pretrained if with_weights else None
    return build_category_encoder(model_name=t.model_name, pretrained=pretrained, arch=t.arch)


def _open_clip_records(caplog):
    # open_clip 3.x logs on the root logger (logging.info / logging.warning).
    return [record for record in caplog.records if record.name == "root"]


def test_the_clip_tower_built_from_its_weights_logs_nothing_of_open_clip(tiny_pretrained, caplog):
    caplog.set_level(logging.INFO)
    _build_text_tower(tiny_pretrained, with_weights=True)
    assert [r.getMessage() for r in _open_clip_records(caplog)] == []
    assert "Built CLIP text tower" in caplog.text  # lavida's own line says what was built, from which file


def test_a_random_clip_tower_keeps_open_clip_s_random_init_warning_only(tiny_pretrained, caplog):
    caplog.set_level(logging.INFO)
    _build_text_tower(tiny_pretrained, with_weights=False)
    records = _open_clip_records(caplog)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "initialized randomly" in records[0].getMessage()


@pytest.mark.parametrize("with_weights", [True, False])
def test_building_the_clip_tower_leaves_an_unconfigured_root_logger_unconfigured(
    tiny_pretrained, capsys, with_weights
):
    """open_clip's logging.info() ran logging.basicConfig() when the root logger had no handler (a Python
    API user's program): a stderr handler stayed, and "WARNING:root:..." lines followed."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        _build_text_tower(tiny_pretrained, with_weights=with_weights)
        assert root.handlers == [] and root.level == saved_level
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    err = capsys.readouterr().err
    assert "INFO" not in err and "root" not in err
    # What Python prints by itself without a handler (logging.lastResort) still comes through.
    assert ("initialized randomly" in err) is not with_weights


def test_save_checkpoint_leaves_the_info_line_to_its_callers(tiny_model, tiny_pretrained, tmp_path, caplog):
    """A training checkpoint is written into a staging folder: save_checkpoint's own INFO line named it."""
    from lavida.models.checkpoint import save_checkpoint

    caplog.set_level(logging.INFO)
    save_checkpoint(tiny_model, tiny_pretrained, tmp_path / "step.staging" / "model")
    assert "staging" not in caplog.text
