"""Checkpoint save → load gives identical outputs; broken checkpoints give clear errors."""

import json
import re

import pytest
import torch
from conftest import checkpoint_on_its_own_clip, make_samples, other_weights, tiny_processor_for
from safetensors.torch import load_file, save_file
from torch import nn

import lavida
from lavida.models.adapters import MLPAdapter
from lavida.models.base_fingerprint import weights_fingerprint
from lavida.models.checkpoint import (
    _git_revision,
    heads_state_dict,
    load_checkpoint,
    load_trained_weights,
    loaded_base_fingerprints,
    read_checkpoint_meta,
    save_checkpoint,
    trained_clip_length,
)
from lavida.models.lavida import LavidaModel, build_lavida
from lavida.models.weights import WeightsNotFoundError


def _perturb_trainable(model):
    """Move every trained parameter off its initial value (LoRA B starts at 0, <SEG> deltas at 0)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture
def trained(tiny_model, tiny_pretrained):
    _perturb_trainable(tiny_model)
    tiny_model.eval()
    return tiny_model, tiny_pretrained


def _outputs(model):
    video, image = make_samples()
    with torch.no_grad():
        out = model(tiny_processor_for(model)([video, image], train=True))
    return out


def test_save_load_identical_outputs(trained, tmp_path):
    model, config = trained
    before = _outputs(model)
    save_checkpoint(model, config, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "heads.safetensors",
        "lavida_config.json",
        "meta.json",
        "mllm_adapter",
    ]
    loaded, loaded_config = load_checkpoint(tmp_path / "ckpt")
    loaded.eval()
    after = _outputs(loaded)
    assert loaded_config == config
    for field in ("object_logits", "mask_logits", "iou_pred", "seg_features", "lm_loss"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field), rtol=0, atol=0)
    # The test can fail: a fresh model from the same base weights differs.
    fresh = build_lavida(config).eval()
    assert not torch.allclose(_outputs(fresh).object_logits, before.object_logits)


def test_a_loaded_model_predicts_deterministically_in_any_mode(trained, tmp_path):
    """LoRA's dropout (the release's 0.05) is for training: a loaded model and predict() must not use it."""
    model, config = trained
    save_checkpoint(model, config, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    dropouts = [m for m in loaded.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts and not loaded.training and not any(m.training for m in dropouts)

    video, _ = make_samples()
    batch = tiny_processor_for(loaded)([video], train=False)
    loaded.train()  # as a fine-tuning run leaves it
    scores = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        scores.append(loaded.predict(batch).frame_scores)
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=0)
    assert loaded.training and all(m.training for m in dropouts)  # the mode it was in is restored
    # The check can fail: in training mode the forward pass itself differs between seeds.
    with torch.no_grad():
        logits = [torch.manual_seed(seed) and loaded(batch).object_logits for seed in (1, 2)]
    assert not torch.equal(logits[0], logits[1])


def test_overwrite_is_atomic_and_complete(trained, tmp_path):
    model, config = trained
    target = tmp_path / "ckpt"
    save_checkpoint(model, config, target)
    with torch.no_grad():
        model.projector.out_proj.weight.add_(1.0)
    save_checkpoint(model, config, target)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging or backup left behind
    loaded, _ = load_checkpoint(target)
    torch.testing.assert_close(loaded.projector.out_proj.weight, model.projector.out_proj.weight)


def test_heads_hold_exactly_the_trained_non_mllm_parameters(tiny_model):
    heads = heads_state_dict(tiny_model)
    expected = {n for n, p in tiny_model.named_parameters() if p.requires_grad and not n.startswith("mllm.")}
    assert set(heads) == expected
    assert any(n.startswith("projector.") for n in heads) and any(
        n.startswith("mask_decoder.") for n in heads
    )


def test_broken_checkpoints_raise_clear_errors(trained, tmp_path):
    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    (target / "heads.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsNotFoundError, match="heads.safetensors"):
        load_checkpoint(target)

    target = save_checkpoint(model, config, tmp_path / "ckpt2")
    (target / "heads.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match="missing \\['heads.safetensors'\\]"):
        load_checkpoint(target)

    target = save_checkpoint(model, config, tmp_path / "ckpt3")
    data = json.loads((target / "lavida_config.json").read_text())
    data["projector"]["num_queries"] = 6  # another architecture: the saved heads no longer fit
    (target / "lavida_config.json").write_text(json.dumps(data))
    with pytest.raises(WeightsNotFoundError, match="does not fit|shape"):
        load_checkpoint(target)

    with pytest.raises(WeightsNotFoundError, match="not a LAVIDA checkpoint"):
        load_checkpoint(tmp_path / "nowhere")

    # Hand-edited files (the eq7 hint below asks for one) with a typo name the file, the place and what
    # the file should hold.
    holds = {
        "lavida_config.json": "the model configuration save_checkpoint writes",
        "meta.json": "a JSON object of training facts (lavida_version, step, ...)",
    }
    for name, what in holds.items():
        target = save_checkpoint(model, config, tmp_path / f"ckpt_{name}")
        text = (target / name).read_text()
        (target / name).write_text(text.replace('"', "", 1))
        with pytest.raises(
            ValueError,
            match=rf"{name}: not valid JSON \(.* line 2, column 3\); expected {re.escape(what)}\. ",
        ):
            load_checkpoint(target)


def test_load_with_overridden_base_paths(trained, tmp_path):
    """Base models moved to another place: point the checkpoint at them with config_overrides."""
    import shutil

    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    moved = tmp_path / "moved_mllm"
    shutil.copytree(config.mllm.pretrained, moved)
    loaded, loaded_config = load_checkpoint(target, config_overrides={"mllm": {"pretrained": str(moved)}})
    assert loaded_config.mllm.pretrained == str(moved)
    assert loaded_config.projector == config.projector


def test_eq7_form_mismatch_names_the_fix(tiny_pretrained, tmp_path):
    """A checkpoint written with the official Eq. 7 (residual + LayerNorm) but whose config lacks the field,
    as every checkpoint written before ``model.projector.eq7`` existed, says which form to set."""
    import dataclasses

    config = dataclasses.replace(
        tiny_pretrained, projector=dataclasses.replace(tiny_pretrained.projector, eq7="official")
    )
    model = build_lavida(config).eval()
    save_checkpoint(model, config, tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "lavida_config.json"
    data = json.loads(config_file.read_text())
    del data["projector"]["eq7"]  # an older checkpoint
    config_file.write_text(json.dumps(data))
    with pytest.raises(WeightsNotFoundError, match=r"'official' form: set \"eq7\": \"official\""):
        load_checkpoint(tmp_path / "ckpt")
    data["projector"]["eq7"] = "official"
    config_file.write_text(json.dumps(data))
    loaded, loaded_config = load_checkpoint(tmp_path / "ckpt")
    assert loaded_config.projector.eq7 == "official" and loaded.projector.category_norm is not None


def test_git_revision_names_the_commit_and_a_dirty_tree(tmp_path, monkeypatch):
    """meta.json's git_revision: the commit of the code, '+dirty' with uncommitted changes to tracked files,
    and None outside a git checkout (an installed copy)."""
    import shutil
    import subprocess

    import lavida.models.checkpoint as checkpoint

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    package = repo / "lavida" / "models"
    package.mkdir(parents=True)
    (package / "checkpoint.py").write_text("x = 1\n")

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.setattr(checkpoint, "__file__", str(package / "checkpoint.py"))
    assert checkpoint._git_revision() == head
    (repo / "untracked.txt").write_text("not code\n")  # untracked files do not count
    assert checkpoint._git_revision() == head
    (package / "checkpoint.py").write_text("x = 2\n")
    assert checkpoint._git_revision() == head + "+dirty"
    # A copy of lavida inside another project's repository, untracked there (a git-ignored .venv): that
    # project's commit is not lavida's.
    venv = repo / ".venv" / "lib" / "lavida" / "models"
    venv.mkdir(parents=True)
    (repo / ".gitignore").write_text(".venv/\n")
    monkeypatch.setattr(checkpoint, "__file__", str(venv / "checkpoint.py"))
    assert checkpoint._git_revision() is None
    outside = tmp_path / "site-packages" / "lavida" / "models"
    outside.mkdir(parents=True)
    monkeypatch.setattr(checkpoint, "__file__", str(outside / "checkpoint.py"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert checkpoint._git_revision() is None


def test_git_revision_is_none_where_git_is_not_installed(tmp_path, monkeypatch):
    """A machine without git (a slim container) saves checkpoints too: this repository's revision is then
    unknown, and asking for it must not fail the save."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no git to run
    assert _git_revision() is None


