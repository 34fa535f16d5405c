"""What following README.md's commands on tiny inputs turned up: each test reproduces one defect found."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cli_config
from omegaconf import OmegaConf

import lavida.cli.eval as evaluate

ROOT = Path(__file__).resolve().parents[2]


def eval_config(*overrides: str, **values):
    return compose_cli_config("eval", *overrides, **values)


# -- step 1: LAVIDA_CLIP_PATH names a file --------------------------------------------------------------


def test_a_clip_path_to_the_folder_names_the_file_in_it(tmp_path):
    """The CLIP weights are one file; pointing LAVIDA_CLIP_PATH at the folder it was downloaded to said
    "it does not exist" and listed the folder's parent."""
    from lavida.models.text_encoder import CLIP_HINT, CLIP_SUFFIXES
    from lavida.models.weights import WeightsNotFoundError, check_weights_file

    folder = tmp_path / "vit_base_patch32_clip_224.openai"
    folder.mkdir()
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    (folder / "README.md").write_text("model card")
    with pytest.raises(WeightsNotFoundError) as error:
        check_weights_file(folder, what="CLIP text encoder", suffixes=CLIP_SUFFIXES, hint=CLIP_HINT)
    message = str(error.value)
    assert "is a folder" in message and "does not exist" not in message
    assert str(folder / "open_clip_model.safetensors") in message

    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"is a folder\. It holds no \.safetensors .*README\.md"):
        check_weights_file(folder, what="CLIP text encoder", suffixes=CLIP_SUFFIXES, hint=CLIP_HINT)


def test_download_hints_use_the_command_the_pinned_huggingface_hub_installs():
    """The hints said ``huggingface-cli download``; huggingface_hub 1.0 and later install only ``hf``."""
    from importlib.metadata import entry_points

    from lavida.models.mask_decoder import SAM2_HINT
    from lavida.models.qwen_processor import QWEN_HINT
    from lavida.models.text_encoder import CLIP_HINT

    scripts = {e.name for e in entry_points(group="console_scripts") if e.value.startswith("huggingface_hub")}
    assert "hf" in scripts and "huggingface-cli" not in scripts
    readme = (ROOT / "README.md").read_text()
    for text, repo in [
        (QWEN_HINT, "Qwen/Qwen2-VL-7B-Instruct"),
        (SAM2_HINT, "facebook/sam2.1-hiera-small"),
        (CLIP_HINT, "timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors"),
        (readme, "Qwen/Qwen2-VL-7B-Instruct"),
        (readme, "timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors"),
    ]:
        assert f"hf download {repo} --local-dir" in text and "huggingface-cli download" not in text


# -- steps 2 and 4: where the datasets go -----------------------------------------------------------------


def test_the_data_tree_lists_every_dataset_folder_of_the_configs():
    """data/README.md's tree under LAVIDA_DATA_ROOT showed only the training folders; the benchmarks' default
    roots hang off the same variable. docs/evaluation.md says where each test set's folder comes from."""
    import yaml

    from lavida.data.config import DEFAULT_ROOTS

    tree = re.search(r"```\n\$LAVIDA_DATA_ROOT/\n(.*?)```", (ROOT / "data" / "README.md").read_text(), re.S)
    rows = {line.split()[0]: line for line in tree.group(1).splitlines()}
    evaluation = (ROOT / "docs" / "evaluation.md").read_text()
    for config in sorted((ROOT / "lavida" / "configs" / "benchmark").glob("*.yaml")):
        benchmark = yaml.safe_load(config.read_text())
        prefix = "${oc.env:LAVIDA_DATA_ROOT,data}/"
        assert benchmark["root"].startswith(prefix), config
        folder = benchmark["root"].removeprefix(prefix)
        assert f"benchmark={benchmark['name']}" in rows.get(f"{folder}/", ""), folder
        assert f"(`{benchmark['name']}`, folder `{folder}/`)" in evaluation, folder
    for name, folder in DEFAULT_ROOTS.items():
        assert name in rows.get(f"{folder}/", ""), folder


# -- step 4: lavida-eval benchmark=ucf_crime checkpoint=... -----------------------------------------------


def test_a_video_decord_opens_but_cannot_batch_is_read_with_pyav(tmp_path):
    """decord opens a 48-pixel-wide mp4 and reads its first frame alone, then fails every get_batch
    ("DECORDArrayCopyFromTo: The size must exactly match"), so the file never went to PyAV."""
    from lavida.data.video import open_video, write_video

    frames = np.zeros((6, 32, 48, 3), dtype=np.uint8)
    frames[..., 0] = np.arange(48, dtype=np.uint8) * 5  # a smooth picture, so mpeg4 keeps it close
    frames[..., 1] = (np.arange(6, dtype=np.uint8) * 40)[:, None, None]
    video = open_video(write_video(tmp_path / "narrow.mp4", frames, fps=30))
    decoded = video.get_frames(np.arange(6))
    assert decoded.shape == (6, 32, 48, 3)
    assert np.abs(decoded.astype(int) - frames).mean() < 8


def test_eval_with_a_checkpoint_on_a_ucf_crime_tree(tiny_pretrained, tmp_path):
    """The README's evaluation of a checkpoint, on the UCF-Crime tree the loader tests use (32×48 mp4s):
    every video failed to decode."""
    import torch
    from eval.trees import write_ucf_crime_tree

    from lavida.cli.eval import run
    from lavida.models.checkpoint import save_checkpoint
    from lavida.models.lavida import build_lavida

    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_lavida(tiny_pretrained), tiny_pretrained, tmp_path / "ckpt")
    tree = write_ucf_crime_tree(tmp_path / "UCF-Crime")
    cfg = eval_config(
        "benchmark=ucf_crime",
        **{"benchmark.root": str(tree.root)},
        checkpoint=str(checkpoint),
        output_dir=str(tmp_path / "out"),
        num_workers=0,
    )
    metrics = run(cfg)
    assert metrics["num_videos"] == 3 and metrics["videos_left_out"] == 0
    assert metrics["num_frames"] == sum(video.num_frames for video in tree.videos.values())


