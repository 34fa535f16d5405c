"""Regressions of the training sampler: ``category_count="matched"`` with few usable texts, and the
effective (renormalised) mixture in the run record."""

import hashlib
import json
import logging
from collections import Counter

import numpy as np
import pytest
from conftest import compose_model_config

from lavida.data import exposure
from lavida.data.exposure import TextPool, expose

# Cityscapes' official-8 classes: with two visible and the genuine "train", 5 texts are usable.
CITY = ["traffic light", "traffic sign", "terrain", "truck", "bus", "train", "motorcycle", "bicycle"]


def _label_rate_per_count(pool, present, *, draws: int, seed: int, max_categories: int = 30):
    rng = np.random.default_rng(seed)
    seen = {True: Counter(), False: Counter()}
    for _ in range(draws):
        categories, is_anomaly = expose(
            "train", pool, present=present, max_categories=max_categories, category_count="matched", rng=rng
        )
        seen[is_anomaly][len(categories)] += 1
    counts = sorted(set(seen[True]) | set(seen[False]))
    return {k: (seen[True][k], seen[True][k] + seen[False][k]) for k in counts}


@pytest.mark.parametrize("present, usable", [(["truck", "bus"], 5), (CITY[:4], 3), (CITY[:5], 2)])
def test_matched_count_says_nothing_with_few_usable_texts(present, usable):
    """Both labels list K ~ Unif{2..min(max, n)} categories: P(anomalous | K) = 0.5 for every K. Before the
    fix a normal sample could never list n + 1 and listed n twice as often (P = 1.00 and 0.34 at n = 5)."""
    pool = TextPool(CITY * 3)
    assert pool.usable(exclude=["train", *present]) == usable
    rates = _label_rate_per_count(pool, present, draws=6000, seed=3)
    for k, (anomalous, total) in rates.items():
        assert abs(anomalous / total - 0.5) < 0.05, f"P(anomalous | K={k}) = {anomalous / total:.2f}"
        assert total > 6000 / usable / 2, (k, total)  # K uniform on 2..n
    assert sorted(rates) == list(range(2, usable + 1))


def test_matched_count_respects_max_categories_with_a_small_pool():
    rates = _label_rate_per_count(TextPool(CITY), ["truck"], draws=3000, seed=4, max_categories=4)
    assert sorted(rates) == [2, 3, 4]
    for k, (anomalous, total) in rates.items():
        assert abs(anomalous / total - 0.5) < 0.06, f"P(anomalous | K={k}) = {anomalous / total:.2f}"


def test_matched_count_with_one_usable_text_falls_back_to_the_paper_rule(caplog, monkeypatch):
    """n = 1: no K lets both labels list K categories; the paper's rule is used, with one warning."""
    monkeypatch.setattr(exposure, "_matched_fallback_warned", False)
    caplog.set_level(logging.WARNING, logger="lavida.data.exposure")
    pool, present = TextPool(CITY), CITY[:7]  # usable: "bicycle" only
    matched_rng, paper_rng = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(200):
        matched = expose("train", pool, present=present, category_count="matched", rng=matched_rng)
        paper = expose("train", pool, present=present, category_count="paper", rng=paper_rng)
        assert matched == paper
    warnings = [r for r in caplog.records if "category_count='matched'" in r.getMessage()]
    assert len(warnings) == 1 and "had 1" in warnings[0].getMessage()  # once per process


def test_the_paper_rule_never_warns_about_the_matched_fallback(caplog, monkeypatch):
    """The fallback warning is about ``"matched"`` only: the paper's rule with the same one usable text
    (or any other pool) says nothing, and does not use up the once-per-process warning."""
    monkeypatch.setattr(exposure, "_matched_fallback_warned", False)
    caplog.set_level(logging.WARNING, logger="lavida.data.exposure")
    rng = np.random.default_rng(6)
    pool, present = TextPool(CITY), CITY[:7]  # usable: "bicycle" only
    for _ in range(20):
        expose("train", pool, present=present, category_count="paper", rng=rng)
    assert not [r for r in caplog.records if "category_count='matched'" in r.getMessage()]
    expose("train", pool, present=present, category_count="matched", rng=rng)
    warnings = [r for r in caplog.records if "category_count='matched'" in r.getMessage()]
    assert len(warnings) == 1 and "had 1" in warnings[0].getMessage()


def test_the_matched_fallback_warns_from_max_categories_two(caplog, monkeypatch):
    """max(K_E) = 2 is the smallest cap where "matched" means something (K = 2 for both labels): with one
    usable text it falls back and says so. Only max(K_E) = 1, where no K ≥ 2 exists, is silent."""
    caplog.set_level(logging.WARNING, logger="lavida.data.exposure")
    pool, present = TextPool(CITY), CITY[:7]  # usable: "bicycle" only
    for max_categories, warned in ((1, False), (2, True)):
        monkeypatch.setattr(exposure, "_matched_fallback_warned", False)
        caplog.clear()
        rng = np.random.default_rng(7)
        expose(
            "train", pool, present=present, max_categories=max_categories, category_count="matched", rng=rng
        )
        messages = [r.getMessage() for r in caplog.records if "category_count='matched'" in r.getMessage()]
        assert len(messages) == int(warned), max_categories


