"""Where a checkpoint's base models lie (lavida/models/base_model_places.py), on hand-made paths and configs:
no model is built. The end-to-end cases (a moved run folder, a variable holding the same weights) are in
tests/models/test_checkpoint.py, tests/models/test_base_fingerprint.py and tests/train/test_moved_run.py.
"""

import dataclasses

import pytest
from conftest import compose_model_config

from lavida.models.base_model_places import (
    STAND_INS_KEY,
    absolute_base_paths,
    check_base_models_saved,
    merge_settings,
    moved_base_models,
    moved_hint,
    stand_ins_from_meta,
    stand_ins_relative,
)
from lavida.models.random_init import random_pretrained_paths
from lavida.models.weights import WeightsNotFoundError


def _with_paths(config, **paths):
    """``config`` with ``pretrained`` set per section (sections not named keep theirs)."""
    return dataclasses.replace(
        config,
        **{
            section: dataclasses.replace(getattr(config, section), pretrained=path)
            for section, path in paths.items()
        },
    )


def test_relative_base_paths_become_absolute_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = str(tmp_path.parent / "elsewhere" / "sam2")
    settings = {
        "mllm": {"pretrained": "weights/qwen", "family": "qwen2_vl"},
        "text_encoder": {"pretrained": None},
        "mask_decoder": {"pretrained": elsewhere},
        "dtype": "float32",
    }
    result = absolute_base_paths(settings)
    assert result == {
        "mllm": {"pretrained": str(tmp_path / "weights" / "qwen"), "family": "qwen2_vl"},
        "text_encoder": {"pretrained": None},
        "mask_decoder": {"pretrained": elsewhere},
        "dtype": "float32",
    }
    assert settings["mllm"]["pretrained"] == "weights/qwen"  # the given settings are left as they were


def test_a_stand_in_is_recorded_relative_to_the_checkpoint_up_to_four_folders_up(tmp_path):
    """<run>/checkpoints/step_2/model lies three folders below <run>; <run>/a/b/c/d/e five: too far."""
    run = tmp_path / "run"
    places = random_pretrained_paths(run / "base_models")
    settings = {section: {"pretrained": str(path)} for section, path in places.items()}
    settings["text_encoder"] = {"pretrained": None}  # no path: nothing to record
    tiny = compose_model_config("tiny")
    assert tiny.base_weights == "optional"
    assert stand_ins_relative(tiny, settings, run / "checkpoints" / "step_2" / "model") == {
        "mllm": "../../../base_models/mllm",
        "mask_decoder": "../../../base_models/sam2",
    }
    assert stand_ins_relative(tiny, settings, run / "a" / "b" / "c" / "d") == {
        "mllm": "../../../../base_models/mllm",
        "mask_decoder": "../../../../base_models/sam2",
    }
    assert stand_ins_relative(tiny, settings, run / "a" / "b" / "c" / "d" / "e") == {}
    # Real base weights (base_weights: required) are never stand-ins.
    required = dataclasses.replace(tiny, base_weights="required")
    assert stand_ins_relative(required, settings, run / "final") == {}


def test_stand_ins_are_found_at_their_recorded_place_relative_to_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "moved" / "final"
    meta = {STAND_INS_KEY: {"mllm": "../base_models/mllm", "mask_decoder": "../base_models/sam2"}}
    assert stand_ins_from_meta(checkpoint, meta) == {
        "mllm": tmp_path / "moved" / "base_models" / "mllm",
        "mask_decoder": tmp_path / "moved" / "base_models" / "sam2",
    }
    assert stand_ins_from_meta(checkpoint, {}) == {}
    assert stand_ins_from_meta(checkpoint, {STAND_INS_KEY: None}) == {}


