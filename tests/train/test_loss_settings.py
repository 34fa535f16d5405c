"""The loss settings of ``train.loss`` are checked when the config is read."""

from __future__ import annotations

import pytest

from lavida.train.config import LossConfig, TrainConfig


@pytest.mark.parametrize(
    "bad, message",
    [
        # A typo used to train silently with SAM2's weights (the trainer maps anything but "official" to them).
        ({"weights": "offical"}, r"train.loss.weights must be sam2 or official, got 'offical'"),
        ({"lambda_txt": -1.0}, r"train.loss.lambda_txt must be a finite number ≥ 0, got -1.0"),
        ({"lambda_seg": float("nan")}, r"train.loss.lambda_seg must be a finite number ≥ 0, got nan"),
        ({"focal_gamma": -2.0}, r"train.loss.focal_gamma must be a finite number ≥ 0, got -2.0"),
        ({"focal_alpha": 1.5}, r"train.loss.focal_alpha must be at most 1 \(a negative value disables"),
    ],
)
def test_loss_settings_are_checked_before_anything_is_built(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"loss": bad})


def test_valid_loss_settings_pass():
    assert TrainConfig.from_dict(
        {"loss": {"weights": "official", "supervise_all_iou": False}}
    ).loss.weights == ("official")
    # SAM2's object-score loss uses alpha -1 (no alpha weighting), gamma 0: both must stay expressible.
    assert LossConfig(focal_alpha=-1.0, focal_gamma=0.0, lambda_txt=0.0).focal_alpha == -1.0
