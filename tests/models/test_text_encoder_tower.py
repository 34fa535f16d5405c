"""The category encoder's own contract: a frozen tower in eval mode, the parameters it reads outside any
module's forward, its feature width for every kind of open_clip text projection, what it logs, and how
its loader copies a file into a tower and names what does not fit."""

import logging
import math

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from lavida.models.text_encoder import (
    CLIP_HINT,
    build_category_encoder,
    load_clip_text_weights,
    quiet_open_clip,
    register_clip_config,
)
from lavida.models.weights import WeightsNotFoundError

LOGGER = "lavida.models.text_encoder"


def _arch(**text_cfg):
    # The tiny twin's sizes (lavida/configs/model/text_encoder/tiny.yaml) with one layer, the real BPE
    # vocabulary, and an embedding width (16) unlike the tower's width (32), so the two cannot be confused.
    return {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
            **text_cfg,
        },
    }


def _tiny_encoder(config, pretrained=None):
    text = config.text_encoder
    return build_category_encoder(model_name=text.model_name, arch=text.arch, pretrained=pretrained)


def test_train_returns_the_encoder_and_leaves_the_frozen_tower_in_eval_mode(tiny_pretrained):
    """nn.Module.train() defaults to mode=True and returns the module (``model.train().to(...)`` chains);
    the CLIP tower itself stays in eval mode (frozen, B.2)."""
    encoder = _tiny_encoder(tiny_pretrained, tiny_pretrained.text_encoder.pretrained)
    assert [name for name, module in encoder.clip.named_modules() if module.training] == []  # as built
    assert encoder.train() is encoder
    assert encoder.training
    assert [name for name, module in encoder.clip.named_modules() if module.training] == []
    assert encoder.eval() is encoder and not encoder.training


def test_the_tower_is_built_in_the_dtype_asked_for(tiny_pretrained):
    text = tiny_pretrained.text_encoder
    encoder = build_category_encoder(model_name=text.model_name, arch=text.arch, dtype="bfloat16")
    assert {parameter.dtype for parameter in encoder.clip.parameters()} == {torch.bfloat16}
    assert encoder(encoder.tokenize(["a red circle"])).dtype == torch.bfloat16


def test_outside_parameters_are_the_two_that_encode_text_reads_directly(tiny_pretrained):
    """open_clip's encode_text adds ``positional_embedding`` and multiplies by ``text_projection`` itself,
    outside any submodule's forward: ZeRO-3 must gather exactly these two (the image tower and the
    temperature are deleted), not every parameter of the tower."""
    encoder = _tiny_encoder(tiny_pretrained, tiny_pretrained.text_encoder.pretrained)
    outside = encoder.outside_parameters()
    assert len(outside) == 2
    assert {id(p) for p in outside} == {
        id(encoder.clip.positional_embedding),
        id(encoder.clip.text_projection),
    }


@pytest.mark.parametrize(
    ("name", "text_cfg", "dim"),
    [
        # open_clip's TextTransformer: proj_type 'linear' gives a (width, embed_dim) Parameter, proj_bias an
        # nn.Linear(width, embed_dim), proj_type 'none' no projection (features are the tower's width).
        ("lavida-test-clip-projection-matrix", {}, 16),
        ("lavida-test-clip-projection-linear", {"proj_bias": True}, 16),
        ("lavida-test-clip-projection-none", {"proj_type": "none"}, 32),
    ],
)
def test_the_feature_width_follows_the_text_projection(name, text_cfg, dim):
    encoder = build_category_encoder(model_name=name, arch=_arch(**text_cfg))
    assert encoder.dim == dim
    assert encoder(encoder.tokenize(["fire", "fighting"])).shape == (2, dim)


def test_the_build_line_names_the_model_the_weights_and_the_width(tiny_pretrained, caplog):
    name, file = tiny_pretrained.text_encoder.model_name, tiny_pretrained.text_encoder.pretrained
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _tiny_encoder(tiny_pretrained, file)
        _tiny_encoder(tiny_pretrained)
    # The tiny tower's features are embed_dim 32 wide (text_encoder/tiny.yaml).
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"Built CLIP text tower {name} ({file}), 32-d",
        f"Built CLIP text tower {name} (random init), 32-d",
    ]


def test_an_unknown_model_name_without_an_arch_is_refused():
    with pytest.raises(ValueError) as error:
        build_category_encoder(model_name="lavida-test-no-such-clip")
    assert str(error.value) == (
        "Unknown open_clip model 'lavida-test-no-such-clip'. Use one of open_clip.list_models() or give `arch`."
    )


def test_quiet_open_clip_lets_the_caller_s_own_root_records_through(caplog):
    """Only records logged from open_clip's package are filtered; a program's own root-logger lines stay."""
    caplog.set_level(logging.INFO)
    with quiet_open_clip(keep_random_notice=False):
        logging.info("the caller's own line")
    assert [r.getMessage() for r in caplog.records] == ["the caller's own line"]