def test_relative_base_paths_are_recorded_absolute(trained, tmp_path, monkeypatch):
    """A run started with relative base-model paths (model.mllm.pretrained=weights/qwen, or the demo's
    outputs/demo/base_models) wrote them as given, and loading the checkpoint from another folder looked
    for the base models there."""
    import os

    from lavida.models.config import LavidaConfig

    model, config = trained
    base = os.path.commonpath([config.mllm.pretrained, config.mask_decoder.pretrained])
    monkeypatch.chdir(base)
    settings = config.to_dict()
    for section in ("mllm", "text_encoder", "mask_decoder"):
        settings[section]["pretrained"] = os.path.relpath(settings[section]["pretrained"], base)
    relative = LavidaConfig.from_dict(settings)
    assert not os.path.isabs(relative.mllm.pretrained)
    target = save_checkpoint(model, relative, tmp_path / "ckpt")
    saved = json.loads((target / "lavida_config.json").read_text())
    for section in ("mllm", "text_encoder", "mask_decoder"):
        assert saved[section]["pretrained"] == getattr(config, section).pretrained

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded, loaded_config = load_checkpoint(target)
    assert loaded_config.mask_decoder.pretrained == config.mask_decoder.pretrained
    before, after = _outputs(model), _outputs(loaded)
    for field in ("object_logits", "mask_logits"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field), rtol=0, atol=0)


