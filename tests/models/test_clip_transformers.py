"""The official code's CLIP (a transformers folder, openai/clip-vit-base-patch32) loads into the category
encoder and gives transformers' own projected text features for the same weights."""

import json
import logging
import shutil

import pytest
import torch
from open_clip.transformer import QuickGELU, TextTransformer
from safetensors.torch import load_file, save_file

from lavida.models.clip_transformers import (
    check_activation,
    open_clip_text_state,
    read_transformers_clip_folder,
)
from lavida.models.text_encoder import CLIP_HINT, build_category_encoder, check_clip_weights
from lavida.models.weights import WeightsNotFoundError

WORDS = ["fire", "a person climbing over a fence", "fighting", "a red circle"]


def _clip_config(*, layers=2, act="quick_gelu"):
    from transformers import CLIPConfig

    # The tiny open_clip twin's sizes (lavida/configs/model/text_encoder/tiny.yaml): width 32, 2 heads,
    # MLP 4 × 32, the real 49,408-token vocabulary and 77 positions, projection 32.
    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 128,
            "num_attention_heads": 2,
            "num_hidden_layers": layers,
            "max_position_embeddings": 77,
            "hidden_act": act,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=32,
    )


def _randomised(model):
    # transformers' init leaves biases at 0 and LayerNorms at 1: random values everywhere make a wrong
    # renaming (q/k/v order, a transposed projection, ln_1/ln_2 swapped) change the features.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def hf_clip():
    from transformers import CLIPModel

    return _randomised(CLIPModel(_clip_config()))


def _text_features(model, tokens):
    output = model.get_text_features(input_ids=tokens)
    return output if torch.is_tensor(output) else output.pooler_output


def _assert_transformers_features(encoder, hf_clip):
    """The category features equal transformers' projected text features of the same weights."""
    tokens = encoder.tokenize(WORDS)
    with torch.no_grad():
        expected = _text_features(hf_clip, tokens)
        assert expected.shape == (len(WORDS), 32)
        torch.testing.assert_close(encoder(tokens), expected, rtol=1e-5, atol=1e-5)


def _encoder(tiny_pretrained, pretrained):
    return build_category_encoder(
        model_name=tiny_pretrained.text_encoder.model_name,
        arch=tiny_pretrained.text_encoder.arch,
        pretrained=str(pretrained),
    )


def test_a_transformers_clip_folder_gives_transformers_features(hf_clip, tiny_pretrained, tmp_path):
    folder = tmp_path / "clip-vit-base-patch32"
    hf_clip.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert check_clip_weights(folder) == folder  # lavida's up-front check accepts the folder
    encoder = _encoder(tiny_pretrained, folder)
    _assert_transformers_features(encoder, hf_clip)


def test_pytorch_model_bin_with_the_legacy_position_ids_loads(hf_clip, tiny_pretrained, tmp_path):
    """The hub folder also carries pytorch_model.bin, and older transformers saved position_ids in it."""
    folder = tmp_path / "clip"
    hf_clip.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save(state, folder / "pytorch_model.bin")
    encoder = _encoder(tiny_pretrained, folder)
    _assert_transformers_features(encoder, hf_clip)


def test_the_weights_file_itself_and_a_sharded_folder_load(hf_clip, tiny_pretrained, tmp_path):
    folder = tmp_path / "clip"
    hf_clip.save_pretrained(folder)
    reference = _encoder(tiny_pretrained, folder)
    tokens = reference.tokenize(WORDS)
    from_file = _encoder(tiny_pretrained, folder / "model.safetensors")
    torch.testing.assert_close(from_file(tokens), reference(tokens), rtol=0, atol=0)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(folder / "config.json", sharded)
    state = load_file(str(folder / "model.safetensors"))
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({key: state[key] for key in part}, str(sharded / name))
    weight_map = {key: name for name, part in halves.items() for key in part}
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    torch.testing.assert_close(_encoder(tiny_pretrained, sharded)(tokens), reference(tokens), rtol=0, atol=0)


def test_a_text_model_with_projection_folder_loads(hf_clip, tiny_pretrained, tmp_path):
    from transformers import CLIPTextModelWithProjection

    text_config = _clip_config().text_config
    text_config.projection_dim = 32  # a CLIPModel keeps it outside its text config
    text_only = CLIPTextModelWithProjection(text_config)
    text_only.load_state_dict(
        {k: v for k, v in hf_clip.state_dict().items() if k.startswith(("text_model.", "text_projection."))}
    )
    folder = tmp_path / "text_with_projection"
    text_only.save_pretrained(folder)
    encoder = _encoder(tiny_pretrained, folder)
    _assert_transformers_features(encoder, hf_clip)