def test_only_given_paths_that_are_gone_and_not_overridden_count_as_moved(tmp_path):
    here = tmp_path / "sam2"
    here.mkdir()
    config = _with_paths(
        compose_model_config("tiny"),
        mllm=str(tmp_path / "gone_qwen"),
        mask_decoder=str(here),
        text_encoder=str(tmp_path / "gone_clip"),
    )
    assert moved_base_models(config, {}) == ["mllm", "text_encoder"]
    assert moved_base_models(
        config, {"mllm": {"pretrained": str(tmp_path / "new_qwen")}, "text_encoder": {"dtype": "x"}}
    ) == ["text_encoder"]
    assert moved_base_models(_with_paths(config, mllm=None, text_encoder=None), {}) == []


def test_the_moved_hint_names_each_section_and_both_ways_to_point_at_it(tmp_path):
    config_file = tmp_path / "final" / "lavida_config.json"
    tail = (
        f"from the checkpoint's {config_file} (written where it was trained); "
        "model.<part>.pretrained does not change them, and an environment variable (LAVIDA_QWEN2VL_PATH, "
        "...) is used in their place only where it holds the very weights the checkpoint recorded a "
        "fingerprint of. Point the checkpoint at the local copies:\n"
    )
    mllm = (
        "  - lavida-eval / lavida-detect: +checkpoint_overrides.mllm.pretrained=DIR; "
        "load_checkpoint(..., config_overrides={'mllm': {'pretrained': DIR}})\n"
    )
    sam2 = (
        "  - lavida-eval / lavida-detect: +checkpoint_overrides.mask_decoder.pretrained=DIR; "
        "load_checkpoint(..., config_overrides={'mask_decoder': {'pretrained': DIR}})\n"
    )
    edit = f"  (or edit the paths in {config_file})"
    assert moved_hint(config_file, ["mllm"]) == f"mllm.pretrained comes {tail}{mllm}{edit}"
    assert moved_hint(config_file, ["mllm", "mask_decoder"]) == (
        f"mllm.pretrained, mask_decoder.pretrained come {tail}{mllm}{sam2}{edit}"
    )


def test_merge_settings_merges_mappings_key_by_key_and_replaces_everything_else():
    base = {"mllm": {"pretrained": "qwen", "lora": {"r": 8, "alpha": 16}}, "dtype": "float32", "arch": None}
    overrides = {"mllm": {"lora": {"r": 4}}, "dtype": "bfloat16", "arch": {"depth": 2}, "new": 1}
    assert merge_settings(base, overrides) == {
        "mllm": {"pretrained": "qwen", "lora": {"r": 4, "alpha": 16}},
        "dtype": "bfloat16",
        "arch": {"depth": 2},
        "new": 1,
    }
    assert base == {
        "mllm": {"pretrained": "qwen", "lora": {"r": 8, "alpha": 16}},
        "dtype": "float32",
        "arch": None,
    }


def test_a_checkpoint_of_unsaved_stand_ins_is_refused_with_how_to_give_the_weights(tmp_path):
    config_file = tmp_path / "final" / "lavida_config.json"
    tiny = _with_paths(
        compose_model_config("tiny"), mllm=None, mask_decoder=None, text_encoder=str(tmp_path / "clip")
    )
    with pytest.raises(WeightsNotFoundError) as error:
        check_base_models_saved(tiny, config_file)
    assert str(error.value) == (
        f"{config_file}: no base weights for model.mllm, model.mask_decoder. The checkpoint "
        "was trained on random stand-ins that were not saved (base_weights: optional), and it holds only what "
        "trains, so building them again would put other random weights under the trained heads and every load "
        "would score differently. lavida-train now writes such stand-ins into the run folder (base_models/), "
        "and its checkpoints name them: retrain the checkpoint, or give the weights it was trained on: "
        "load_checkpoint(..., config_overrides={'mllm': {'pretrained': DIR}}); lavida-eval / lavida-detect: "
        "+checkpoint_overrides.mllm.pretrained=DIR."
    )
    # Every path given: nothing to refuse; required base weights are refused elsewhere (check_base_weights).
    check_base_models_saved(
        _with_paths(tiny, mllm=str(tmp_path / "q"), mask_decoder=str(tmp_path / "s")), config_file
    )
    check_base_models_saved(dataclasses.replace(tiny, base_weights="required"), config_file)