def test_a_file_given_as_checkpoint_is_named_as_such(trained, tmp_path):
    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    with pytest.raises(
        WeightsNotFoundError, match=r"heads\.safetensors' is not a LAVIDA checkpoint.*a file, not"
    ):
        load_checkpoint(target / "heads.safetensors")


def test_a_smoke_run_folder_moved_as_a_whole_still_loads(tmp_path, caplog):
    """``mv outputs/demo outputs/demo_seed0``: the checkpoint named its random stand-ins by absolute path,
    so the moved run's checkpoint no longer loaded. It now also records their place relative to itself."""
    import logging
    import shutil

    from conftest import compose_model_config

    from lavida.models.random_init import write_random_pretrained

    run = tmp_path / "demo"
    config = write_random_pretrained(compose_model_config("tiny"), run / "base_models")
    model = build_lavida(config)
    _perturb_trainable(model)
    before = _outputs(model.eval())
    save_checkpoint(model, config, run / "train" / "final")
    meta = json.loads((run / "train" / "final" / "meta.json").read_text())
    assert meta["stand_ins_relative"] == {
        "mllm": "../../base_models/mllm",
        "text_encoder": "../../base_models/clip/open_clip_model.safetensors",
        "mask_decoder": "../../base_models/sam2",
    }

    moved = tmp_path / "demo_seed0"
    shutil.move(run, moved)
    caplog.set_level(logging.INFO)
    loaded, loaded_config = load_checkpoint(moved / "train" / "final")
    torch.testing.assert_close(_outputs(loaded).object_logits, before.object_logits, rtol=0, atol=0)
    assert loaded_config.mask_decoder.pretrained == str(moved / "base_models" / "sam2")
    assert "the run folder was moved" in caplog.text
    # The fingerprints an evaluation cache is keyed on follow the stand-ins too, and say nothing more.
    caplog.clear()
    fingerprints = loaded_base_fingerprints(moved / "train" / "final")
    assert fingerprints["mask_decoder"] == weights_fingerprint(moved / "base_models" / "sam2")
    assert caplog.text == ""

    # A path given by the caller wins; one that does not exist is refused, not replaced.
    with pytest.raises(WeightsNotFoundError):
        load_checkpoint(
            moved / "train" / "final", config_overrides={"mask_decoder": {"pretrained": str(tmp_path / "x")}}
        )
    # The checkpoint copied out of its run folder finds no stand-ins there: the error says how to point at them.
    shutil.copytree(moved / "train" / "final", tmp_path / "elsewhere" / "final")
    with pytest.raises(WeightsNotFoundError, match="checkpoint_overrides"):
        load_checkpoint(tmp_path / "elsewhere" / "final")