def test_without_a_root_handler_warnings_still_print_as_python_prints_them(capsys):
    """With no handler configured, Python prints WARNING and above bare to stderr (logging.lastResort) and
    drops the rest; the stand-in handler that quiet_open_clip installs for the build must do the same."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.INFO)
    try:
        with quiet_open_clip(keep_random_notice=False):
            logging.warning("a warning of the caller")
            logging.info("an info line of the caller")
        assert root.handlers == []
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert capsys.readouterr().err == "a warning of the caller\n"  # lastResort's format is the bare message


def _tiny_tower(config):
    """open_clip's whole tiny CLIP without its image tower, as the stand-in pretraining loads it."""
    text = config.text_encoder
    register_clip_config(text.model_name, text.arch)
    with quiet_open_clip(keep_random_notice=False):
        clip = open_clip.create_model(text.model_name, pretrained=None)
    del clip.visual
    return clip


def test_loading_copies_into_the_tower_and_keeps_a_temperature_the_file_lacks(tiny_pretrained, tmp_path):
    """The stand-in pretraining (lavida.synthetic.pretrain_clip) loads a text-only file into a whole CLIP
    that has a temperature: the loader copies into the tower's own parameters (same objects, same dtype,
    here from a float16 file) and leaves the temperature the file lacks as it was."""
    clip = _tiny_tower(tiny_pretrained)
    before = dict(clip.named_parameters())
    state = load_file(tiny_pretrained.text_encoder.pretrained)
    half = tmp_path / "half.safetensors"
    save_file({key: value.half().contiguous() for key, value in state.items()}, str(half))
    load_clip_text_weights(clip, str(half))
    after = dict(clip.named_parameters())
    assert list(after) == list(before) and all(after[name] is before[name] for name in before)
    assert {parameter.dtype for parameter in after.values()} == {torch.float32}
    for key, value in clip.state_dict().items():
        if key != "logit_scale":
            torch.testing.assert_close(value, state[key].half().float(), rtol=0, atol=0, msg=key)
    # open_clip's initial temperature: log(1 / 0.07), CLIP's τ = 0.07.
    torch.testing.assert_close(clip.logit_scale.detach(), torch.tensor(math.log(1 / 0.07)))


def test_a_file_missing_tensors_names_how_many_and_the_first_five(tiny_pretrained, tmp_path):
    state = load_file(tiny_pretrained.text_encoder.pretrained)
    # Six of the tower's tensors dropped; sorted, the top-level five come before the transformer's.
    dropped = [
        "ln_final.bias",
        "ln_final.weight",
        "positional_embedding",
        "text_projection",
        "token_embedding.weight",
        "transformer.resblocks.1.ln_2.bias",
    ]
    file = tmp_path / "partial.safetensors"
    save_file({key: value for key, value in state.items() if key not in dropped}, str(file))
    with pytest.raises(WeightsNotFoundError) as error:
        load_clip_text_weights(_tiny_tower(tiny_pretrained), str(file))
    assert str(error.value) == (
        f"CLIP text encoder: '{file}' lacks 6 text-tower tensors, e.g. {dropped[:5]} (open_clip names). Is it "
        f"a CLIP of the configured model? {CLIP_HINT}"
    )


def test_a_deeper_file_names_three_of_its_extra_layer_s_tensors(tiny_pretrained, tmp_path):
    state = load_file(tiny_pretrained.text_encoder.pretrained)
    # The tiny tower has layers 0 and 1; four tensors of a layer 2 make the file "deeper".
    extra = ["ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"]
    deeper = {
        f"transformer.resblocks.2.{name}": state[f"transformer.resblocks.1.{name}"].clone() for name in extra
    }
    file = tmp_path / "deeper.safetensors"
    save_file({**state, **deeper}, str(file))
    with pytest.raises(WeightsNotFoundError) as error:
        load_clip_text_weights(_tiny_tower(tiny_pretrained), str(file))
    first_three = [
        "transformer.resblocks.2.ln_1.bias",
        "transformer.resblocks.2.ln_1.weight",
        "transformer.resblocks.2.ln_2.bias",
    ]
    assert str(error.value) == (
        f"CLIP text encoder: '{file}' holds text layers the configured model lacks, e.g. {first_three}: it is "
        f"another (deeper) CLIP. Set model.text_encoder.model_name to its open_clip model. {CLIP_HINT}"
    )


def test_unexpected_tensors_are_ignored_with_a_warning_naming_five(tiny_pretrained, tmp_path, caplog):
    state = load_file(tiny_pretrained.text_encoder.pretrained)
    file = tmp_path / "extra.safetensors"
    save_file({**state, **{f"extra.{i}": torch.zeros(1) for i in range(6)}}, str(file))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        load_clip_text_weights(_tiny_tower(tiny_pretrained), str(file))
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"Ignoring 6 unexpected keys in {file}, e.g. ['extra.0', 'extra.1', 'extra.2', 'extra.3', 'extra.4']"
    ]
