"""Loading the base-weight layouts a researcher downloads, written tiny and at random in their
real formats, and the ways a local copy can be wrong (a tensor missing, another size, a foreign format).

Each wrong copy must fail with an error naming the file and the fix, never load with part of the model
at random initialisation.
"""

import copy
import re
import shutil
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from transformers import Sam2Config

from lavida.models.base_fingerprint import BaseModelMismatchError
from lavida.models.checkpoint import checkpoint_digest, load_checkpoint, save_checkpoint
from lavida.models.mask_decoder import _check_size, _sam2_config, build_mask_decoder, load_sam2
from lavida.models.text_encoder import build_category_encoder
from lavida.models.weights import WeightsNotFoundError

REPOSITORY = Path(__file__).resolve().parents[2]


def _copy(source, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite_safetensors(file: Path, edit) -> None:
    state = load_file(str(file))
    edit(state)
    save_file(state, str(file), metadata={"format": "pt"})  # transformers reads only "pt"-tagged files


# -- SAM2 -------------------------------------------------------------------------------------------------


def test_sam2_directory_missing_a_tensor_is_refused_not_initialised_at_random(tiny_pretrained, tmp_path):
    """A SAM2 file without one of the model's tensors (a partial conversion, another model's file) used
    to load with that tensor at random: transformers only logs a load report."""
    directory = _copy(tiny_pretrained.mask_decoder.pretrained, tmp_path / "sam2")
    _rewrite_safetensors(directory / "model.safetensors", lambda s: s.pop("mask_decoder.conv_s0.bias"))
    with pytest.raises(WeightsNotFoundError) as info:
        build_mask_decoder(pretrained=str(directory), arch=tiny_pretrained.mask_decoder.arch, prompt_dim=32)
    message = str(info.value)
    assert message.startswith(f"SAM2: the weights in '{directory}' lack 1 tensors of the model")
    assert "mask_decoder.conv_s0.bias" in message
    assert "LAVIDA_SAM2_PATH" in message


def test_sam2_directory_of_another_size_than_the_config_is_refused(tiny_pretrained, tmp_path):
    """model/mask_decoder=sam2.1_hiera_s with LAVIDA_SAM2_PATH at a Hiera-L directory used to build Hiera-L
    silently (the trained heads have the same shapes for every size, so even a checkpoint trained on S
    loaded onto L without a word)."""
    arch = tiny_pretrained.mask_decoder.arch
    deeper = copy.deepcopy(arch)
    deeper["vision_config"]["backbone_config"]["blocks_per_stage"] = [1, 2, 2, 1]
    directory = tmp_path / "sam2-other-size"
    load_sam2(arch=deeper).save_pretrained(directory)
    with pytest.raises(WeightsNotFoundError) as info:
        build_mask_decoder(pretrained=str(directory), arch=arch, prompt_dim=32)
    message = str(info.value)
    assert str(directory) in message
    assert "blocks_per_stage" in message and "[1, 2, 2, 1]" in message and "[1, 2, 1, 1]" in message
    assert "model/mask_decoder=" in message
    # Without `arch` there is nothing to compare with: the directory's own config is the architecture.
    assert build_mask_decoder(pretrained=str(directory), prompt_dim=32).sam.config.vision_config


@pytest.mark.parametrize(
    ("size", "blocks"),
    [
        ("sam2.1_hiera_t", [1, 2, 7, 2]),
        ("sam2.1_hiera_s", [1, 2, 11, 2]),
        ("sam2.1_hiera_b_plus", [2, 3, 16, 3]),
        ("sam2.1_hiera_l", [2, 6, 36, 4]),
    ],
)
def test_a_directory_of_a_shipped_sam2_size_is_named_with_its_config(tiny_pretrained, tmp_path, size, blocks):
    """The refusal tells which shipped config fits the directory: its Hiera blocks per stage (SAM2.1's
    ``sam2.1_hiera_{t,s,b+,l}.yaml``: trunk stages (1, 2, 7, 2), (1, 2, 11, 2), (2, 3, 16, 3), (2, 6, 36, 4))
    name the size. Compared on the configs alone: a real Hiera-L is too large to write here."""
    shipped = OmegaConf.load(files("lavida.configs") / "model" / "mask_decoder" / f"{size}.yaml")
    loaded = _sam2_config(Sam2Config, OmegaConf.to_container(shipped.arch, resolve=True))
    configured = _sam2_config(Sam2Config, tiny_pretrained.mask_decoder.arch)  # blocks (1, 2, 1, 1)
    with pytest.raises(WeightsNotFoundError) as info:
        _check_size(loaded, configured, tmp_path)
    message = str(info.value)
    head = f"SAM2: '{tmp_path}' holds another architecture than model.mask_decoder.arch describes:\n"
    tail = (
        "Point model.mask_decoder.pretrained (LAVIDA_SAM2_PATH) at the directory of the configured size, or "
        f"choose the config of the directory's size (model/mask_decoder={size}). A LAVIDA checkpoint needs "
        "the SAM2 it was trained on."
    )
    assert re.fullmatch(re.escape(head) + r"(?:  [^\n]+\n)+" + re.escape(tail), message), message
    line = f"  vision_config.backbone_config.blocks_per_stage: {blocks} in the directory, [1, 2, 1, 1] configured"
    assert line in message.splitlines()


@pytest.mark.parametrize(
    ("field", "value", "configured"),
    [
        ("vision_config.backbone_config.hidden_size", 24, 16),
        ("vision_config.backbone_config.blocks_per_stage", [1, 2, 2, 1], [1, 2, 1, 1]),
        ("vision_config.backbone_config.embed_dim_per_stage", [16, 32, 64, 96], [16, 32, 64, 128]),
        ("vision_config.backbone_config.num_attention_heads_per_stage", [1, 1, 2, 4], [1, 1, 2, 2]),
        ("vision_config.backbone_config.global_attention_blocks", [1], [2]),
        ("vision_config.backbone_config.window_size_per_stage", [4, 4, 2, 2], [4, 4, 4, 2]),
        ("vision_config.backbone_config.image_size", [256, 256], [128, 128]),
        ("vision_config.fpn_hidden_size", 64, 32),
        ("prompt_encoder_config.image_size", 256, 128),
        ("prompt_encoder_config.hidden_size", 64, 32),
        ("mask_decoder_config.hidden_size", 64, 32),
        ("mask_decoder_config.num_hidden_layers", 3, 2),
    ],
)
def test_each_architecture_field_alone_makes_another_size(
    tiny_pretrained, tmp_path, field, value, configured
):
    """Any one of the fields that tell SAM2 architectures apart is enough for the refusal, which names that
    field alone; the tiny config's size is no shipped one, so the fix names no config."""
    arch = copy.deepcopy(tiny_pretrained.mask_decoder.arch)
    *parents, name = field.split(".")
    section = arch
    for parent in parents:
        section = section[parent]
    section[name] = value
    loaded = _sam2_config(Sam2Config, arch)
    with pytest.raises(WeightsNotFoundError) as info:
        _check_size(loaded, _sam2_config(Sam2Config, tiny_pretrained.mask_decoder.arch), tmp_path)
    lines = str(info.value).splitlines()
    assert [line for line in lines if line.startswith("  ")] == [
        f"  {field}: {value} in the directory, {configured} configured"
    ]
    assert "(model/mask_decoder=<the directory's size>)" in lines[-1]


def test_checkpoint_pointed_at_a_sam2_of_another_size_is_refused(tiny_model, tiny_pretrained, tmp_path):
    arch = copy.deepcopy(tiny_pretrained.mask_decoder.arch)
    arch["vision_config"]["backbone_config"]["blocks_per_stage"] = [1, 2, 2, 1]
    other = tmp_path / "sam2-other-size"
    load_sam2(arch=arch).save_pretrained(other)
    directory = save_checkpoint(tiny_model.eval(), tiny_pretrained, tmp_path / "ckpt")
    overrides = {"mask_decoder": {"pretrained": str(other)}}
    # Its fingerprint differs from the one the checkpoint recorded: refused before anything loads ...
    with pytest.raises(BaseModelMismatchError, match=f"mask_decoder at {other}"):
        load_checkpoint(directory, config_overrides=overrides)
    # ... and where that check is waived, by the loader, which names what differs.
    with pytest.raises(WeightsNotFoundError, match="blocks_per_stage") as error:
        load_checkpoint(directory, config_overrides=overrides, base_model_check="warn")
    # The caller gave this path: no hint that it came from the checkpoint's config and moved.
    assert "from the checkpoint's" not in str(error.value)


def test_sam2_hub_layout_sam2_video_loads_the_same_model(tiny_pretrained, tmp_path):
    """facebook/sam2.1-hiera-* hold a ``sam2_video`` config and the video model's tensors (memory
    attention and encoder on top of the image model's): they load as the image model, with every
    tensor of it from the file."""
    from transformers import Sam2Config, Sam2VideoConfig, Sam2VideoModel

    from lavida.models.mask_decoder import _sam2_config

    arch = tiny_pretrained.mask_decoder.arch
    image_config = _sam2_config(Sam2Config, arch)
    video = Sam2VideoModel(
        Sam2VideoConfig(
            vision_config=image_config.vision_config.to_dict(),
            prompt_encoder_config=image_config.prompt_encoder_config.to_dict(),
            mask_decoder_config=image_config.mask_decoder_config.to_dict(),
        )
    )
    directory = tmp_path / "sam2.1-hiera-tiny-twin"
    video.save_pretrained(directory)
    assert '"model_type": "sam2_video"' in (directory / "config.json").read_text()
    decoder = build_mask_decoder(pretrained=str(directory), arch=arch, prompt_dim=32)
    video_state = video.state_dict()
    for name, tensor in decoder.sam.state_dict().items():
        torch.testing.assert_close(tensor, video_state[name], rtol=0, atol=0, msg=name)


def test_sam2_sharded_directory_loads(tiny_pretrained, tmp_path):
    """A sharded save (model-0000x-of-0000n.safetensors + index), as large repositories are stored."""
    reference = load_sam2(pretrained=tiny_pretrained.mask_decoder.pretrained)
    directory = tmp_path / "sharded"
    reference.save_pretrained(directory, max_shard_size="100KB")
    assert (directory / "model.safetensors.index.json").is_file()
    loaded = load_sam2(pretrained=str(directory), arch=tiny_pretrained.mask_decoder.arch)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_sam2_original_pt_checkpoint_is_explained(tmp_path):
    """Meta's sam2.1_hiera_small.pt is what most researchers have; the error says it is the original
    format and which transformers directory to use instead."""
    checkpoint = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, checkpoint)
    with pytest.raises(WeightsNotFoundError) as info:
        build_mask_decoder(pretrained=str(checkpoint), prompt_dim=32)
    message = str(info.value)
    assert str(checkpoint) in message
    assert "original SAM2 checkpoint" in message and "facebook/sam2.1-hiera-small" in message


