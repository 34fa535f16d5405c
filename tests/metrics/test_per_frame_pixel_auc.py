"""TAO-style per-frame pixel AUROC against a hand-worked case and a per-frame sklearn loop."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lavida.metrics import PerFramePixelAUC, per_frame_pixel_auc


def hand_video() -> tuple[np.ndarray, np.ndarray]:
    scores = np.array(
        [
            [[0.9, 0.1], [0.4, 0.2]],  # frame 0: positive .9 beats the 3 negatives -> AUC 1
            [[0.3, 0.5], [0.5, 0.1]],  # frame 1: see below -> AUC 0.625
            [[0.8, 0.8], [0.8, 0.8]],  # frame 2: no anomalous pixel -> skipped
            [[0.0, 0.0], [0.0, 0.0]],  # frame 3: all-zero prediction -> 0 (TAO) or 0.5 (true AUC)
        ]
    )
    labels = np.array(
        [
            [[1, 0], [0, 0]],
            [[1, 0], [1, 0]],  # positives {.3, .5}, negatives {.5, .1}: .3 -> 0 + 1, .5 -> .5 + 1 => 2.5/4
            [[0, 0], [0, 0]],
            [[0, 1], [0, 0]],
        ]
    )
    return scores, labels


def test_hand_worked_tao_and_true_auc():
    scores, labels = hand_video()
    # TAO: mean over frames 0, 1, 3 = (1 + 0.625 + 0) / 3.
    assert per_frame_pixel_auc([scores], [labels]) == pytest.approx((1 + 0.625 + 0) / 3, abs=1e-12)
    assert per_frame_pixel_auc([scores], [labels], empty_prediction="auc") == pytest.approx(
        (1 + 0.625 + 0.5) / 3, abs=1e-12
    )


def test_matches_per_frame_sklearn_mean_over_all_frames_of_all_videos():
    rng = np.random.default_rng(0)
    videos_s, videos_y, per_frame = [], [], []
    for t in (3, 5, 2):
        y = rng.random((t, 12, 16)) < 0.15
        y[0] = False  # one normal frame per video, skipped
        s = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 2)
        videos_s.append(s)
        videos_y.append(y)
        per_frame += [roc_auc_score(y[i].ravel(), s[i].ravel()) for i in range(1, t)]
    # Frame mean, not a mean of video means (the videos have different lengths, so they differ).
    expected = np.mean(per_frame)
    assert per_frame_pixel_auc(videos_s, videos_y) == pytest.approx(expected, abs=1e-12)


def test_streaming_class_counts_skipped_frames_consistently():
    scores, labels = hand_video()
    full = np.ones((1, 2, 2), dtype=bool)
    metric = PerFramePixelAUC()
    metric.update(scores, labels)
    metric.update(scores[0], labels[0])  # one (H, W) frame: AUC 1 again
    metric.update(np.full((1, 2, 2), 0.3), full)  # every pixel anomalous: undefined, skipped
    assert (metric.num_frames, metric.num_skipped_normal, metric.num_skipped_full) == (4, 1, 1)
    assert metric.compute() == pytest.approx((1 + 0.625 + 0 + 1) / 4, abs=1e-12)
    metric.reset()
    with pytest.raises(ValueError, match="no frame with both anomalous and normal pixels"):
        metric.compute()


def test_invalid_inputs():
    with pytest.raises(ValueError, match="'zero' or 'auc'"):
        PerFramePixelAUC(empty_prediction="half")
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        per_frame_pixel_auc([np.zeros((4, 4))], [np.zeros((4, 4))])
    with pytest.raises(ValueError, match="shape"):
        PerFramePixelAUC().update(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="no frame"):
        per_frame_pixel_auc([np.zeros((2, 2, 2))], [np.zeros((2, 2, 2))])


def test_state_round_trip_and_merge_equal_the_whole():
    """The sum and all three counts carry over, skipped frames included: one normal frame in each part
    and two frames anomalous at every pixel in the second."""
    rng = np.random.default_rng(4)
    scores = rng.random((10, 5, 5))
    labels = rng.random((10, 5, 5)) > 0.7
    labels[[1, 6]] = False
    labels[[7, 8]] = True
    whole = PerFramePixelAUC()
    whole.update(scores, labels)
    first, second = PerFramePixelAUC(), PerFramePixelAUC()
    first.update(scores[:4], labels[:4])
    second.update(scores[4:], labels[4:])
    restored = PerFramePixelAUC()
    restored.load_state_dict(first.state_dict())
    restored.merge(second)
    assert restored.compute() == pytest.approx(whole.compute(), abs=1e-12)
    counts = (whole.num_frames, whole.num_skipped_normal, whole.num_skipped_full)
    assert counts == (6, 2, 2)
    assert (restored.num_frames, restored.num_skipped_normal, restored.num_skipped_full) == counts


def test_load_state_dict_refuses_a_state_missing_a_key():
    state = PerFramePixelAUC().state_dict()
    del state["num_skipped_full"]
    with pytest.raises(
        ValueError, match=r"^PerFramePixelAUC.load_state_dict: missing keys \['num_skipped_full'\]\.$"
    ):
        PerFramePixelAUC().load_state_dict(state)


def test_merge_returns_self_and_refuses_another_convention_or_type():
    """merge() returns ``self`` (so calls chain), and refuses to add frames scored under the other
    empty-prediction convention: a 0 and a 0.5 for the same all-zero frame cannot be averaged."""
    scores, labels = hand_video()
    tao, true_auc = PerFramePixelAUC(), PerFramePixelAUC(empty_prediction="auc")
    tao.update(scores, labels)
    true_auc.update(scores, labels)
    merged = PerFramePixelAUC()
    assert merged.merge(tao) is merged
    for other in (true_auc, object()):
        with pytest.raises(ValueError, match="same empty_prediction"):
            PerFramePixelAUC().merge(other)
    with pytest.raises(ValueError, match="same empty_prediction"):
        true_auc.merge(tao)


def test_fully_anomalous_frames_are_logged_and_others_are_not(caplog):
    scores, labels = hand_video()
    metric = PerFramePixelAUC()
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.pixel_per_frame"):
        metric.update(scores, labels)  # no fully anomalous frame
    assert "anomalous at every pixel" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="lavida.metrics.pixel_per_frame"):
        metric.update(np.full((2, 2, 2), 0.3), np.ones((2, 2, 2), dtype=bool))
    assert "2 frame(s) are anomalous at every pixel" in caplog.text


@pytest.mark.parametrize("shape", [(3, 0, 4), (3, 4, 0), (0, 0)])
def test_frames_without_pixels_are_refused_whichever_side_is_empty(shape):
    metric = PerFramePixelAUC()
    with pytest.raises(ValueError, match="non-empty"):
        metric.update(np.zeros(shape), np.zeros(shape, dtype=bool))
    assert (metric.num_frames, metric.num_skipped_normal, metric.num_skipped_full) == (0, 0, 0)