def test_a_text_model_without_its_projection_is_refused(tiny_pretrained, tmp_path):
    """A bare CLIPTextModel's pooled output is not the feature LAVIDA uses: refused, not zero-filled."""
    from transformers import CLIPTextModel

    folder = tmp_path / "text_only"
    CLIPTextModel(_clip_config().text_config).save_pretrained(folder)
    with pytest.raises(WeightsNotFoundError, match=r"without its text projection.*CLIPModel folder"):
        _encoder(tiny_pretrained, folder)


def test_a_gelu_tower_is_refused_for_a_quickgelu_model(tiny_pretrained, tmp_path):
    from transformers import CLIPModel

    folder = tmp_path / "gelu"
    CLIPModel(_clip_config(act="gelu")).save_pretrained(folder)
    with pytest.raises(WeightsNotFoundError) as error:
        _encoder(tiny_pretrained, folder)
    message = str(error.value)
    assert str(folder / "config.json") in message and "'gelu'" in message and "QuickGELU" in message
    assert tiny_pretrained.text_encoder.model_name in message


def test_a_deeper_tower_is_refused(tiny_pretrained, tmp_path):
    """A file with more layers than the configured model used to load its first layers and warn."""
    from transformers import CLIPModel

    folder = tmp_path / "deeper"
    CLIPModel(_clip_config(layers=3)).save_pretrained(folder)
    with pytest.raises(WeightsNotFoundError, match=r"transformer\.resblocks\.2\..*another \(deeper\) CLIP"):
        _encoder(tiny_pretrained, folder)