def test_sam2_loads_in_the_requested_dtype(tiny_pretrained):
    decoder = build_mask_decoder(
        pretrained=tiny_pretrained.mask_decoder.pretrained,
        arch=tiny_pretrained.mask_decoder.arch,
        prompt_dim=32,
        dtype="bfloat16",
    )
    assert {p.dtype for p in decoder.parameters()} == {torch.bfloat16}


def test_load_sam2_reads_a_directory_in_the_requested_dtype(tiny_pretrained):
    """``load_sam2`` itself, not only ``build_mask_decoder``'s final cast, returns the dtype asked for."""
    sam = load_sam2(pretrained=tiny_pretrained.mask_decoder.pretrained, dtype="bfloat16")
    assert {p.dtype for p in sam.parameters()} == {torch.bfloat16}


# -- CLIP -------------------------------------------------------------------------------------------------


def _clip_args(config):
    return {"model_name": config.text_encoder.model_name, "arch": config.text_encoder.arch}


def test_clip_full_open_clip_file_in_half_precision_loads(tiny_pretrained, tmp_path):
    """The real open_clip file holds the whole CLIP (image tower, temperature) in float16: the text tower
    loads from it, with exactly the file's values, in the requested dtype."""
    import open_clip

    from lavida.models.text_encoder import register_clip_config

    register_clip_config(tiny_pretrained.text_encoder.model_name, tiny_pretrained.text_encoder.arch)
    full = open_clip.create_model(tiny_pretrained.text_encoder.model_name, pretrained=None)
    state = {key: value.half().contiguous() for key, value in full.state_dict().items()}
    assert any(key.startswith("visual.") for key in state) and "logit_scale" in state
    file = tmp_path / "open_clip_model.safetensors"
    save_file(state, str(file))
    encoder = build_category_encoder(**_clip_args(tiny_pretrained), pretrained=str(file))
    tower = encoder.clip.state_dict()
    assert tower and not any(key.startswith("visual.") for key in tower)
    for key, value in tower.items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, state[key].float(), rtol=0, atol=0, msg=key)


