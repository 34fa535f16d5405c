"""Missing or corrupt base-weight paths give errors that name the path and list what is expected."""

import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lavida.models.mask_decoder import build_mask_decoder
from lavida.models.mllm import build_semantic_extractor
from lavida.models.text_encoder import build_category_encoder
from lavida.models.weights import (
    WeightsNotFoundError,
    check_nothing_missing,
    check_pretrained_dir,
    check_weights_file,
    load_state_dict_file,
)


def test_missing_qwen_directory_lists_expected_files(tmp_path):
    with pytest.raises(WeightsNotFoundError) as error:
        build_semantic_extractor(pretrained=str(tmp_path / "Qwen2-VL-7B-Instruct"))
    message = str(error.value)
    assert "does not exist" in message and "Qwen2-VL-7B-Instruct" in message
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert name in message
    assert "LAVIDA_QWEN2VL_PATH" in message


def test_incomplete_qwen_directory_names_missing_files(tiny_pretrained, tmp_path):
    import shutil

    broken = tmp_path / "mllm"
    shutil.copytree(tiny_pretrained.mllm.pretrained, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(
        WeightsNotFoundError, match=r"Missing:\n  - model.safetensors or model.safetensors.index.json"
    ):
        build_semantic_extractor(pretrained=str(broken))


def test_corrupt_qwen_weights(tiny_pretrained, tmp_path):
    import shutil

    broken = tmp_path / "mllm"
    shutil.copytree(tiny_pretrained.mllm.pretrained, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsNotFoundError, match="Could not load the MLLM"):
        build_semantic_extractor(pretrained=str(broken))


def test_missing_and_corrupt_sam2(tiny_pretrained, tmp_path):
    import shutil

    with pytest.raises(WeightsNotFoundError, match="LAVIDA_SAM2_PATH") as error:
        build_mask_decoder(pretrained=str(tmp_path / "sam"))
    assert str(error.value).startswith(
        f"SAM2: expected a local directory at '{tmp_path / 'sam'}', but it does not"
    )
    broken = tmp_path / "sam2"
    shutil.copytree(tiny_pretrained.mask_decoder.pretrained, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsNotFoundError, match="Could not load SAM2"):
        build_mask_decoder(pretrained=str(broken))


def test_clip_weights_errors(tiny_pretrained, tmp_path):
    arch = tiny_pretrained.text_encoder.arch
    name = tiny_pretrained.text_encoder.model_name
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        build_category_encoder(model_name=name, arch=arch, pretrained=str(tmp_path / "clip.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x01\x02\x03")
    with pytest.raises(WeightsNotFoundError, match="corrupt.safetensors"):
        build_category_encoder(model_name=name, arch=arch, pretrained=str(corrupt))
    visual_only = tmp_path / "visual_only.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2)}, str(visual_only))
    with pytest.raises(WeightsNotFoundError, match="lacks .* text-tower tensors"):
        build_category_encoder(model_name=name, arch=arch, pretrained=str(visual_only))
    wrong_suffix = tmp_path / "weights.npz"
    wrong_suffix.write_bytes(b"")
    with pytest.raises(WeightsNotFoundError, match="not a supported weights file"):
        build_category_encoder(model_name=name, arch=arch, pretrained=str(wrong_suffix))


def test_clip_weights_of_another_width_are_refused_naming_the_file_and_tensor(tiny_pretrained, tmp_path):
    """Every name of the configured tower present, one of another shape (another CLIP's width)."""
    state = load_file(tiny_pretrained.text_encoder.pretrained)
    width = state["ln_final.weight"].shape[0]
    state["ln_final.weight"] = torch.ones(width + 1)
    other = tmp_path / "other_width.safetensors"
    save_file(state, str(other))
    arch, name = tiny_pretrained.text_encoder.arch, tiny_pretrained.text_encoder.model_name
    with pytest.raises(
        WeightsNotFoundError,
        match=rf"(?s)^CLIP text encoder: '{re.escape(str(other))}' does not fit the configured model: .*"
        rf"size mismatch for ln_final\.weight: .*torch\.Size\(\[{width + 1}\]\)",
    ):
        build_category_encoder(model_name=name, arch=arch, pretrained=str(other))


def test_clip_loads_torch_bin_state_dict(tiny_pretrained, tmp_path):
    """A .bin state dict (open_clip's other format) loads with weights_only=True and gives the same tower."""
    from safetensors.torch import load_file

    state = load_file(tiny_pretrained.text_encoder.pretrained)
    state["visual.extra"] = torch.zeros(1)  # image-tower keys are ignored
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    arch, name = tiny_pretrained.text_encoder.arch, tiny_pretrained.text_encoder.model_name
    from_bin = build_category_encoder(
        model_name=name, arch=arch, pretrained=str(tmp_path / "open_clip_pytorch_model.bin")
    )
    from_st = build_category_encoder(
        model_name=name, arch=arch, pretrained=tiny_pretrained.text_encoder.pretrained
    )
    tokens = from_st.tokenize(["fire", "fighting"])
    torch.testing.assert_close(from_bin(tokens), from_st(tokens), rtol=0, atol=0)
    assert from_st(tokens).shape == (2, from_st.dim)
    assert not any(p.requires_grad for p in from_st.parameters())


def test_clip_temperature_is_optional_in_the_file_and_absent_from_the_tower(
    tiny_pretrained, tmp_path, caplog
):
    """OpenAI's file carries the contrastive temperature and lavida's text-only files do not: both load
    the same tower, without a warning, and the tower has no 0-dim parameter (DeepSpeed cannot
    broadcast one)."""
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_pretrained.text_encoder.pretrained)
    assert "logit_scale" not in state
    with_temperature = tmp_path / "with_temperature.safetensors"
    save_file({**state, "logit_scale": torch.tensor(4.6052)}, str(with_temperature))
    arch, name = tiny_pretrained.text_encoder.arch, tiny_pretrained.text_encoder.model_name
    with caplog.at_level("WARNING", logger="lavida.models.text_encoder"):
        loaded = build_category_encoder(model_name=name, arch=arch, pretrained=str(with_temperature))
    assert not [r for r in caplog.records if r.name == "lavida.models.text_encoder"]
    plain = build_category_encoder(
        model_name=name, arch=arch, pretrained=tiny_pretrained.text_encoder.pretrained
    )
    tokens = plain.tokenize(["fire"])
    torch.testing.assert_close(loaded(tokens), plain(tokens), rtol=0, atol=0)
    assert all(p.dim() > 0 for p in loaded.parameters())
    assert not hasattr(loaded.clip, "logit_scale")
    for parameter in loaded.parameters():  # even if someone unfreezes it, the forward keeps no graph
        parameter.requires_grad_(True)
    assert not loaded(tokens).requires_grad


def test_paper_model_without_weight_paths_is_refused_before_anything_loads(monkeypatch):
    """An unset LAVIDA_*_PATH must not build a random 7B model to train on: the paper's config requires
    every base model and names each missing one with its variable."""
    from conftest import compose_model_config

    from lavida.models import lavida as lavida_module

    for variable in ("LAVIDA_QWEN2VL_PATH", "LAVIDA_SAM2_PATH", "LAVIDA_CLIP_PATH"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(lavida_module, "build_semantic_extractor", _must_not_load)
    config = compose_model_config("lavida")
    assert config.base_weights == "required"
    with pytest.raises(WeightsNotFoundError) as error:
        lavida_module.build_lavida(config)
    message = str(error.value)
    for part, variable in (
        ("mllm", "LAVIDA_QWEN2VL_PATH"),
        ("text_encoder", "LAVIDA_CLIP_PATH"),
        ("mask_decoder", "LAVIDA_SAM2_PATH"),
    ):
        assert f"model.{part}.pretrained (environment variable {variable})" in message
    assert "model.base_weights=optional" in message
    # lavida-info and the runtime benchmark build the architecture on purpose without weights.
    assert config.without_weights().base_weights == "optional"


def test_a_bad_sam2_path_is_reported_before_the_mllm_loads(tiny_pretrained, tmp_path, monkeypatch):
    from dataclasses import replace

    from lavida.models import lavida as lavida_module

    monkeypatch.setattr(lavida_module, "build_semantic_extractor", _must_not_load)
    config = replace(
        tiny_pretrained,
        base_weights="required",
        mask_decoder=replace(tiny_pretrained.mask_decoder, pretrained=str(tmp_path / "sam2.1-hiera-small")),
    )
    with pytest.raises(
        WeightsNotFoundError, match=r"SAM2: expected a local directory at .*sam2.1-hiera-small"
    ):
        lavida_module.build_lavida(config)
    # The tiny twin builds random base models where no path is given.
    optional = replace(tiny_pretrained, mllm=replace(tiny_pretrained.mllm, pretrained=None))
    assert optional.base_weights == "optional"
    with pytest.raises(
        WeightsNotFoundError, match=r"model.mllm.pretrained \(environment variable LAVIDA_QWEN2VL_PATH"
    ):
        lavida_module.build_lavida(replace(optional, base_weights="required"))


def _must_not_load(**kwargs):
    raise AssertionError("the MLLM was loaded before the weight paths were checked")


def test_clip_with_weights_does_not_log_that_it_is_random(tiny_pretrained, caplog):
    """open_clip logs "initialized randomly" before our file is loaded; with a weights file it is dropped,
    without one (a genuinely random tower) it stays."""
    arch, name = tiny_pretrained.text_encoder.arch, tiny_pretrained.text_encoder.model_name
    with caplog.at_level(logging.WARNING):
        build_category_encoder(model_name=name, arch=arch, pretrained=tiny_pretrained.text_encoder.pretrained)
    assert "initialized randomly" not in caplog.text
    with caplog.at_level(logging.WARNING):
        build_category_encoder(model_name=name, arch=arch, pretrained=None)
    assert "initialized randomly" in caplog.text
    assert not any(
        isinstance(f, logging.Filter) and "RandomInit" in type(f).__name__
        for f in logging.getLogger().filters
    )


# -- the checks themselves, on hand-built folders: each error compared whole -------------------------------

REQUIRED = [["config.json"], ["model.safetensors", "model.safetensors.index.json"]]
EXPECTED = "  - config.json\n  - model.safetensors or model.safetensors.index.json"


@pytest.mark.parametrize(("count", "more"), [(20, ""), (21, ", ... (1 more)"), (23, ", ... (3 more)")])
def test_an_incomplete_folder_lists_its_first_twenty_names_and_counts_the_rest(tmp_path, count, more):
    """A folder of hundreds of shards still gives a readable error: 20 names, sorted, then how many more."""
    names = [f"shard-{i:02d}.bin" for i in range(count)]
    for name in reversed(names):  # created out of order: the listing sorts
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as error:
        check_pretrained_dir(tmp_path, what="Qwen", required=REQUIRED, hint="Get it.")
    # Hand-worked: both entries are missing; shown are shard-00 ... shard-19, then count - 20 more.
    shown = ", ".join(f"shard-{i:02d}.bin" for i in range(20))
    assert str(error.value) == (
        f"Qwen: the directory '{tmp_path}' is incomplete.\nMissing:\n{EXPECTED}\n"
        f"It must contain:\n{EXPECTED}\nFound: {shown}{more}\nGet it."
    )


def test_missing_tensors_are_counted_and_the_first_five_named_in_order(tmp_path):
    """transformers would initialise these at random: the error counts all and names five, sorted."""
    missing = [f"layers.{i}.weight" for i in (6, 2, 0, 5, 1, 3, 4)]
    with pytest.raises(WeightsNotFoundError) as error:
        check_nothing_missing({"missing_keys": missing}, directory=tmp_path, what="SAM2", hint="Get it.")
    # Hand-worked: sorted, the first five are layers.0 ... layers.4.
    first_five = [f"layers.{i}.weight" for i in range(5)]
    assert str(error.value) == (
        f"SAM2: the weights in '{tmp_path}' lack 7 tensors of the model its config.json describes, "
        f"e.g. {first_five}: an incomplete download or another model.\nGet it."
    )
    # Extra tensors are not refused (the hub's SAM2 video checkpoints hold memory modules): no error.
    check_nothing_missing(
        {"missing_keys": [], "unexpected_keys": ["memory"]}, directory=tmp_path, what="", hint=""
    )


def test_a_folder_of_several_weights_files_lists_them_when_the_hint_names_none(tmp_path):
    """Two candidates and a hint that names neither: the error cannot pick one, so it lists both."""
    for name in ("b.safetensors", "a.safetensors", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as error:
        check_weights_file(tmp_path, what="CLIP", suffixes=(".safetensors",), hint="Get it.")
    assert str(error.value) == (
        f"CLIP: expected a weights file, but '{tmp_path}' is a folder. Point at one of the files in it: "
        "a.safetensors, b.safetensors.\nGet it."
    )


def test_a_missing_file_lists_its_folder_when_the_folder_exists(tmp_path):
    """A misspelt file name: the error shows what the folder holds; a missing folder has nothing to show."""
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as error:
        check_weights_file(
            tmp_path / "open_clip.safetensors", what="CLIP", suffixes=(".safetensors",), hint="Get it."
        )
    assert str(error.value) == (
        f"CLIP: expected a weights file at '{tmp_path / 'open_clip.safetensors'}' (.safetensors), but it does not "
        f"exist.\nFound in '{tmp_path}': open_clip_model.safetensors\nGet it."
    )
    absent = tmp_path / "absent" / "open_clip.safetensors"
    with pytest.raises(WeightsNotFoundError) as error:
        check_weights_file(absent, what="CLIP", suffixes=(".safetensors",), hint="Get it.")
    assert str(error.value) == (
        f"CLIP: expected a weights file at '{absent}' (.safetensors), but it does not exist.\nGet it."
    )


@pytest.mark.parametrize("name", ["truncated.pt", "truncated.safetensors"])
def test_a_truncated_file_is_called_corrupt_not_a_file_of_python_objects(tmp_path, name):
    """Only torch's weights-only refusal means pickled objects; any other failure to parse is a bad download."""
    whole = tmp_path / f"whole{Path(name).suffix}"
    if name.endswith(".pt"):
        torch.save({"w": torch.ones(64, 64)}, whole)
    else:
        save_file({"w": torch.ones(64, 64)}, str(whole))
    path = tmp_path / name
    path.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(WeightsNotFoundError) as error:
        load_state_dict_file(path, what="CLIP")
    message = str(error.value)
    assert message.startswith(f"CLIP: could not read '{path}' (")
    assert message.endswith("The file is corrupt or not a state dict; download it again.")


def test_a_state_dict_saved_under_state_dict_is_unwrapped(tmp_path):
    """Training frameworks (Lightning, some open_clip checkpoints) save ``{"state_dict": {...}, ...}``."""
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    state = load_state_dict_file(path, what="CLIP")
    assert list(state) == ["w"]
    torch.testing.assert_close(state["w"], torch.ones(2), rtol=0, atol=0)


def test_a_file_of_tensors_that_is_not_a_state_dict_is_refused_naming_it(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(WeightsNotFoundError) as error:
        load_state_dict_file(path, what="CLIP")
    assert str(error.value) == f"CLIP: '{path}' does not hold a state dict (got list)."
