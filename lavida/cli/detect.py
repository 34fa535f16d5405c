"""``lavida-detect``: anomalies of named categories in any video (see lavida/configs/detect.yaml).

A folder of videos is processed one by one; a video that cannot be read is skipped with its reason
logged, and the run goes on. Each video's files go to ``<output_dir>/<name>/`` (its stem; inputs that
would share a name keep their suffix, ``a.mp4`` → ``a_mp4``: see ``lavida.detect.stream.output_names``).
``<output_dir>/index.json`` lists what happened to every input.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from lavida.atomic import write_json
from lavida.data.video import VideoReadError
from lavida.detect.detector import Detector
from lavida.detect.stream import expand_inputs, output_names

log = logging.getLogger(__name__)


def parse_categories(value) -> list[str]:
    """``"fire, fighting"`` or a list → ["fire", "fighting"]; raises ValueError when empty."""
    if isinstance(value, (list, tuple, ListConfig)):
        names = [str(v).strip() for v in value]
    else:
        names = [part.strip() for part in str(value).split(",")]
    names = [name for name in names if name]
    if not names:
        raise ValueError(
            f"categories is empty ({value!r}); give at least one, e.g. 'categories=\"fire, fighting\"' "
            "(quoted for the shell and for Hydra)."
        )
    return names


def run(cfg: DictConfig) -> dict:
    """Detect on every input; returns the index written to ``<output_dir>/index.json``."""
    categories = parse_categories(cfg.categories)
    inputs = expand_inputs(cfg.input)
    detector = Detector.from_checkpoint(
        cfg.checkpoint,
        device=cfg.device,
        dtype=cfg.dtype,
        config_overrides=OmegaConf.to_container(cfg.checkpoint_overrides, resolve=True) or None,
        clip_length=cfg.clip_length,
        interval=cfg.interval,
        stride=cfg.stride,
        aggregation=cfg.aggregation,
        threshold=cfg.threshold,
        min_interval=cfg.min_interval,
        merge_gap=cfg.merge_gap,
    )
    index: dict = {"categories": categories, "videos": []}
    for source, name in zip(inputs, output_names(inputs), strict=True):
        try:
            result = detector.detect(
                source,
                categories,
                output_dir=cfg.output_dir,
                overlay=cfg.overlay,
                save=cfg.save,
                explain=cfg.explain,
                max_frames=cfg.max_frames,
                name=name,
            )
        except (VideoReadError, ValueError, IndexError) as error:
            log.error("Skipping %s: %s", source, error)
            index["videos"].append({"input": source, "status": "skipped", "reason": str(error)})
            continue
        index["videos"].append(
            {
                "input": source,
                "status": "done",
                "output": str(result.output_dir),
                "frames": int(result.scores.size),
                "intervals": [interval.to_dict(result.fps) for interval in result.intervals],
            }
        )
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.output_dir) / "index.json", index, indent=1)
    done = sum(entry["status"] == "done" for entry in index["videos"])
    log.info("Processed %d of %d input(s); see %s/index.json", done, len(inputs), cfg.output_dir)
    if done == 0:
        raise SystemExit(f"No input could be processed; see {cfg.output_dir}/index.json for the reasons.")
    return index


@hydra.main(version_base=None, config_path="pkg://lavida.configs", config_name="detect")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