def test_a_moved_runs_checkpoint_never_loads_another_runs_stand_ins(tmp_path, caplog):
    """``mv outputs/train/smoke outputs/train/smoke_v1``, then a new smoke run under the old name: the moved
    run's checkpoints still name the old place, which now holds the new run's stand-ins. The checkpoint
    records their digests, so it loads its own (beside it) and refuses stand-ins that are not."""
    import logging
    import shutil

    from conftest import compose_model_config

    from lavida.file_state import files_digest
    from lavida.models.random_init import random_pretrained_paths, write_random_pretrained

    run = tmp_path / "smoke"
    config = write_random_pretrained(compose_model_config("tiny"), run / "base_models", seed=0)
    model = build_lavida(config)
    _perturb_trainable(model)
    before = _outputs(model.eval())
    save_checkpoint(model, config, run / "final")
    digests = json.loads((run / "final" / "meta.json").read_text())["stand_in_sha256"]
    paths = random_pretrained_paths(run / "base_models")
    assert digests == {section: files_digest(paths[section]) for section in digests} and len(digests) == 3

    moved = tmp_path / "smoke_v1"
    shutil.move(run, moved)
    with torch.random.fork_rng(devices=[]):  # the new run at the old place: other random stand-ins
        write_random_pretrained(compose_model_config("tiny"), run / "base_models", seed=1)
    assert files_digest(paths["mask_decoder"]) != digests["mask_decoder"]
    caplog.set_level(logging.INFO)
    loaded, loaded_config = load_checkpoint(moved / "final")
    assert loaded_config.mask_decoder.pretrained == str(moved / "base_models" / "sam2")
    torch.testing.assert_close(_outputs(loaded).object_logits, before.object_logits, rtol=0, atol=0)
    assert "gone or another one" in caplog.text

    # Its own stand-ins replaced by other ones too: neither place holds them, and nothing is loaded.
    shutil.rmtree(moved / "base_models")
    shutil.copytree(run / "base_models", moved / "base_models")
    with pytest.raises(
        WeightsNotFoundError, match=r"not the one this checkpoint was trained on.*checkpoint_overrides"
    ):
        load_checkpoint(moved / "final")


def test_real_base_weights_are_not_looked_for_in_the_run_folder(trained, tmp_path):
    """Only lavida's own stand-ins (base_weights: optional, <run>/base_models/...) are recorded relatively."""
    import dataclasses

    model, config = trained
    save_checkpoint(model, dataclasses.replace(config, base_weights="required"), tmp_path / "run" / "final")
    meta = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())
    assert "stand_ins_relative" not in meta and "stand_in_sha256" not in meta