def test_clip_torchscript_archive_is_explained_not_called_corrupt(tiny_pretrained, tmp_path):
    """OpenAI's own ViT-B-32.pt is a TorchScript archive, which weights_only loading refuses. The error
    used to call it corrupt ('download it again', which cannot help) and quoted torch's advice to load
    it with weights_only=False."""

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.layer(x)

    archive = tmp_path / "ViT-B-32.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, but OpenAI's files are in its format
        torch.jit.save(torch.jit.script(Tiny()), str(archive))
    with pytest.raises(WeightsNotFoundError) as info:
        build_category_encoder(**_clip_args(tiny_pretrained), pretrained=str(archive))
    message = str(info.value)
    assert str(archive) in message and "TorchScript" in message
    assert "open_clip_model.safetensors" in message
    assert "corrupt" not in message and "weights_only=False" not in message


def test_a_pickled_object_is_refused_without_suggesting_to_unpickle_it(tiny_pretrained, tmp_path):
    file = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"model": torch.nn.Linear(2, 2)}, file)  # a whole module, not a state dict
    with pytest.raises(WeightsNotFoundError) as info:
        build_category_encoder(**_clip_args(tiny_pretrained), pretrained=str(file))
    message = str(info.value)
    assert str(file) in message and "weights_only" in message
    assert "weights_only=False" not in message and "trust" not in message


