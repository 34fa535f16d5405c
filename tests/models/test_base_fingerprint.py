"""A checkpoint records a fingerprint of each base model, and is not loaded on other weights unless asked."""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import other_weights

from lavida.models.base_fingerprint import (
    BASE_FINGERPRINTS_KEY,
    FINGERPRINT_VERSION,
    FINGERPRINT_VERSION_KEY,
    BaseModelMismatchError,
    base_model_fingerprints,
    weights_fingerprint,
)
from lavida.models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from lavida.models.config import LavidaConfig
from lavida.models.lavida import build_lavida
from lavida.models.weights import WeightsNotFoundError

MIB = 1 << 20


def _random_file(path, size, seed=0):
    data = bytearray(
        torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        .numpy()
        .tobytes()
    )
    path.write_bytes(data)
    return data


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(data)


def test_the_fingerprint_of_a_large_file_hashes_exactly_its_sampled_bytes(tmp_path):
    """Worked by hand for an 8 MiB file: its first and last MiB and 16 slices of 64 KiB whose starts are
    spread evenly from 1 MiB to 8 MiB - 1 MiB - 64 KiB (the docstring's rule), after '\\0<size>\\0'."""
    data = _random_file(tmp_path / "w.safetensors", 8 * MIB)
    first_start, last_start = MIB, 8 * MIB - MIB - 64 * 1024
    starts = [first_start + (last_start - first_start) * i // 15 for i in range(16)]
    expected = hashlib.sha256(f"\0{8 * MIB}\0".encode())  # a single file: no name
    expected.update(data[:MIB])
    for start in starts:
        expected.update(data[start : start + 64 * 1024])
    expected.update(data[-MIB:])
    assert weights_fingerprint(tmp_path / "w.safetensors") == expected.hexdigest()[:16]


def test_a_small_file_counts_every_byte_a_large_one_only_its_samples(tmp_path):
    small = tmp_path / "small.bin"
    _random_file(small, 3 * MIB)  # 2 MiB of ends + 16 x 64 KiB: read whole
    before = weights_fingerprint(small)
    _flip(small, 3 * MIB // 2)
    assert weights_fingerprint(small) != before

    large = tmp_path / "large.bin"
    _random_file(large, 8 * MIB)
    before = weights_fingerprint(large)
    for sampled in (0, MIB - 1, MIB, 8 * MIB - 1):  # both ends, the first slice
        _flip(large, sampled)
        assert weights_fingerprint(large) != before, sampled
        _flip(large, sampled)
    assert weights_fingerprint(large) == before
    _flip(large, MIB + 64 * 1024 + 100)  # between the first two slices: not read (the cost of 16 GB in ms)
    assert weights_fingerprint(large) == before


def test_what_the_fingerprint_of_a_model_folder_depends_on(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    _random_file(model / "model-00001-of-00002.safetensors", 100_000, seed=1)
    _random_file(model / "model-00002-of-00002.safetensors", 100_000, seed=2)
    (model / "config.json").write_text('{"hidden_size": 8}')
    before = weights_fingerprint(model)

    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(model, copy)
    (copy / "README.md").write_text("a model card")  # not a weight file
    (copy / ".cache" / "huggingface").mkdir(parents=True)  # hf download's bookkeeping
    (copy / ".cache" / "huggingface" / "x.safetensors").write_bytes(b"metadata")
    assert weights_fingerprint(copy) == before

    renamed = tmp_path / "renamed"
    shutil.copytree(model, renamed)
    (renamed / "model-00002-of-00002.safetensors").rename(renamed / "model-00002-of-00003.safetensors")
    assert weights_fingerprint(renamed) != before  # sharded otherwise

    (copy / "pytorch_model.bin").write_bytes(b"the same weights in the other format")  # not read
    (copy / "original").mkdir()  # nor are subfolders
    (copy / "original" / "consolidated.00.pth").write_bytes(b"the release's own format")
    assert weights_fingerprint(copy) == before

    # A transformers CLIP folder, or its weights file given directly.
    clip = tmp_path / "clip-vit-base-patch32"
    clip.mkdir()
    _random_file(clip / "model.safetensors", 5000, seed=3)
    (clip / "config.json").write_text("{}")
    assert weights_fingerprint(clip) == weights_fingerprint(clip / "model.safetensors")
    bin_only = tmp_path / "bin_only"  # without safetensors the .bin is what transformers reads
    bin_only.mkdir()
    _random_file(bin_only / "pytorch_model.bin", 5000, seed=4)
    first = weights_fingerprint(bin_only)
    _flip(bin_only / "pytorch_model.bin", 10)
    assert weights_fingerprint(bin_only) != first

    single = tmp_path / "open_clip_model.safetensors"
    _random_file(single, 1000)
    renamed_file = tmp_path / "clip.safetensors"
    shutil.copy(single, renamed_file)
    assert weights_fingerprint(renamed_file) == weights_fingerprint(single)

    no_weights = tmp_path / "no_weights"  # a folder without weight files: all of its files count
    no_weights.mkdir()
    (no_weights / "a.txt").write_text("a")
    first = weights_fingerprint(no_weights)
    (no_weights / "a.txt").write_text("b")
    assert weights_fingerprint(no_weights) != first

    with pytest.raises(WeightsNotFoundError, match="nothing_here: no such base-model file or folder"):
        weights_fingerprint(tmp_path / "nothing_here")


def test_a_file_of_up_to_three_mib_is_hashed_whole_a_larger_one_sampled(tmp_path):
    """2 MiB of ends and 16 slices of 64 KiB make 3 MiB: a smaller file is read whole (at 3 MiB exactly the
    slices tile the middle MiB, so both rules read the same bytes); a larger one skips bytes between slices."""
    small = tmp_path / "small.bin"
    data = _random_file(small, 2 * MIB + MIB // 2)
    # Hand-worked: one file, so no name; its size, then every byte once.
    expected = hashlib.sha256(f"\0{2 * MIB + MIB // 2}\0".encode() + bytes(data))
    assert weights_fingerprint(small) == expected.hexdigest()[:16]

    large = tmp_path / "large.bin"
    _random_file(large, 3 * MIB + MIB // 2)
    before = weights_fingerprint(large)
    # Slices start at 1 MiB + gap * i // 15, gap = 3.5 MiB - 2 MiB - 64 KiB = 1,507,328: the second one at
    # 1 MiB + 100,488, so 100 bytes past the end of the first (1 MiB + 65,536) are not read.
    _flip(large, MIB + 64 * 1024 + 100)
    assert weights_fingerprint(large) == before


def test_a_folder_without_safetensors_is_its_weight_files_and_hidden_files_never_count(tmp_path):
    """transformers reads pytorch_model.bin where no safetensors file is: the folder is that one file, the
    same as the file given directly; a hidden file is not read, even with a weight suffix."""
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    _random_file(bin_only / "pytorch_model.bin", 5000, seed=4)
    (bin_only / "config.json").write_text('{"hidden_size": 8}')
    (bin_only / ".model.safetensors").write_bytes(b"a hidden file, never read")
    assert weights_fingerprint(bin_only) == weights_fingerprint(bin_only / "pytorch_model.bin")

    no_weights = tmp_path / "no_weights"  # no weight file anywhere: every visible file under it counts
    (no_weights / "sub").mkdir(parents=True)
    (no_weights / "sub" / "a.txt").write_text("a")
    (no_weights / ".cache").mkdir()
    (no_weights / ".cache" / "b.txt").write_text("b")
    # Hand-worked: the one visible file, sub/a.txt, alone (no name): '\0', its size 1, '\0', then b"a".
    assert weights_fingerprint(no_weights) == hashlib.sha256(b"\x001\x00a").hexdigest()[:16]


def test_only_base_models_whose_path_exists_are_fingerprinted(tmp_path):
    """A random base model (no path) and a path not on this machine are left out of the record rather than
    failing the save: here only the CLIP file is fingerprinted."""
    clip = tmp_path / "clip.safetensors"
    _random_file(clip, 1000, seed=2)
    config = LavidaConfig.from_dict(
        {
            "mllm": {"pretrained": None},
            "mask_decoder": {"pretrained": str(tmp_path / "not_here")},
            "text_encoder": {"pretrained": str(clip)},
        }
    )
    assert base_model_fingerprints(config) == {"text_encoder": weights_fingerprint(clip)}


@pytest.fixture(scope="module")
def saved(tiny_pretrained, tmp_path_factory):
    torch.manual_seed(0)
    model = build_lavida(tiny_pretrained)
    return save_checkpoint(model, tiny_pretrained, tmp_path_factory.mktemp("ckpt") / "tiny"), tiny_pretrained


def test_a_checkpoint_records_the_fingerprint_of_each_base_model(saved):
    checkpoint, config = saved
    assert read_checkpoint_meta(checkpoint)[BASE_FINGERPRINTS_KEY] == {
        "mllm": weights_fingerprint(config.mllm.pretrained),
        "text_encoder": weights_fingerprint(config.text_encoder.pretrained),
        "mask_decoder": weights_fingerprint(config.mask_decoder.pretrained),
    }


@pytest.mark.parametrize("section", ["mllm", "text_encoder", "mask_decoder"])
def test_a_checkpoint_is_not_loaded_on_other_weights_of_the_same_model(saved, tmp_path, section, caplog):
    checkpoint, config = saved
    source = Path(getattr(config, section).pretrained)
    other = other_weights(source, tmp_path / source.name)
    overrides = {section: {"pretrained": str(other)}}
    with pytest.raises(
        BaseModelMismatchError, match=rf"(?s){section} at {other}: fingerprint .*base_model_check=warn"
    ) as error:
        load_checkpoint(checkpoint, config_overrides=overrides)
    assert error.value.sections == (section,)
    assert "+checkpoint_overrides.<part>.pretrained=DIR" in str(error.value)
    assert "without any other sign. Point at the weights it was trained on (lavida-eval" in str(error.value)

    with caplog.at_level(logging.WARNING, logger="lavida.models.base_fingerprint"):
        model, loaded_config = load_checkpoint(
            checkpoint, config_overrides=overrides, base_model_check="warn"
        )
    assert getattr(loaded_config, section).pretrained == str(other)
    assert f"{section} at {other}" in caplog.text

    same = tmp_path / f"copy_{source.name}"  # the same weights elsewhere load without a word
    (shutil.copytree if source.is_dir() else shutil.copy)(source, same)
    load_checkpoint(checkpoint, config_overrides={section: {"pretrained": str(same)}})


def test_weights_replaced_at_the_recorded_path_are_refused(tiny_pretrained, tmp_path):
    """The case no path comparison sees: the folder the checkpoint names now holds another model."""
    base = tmp_path / "base"
    shutil.copytree(tiny_pretrained.mllm.pretrained, base)
    config = type(tiny_pretrained).from_dict(
        {**tiny_pretrained.to_dict(), "mllm": {**tiny_pretrained.to_dict()["mllm"], "pretrained": str(base)}}
    )
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_lavida(config), config, tmp_path / "ckpt")
    load_checkpoint(checkpoint)
    shutil.rmtree(base)
    other_weights(Path(tiny_pretrained.mllm.pretrained), base)
    with pytest.raises(BaseModelMismatchError, match=f"mllm at {base}"):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize("recorded", ["no fingerprints", "unversioned fingerprints", "another version"])
def test_a_checkpoint_without_comparable_fingerprints_loads_on_any_weights(saved, tmp_path, recorded, caplog):
    """Saved before lavida recorded them, or made by another way of fingerprinting (what is hashed
    changed; the first records had no version): nothing to compare, never refused as other weights."""
    checkpoint, config = saved
    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    meta = json.loads((old / "meta.json").read_text())
    assert meta[FINGERPRINT_VERSION_KEY] == FINGERPRINT_VERSION == 1
    if recorded == "no fingerprints":
        del meta[BASE_FINGERPRINTS_KEY], meta[FINGERPRINT_VERSION_KEY]
    elif recorded == "unversioned fingerprints":
        del meta[FINGERPRINT_VERSION_KEY]
    else:
        meta[FINGERPRINT_VERSION_KEY] = 2
    (old / "meta.json").write_text(json.dumps(meta))
    other = other_weights(Path(config.mllm.pretrained), tmp_path / "mllm")
    with caplog.at_level(logging.INFO, logger="lavida.models"):
        load_checkpoint(old, config_overrides={"mllm": {"pretrained": str(other)}})
    said = caplog.text.count("fingerprints were made by another version of lavida")
    assert said == (0 if recorded == "no fingerprints" else 1)  # once per load
    with pytest.raises(BaseModelMismatchError):  # the same with its own record: refused (the test can fail)
        load_checkpoint(checkpoint, config_overrides={"mllm": {"pretrained": str(other)}})


def test_an_unknown_check_mode_is_refused(saved):
    with pytest.raises(ValueError, match="base_model_check must be 'strict' or 'warn', got 'warm'"):
        load_checkpoint(saved[0], base_model_check="warm")


def _trained_elsewhere(checkpoint, tmp_path, section):
    """A copy of ``checkpoint`` whose ``section`` base model is named at a path that does not exist here
    (it was trained on another machine)."""
    copy = tmp_path / "from_the_cluster"
    shutil.copytree(checkpoint, copy)
    data = json.loads((copy / "lavida_config.json").read_text())
    data[section]["pretrained"] = str(tmp_path / "cluster" / "models" / section)
    (copy / "lavida_config.json").write_text(json.dumps(data))
    return copy


VARIABLES = {
    "mllm": "LAVIDA_QWEN2VL_PATH",
    "text_encoder": "LAVIDA_CLIP_PATH",
    "mask_decoder": "LAVIDA_SAM2_PATH",
}


@pytest.mark.parametrize("section", ["mllm", "text_encoder", "mask_decoder"])
def test_a_gone_base_model_is_taken_from_its_variable_where_the_weights_match(
    saved, tmp_path, monkeypatch, caplog, section
):
    """README step 1's variables name this machine's copies: a checkpoint trained elsewhere uses them
    where they hold the weights it recorded, and only there."""
    checkpoint, config = saved
    moved = _trained_elsewhere(checkpoint, tmp_path, section)
    source = Path(getattr(config, section).pretrained)
    here = tmp_path / "here" / source.name
    here.parent.mkdir()
    (shutil.copytree if source.is_dir() else shutil.copy)(source, here)
    monkeypatch.setenv(VARIABLES[section], str(here))
    with caplog.at_level(logging.INFO, logger="lavida.models.base_model_places"):
        _, loaded = load_checkpoint(moved)
    assert getattr(loaded, section).pretrained == str(here)
    assert (
        f"{VARIABLES[section]}={here} holds the same weights (the fingerprint the checkpoint recorded): using it"
        in caplog.text
    )

    other = other_weights(source, tmp_path / "other" / source.name)
    monkeypatch.setenv(VARIABLES[section], str(other))
    with caplog.at_level(logging.WARNING, logger="lavida.models.base_model_places"):
        with pytest.raises(WeightsNotFoundError, match=f"checkpoint_overrides.{section}.pretrained=DIR"):
            load_checkpoint(moved)
    assert f"{VARIABLES[section]}={other} holds other weights than it was trained on" in caplog.text

    monkeypatch.setenv(VARIABLES[section], str(here))
    unrecorded = json.loads((moved / "meta.json").read_text())
    del unrecorded[BASE_FINGERPRINTS_KEY]
    (moved / "meta.json").write_text(json.dumps(unrecorded))
    with pytest.raises(
        WeightsNotFoundError, match="is used in their place only where it holds the very weights"
    ):
        load_checkpoint(moved)  # saved before fingerprints: the variable's weights cannot be told apart


def test_an_override_wins_over_the_variable(saved, tmp_path, monkeypatch):
    checkpoint, config = saved
    moved = _trained_elsewhere(checkpoint, tmp_path, "mask_decoder")
    monkeypatch.setenv("LAVIDA_SAM2_PATH", config.mask_decoder.pretrained)
    given = tmp_path / "given"
    shutil.copytree(config.mask_decoder.pretrained, given)
    _, loaded = load_checkpoint(moved, config_overrides={"mask_decoder": {"pretrained": str(given)}})
    assert loaded.mask_decoder.pretrained == str(given)