# -- step 4: loader options given at the top level -------------------------------------------------------


@pytest.mark.parametrize(
    ("benchmark", "typed", "fix"),
    [
        ("ucf_crime", "+skip_missing=true", "loader: +benchmark.options.skip_missing=true"),
        # UBnormal's options map already holds split: a second + would be refused by Hydra
        (
            "ubnormal",
            "+split=validation",
            "(an option of the ubnormal loader: benchmark.options.split=validation)",
        ),
        # shown as typed: a value is lower-cased only where it is a boolean (Hydra's true for True)
        ("ubnormal", "+split=Validation", "benchmark.options.split=Validation)"),
    ],
)
def test_a_loader_option_at_the_top_level_names_where_it_goes(tmp_path, benchmark, typed, fix):
    """Hydra answers a bare ``skip_missing=true`` with "use +skip_missing=true"; that was refused as an
    unknown key without saying the option belongs under benchmark.options."""
    from lavida.cli.eval import run

    cfg = eval_config(f"benchmark={benchmark}", f"predictions={tmp_path}", typed)
    with pytest.raises(ValueError, match="unknown key") as error:
        run(cfg)
    assert fix in str(error.value)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("typed", ["+root={tmp}", "+self=1"])
def test_the_loaders_own_parameters_are_not_named_as_its_options(tmp_path, typed):
    """The root is benchmark.root (get_benchmark would get it twice from benchmark.options.root), and self
    is no option: a top-level one is an unknown key like any other."""
    cfg = eval_config("benchmark=ucf_crime", f"predictions={tmp_path}", typed.format(tmp=tmp_path))
    with pytest.raises(ValueError, match="unknown key") as error:
        evaluate.run(cfg)
    assert "loader" not in str(error.value) and "benchmark.options" not in str(error.value)


# -- "Smoke run on CPU": steps 3-5 with no weights, no datasets, no LAVIDA_DATA_ROOT ------------------------


def smoke_commands() -> list[str]:
    """The command lines of the README's "Smoke run on CPU" block, in order."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"### Smoke run on CPU\n.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no 'Smoke run on CPU' block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def smoke_argv(line: str, cwd: Path) -> list[str]:
    """A smoke command line as a shell run in ``cwd`` hands it over: its words, ``$PWD`` expanded."""
    return shlex.split(line.replace("$PWD", str(cwd)))


def test_the_smoke_block_composes(tmp_path):
    """Each smoke command, split as a shell would, composes: the training reads the demo's synthetic set
    alone, from an absolute root, and evaluation and detection read the checkpoint it writes."""
    from hydra import compose, initialize_config_module

    from lavida.data.config import DataConfig

    commands = smoke_commands()
    tools = [line.split()[0].rsplit("/", 1)[-1] for line in commands]
    assert tools == ["lavida-demo", "lavida-train", "lavida-eval", "lavida-detect"]
    configs = {}
    with initialize_config_module("lavida.configs", version_base=None):
        for tool, line in zip(tools, commands, strict=True):
            overrides = smoke_argv(line, tmp_path)[1:]
            configs[tool] = compose(tool.removeprefix("lavida-"), overrides=overrides)
    demo = Path(configs["lavida-demo"].output_dir)
    data = DataConfig.from_dict(OmegaConf.to_container(configs["lavida-train"].data, resolve=True))
    assert data.weights() == {"synthetic": 1.0}
    assert data.root_of("synthetic") == tmp_path / demo / "data" / "synthetic_train"
    final = Path(configs["lavida-train"].output_dir) / "final"
    assert Path(configs["lavida-eval"].checkpoint) == final == Path(configs["lavida-detect"].checkpoint)
    assert Path(configs["lavida-eval"].benchmark.root) == demo / "data" / "vad_seen"
    assert Path(configs["lavida-detect"].input).is_relative_to(demo / "data" / "vad_seen")


@pytest.mark.slow
def test_the_smoke_block_runs_and_evaluates_reproducibly(tmp_path):
    """The README's smoke block, run as written (``.venv/bin`` = this interpreter's folder) in an empty
    folder without LAVIDA_DATA_ROOT; evaluating its checkpoint again gives the same metrics (about a
    minute on 2 cores)."""
    env = {key: value for key, value in os.environ.items() if key != "LAVIDA_DATA_ROOT"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    bin_dir = Path(sys.executable).parent
    commands = [line.replace(".venv/bin/", f"{bin_dir}/", 1) for line in smoke_commands()]
    for line in commands:
        done = subprocess.run(
            smoke_argv(line, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    again = commands[2].replace("output_dir=outputs/smoke/eval", "output_dir=outputs/smoke/eval_again")
    assert again != commands[2]
    subprocess.run(smoke_argv(again, tmp_path), cwd=tmp_path, env=env, check=True, capture_output=True)
    first, second = (
        json.loads((tmp_path / "outputs" / "smoke" / name / "metrics.json").read_text())
        for name in ("eval", "eval_again")
    )
    assert first["num_videos"] == 3 and 0.0 <= first["frame_auc_micro"] <= 1.0
    assert first == second
    summary = json.loads((tmp_path / "outputs/smoke/detect/01_0001/summary.json").read_text())
    assert summary["frames"] == 16
