"""What following README.md's commands on tiny inputs turned up: each test reproduces one defect found."""

import numpy as np
import pytest
from omegaconf import OmegaConf


def eval_config(*overrides: str, **values):
    from hydra import compose, initialize_config_module

    with initialize_config_module("lavida.configs", version_base=None):
        cfg = compose("eval", overrides=list(overrides))
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


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
        ("ucf_crime", "+skip_missing=true", "+benchmark.options.skip_missing=true"),
        # UBnormal's options map already holds split: a second + would be refused by Hydra
        (
            "ubnormal",
            "+split=validation",
            "(an option of the ubnormal loader: benchmark.options.split=validation)",
        ),
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