def test_loaded_base_fingerprints_follow_the_config_overrides(tiny_pretrained, tmp_path):
    """Evaluation caches are keyed on these fingerprints: with ``checkpoint_overrides`` pointing a base model
    elsewhere, the fingerprint must be that of the weights the override names (a cache made on the saved
    path must not be served), and without overrides that of the saved path."""
    checkpoint, clip = checkpoint_on_its_own_clip(tiny_pretrained, tmp_path)
    other = other_weights(clip, tmp_path / "other" / clip.name)
    saved = loaded_base_fingerprints(checkpoint)
    overridden = loaded_base_fingerprints(
        checkpoint, config_overrides={"text_encoder": {"pretrained": str(other)}}
    )
    # References: each file's fingerprint taken directly; the other weights differ, so the two do too.
    assert saved["text_encoder"] == weights_fingerprint(clip)
    assert overridden["text_encoder"] == weights_fingerprint(other) != weights_fingerprint(clip)
    assert {k: v for k, v in overridden.items() if k != "text_encoder"} == {
        k: v for k, v in saved.items() if k != "text_encoder"
    }


def test_a_checkpoint_whose_seg_token_id_differs_from_the_tokenizers_is_refused(trained, tmp_path):
    """meta.json's <SEG> id is compared with the tokenizer's: another id means another base MLLM, whose
    <SEG> row the trained heads were never paired with."""
    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    meta_file = target / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["seg_token_id"] == model.mllm.seg_token_id
    meta["seg_token_id"] = model.mllm.seg_token_id + 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(WeightsNotFoundError, match=r"meta\.json: the checkpoint was trained with <SEG> id"):
        load_checkpoint(target)


def test_the_trained_clip_length_comes_from_meta_json_else_b3s_8(tmp_path):
    """Evaluation defaults to the clip length the checkpoint recorded; a checkpoint without meta.json (or
    without the key) falls back to supplement B.3's T = 8 frames."""
    assert read_checkpoint_meta(tmp_path) == {}
    assert trained_clip_length(tmp_path) == 8  # supplement B.3: T = 8
    (tmp_path / "meta.json").write_text(json.dumps({"step": 3}))
    assert trained_clip_length(tmp_path) == 8
    (tmp_path / "meta.json").write_text(json.dumps({"clip_length": 4}))
    assert trained_clip_length(tmp_path) == 4


def test_meta_json_records_the_code_the_trained_size_and_the_seg_id(trained, tmp_path, monkeypatch):
    """meta.json's facts (the module docstring): lavida's version, the git revision of the code that saved,
    the number of trained parameters and the <SEG> token id, with the caller's extra entries."""
    model, config = trained
    monkeypatch.setattr("lavida.models.checkpoint._git_revision", lambda: "0123abcd+dirty")
    target = save_checkpoint(model, config, tmp_path / "ckpt", extra_meta={"step": 7, "clip_length": 4})
    meta = json.loads((target / "meta.json").read_text())
    trained_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert meta["lavida_version"] == lavida.__version__
    assert meta["git_revision"] == "0123abcd+dirty"
    assert meta["trainable_parameters"] == trained_count > 0
    assert meta["seg_token_id"] == model.mllm.seg_token_id
    assert (meta["step"], meta["clip_length"]) == (7, 4)


class _BaseModelWithoutAdapter(nn.Linear):
    """A frozen base model with transformers' ``save_pretrained`` (which writes all its weights), no PEFT."""

    def save_pretrained(self, directory):
        directory.mkdir(parents=True)
        save_file(self.state_dict(), directory / "model.safetensors")


class _PlainMllm(nn.Module):
    """An MLLM that is no PEFT model (as the stand-ins of tests/models/test_lavida.py): nothing of it trains."""

    seg_token_id = 3

    def __init__(self):
        super().__init__()
        self.model = _BaseModelWithoutAdapter(2, 2).requires_grad_(False)


def _model_with_a_plain_mllm(seed):
    torch.manual_seed(seed)
    return LavidaModel(
        mllm=_PlainMllm(),
        text_encoder=nn.Identity(),
        mask_decoder=nn.Identity(),
        projector=MLPAdapter(llm_dim=2, out_dim=2, hidden_dim=2),
    )


