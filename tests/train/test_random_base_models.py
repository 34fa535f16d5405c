"""Smoke runs on random base models (``base_weights: optional``): the frozen weights a checkpoint was
trained on must be the ones every later load gets, on every rank and on resume."""

import dataclasses

import pytest
import torch
from conftest import compose_model_config
from trainers import make_trainer

from lavida.models.base_fingerprint import weights_fingerprint
from lavida.models.checkpoint import load_checkpoint, save_checkpoint
from lavida.models.lavida import build_lavida
from lavida.models.random_init import random_pretrained_paths, write_random_pretrained
from lavida.models.weights import WeightsNotFoundError


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[key], two[key]) for key in one)


@pytest.fixture(scope="module")
def random_base_run(synthetic_train_root, tmp_path_factory):
    """Two steps of the tiny model with no base-model paths set, as `lavida-train model=tiny` runs it."""
    config = compose_model_config("tiny")
    assert config.mllm.pretrained is None and config.base_weights == "optional"
    output_dir = tmp_path_factory.mktemp("random_base") / "run"
    trainer = make_trainer(synthetic_train_root, config, output_dir, max_steps=2, save_every=2)
    summary = trainer.fit()
    return trainer, summary


def test_the_checkpoint_loads_the_frozen_weights_it_was_trained_on(random_base_run):
    trainer, summary = random_base_run
    trained = trainer.accelerator.unwrap_model(trainer.model)
    first, config = load_checkpoint(summary.final_checkpoint)
    second, _ = load_checkpoint(summary.final_checkpoint)
    # Drawn again at each load, the frozen parts differed from load to load and from training.
    assert _same_weights(first, second)
    assert _same_weights(first, trained)
    root = (trainer.output_dir / "base_models").absolute()
    for section, path in random_pretrained_paths(root).items():
        assert getattr(config, section).pretrained == str(path)
        assert path.exists()


def test_a_resumed_run_reuses_the_written_base_models(random_base_run, synthetic_train_root):
    trainer, _ = random_base_run
    paths = random_pretrained_paths(trainer.output_dir / "base_models")
    written = {section: path.stat().st_mtime_ns for section, path in paths.items()}
    config = compose_model_config("tiny")
    resumed = make_trainer(synthetic_train_root, config, trainer.output_dir, max_steps=2, save_every=2)
    resumed.setup()
    assert resumed.progress.step == 2
    assert {section: path.stat().st_mtime_ns for section, path in paths.items()} == written
    assert _same_weights(
        resumed.accelerator.unwrap_model(resumed.model), trainer.accelerator.unwrap_model(trainer.model)
    )


def test_the_stand_ins_are_drawn_from_train_seed(
    synthetic_train_root, tiny_pretrained, tmp_path, monkeypatch
):
    """A run's random base models are those train.seed draws, not those of the writer's default seed (0):
    another seed trains on other frozen weights. Only the text encoder is unset here, and the run stops
    before the model is built, with the stand-in on disk."""
    config = dataclasses.replace(
        tiny_pretrained,
        base_weights="optional",
        text_encoder=dataclasses.replace(tiny_pretrained.text_encoder, pretrained=None),
    )

    def no_build(*args, **kwargs):
        raise RuntimeError("stop after the stand-ins")

    monkeypatch.setattr("lavida.train.loop.build_lavida", no_build)
    trainer = make_trainer(synthetic_train_root, config, tmp_path / "run", max_steps=1, seed=7)
    with pytest.raises(RuntimeError, match="stop after the stand-ins"):
        trainer.setup()
    written = random_pretrained_paths(tmp_path / "run" / "base_models")["text_encoder"]
    write_random_pretrained(config, tmp_path / "seed_7", seed=7)
    expected = random_pretrained_paths(tmp_path / "seed_7")["text_encoder"]
    assert weights_fingerprint(written) == weights_fingerprint(expected)


def test_a_checkpoint_of_unsaved_random_base_models_is_refused(tiny_pretrained, tmp_path):
    torch.manual_seed(0)
    model = build_lavida(tiny_pretrained.without_weights())
    checkpoint = save_checkpoint(model, tiny_pretrained.without_weights(), tmp_path / "ckpt")
    with pytest.raises(WeightsNotFoundError) as error:
        load_checkpoint(checkpoint)
    message = str(error.value)
    assert str(checkpoint / "lavida_config.json") in message
    assert "model.mllm, model.mask_decoder, model.text_encoder" in message
    assert "+checkpoint_overrides.mllm.pretrained=DIR" in message
    # Given weights for every part, it loads.
    overrides = {
        section: {"pretrained": getattr(tiny_pretrained, section).pretrained}
        for section in ("mllm", "mask_decoder", "text_encoder")
    }
    loaded, config = load_checkpoint(checkpoint, config_overrides=overrides)
    assert config.mllm.pretrained == tiny_pretrained.mllm.pretrained


def test_only_the_base_models_without_a_path_are_written(tiny_pretrained, tmp_path):
    from dataclasses import replace

    from lavida.models.random_init import write_random_pretrained

    config = replace(tiny_pretrained, mllm=replace(tiny_pretrained.mllm, pretrained=None))
    written = write_random_pretrained(config, tmp_path / "base")
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["mllm"]
    assert written.mllm.pretrained == str(tmp_path / "base" / "mllm")
    assert written.mask_decoder.pretrained == tiny_pretrained.mask_decoder.pretrained
    assert written.text_encoder.pretrained == tiny_pretrained.text_encoder.pretrained


def test_required_base_models_without_a_path_are_refused_not_written(synthetic_train_root, tmp_path):
    """Only base_weights: optional allows stand-ins; for the paper's configs an unset path is an error
    (writing a random 7B model there first ran a 23 GB machine out of memory)."""
    from dataclasses import replace

    config = replace(compose_model_config("tiny"), base_weights="required")
    trainer = make_trainer(synthetic_train_root, config, tmp_path / "run", max_steps=1)
    with pytest.raises(WeightsNotFoundError, match="No local weights are configured"):
        trainer.setup()
    assert not (tmp_path / "run" / "base_models").exists()