def test_clip_transformers_file_lacking_the_projection_is_named(tiny_pretrained, tmp_path):
    """A transformers-format file (the official code's openai/clip-vit-base-patch32) is read in transformers'
    names (tests/models/test_clip_transformers.py); one without the text projection is refused by name."""
    file = tmp_path / "model.safetensors"
    save_file(
        {
            "text_model.embeddings.token_embedding.weight": torch.zeros(4, 2),
            "text_model.final_layer_norm.weight": torch.zeros(2),
            "vision_model.post_layernorm.weight": torch.zeros(2),
        },
        str(file),
    )
    with pytest.raises(WeightsNotFoundError) as info:
        build_category_encoder(**_clip_args(tiny_pretrained), pretrained=str(file))
    message = str(info.value)
    assert str(file) in message and "text_projection.weight" in message
    assert "openai/clip-vit-base-patch32" in message


def test_clip_folder_of_the_timm_repository_names_the_open_clip_file(tiny_pretrained, tmp_path):
    """timm/vit_base_patch32_clip_224.openai holds timm's image-only model.safetensors beside the open_clip
    files: the error for the folder points at the open_clip file, not at a list to choose from."""
    folder = tmp_path / "vit_base_patch32_clip_224.openai"
    folder.mkdir()
    for name in ("model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        (folder / name).write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as info:
        build_category_encoder(**_clip_args(tiny_pretrained), pretrained=str(folder))
    assert f"Point at the file in it: '{folder / 'open_clip_model.safetensors'}'" in str(info.value)


# -- Qwen2-VL (lavida/models/mllm.py) -----------------------------------------


def test_qwen_directory_missing_a_tensor_is_refused(tiny_pretrained, tmp_path):
    from lavida.models.mllm import build_semantic_extractor

    directory = _copy(tiny_pretrained.mllm.pretrained, tmp_path / "mllm")
    key = "model.layers.0.self_attn.q_proj.weight"
    _rewrite_safetensors(directory / "model.safetensors", lambda s: s.pop(key))
    with pytest.raises(WeightsNotFoundError, match="q_proj"):
        build_semantic_extractor(pretrained=str(directory), arch=tiny_pretrained.mllm.arch)


# -- never unpickle ---------------------------------------------------------------------------------------


def test_every_torch_load_is_weights_only():
    calls = []
    for file in sorted((REPOSITORY / "lavida").rglob("*.py")):
        text = file.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            # The call's arguments: up to the matching closing parenthesis.
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls.append((file, text[match.start() : end + 1]))
    assert calls, "expected the loaders' torch.load calls"
    unsafe = [f"{file}: {call}" for file, call in calls if "weights_only=True" not in call]
    assert not unsafe


# -- LAVIDA checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_moved_elsewhere_loads_the_same_weights_and_digest(tiny_model, tiny_pretrained, tmp_path):
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in tiny_model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    first = save_checkpoint(tiny_model.eval(), tiny_pretrained, tmp_path / "a" / "ckpt")
    again = save_checkpoint(tiny_model, tiny_pretrained, tmp_path / "b" / "ckpt")
    assert checkpoint_digest(first) == checkpoint_digest(again)  # a save is a function of the weights
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(str(first), moved)
    assert checkpoint_digest(moved) == checkpoint_digest(again)  # the folder's own name is not hashed
    loaded, config = load_checkpoint(moved)
    assert config == tiny_pretrained
    reference = dict(tiny_model.named_parameters())
    trained = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trained == {n for n, p in reference.items() if p.requires_grad}
    for name, parameter in loaded.named_parameters():
        torch.testing.assert_close(parameter, reference[name], rtol=0, atol=0, msg=name)
    with torch.no_grad():
        tiny_model.projector.out_proj.bias[0] += 1.0
    changed = save_checkpoint(tiny_model, tiny_pretrained, tmp_path / "b" / "ckpt")
    assert checkpoint_digest(changed) != checkpoint_digest(moved)


# -- random stand-ins -------------------------------------------------------------------------------------


def test_random_base_models_are_written_atomically(tiny_pretrained, tmp_path, monkeypatch):
    """A kill while writing the stand-in SAM2 must not leave a directory that looks complete (config.json
    present) beside a missing or partial model file."""
    from transformers import Sam2Model

    from lavida.models.random_init import write_random_pretrained

    def save_half(self, directory, **kwargs):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        raise KeyboardInterrupt("killed while writing the weights")

    monkeypatch.setattr(Sam2Model, "save_pretrained", save_half)
    root = tmp_path / "base"
    unset = tiny_pretrained.without_weights()  # parts with a path are not written
    with pytest.raises(KeyboardInterrupt):
        write_random_pretrained(unset, root)
    assert not (root / "sam2").exists()
    assert sorted(p.name for p in root.iterdir()) == ["mllm"]
    monkeypatch.undo()
    written = write_random_pretrained(unset, root)
    assert sorted(p.name for p in root.iterdir()) == ["clip", "mllm", "sam2"]
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no staging left
    assert Path(written.mask_decoder.pretrained) == root / "sam2"
