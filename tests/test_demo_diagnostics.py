"""benchmarks/demo_diagnostics.py on a toy synthetic set and the tiny SAM2: labels and counts are right.

``benchmarks/`` is not a package, so the script is imported from its file.
"""

import json

import numpy as np
import pytest
import torch
from conftest import load_benchmark_script


@pytest.fixture(scope="module")
def diagnostics():
    return load_benchmark_script("demo_diagnostics")


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_pretrained):
    """A 6-video, 4-image synthetic training set with its manifest, and the tiny SAM2 decoder."""
    from lavida.data.sources.base import read_manifest, write_manifest
    from lavida.data.sources.synthetic import SyntheticSource
    from lavida.models.mask_decoder import build_mask_decoder
    from lavida.synthetic.datasets import SegmentationSetSpec, default_split, write_segmentation_set

    root = tmp_path_factory.mktemp("synthetic")
    write_segmentation_set(root, default_split(0), SegmentationSetSpec(videos=6, images=4, frames=4, seed=3))
    source = SyntheticSource(root)
    write_manifest(source.index(), source.manifest_path())
    decoder = build_mask_decoder(pretrained=tiny_pretrained.mask_decoder.pretrained, prompt_dim=8)
    return source, read_manifest(source.manifest_path()), decoder


def test_presence_batch_asks_for_visible_objects_and_absent_descriptions(diagnostics, toy):
    source, records, decoder = toy
    texts = sorted({t.text for r in records for t in r.targets})
    rng = np.random.default_rng(0)
    pixels, chosen, target, origins = diagnostics.presence_batch(
        source, records, texts, size=64, side=decoder.image_size, rng=rng
    )
    side = decoder.image_size
    assert pixels.shape == (64, 3, side, side) and target.shape == (64, side // 4, side // 4)
    positives = 0
    for k, (index, position) in enumerate(origins):
        record = records[index]
        text = texts[int(chosen[k])]
        # Independently: is the chosen description visible on that frame?
        visible = any(
            t.text == text and source.load_masks(record, t, [position])[0].any() for t in record.targets
        )
        assert bool(target[k].any()) == visible, (index, position, text)
        positives += visible
    assert 16 <= positives <= 48  # asked for a visible object with p = 0.5


def test_probe_uses_every_visible_object_and_oracle_reports_windows(diagnostics, toy):
    source, records, decoder = toy
    probes = diagnostics.probe_levels(decoder, source, records, frames=len(records), seed=0)
    expected = sum(
        source.load_masks(record, target, [0])[0].any() for record in records for target in record.targets
    )
    assert set(probes) == {"top", "mid", "high"}
    for row in probes.values():
        assert row["objects"] == expected
        assert 0.0 <= row["colour"] <= 1.0 and 0.0 <= row["shape"] <= 1.0

    rows = diagnostics.train_oracle(
        decoder, source, records, steps=3, batch_size=4, lr=1e-3, class_weight=1.0, seed=0
    )
    assert [row["step"] for row in rows] == [3]
    assert np.isfinite(rows[0]["loss_class"]) and 0.0 <= rows[0]["accuracy"] <= 1.0
    assert (
        np.isfinite(rows[0]["logit_std"]) and rows[0]["logit_std"] > 0.0
    )  # distinct prompts, distinct scores


def test_deepest_level_spread_on_hand_made_features(diagnostics):
    """Two locations with features (3, 4) and (3, -4): norms 5 and 5, mean (3, 0), distances 4 and 4."""
    from lavida.models.mask_decoder import ImageFeatures

    class FixedEncoder:
        def encode_images(self, pixels):
            top = torch.tensor([[3.0, 3.0], [4.0, -4.0]]).reshape(1, 2, 1, 2)  # (N=1, C=2, h=1, w=2)
            return ImageFeatures(top=top, top_pos=torch.zeros_like(top), high_res=[])

    norm, spread = diagnostics.deepest_level_spread(FixedEncoder(), torch.zeros(1, 3, 8, 8))
    assert norm == pytest.approx(5.0) and spread == pytest.approx(4.0)


def test_attribute_rules_hand_worked(diagnostics):
    listed = ["red circle", "blue square"]
    assert diagnostics.attribute_rules(listed, ["red square"]) == {
        "colour": True,
        "shape": True,
        "exact": False,
    }
    assert diagnostics.attribute_rules(listed, ["green ring"]) == {
        "colour": False,
        "shape": False,
        "exact": False,
    }
    assert diagnostics.attribute_rules(listed, ["blue square"]) == {
        "colour": True,
        "shape": True,
        "exact": True,
    }
    assert diagnostics.attribute_rules(listed, []) == {"colour": False, "shape": False, "exact": False}


def test_attribute_rule_accuracy_exact_rule_matches_the_sampler_labels(diagnostics, toy):
    """The exact rule reads visibility from the masks; the sampler labels frames itself: they must agree."""
    source, records, _ = toy
    result = diagnostics.attribute_rule_accuracy(source, records, clips=12, max_categories=4, seed=0)
    assert result["exact"] == 1.0
    assert result["frames"] >= 12
    for rule in ("colour", "shape"):
        assert 0.0 <= result[rule] <= 1.0
    assert 0.0 < result["positive"] < 1.0
    assert 0.0 <= result["count_bce"] <= result["constant_bce"] + 1e-12


def test_count_only_bce_by_hand(diagnostics):
    """Count 1: labels 0, 0 (rate 0, no loss); count 2: 1, 1, 0, 0 (rate 1/2, ln 2 each): 4 ln 2 / 6."""
    counts = np.array([1, 1, 2, 2, 2, 2])
    labels = np.array([0, 0, 1, 1, 0, 0])
    assert diagnostics.count_only_bce(counts, labels) == pytest.approx(4 * np.log(2) / 6)
    constant = -(np.log(1 / 3) * 2 + np.log(2 / 3) * 4) / 6  # one rate, 1/3, for all six frames
    assert diagnostics.count_only_bce(np.zeros(6), labels) == pytest.approx(constant)


def test_attribute_rule_test_auc_on_a_hand_made_layout(diagnostics, tmp_path):
    """Video A: normal "red square", anomaly "red circle" on frames 2–3 of 4; video B: normal "blue ring".

    Prompt "red circle". Labels A 0011, B 0000. Colour rule: A 1111, B 0000, so the 2 positives beat
    4 negatives and tie 2: AUC = (2·4 + 0.5·2·2) / (2·6) = 10/12. Shape and exact rules: A 0011, B 0000: 1.
    """
    masks = tmp_path / "testing" / "test_frame_mask"
    masks.mkdir(parents=True)
    np.save(masks / "01_0001.npy", np.array([0, 0, 1, 1], dtype=np.uint8))
    np.save(masks / "01_0002.npy", np.zeros(4, dtype=np.uint8))
    layout = {
        "01_0001": {"anomaly": "red circle", "interval": [2, 4], "normal_objects": ["red square"]},
        "01_0002": {"anomaly": None, "interval": None, "normal_objects": ["blue ring"]},
    }
    (tmp_path / "synthetic_layout.json").write_text(json.dumps(layout))
    aucs = diagnostics.attribute_rule_test_auc(tmp_path, ["red circle"])
    assert aucs["colour"] == pytest.approx(10 / 12)
    assert aucs["shape"] == pytest.approx(1.0) and aucs["exact"] == pytest.approx(1.0)


def test_vad_layout_lists_the_rendered_normal_objects(tmp_path):
    """Every listed normal object is seen where the layout says: its colour covers ≥ 40 pixels of each
    frame in its ``normal_visible`` list."""
    from PIL import Image

    from lavida.synthetic.datasets import VadSetSpec, default_split, write_vad_set
    from lavida.synthetic.shapes import COLOURS, split_description

    split = default_split(0)
    spec = VadSetSpec(anomalous_videos=2, normal_videos=2, frames=4, seed=5)
    layout = write_vad_set(tmp_path, anomalies=split.seen_anomalies, normal=split.normal, spec=spec)
    assert layout == json.loads((tmp_path / "synthetic_layout.json").read_text())
    for name, info in layout.items():
        assert 1 <= len(info["normal_objects"]) <= 2 and set(info["normal_objects"]) <= set(split.normal)
        assert list(info["normal_visible"]) == info["normal_objects"]
        for t, frame in enumerate(sorted((tmp_path / "testing" / "frames" / name).iterdir())):
            pixels = np.asarray(Image.open(frame), dtype=np.float32)
            for text in [text for text in info["normal_objects"] if t in info["normal_visible"][text]]:
                colour = np.asarray(COLOURS[split_description(text)[0]], dtype=np.float32)
                near = np.linalg.norm(pixels - colour, axis=-1) < 40
                assert near.sum() >= 40, (name, frame.name, text)


def test_grounding_head_is_the_best_category_location_match(diagnostics):
    """Against the slow definition: max over categories k and locations l of ⟨g(v_l), W c_k⟩ / √d."""
    torch.manual_seed(0)
    head = diagnostics.GroundingHead(vision_dim=5, text_dim=3, dim=4)
    with torch.no_grad():
        head.scale.copy_(torch.tensor([2.0, -1.0]))
    vision, text = torch.randn(3, 6, 5), torch.randn(2, 3)
    with torch.no_grad():
        expected = torch.tensor(
            [
                2.0
                * max(
                    float(head.vision(vision[t, loc]) @ head.text(text[k]))
                    for k in range(2)
                    for loc in range(6)
                )
                / 2.0
                - 1.0
                for t in range(3)
            ]
        )
        torch.testing.assert_close(head(vision, text), expected)


# Projector sizes of the Eq. 7 head in these tests (text_dim and vision_dim come from the features).
EQ7_SIZES = {
    "llm_dim": 1,
    "out_dim": 4,
    "hidden_dim": 8,
    "num_queries": 2,
    "num_layers": 1,
    "num_heads": 2,
    "mlp_dim": 8,
    "cross_attn_heads": 2,
    "attention_downsample_rate": 1,
}


def test_eq7_head_is_the_best_category_read_out_of_the_projectors_attention(diagnostics):
    """max_k w·f_a[k] + b with f_a from the projector's own Eq. 7, frame by frame; category order is irrelevant."""
    torch.manual_seed(0)
    sizes = {**EQ7_SIZES, "text_dim": 3, "vision_dim": 5}
    position = torch.randn(6, 5)
    head = diagnostics.Eq7PresenceHead(projector_kwargs=sizes, position=position).eval()
    vision, text = torch.randn(3, 6, 5), torch.randn(4, 3)
    with torch.no_grad():
        expected = []
        for t in range(3):
            f_a = head.projector.category_attention(
                f_c=text[None],
                f_v=vision[t : t + 1],
                f_v_pos=position[None],
                frame_to_sample=torch.zeros(1, dtype=torch.long),
            )[0]  # (K, D_a)
            expected.append(max(float(head.readout(f_a[k])) for k in range(4)))
        torch.testing.assert_close(head(vision, text), torch.tensor(expected))
        torch.testing.assert_close(head(vision, text.flip(0)), torch.tensor(expected))


@pytest.fixture
def probe_inputs(tiny_pretrained, tmp_path):
    """A 3-video seen test set (6 frames each) and the tiny CLIP category encoder."""
    from lavida.models.text_encoder import build_category_encoder
    from lavida.synthetic.datasets import VadSetSpec, default_split, write_vad_set

    categories = list(default_split(0).seen_anomalies)
    spec = VadSetSpec(anomalous_videos=2, normal_videos=1, frames=6, seed=1)
    write_vad_set(tmp_path, anomalies=tuple(categories), normal=default_split(0).normal, spec=spec)
    text = tiny_pretrained.text_encoder
    encoder = build_category_encoder(model_name=text.model_name, pretrained=text.pretrained, arch=text.arch)
    return {"seen": (tmp_path, categories)}, encoder


def test_grounding_probe_reports_every_window(diagnostics, toy, probe_inputs):
    source, _, decoder = toy
    test_sets, encoder = probe_inputs
    rows = diagnostics.train_grounding_probe(
        decoder,
        encoder,
        source,
        test_sets,
        steps=4,
        max_categories=4,
        seed=0,
        every=2,
        category_count="matched",
        eq7_projector=EQ7_SIZES,
    )
    assert [row["step"] for row in rows] == [2, 4]
    for row in rows:
        for prefix in ("", "eq7_"):
            assert np.isfinite(row[prefix + "loss"]) and 0.0 <= row[prefix + "seen"] <= 1.0


def test_grounding_probe_reports_the_losses_and_aucs_of_its_heads(diagnostics, toy, probe_inputs):
    """With lr 0 the heads stay as given, so every reported figure can be recomputed the slow way: the mean
    BCE over each window's clips and sklearn's frame AUC over the concatenated test videos."""
    from sklearn.metrics import roc_auc_score

    from lavida.data.processor import sam_pixel_values
    from lavida.data.video import open_video

    source, _, decoder = toy
    test_sets, encoder = probe_inputs
    root, seen = test_sets["seen"]
    torch.manual_seed(0)
    heads = {"a_": diagnostics.GroundingHead(vision_dim=decoder.feature_dim, text_dim=encoder.dim)}
    heads["b_"] = diagnostics.GroundingHead(vision_dim=decoder.feature_dim, text_dim=encoder.dim)
    kwargs = dict(steps=4, max_categories=4, seed=0, category_count="paper")
    rows = diagnostics.train_grounding_probe(
        decoder,
        encoder,
        source,
        test_sets,
        lr=0.0,
        every=3,
        heads=heads,
        **kwargs,
    )
    assert [row["step"] for row in rows] == [3, 4]  # every 3 steps, and the last one

    def features(frames):
        pixels = sam_pixel_values(torch.from_numpy(frames).permute(0, 3, 1, 2), decoder.image_size)
        return decoder.encode_images(pixels).top.flatten(2).transpose(1, 2)

    with torch.no_grad():
        clips = diagnostics.training_clips(
            source, clips=8, **{k: kwargs[k] for k in ("max_categories", "seed", "category_count")}
        )
        windows = {3: range(0, 6), 4: range(6, 8)}  # clips 2s-2 and 2s-1 at step s
        videos = sorted((root / "testing" / "frames").iterdir())
        truth = np.concatenate(
            [np.load(root / "testing" / "test_frame_mask" / f"{v.name}.npy") for v in videos]
        )
        categories = encoder(encoder.tokenize(seen))
        for row in rows:
            for prefix, head in heads.items():
                losses = []
                for i in windows[row["step"]]:
                    sample = clips[i].sample
                    logits = head(features(sample.frames), encoder(encoder.tokenize(list(sample.categories))))
                    labels = torch.as_tensor(np.asarray(sample.frame_labels), dtype=torch.float32)
                    losses.append(float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)))
                # the window mean of per-step means (2 clips per step) is the mean over its clips
                assert row[prefix + "loss"] == pytest.approx(np.mean(losses), rel=1e-5)
                scores = np.concatenate(
                    [
                        head(features(open_video(v).get_frames(np.arange(6))), categories).numpy()
                        for v in videos
                    ]
                )
                assert row[prefix + "seen"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-9)