def test_a_model_whose_mllm_is_no_peft_model_saves_and_loads_its_heads_without_an_adapter(
    tiny_pretrained, tmp_path
):
    """No adapter is written for an MLLM without a PEFT adapter (its frozen base model is not saved either),
    and none is asked for on loading."""
    model = _model_with_a_plain_mllm(seed=0)
    target = save_checkpoint(model, tiny_pretrained, tmp_path / "ckpt")
    assert sorted(p.name for p in target.iterdir()) == [
        "heads.safetensors",
        "lavida_config.json",
        "meta.json",
    ]
    other = _model_with_a_plain_mllm(seed=1)
    assert not torch.equal(other.projector.mlp[0].weight, model.projector.mlp[0].weight)
    load_trained_weights(other, target)
    for name, parameter in model.projector.named_parameters():
        torch.testing.assert_close(other.projector.get_parameter(name), parameter, rtol=0, atol=0)


def test_a_folder_that_is_no_checkpoint_is_refused_naming_what_it_lacks_and_holds(tmp_path):
    """The message lists what the folder holds (a run folder given for its checkpoint, say), and says so
    where there is no folder at all."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")
    (folder / "lavida_config.json").write_text("{}")
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(folder)
    assert str(info.value) == (
        f"'{folder}' is not a LAVIDA checkpoint: missing ['heads.safetensors']. A checkpoint holds "
        "lavida_config.json, heads.safetensors, mllm_adapter/ and meta.json. "
        "Found: ['lavida_config.json', 'metrics.json']"
    )
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(tmp_path / "nowhere")
    assert str(info.value).endswith(
        "missing ['lavida_config.json', 'heads.safetensors']. A checkpoint holds lavida_config.json, "
        "heads.safetensors, mllm_adapter/ and meta.json. Found: (no such directory)"
    )
    (folder / "heads.safetensors").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(folder / "heads.safetensors")
    assert str(info.value).endswith(
        "Found: a file, not the checkpoint's folder: give the folder that holds it"
    )


def test_a_paper_form_checkpoint_loaded_with_the_official_form_names_the_fix(trained, tmp_path):
    """The other direction of test_eq7_form_mismatch_names_the_fix: heads without the official form's
    LayerNorm, loaded with ``eq7: official``, are named as the paper's form."""
    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    data = json.loads((target / "lavida_config.json").read_text())
    assert data["projector"]["eq7"] == "paper"
    data["projector"]["eq7"] = "official"
    (target / "lavida_config.json").write_text(json.dumps(data))
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(target)
    assert str(info.value).endswith(
        ' The checkpoint computes Eq. 7 in the \'paper\' form: set "eq7": "paper" under "projector" in '
        "its lavida_config.json."
    )


def test_heads_of_another_model_are_refused_naming_the_tensors_missing_and_unexpected(trained, tmp_path):
    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    heads = load_file(target / "heads.safetensors")
    names = sorted(heads)
    heads["projector.extra.weight"] = torch.zeros(2)
    del heads[names[0]]
    save_file(heads, target / "heads.safetensors")
    with pytest.raises(WeightsNotFoundError) as info:
        load_checkpoint(target)
    assert str(info.value) == (
        f"'{target / 'heads.safetensors'}' does not match the configured model: missing [{names[0]!r}] (1), "
        "unexpected ['projector.extra.weight'] (1)."
    )


def test_a_checkpoint_of_random_base_models_never_written_is_refused(trained, tmp_path):
    """A checkpoint saved before lavida wrote its random stand-ins to disk names no base model: building one
    again would put other random weights under the trained heads, so loading refuses and names the file."""
    model, config = trained
    target = save_checkpoint(model, config, tmp_path / "ckpt")
    data = json.loads((target / "lavida_config.json").read_text())
    data["mask_decoder"]["pretrained"] = None
    (target / "lavida_config.json").write_text(json.dumps(data))
    meta = json.loads((target / "meta.json").read_text())
    for key in ("stand_ins_relative", "stand_in_sha256"):
        meta.pop(key, None)
    (target / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        WeightsNotFoundError,
        match=rf"^{re.escape(str(target / 'lavida_config.json'))}: no base weights for model\.mask_decoder\. ",
    ):
        load_checkpoint(target)
