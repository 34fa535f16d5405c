"""`lavida-eval` end to end: a checkpoint, a benchmark tree in its official layout, all outputs written."""

import json
import logging

import numpy as np
import pytest
from conftest import compose_cli_config, other_weights, save_ramp_scores
from eval.trees import write_ubnormal_tree, write_ucsd_ped2_tree

import lavida.cli.eval as evaluate
from lavida.eval.benchmarks.ucsd_ped2 import UCSDPed2
from lavida.models.base_fingerprint import weights_fingerprint
from lavida.models.checkpoint import checkpoint_digest


@pytest.fixture(scope="module")
def checkpoint(tiny_pretrained, tmp_path_factory):
    import torch

    from lavida.models.checkpoint import save_checkpoint
    from lavida.models.lavida import build_lavida

    torch.manual_seed(0)
    return save_checkpoint(
        build_lavida(tiny_pretrained), tiny_pretrained, tmp_path_factory.mktemp("c") / "ckpt"
    )


def eval_config(**values):
    return compose_cli_config("eval", f"benchmark={values.pop('benchmark')}", **values)


@pytest.mark.parametrize("protocol", ["standard", "lavida_official"])
def test_eval_cli_on_a_ped2_tree(checkpoint, tmp_path, protocol):
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    out = tmp_path / f"out_{protocol}"
    cfg = eval_config(
        benchmark="ucsd_ped2",
        **{"benchmark.root": str(tree.root), "checkpoint": str(checkpoint), "protocol": protocol},
        output_dir=str(out),
        num_workers=0,
        batch_size=2,
    )
    metrics = run(cfg)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "per_video.csv").is_file() and (out / "report.md").is_file()
    assert metrics["primary_metric"] == "pixel_auc"
    expected_frames = sum(v.num_frames for v in tree.videos.values())
    if protocol == "standard":
        assert metrics["num_frames"] == expected_frames  # every frame scored
        assert "pixel_auc" in metrics and 0 <= metrics["pixel_auc"] <= 1
    else:
        # Ped2's official interval is 1: 8-frame windows, the tail dropped. Test001 (8 frames) is one
        # whole window; Test002 (6 frames) is shorter than a window and scores nothing.
        assert sorted(v.num_frames for v in tree.videos.values()) == [6, 8]
        assert metrics["num_frames"] == 8
    assert f"ucsd_ped2 — {protocol} protocol" in (out / "report.md").read_text()


def test_a_checkpoint_replaced_in_place_is_not_served_from_the_cache(tiny_pretrained, tmp_path):
    """Cached per-video results are keyed on the checkpoint's bytes, not only its path: after another
    model is saved to the same path (a retrained ``final/``), a rerun refuses to mix (or, with
    overwrite, recomputes) instead of reporting the old model's results."""
    import torch
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run
    from lavida.models.checkpoint import checkpoint_digest, save_checkpoint
    from lavida.models.lavida import build_lavida

    path = tmp_path / "final"
    torch.manual_seed(0)
    save_checkpoint(build_lavida(tiny_pretrained), tiny_pretrained, path)
    first_digest = checkpoint_digest(path)
    assert checkpoint_digest(path) == first_digest  # deterministic
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    values = {"benchmark.root": str(tree.root), "checkpoint": str(path)}
    out = tmp_path / "out"
    first = run(eval_config(benchmark="ucsd_ped2", **values, output_dir=str(out), num_workers=0))

    torch.manual_seed(1)  # another model, saved over the first
    save_checkpoint(build_lavida(tiny_pretrained), tiny_pretrained, path)
    assert checkpoint_digest(path) != first_digest
    with pytest.raises(ValueError, match="other settings"):
        run(eval_config(benchmark="ucsd_ped2", **values, output_dir=str(out), num_workers=0))
    second = run(
        eval_config(benchmark="ucsd_ped2", **values, output_dir=str(out), num_workers=0, overwrite=True)
    )
    assert second["pixel_auc"] != first["pixel_auc"]