def test_demo_split_follows_the_demos_seed(diagnostics, tmp_path):
    from lavida.synthetic.datasets import default_split

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "run_config.json").write_text(json.dumps({"train": {"seed": 1}}))
    assert diagnostics.demo_split(tmp_path) == default_split(1) != default_split(0)


def test_split_description_inverts_describe():
    from lavida.synthetic.shapes import COLOURS, SHAPES, describe, split_description

    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    assert [split_description(describe(c, s)) for c, s in pairs] == pairs


def demo_folder(tmp_path, source, tiny_pretrained):
    """A demo-like folder with the toy training set and the tiny SAM2, its pretraining recorded as done."""
    demo = tmp_path / "demo"
    (demo / "base_models").mkdir(parents=True)
    (demo / "base_models" / "sam2").symlink_to(tiny_pretrained.mask_decoder.pretrained)
    (demo / "base_models" / "stand_ins.json").write_text("{}")
    (demo / "data").mkdir()
    (demo / "data" / "synthetic_train").symlink_to(source.root)
    (demo / "train").mkdir()
    (demo / "train" / "run_config.json").write_text(json.dumps({"train": {"seed": 0}}))
    return demo


def test_main_prints_every_section_for_a_demo_directory(
    diagnostics, toy, tiny_pretrained, tmp_path, monkeypatch, capsys
):
    """The command line end to end on a demo-like folder (toy training set, tiny SAM2, two small test
    sets): the exact presence rule must be right on every training frame and rank both test sets
    perfectly, and the oracle table gets its one row."""
    from lavida.synthetic.datasets import VadSetSpec, default_split, write_vad_set

    source, _, _ = toy
    demo = demo_folder(tmp_path, source, tiny_pretrained)
    split = default_split(0)
    for name, anomalies in (("seen", split.seen_anomalies), ("unseen", split.unseen_anomalies)):
        spec = VadSetSpec(anomalous_videos=2, normal_videos=1, frames=6, seed=1)
        write_vad_set(demo / "data" / f"vad_{name}", anomalies=anomalies, normal=split.normal, spec=spec)

    arguments = ["--probe-frames", "8", "--rule-clips", "6", "--grounding-steps", "0"]
    arguments += ["--steps", "2", "--batch-size", "2"]
    monkeypatch.setattr("sys.argv", ["demo_diagnostics.py", str(demo), *arguments])
    diagnostics.main()
    out = capsys.readouterr().out

    assert "## Deepest level: per-location norm" in out
    probes = [line for line in out.splitlines() if line.startswith(("| top ", "| mid ", "| high "))]
    assert len(probes) == 3, out
    assert "| exact | 1.000 |" in out
    assert "| seen | " in out and "| unseen | " in out
    for name in ("seen", "unseen"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} | "))
        assert row.rstrip().endswith("| 1.000 |"), row  # the exact rule ranks the test frames perfectly
    oracle = [line for line in out.splitlines() if line.startswith("| 2 | ")]
    assert len(oracle) == 1, out
    assert "Grounding probe" not in out  # --grounding-steps 0 skips it


