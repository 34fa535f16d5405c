"""Where the random stand-in base models go and which ones are written (lavida.models.random_init).

The loaders are replaced by fakes that write one small file each, so these run in milliseconds; the
real loaders are exercised by tests/train/test_random_base_models.py.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import compose_model_config, tree_listing
from safetensors.torch import load_file

import lavida.models.mask_decoder
import lavida.models.mllm
import lavida.models.text_encoder
from lavida.models.random_init import (
    random_pretrained_paths,
    random_pretrained_root,
    unset_base_models,
    write_random_pretrained,
)


class _Saved:
    """A stand-in for a transformers model or processor: save_pretrained writes ``<name>.txt``."""

    def __init__(self, name: str):
        self.name = name

    def save_pretrained(self, folder):
        (Path(folder) / f"{self.name}.txt").write_text(self.name)


@pytest.fixture
def fake_loaders(monkeypatch):
    """Replace the three base-model loaders; returns the keyword arguments each call received."""
    calls = []

    def mllm(**kwargs):
        calls.append(("mllm", kwargs))
        return _Saved("model"), _Saved("processor")

    def sam2(**kwargs):
        calls.append(("sam2", kwargs))
        return _Saved("sam")

    def clip(**kwargs):
        calls.append(("clip", kwargs))
        return torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.rand(3))}), None

    monkeypatch.setattr(lavida.models.mllm, "load_base_mllm", mllm)
    monkeypatch.setattr(lavida.models.mask_decoder, "load_sam2", sam2)
    monkeypatch.setattr(lavida.models.text_encoder, "load_clip_text", clip)
    return calls


def test_each_base_model_has_its_place_and_its_place_gives_back_the_root():
    """The documented layout (mllm/, sam2/, clip/open_clip_model.safetensors) and its inverse, which a
    moved run uses to find its stand-ins: only a path that ends in the whole place has a root."""
    root = Path("/runs/a/base_models")
    assert random_pretrained_paths(root) == {
        "mllm": Path("/runs/a/base_models/mllm"),
        "mask_decoder": Path("/runs/a/base_models/sam2"),
        "text_encoder": Path("/runs/a/base_models/clip/open_clip_model.safetensors"),
    }
    for section, path in random_pretrained_paths(root).items():
        assert random_pretrained_root(section, path) == root
        assert random_pretrained_root(section, str(path)) == root
    assert random_pretrained_root("mllm", None) is None
    assert random_pretrained_root("mllm", "/weights/Qwen2-VL-7B") is None  # real weights
    assert random_pretrained_root("mllm", "mllm") is None  # the place alone: no root above it
    assert random_pretrained_root("text_encoder", "/w/open_clip_model.safetensors") is None  # not in clip/
    assert random_pretrained_root("text_encoder", "/w/clip/other.safetensors") is None


def test_unset_base_models_lists_the_sections_without_a_path_in_drawing_order():
    config = compose_model_config("tiny")
    assert unset_base_models(config) == ["mllm", "mask_decoder", "text_encoder"]
    config = replace(config, mask_decoder=replace(config.mask_decoder, pretrained="/w/sam2"))
    assert unset_base_models(config) == ["mllm", "text_encoder"]


def test_each_section_is_written_by_its_own_loader_from_seed_zero(fake_loaders, tmp_path):
    """mllm/ holds the model and its processor, sam2/ the SAM2 model, the CLIP file the text tower's
    tensors; the weights are drawn after torch.manual_seed(0) (the default seed), so the fake's
    torch.rand(3) equals a fresh draw after manual_seed(0), whatever the caller drew before; open_clip's own
    random-weights notice is off."""
    config = compose_model_config("tiny")
    torch.manual_seed(5)  # not the state the weights are drawn from (conftest seeds every test with 0)
    written = write_random_pretrained(config, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "mllm", "sam2"]
    assert tree_listing(tmp_path / "mllm") == {"model.txt": "model", "processor.txt": "processor"}
    assert tree_listing(tmp_path / "sam2") == {"sam.txt": "sam"}
    assert [name for name, _ in fake_loaders] == ["mllm", "sam2", "clip"]
    assert fake_loaders[2][1]["random_notice"] is False
    torch.manual_seed(0)
    torch.testing.assert_close(
        load_file(tmp_path / "clip" / "open_clip_model.safetensors")["w"], torch.rand(3)
    )
    assert written.mllm.pretrained == str(tmp_path / "mllm")
    assert written.mask_decoder.pretrained == str(tmp_path / "sam2")
    assert written.text_encoder.pretrained == str(tmp_path / "clip" / "open_clip_model.safetensors")


def test_an_existing_base_model_is_rewritten_unless_reuse_is_asked(fake_loaders, tmp_path, caplog):
    """By default a stand-in already at its place is replaced (a second call gives a fresh write); with
    reuse_existing it is kept, only the missing ones are written and the log names only those."""
    config = compose_model_config("tiny")
    (tmp_path / "sam2").mkdir()
    (tmp_path / "sam2" / "old.txt").write_text("old")
    write_random_pretrained(config, tmp_path)
    assert tree_listing(tmp_path / "sam2") == {"sam.txt": "sam"}
    (tmp_path / "sam2" / "sam.txt").write_text("kept")
    fake_loaders.clear()
    caplog.clear()  # only the reusing calls' log is asserted on (an earlier test may have set INFO)
    with caplog.at_level("INFO", logger="lavida.models.random_init"):
        again = write_random_pretrained(config, tmp_path, reuse_existing=True)
    assert fake_loaders == []  # all three exist: nothing is loaded or written
    assert caplog.messages == []
    assert tree_listing(tmp_path / "sam2") == {"sam.txt": "kept"}
    assert again.mask_decoder.pretrained == str(tmp_path / "sam2")
    (tmp_path / "clip" / "open_clip_model.safetensors").unlink()
    with caplog.at_level("INFO", logger="lavida.models.random_init"):
        write_random_pretrained(config, tmp_path, reuse_existing=True)
    assert [name for name, _ in fake_loaders] == ["clip"]
    assert caplog.messages == [f"Wrote random base models (text_encoder) to {tmp_path}"]


def test_each_loader_is_given_the_configs_architecture_family_and_dtype(fake_loaders, tmp_path):
    """The stand-ins are built as the config describes them: another MLLM family or a bf16 config reaches
    the loaders (a dropped argument would write the default family or float32 weights)."""
    tiny = compose_model_config("tiny")
    config = replace(tiny, dtype="bfloat16", mllm=replace(tiny.mllm, family="qwen2_5_vl"))
    write_random_pretrained(config, tmp_path)
    calls = dict(fake_loaders)
    assert calls["mllm"] == {"family": "qwen2_5_vl", "arch": tiny.mllm.arch, "dtype": "bfloat16"}
    assert calls["sam2"] == {"arch": tiny.mask_decoder.arch, "dtype": "bfloat16"}
    assert calls["clip"] == {
        "model_name": tiny.text_encoder.model_name,
        "arch": tiny.text_encoder.arch,
        "dtype": "bfloat16",
        "random_notice": False,
    }