def test_a_fresh_process_warns_about_the_matched_fallback_once(caplog, monkeypatch):
    """The once-per-process flag starts unset: the first fallback of a new process (a training run, a
    dataloader worker) is reported, the second is not. A fresh copy of the module, as a new process
    imports it, since this process's flag may already be used up by other tests."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("fresh_exposure", exposure.__file__)
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fresh_exposure", fresh)  # dataclasses look their module up there
    spec.loader.exec_module(fresh)
    assert fresh._matched_fallback_warned is False
    caplog.set_level(logging.WARNING, logger="fresh_exposure")
    pool, rng = fresh.TextPool(CITY), np.random.default_rng(0)
    for _ in range(2):
        fresh.expose("train", pool, present=CITY[:7], category_count="matched", rng=rng)
    warnings = [r for r in caplog.records if "category_count='matched'" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].name == "fresh_exposure"


def _paper_fingerprint() -> str:
    digest = hashlib.sha256()
    rng = np.random.default_rng(2024)
    cases = [
        (TextPool([f"class {i}" for i in range(60)] * 3 + ["person"] * 40), (), 30),
        (TextPool(CITY * 4), ["truck", "bus"], 30),
        (TextPool(CITY), CITY[:6], 30),
        (TextPool(CITY), ["truck"], 1),
        (TextPool(CITY), ["truck"], 4),
        (TextPool(["train"]), (), 30),
    ]
    for pool, present, max_categories in cases:
        for _ in range(300):
            categories, is_anomaly = expose(
                "train", pool, present=present, max_categories=max_categories, rng=rng
            )
            digest.update(repr((categories, is_anomaly)).encode())
    return digest.hexdigest()


def test_paper_rule_draws_are_unchanged():
    """The default (the paper's rule) draws exactly what it drew before the `matched` fix, seed for seed."""
    assert _paper_fingerprint() == "cc670a5c2aa37fb20ef7a1619335f900a39972e7d8941fa042476fab04b8d392"


# -- the effective mixture in the run record (missing_sources: renormalize) ------------------------------


class _ModelNotNeeded(Exception):
    pass


@pytest.fixture
def two_sources(tmp_path):
    """A video and an image source (the fakes of test_train_dataset) with their manifests written."""
    from test_train_dataset import FakeImageSource, FakeVideoSource, write_fake

    from lavida.data.sources.base import write_manifest

    video = FakeVideoSource(write_fake(tmp_path / "v", items=3, frames=4, is_video=True))
    image = FakeImageSource(write_fake(tmp_path / "i", items=3, frames=1, is_video=False))
    for source in (video, image):
        write_manifest(source.index(), source.manifest_path())
    return {"fakevideo": video, "fakeimage": image}


def _renormalizing_config():
    from lavida.data.config import DataConfig, SourceConfig

    return DataConfig(
        sources={"fakevideo": SourceConfig(weight=0.7), "fakeimage": SourceConfig(weight=0.3)},
        samples_per_epoch=12,
        seed=44,
        num_workers=0,
        missing_sources="renormalize",
    )


def test_a_resume_on_another_effective_mixture_is_refused(two_sources, tmp_path, caplog):
    """The same configuration, one manifest gone: the recorded data differ in the effective mixture."""
    from lavida.data.train_dataset import data_record, open_train_sources
    from lavida.train.resume_check import RUN_CONFIG_FILE, ResumeMismatchError, check_resume_settings

    config = _renormalizing_config()
    before = open_train_sources(config, sources=two_sources)
    checkpoint = tmp_path / "checkpoints" / "step_0000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / RUN_CONFIG_FILE).write_text(json.dumps({"data": data_record(config, before)}))
    assert check_resume_settings(checkpoint, {"data": data_record(config, before)}, mode="strict") == []

    two_sources["fakeimage"].manifest_path().unlink()  # e.g. its disk is not mounted on this machine
    after = open_train_sources(config, sources=two_sources)
    assert after.mixture.weights == {"fakevideo": 1.0}
    with pytest.raises(ResumeMismatchError) as refused:
        check_resume_settings(checkpoint, {"data": data_record(config, after)}, mode="strict")
    message = str(refused.value)
    assert "data.effective_mixture.fakeimage: 0.3 -> (absent)" in message
    assert "data.effective_mixture.fakevideo: 0.7 -> 1.0" in message


def test_the_trainer_records_the_effective_mixture_before_the_resume_check(
    two_sources, tmp_path, monkeypatch
):
    """Through the trainer (stopped where the model would be built): its record holds the mixture of
    the sources it could open, so a checkpoint's run_config.json and the resume check see it."""
    from lavida.train.config import LauncherConfig, TrainConfig
    from lavida.train.loop import Trainer

    def no_model(*args, **kwargs):
        raise _ModelNotNeeded

    monkeypatch.setattr("lavida.train.loop.build_lavida", no_model)
    records = {}
    for state in ("both", "image gone"):
        if state == "image gone":
            two_sources["fakeimage"].manifest_path().unlink()
        trainer = Trainer(
            model=compose_model_config("tiny"),
            data=_renormalizing_config(),
            train=TrainConfig.from_dict({"batches_per_epoch": 2, "batch_size": 2, "logger": "none"}),
            launcher=LauncherConfig(cpu=True),
            output_dir=tmp_path / state,
            sources=two_sources,
        )
        with pytest.raises(_ModelNotNeeded):
            trainer.setup()
        records[state] = trainer._record()["data"]
    assert records["both"]["effective_mixture"] == pytest.approx({"fakevideo": 0.7, "fakeimage": 0.3})
    assert records["image gone"]["effective_mixture"] == {"fakevideo": 1.0}
    assert records["both"]["sources"] == records["image gone"]["sources"]  # the configuration is the same