def test_clips_have_the_length_the_checkpoint_was_trained_on(tiny_pretrained, tmp_path, caplog):
    """Supplement Tab. 7 trains and tests at T = 4, 8, 12, 16: the checkpoint's clip length (meta.json)
    is the default, and clip_length= overrides it; the log says which length and sampling interval ran."""
    import torch
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run
    from lavida.eval import runner
    from lavida.models.checkpoint import save_checkpoint
    from lavida.models.lavida import build_lavida

    torch.manual_seed(0)
    path = save_checkpoint(
        build_lavida(tiny_pretrained), tiny_pretrained, tmp_path / "ckpt", extra_meta={"clip_length": 4}
    )
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    lengths = []
    original = runner.plan_clips

    def spy(num_frames, **options):
        lengths.append(options["clip_length"])
        return original(num_frames, **options)

    values = {"benchmark.root": str(tree.root), "checkpoint": str(path), "num_workers": 0}
    interval = UCSDPed2.intervals["standard"]
    caplog.set_level(logging.INFO, logger="lavida.cli.eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "plan_clips", spy)
        run(eval_config(benchmark="ucsd_ped2", **values, output_dir=str(tmp_path / "a")))
        assert set(lengths) == {4} and lengths
        assert f"Clips of 4 frames, one every {interval} frames sampled" in caplog.messages
        lengths.clear()
        caplog.clear()
        run(eval_config(benchmark="ucsd_ped2", **values, clip_length=2, output_dir=str(tmp_path / "b")))
        assert set(lengths) == {2} and lengths
        assert f"Clips of 2 frames, one every {interval} frames sampled" in caplog.messages


def test_categories_are_parsed_and_one_mode_is_chosen(checkpoint, tmp_path):
    """categories="a, b" is two categories (not eight letters), as lavida-detect reads it; checkpoint and
    predictions together are refused rather than the checkpoint ignored."""
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    predictions = tmp_path / "preds"
    predictions.mkdir()
    for name, video in tree.videos.items():
        np.save(predictions / f"{name}.npy", np.full(video.num_frames, 0.5, np.float32))
    values = {"benchmark.root": str(tree.root), "predictions": str(predictions)}
    for given in ("fire, car accident", ["fire", "car accident"]):
        out = tmp_path / f"out_{type(given).__name__}"
        run(eval_config(benchmark="ucsd_ped2", **values, categories=given, output_dir=str(out)))
        assert "- categories (2): fire, car accident\n" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="categories is empty"):
        run(eval_config(benchmark="ucsd_ped2", **values, categories=" , ", output_dir=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="not both"):
        run(
            eval_config(
                benchmark="ucsd_ped2", **values, checkpoint=str(checkpoint), output_dir=str(tmp_path / "o")
            )
        )


def test_other_base_weights_are_refused_unless_base_model_check_is_warn(
    checkpoint, tiny_pretrained, tmp_path, monkeypatch
):
    """lavida-eval passes base_model_check to the loader: a checkpoint pointed at another model's weights
    (checkpoint_overrides) stops before any video is scored; with warn it runs on them, and metrics.json
    records them with the checkpoint and every other setting its numbers depend on (lavida-tables puts
    only one model's runs in one row)."""
    from lavida.cli.eval import run
    from lavida.models.base_fingerprint import BaseModelMismatchError

    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    other = other_weights(tiny_pretrained.mask_decoder.pretrained, tmp_path / "sam2")

    def config(output_dir, *overrides):
        return compose_cli_config(
            "eval",
            "benchmark=ucsd_ped2",
            f"+checkpoint_overrides.mask_decoder.pretrained={other}",  # as on the command line
            *overrides,
            **{"benchmark.root": str(tree.root), "checkpoint": str(checkpoint)},
            output_dir=str(output_dir),
            num_workers=0,
        )

    with pytest.raises(BaseModelMismatchError, match=f"mask_decoder at {other}"):
        run(config(tmp_path / "a"))
    assert not list((tmp_path / "a").glob("**/*.npz"))  # no video scored
    monkeypatch.setenv("LAVIDA_TEST_SAM2", str(other))
    warned = config(
        tmp_path / "b",
        "base_model_check=warn",
        "gate_masks=false",
        "categories=[fire,'car crash']",
        "pixel_size=[16,16]",  # an evaluation setting, reaching the runner in model mode too
        "checkpoint_overrides.mask_decoder.pretrained=${oc.env:LAVIDA_TEST_SAM2}",  # recorded resolved
    )
    metrics = run(warned)
    assert metrics["num_frames"] == sum(v.num_frames for v in tree.videos.values())
    assert metrics["pixel_size"] == [16, 16]
    assert metrics["source"] == {
        "mode": "model",
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": checkpoint_digest(checkpoint),
        "predictions": None,
        "categories": ["fire", "car crash"],
        "default_categories": False,
        "clip_length": 8,
        "settings": {
            "checkpoint_overrides": {"mask_decoder": {"pretrained": str(other)}},
            "dtype": "torch.float32",
            "gate_masks": False,
            "base_models": {
                "mllm": weights_fingerprint(tiny_pretrained.mllm.pretrained),
                "text_encoder": weights_fingerprint(tiny_pretrained.text_encoder.pretrained),
                "mask_decoder": weights_fingerprint(other),
            },
        },
    }
    assert list((tmp_path / "b").glob("**/*.npz"))  # where the refused run would have cached its videos


def test_results_cached_on_other_base_weights_are_not_served(tiny_pretrained, tmp_path):
    """The cache is keyed on the base models' fingerprints too: after the CLIP file at the checkpoint's
    path is replaced by other weights, a rerun that would only read the cache names them as a changed
    setting, and a misspelt base_model_check is refused although no model would load."""
    from conftest import checkpoint_on_its_own_clip, other_weights
    from eval.trees import write_ucsd_ped2_tree

    from lavida.cli.eval import run
    from lavida.models.base_fingerprint import weights_fingerprint

    path, clip = checkpoint_on_its_own_clip(tiny_pretrained, tmp_path)
    tree = write_ucsd_ped2_tree(tmp_path / "ped2")
    values = {"benchmark.root": str(tree.root), "checkpoint": str(path), "output_dir": str(tmp_path / "out")}
    run(eval_config(benchmark="ucsd_ped2", **values, num_workers=0))
    with pytest.raises(ValueError, match="base_model_check must be 'strict' or 'warn', got 'warm'"):
        run(eval_config(benchmark="ucsd_ped2", **values, num_workers=0, base_model_check="warm"))
    before = weights_fingerprint(clip)
    clip.unlink()
    other_weights(tiny_pretrained.text_encoder.pretrained, clip)
    changed = rf"run.base_models.text_encoder was '{before}', now '{weights_fingerprint(clip)}'"
    with pytest.raises(ValueError, match=rf"computed with other settings: {changed}\. Pass overwrite=true"):
        run(eval_config(benchmark="ucsd_ped2", **values, num_workers=0, base_model_check="warn"))
    again = run(
        eval_config(benchmark="ucsd_ped2", **values, num_workers=0, base_model_check="warn", overwrite=True)
    )
    assert again["num_frames"] == sum(v.num_frames for v in tree.videos.values())


def test_loader_options_reach_the_loader_with_their_interpolations_resolved(tmp_path):
    """benchmark.options are the loader's keyword arguments, resolved as the rest of the config: UBnormal's
    validation split, with its split lists named relative to benchmark.root."""
    tree = write_ubnormal_tree(tmp_path / "UBnormal")
    validation = {name: v.num_frames for name, v in tree.videos.items() if v.meta["split"] == "validation"}
    predictions = save_ramp_scores(tmp_path / "preds", validation)
    cfg = compose_cli_config(
        "eval",
        "benchmark=ubnormal",
        "benchmark.options.split=validation",
        "+benchmark.options.split_lists=${benchmark.root}/scripts",  # as on the command line
        **{"benchmark.root": str(tree.root)},
        predictions=str(predictions),
        output_dir=str(tmp_path / "out"),
    )
    metrics = evaluate.run(cfg)
    assert metrics["split"] == "validation" and metrics["num_videos"] == len(validation) == 2


def test_a_misspelt_benchmark_name_is_refused_with_the_valid_ones(tmp_path):
    """``benchmark.name=ucfcrim`` composes (only ``benchmark=`` picks a file): the loader-option hints,
    computed first, must let the registry name the valid benchmarks instead of failing on the name."""
    cfg = compose_cli_config(
        "eval", "benchmark=ucf_crime", "benchmark.name=ucfcrim", predictions=str(tmp_path)
    )
    with pytest.raises(
        ValueError, match=r"^Unknown benchmark 'ucfcrim'; expected one of: ubnormal, shanghaitech"
    ):
        evaluate.run(cfg)