def test_a_demo_killed_during_training_is_refused_before_any_work(
    diagnostics, toy, tiny_pretrained, tmp_path, monkeypatch
):
    """A demo folder without ``train/final`` (killed while training) ran minutes of probes, then ended in
    ``FileNotFoundError: .../train/final/lavida_config.json``. Now nothing is built or read first, and the
    refusal names every missing input and the command that writes it."""
    from lavida.synthetic.datasets import VadSetSpec, default_split, write_vad_set

    source, _, _ = toy
    demo = demo_folder(tmp_path, source, tiny_pretrained)
    split = default_split(0)
    spec = VadSetSpec(anomalous_videos=1, normal_videos=1, frames=4, seed=1)
    write_vad_set(demo / "data" / "vad_seen", anomalies=split.seen_anomalies, normal=split.normal, spec=spec)

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the demo folder was checked")

    monkeypatch.setattr(diagnostics, "build_mask_decoder", no_work)
    monkeypatch.setattr("sys.argv", ["demo_diagnostics.py", str(demo)])
    with pytest.raises(SystemExit) as raised:
        diagnostics.main()
    message = str(raised.value.code)
    assert str(demo / "train" / "final" / "lavida_config.json") in message
    assert str(demo / "data" / "vad_unseen" / "synthetic_layout.json") in message
    assert "vad_seen" not in message and "sam2" not in message  # only what is missing
    assert f"lavida-demo output_dir={demo}" in message and "--grounding-steps 0" in message

    # Without the grounding probe nothing reads train/final, so only the test set is missing.
    monkeypatch.setattr("sys.argv", ["demo_diagnostics.py", str(demo), "--grounding-steps", "0"])
    with pytest.raises(SystemExit) as raised:
        diagnostics.main()
    message = str(raised.value.code)
    assert "vad_unseen" in message and "train/final" not in message


