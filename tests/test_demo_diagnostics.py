"""benchmarks/demo_diagnostics.py on a toy synthetic set and the tiny SAM2: labels and counts are right.

``benchmarks/`` is not a package, so the script is imported from its file.
"""

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
