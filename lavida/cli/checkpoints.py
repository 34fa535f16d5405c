"""``checkpoint=DIR`` of lavida-eval (checked before anything slow runs) and lavida-detect (when it fails to load).

lavida-eval loads (and probes the videos of) the benchmark before the model: a misspelt path, or one of
lavida-train's resume states (``checkpoints/step_N/``, whose model is in ``model/``), was only refused
after that, minutes later on a full benchmark, and with no word of where the model is.
"""

from __future__ import annotations

from pathlib import Path

from lavida.models.checkpoint import CONFIG_FILE, HEADS_FILE
from lavida.models.weights import WeightsNotFoundError

TRAINED = "outputs/train/<run_name>/final"  # where lavida-train puts the final model (README step 3)


def check_checkpoint(checkpoint: str | Path) -> None:
    """Refuse a ``checkpoint`` that is not a saved LAVIDA model, saying which folder to give instead.

    Raises:
        WeightsNotFoundError: no such folder, a training checkpoint (its model is ``<dir>/model``), a
            training run's folder (its model is ``<dir>/final``), or a folder without the model's files.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        found = f"'{path}' is a file" if path.exists() else f"'{path}' does not exist"
        raise WeightsNotFoundError(
            f"checkpoint={checkpoint}: {found}. Give the folder of a trained model: lavida-train writes it "
            f"to {TRAINED} (and every saved step's to <run_name>/checkpoints/step_N/model)."
        )
    missing = [name for name in (CONFIG_FILE, HEADS_FILE) if not (path / name).is_file()]
    if not missing:
        return
    model = path / "model"
    if (model / CONFIG_FILE).is_file():
        raise WeightsNotFoundError(
            f"checkpoint={checkpoint} is a training checkpoint of lavida-train (model, optimizer and "
            f"progress, to resume from); the model saved at that step is its model/ folder: "
            f"checkpoint={model}."
        )
    final = path / "final"
    if (final / CONFIG_FILE).is_file():
        raise WeightsNotFoundError(
            f"checkpoint={checkpoint} is the run folder of lavida-train; its trained model is the final/ "
            f"folder: checkpoint={final} (every saved step's is checkpoints/step_N/model)."
        )
    found = sorted(p.name for p in path.iterdir())
    raise WeightsNotFoundError(
        f"checkpoint={checkpoint} is not a LAVIDA checkpoint: missing {missing} (a checkpoint holds "
        f"{CONFIG_FILE}, {HEADS_FILE}, mllm_adapter/ and meta.json); found {found}. lavida-train writes the "
        f"trained model to {TRAINED}."
    )