def test_an_empty_folder_is_refused_with_every_input_listed(diagnostics, tmp_path):
    with pytest.raises(SystemExit) as raised:
        diagnostics.check_demo_dir(tmp_path, grounding=True)
    message = str(raised.value.code)
    for part in ("sam2/config.json", "stand_ins.json", "synthetic_train", "run_config.json", "vad_seen"):
        assert part in message, part
    assert "vad_unseen" in message and "train/final/lavida_config.json" in message


def test_a_moved_demo_folder_is_read_where_it_lies(diagnostics, tmp_path):
    """The trained model's config names the CLIP weights by absolute path, which a moved demo folder breaks:
    the grounding probe reads them from the folder's own base models, as it reads SAM2."""
    final = tmp_path / "train" / "final"
    final.mkdir(parents=True)
    gone = tmp_path / "elsewhere" / "clip" / "open_clip_model.safetensors"
    (final / "lavida_config.json").write_text(json.dumps({"text_encoder": {"pretrained": str(gone)}}))
    here = diagnostics.demo_clip_weights(tmp_path)
    assert here == tmp_path / "base_models" / "clip" / "open_clip_model.safetensors"
    with pytest.raises(SystemExit) as raised:  # the folder's own CLIP is missing too: that one is named
        diagnostics.check_demo_dir(tmp_path, grounding=True)
    assert str(here) in str(raised.value.code) and str(gone) not in str(raised.value.code)
    here.parent.mkdir(parents=True)
    here.write_bytes(b"")
    with pytest.raises(SystemExit) as raised:  # the other inputs are still missing; the CLIP no longer
        diagnostics.check_demo_dir(tmp_path, grounding=True)
    assert str(here) not in str(raised.value.code)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rule-clips", "0"),
        ("--probe-frames", "0"),
        ("--batch-size", "0"),
        ("--max-categories", "0"),
        ("--steps", "-1"),
        ("--grounding-steps", "-1"),
    ],
)
def test_counts_out_of_range_are_usage_errors_naming_the_flag(
    diagnostics, tmp_path, monkeypatch, capsys, flag, value
):
    """``--rule-clips 0`` was refused as ``data.samples_per_epoch must be ≥ 1`` after the probes had run,
    ``--probe-frames 0`` ended in numpy's "need at least one array to stack"."""
    monkeypatch.setattr("sys.argv", ["demo_diagnostics.py", str(tmp_path), flag, value])
    with pytest.raises(SystemExit) as raised:
        diagnostics.main()
    assert raised.value.code == 2
    assert f"argument {flag}: expected a whole number ≥" in capsys.readouterr().err