def test_a_missing_key_projection_is_named(hf_clip, tiny_pretrained, tmp_path):
    folder = tmp_path / "clip"
    hf_clip.save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["text_model.encoder.layers.1.self_attn.k_proj.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsNotFoundError, match=r"lacks the k projection weight of text layer 1"):
        _encoder(tiny_pretrained, folder)


def test_folders_of_other_models_or_without_weights_are_explained(hf_clip, tiny_pretrained, tmp_path):
    siglip = tmp_path / "siglip"
    siglip.mkdir()
    (siglip / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    (siglip / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError, match=r"type 'siglip'; expected a CLIP model"):
        check_clip_weights(siglip)

    empty = tmp_path / "clip"
    hf_clip.save_pretrained(empty)
    (empty / "model.safetensors").unlink()
    for check in (check_clip_weights, lambda path: _encoder(tiny_pretrained, path)):
        with pytest.raises(WeightsNotFoundError) as error:
            check(empty)
        message = str(error.value)
        assert f"'{empty}' holds no weights file" in message and "pytorch_model.bin" in message
        assert "config.json" in message


def test_a_folder_without_weights_lists_what_it_holds(tmp_path):
    """The listing is what shows a user that the weights file was not downloaded (only the model card)."""
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / "README.md").write_text("a model card")
    with pytest.raises(WeightsNotFoundError) as error:
        check_clip_weights(folder)
    assert str(error.value) == (
        f"CLIP text encoder: the transformers folder '{folder}' holds no weights file; expected "
        "model.safetensors or model.safetensors.index.json or pytorch_model.bin beside its config.json. "
        f"Found: README.md, config.json.\n{CLIP_HINT}"
    )


def test_a_transformers_file_without_its_config_loads_with_a_warning(
    hf_clip, tiny_pretrained, tmp_path, caplog
):
    folder = tmp_path / "clip"
    hf_clip.save_pretrained(folder)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.move(folder / "model.safetensors", alone / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="lavida.models.text_encoder"):
        encoder = _encoder(tiny_pretrained, alone / "model.safetensors")
    assert any("no config.json beside it" in record.getMessage() for record in caplog.records)
    _assert_transformers_features(encoder, hf_clip)


def test_a_whole_tiny_lavida_builds_on_a_transformers_clip_folder(hf_clip, tiny_pretrained, tmp_path):
    """The path every entry point takes: the up-front base-weights check, then the model build."""
    from lavida.models.config import LavidaConfig
    from lavida.models.lavida import build_lavida, check_base_weights

    folder = tmp_path / "clip-vit-base-patch32"
    hf_clip.save_pretrained(folder)
    settings = tiny_pretrained.to_dict()
    settings["text_encoder"]["pretrained"] = str(folder)
    config = LavidaConfig.from_dict(settings)
    check_base_weights(config)
    model = build_lavida(config)
    _assert_transformers_features(model.text_encoder, hf_clip)


def test_the_activation_check_reads_the_text_config_of_a_one_layer_tower(tmp_path):
    """The activation is read off the tower's first block, so a one-layer tower is checked too; a
    clip_text_model config without hidden_act has transformers' default, quick_gelu."""
    tower = TextTransformer(context_length=8, vocab_size=16, width=8, heads=1, layers=1, act_layer=QuickGELU)
    config_file = tmp_path / "config.json"
    check_activation(
        tower, {"model_type": "clip_text_model"}, config_file=config_file, model_name="m", hint=""
    )
    gelu = {"model_type": "clip", "hidden_act": "quick_gelu", "text_config": {"hidden_act": "gelu"}}
    with pytest.raises(WeightsNotFoundError) as error:
        check_activation(tower, gelu, config_file=config_file, model_name="m", hint="Get it.")
    # Hand-worked: a CLIPModel's text tower is described by its text_config (gelu), not the top level.
    assert str(error.value) == (
        f"CLIP text encoder: '{config_file}' says the tower was trained with hidden_act 'gelu', but the "
        "open_clip model 'm' uses QuickGELU. Set model.text_encoder.model_name to the matching open_clip model "
        "(OpenAI's weights: 'ViT-B-32-quickgelu').\nGet it."
    )


def test_bare_text_model_names_are_read_as_text_model_names(tmp_path):
    """transformers 5 saves a text model's tower without the text_model. prefix: the same tensors must get
    the same open_clip names as under the prefix."""
    token, norm = torch.arange(6.0).reshape(3, 2), torch.tensor([1.0, 2.0])
    projection = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    bare = {
        "embeddings.token_embedding.weight": token,
        "final_layer_norm.weight": norm,
        "text_projection.weight": projection,
    }
    converted = open_clip_text_state(bare, source=tmp_path, hint="")
    # Hand-worked from the renaming table: the projection is transposed (Linear (E, D) -> open_clip (D, E)).
    assert sorted(converted) == ["ln_final.weight", "text_projection", "token_embedding.weight"]
    torch.testing.assert_close(converted["token_embedding.weight"], token, rtol=0, atol=0)
    torch.testing.assert_close(converted["ln_final.weight"], norm, rtol=0, atol=0)
    torch.testing.assert_close(
        converted["text_projection"], torch.tensor([[1.0, 3.0], [2.0, 4.0]]), rtol=0, atol=0
    )


def test_the_config_beside_a_weights_file_is_checked(tiny_pretrained, tmp_path):
    """Pointing at the folder's model.safetensors instead of the folder still reads the config.json beside
    it: a GELU tower is refused as it is when the folder is given."""
    from transformers import CLIPModel

    folder = tmp_path / "gelu"
    CLIPModel(_clip_config(act="gelu")).save_pretrained(folder)
    with pytest.raises(WeightsNotFoundError) as error:
        _encoder(tiny_pretrained, folder / "model.safetensors")
    assert str(error.value) == (
        f"CLIP text encoder: '{folder / 'config.json'}' says the tower was trained with hidden_act 'gelu', but "
        f"the open_clip model '{tiny_pretrained.text_encoder.model_name}' uses QuickGELU. Set "
        "model.text_encoder.model_name to the matching open_clip model (OpenAI's weights: "
        f"'ViT-B-32-quickgelu').\n{CLIP_HINT}"
    )


def test_a_config_json_that_is_not_json_is_refused_naming_it(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "clip",')  # a download cut short
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as error:
        check_clip_weights(folder)
    message = str(error.value)
    assert message.startswith(f"CLIP text encoder: could not read '{folder / 'config.json'}' (")
    assert message.endswith(f").\n{CLIP_HINT}")


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (
            '{"metadata": {}}',
            "could not read the shard index '{index}' ('weight_map'); expected a json object with a 'weight_map'.",
        ),
        (
            "[1, 2]",
            "could not read the shard index '{index}' (list indices must be integers or slices, not str); expected a json object with a 'weight_map'.",
        ),
        (
            '{"weight_map": {"text_projection.weight": "model-00002-of-00002.safetensors"}}',
            "'{index}' lists the shard 'model-00002-of-00002.safetensors', which is not in '{folder}'.",
        ),
    ],
)
def test_a_broken_shard_index_is_refused_naming_it(tmp_path, index, message):
    """An index without its weight map, one that is not a json object, and one listing a shard that was not
    downloaded: each names the index file, before any shard is read."""
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / "model.safetensors.index.json").write_text(index)
    with pytest.raises(WeightsNotFoundError) as error:
        read_transformers_clip_folder(folder, hint="Get it.")
    expected = message.format(index=folder / "model.safetensors.index.json", folder=folder)
    assert str(error.value) == f"CLIP text encoder: {expected}\nGet it."


def test_a_text_tower_tensor_of_unknown_name_keeps_its_name(tmp_path):
    """A name outside the renaming table is kept as it is (so the loader reports it as unexpected), not
    dropped or mapped onto an open_clip tensor."""
    extra = torch.tensor([5.0])
    state = {
        "text_model.final_layer_norm.weight": torch.ones(2),
        "text_model.adapter.scale": extra,
        "text_projection.weight": torch.eye(2),
    }
    converted = open_clip_text_state(state, source=tmp_path, hint="")
    assert sorted(converted) == ["ln_final.weight", "text_model.adapter.scale", "text_projection"]
    assert converted["text_model.adapter.scale"] is extra
