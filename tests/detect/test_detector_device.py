"""Where Detector.from_checkpoint loads the model: the device asked for, else cuda when there is one."""

import torch

from lavida.detect.detector import default_device


def test_an_asked_device_wins_over_the_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device("cpu") == torch.device("cpu")  # not cuda, though one is available
    assert default_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device(None) == torch.device("cpu")
