"""Write randomly initialised base models to disk in their native formats.

With no network there are no real weights on CI or developer machines. This writes a stand-in
"pretrained" directory for each base model from the architecture in a config — a Qwen2-VL model
directory (config, safetensors, tokenizer, processor), a transformers SAM2 directory and an open_clip
text-tower state dict — so that tests, the synthetic demo, smoke training runs and the runtime benchmarks
load them through exactly the code path real weights take.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lavida.atomic import atomic_dir, atomic_path
from lavida.models.config import LavidaConfig

log = logging.getLogger(__name__)

# In the order they are drawn from the seeded generator (the demo's figures depend on it).
BASE_MODEL_SECTIONS = ("mllm", "mask_decoder", "text_encoder")

# Where write_random_pretrained puts each base model under its root.
_PLACES = {"mllm": "mllm", "mask_decoder": "sam2", "text_encoder": "clip/open_clip_model.safetensors"}


def random_pretrained_paths(root: str | Path) -> dict[str, Path]:
    """Where :func:`write_random_pretrained` writes each base model under ``root`` (section → path)."""
    return {section: Path(root) / place for section, place in _PLACES.items()}


def random_pretrained_root(section: str, path: str | Path | None) -> Path | None:
    """The root under which ``path`` is ``section``'s place in :func:`random_pretrained_paths`, or None when
    ``path`` is no such place (real weights, or no path)."""
    if path is None:
        return None
    parts, place = Path(path).parts, Path(_PLACES[section]).parts
    if len(parts) <= len(place) or parts[-len(place) :] != place:
        return None
    return Path(*parts[: -len(place)])


def unset_base_models(config: LavidaConfig) -> list[str]:
    """The sections (``mllm``, ``text_encoder``, ``mask_decoder``) that have no ``pretrained`` path."""
    return [section for section in BASE_MODEL_SECTIONS if getattr(config, section).pretrained is None]


def write_random_pretrained(
    config: LavidaConfig, root: str | Path, *, seed: int = 0, reuse_existing: bool = False
) -> LavidaConfig:
    """Save random base models for ``config``'s architectures under ``root``; return a config pointing at them.

    Only the base models without a ``pretrained`` path are written; those with one are left as they are.

    Args:
        config: A config whose ``mllm``, ``text_encoder`` and ``mask_decoder`` sections have ``arch``.
        root: Output directory; gets ``mllm/``, ``sam2/`` and ``clip/open_clip_model.safetensors``.
        seed: Seed for the random weights.
        reuse_existing: Keep a base model that an earlier call already wrote under ``root`` instead of
            writing it again (each is renamed into place whole, so one that exists is complete).

    Returns:
        A copy of ``config`` with every written ``pretrained`` set to its path (``arch`` kept, which the
        CLIP section needs to register its architecture with open_clip).
    """
    import torch
    from safetensors.torch import save_file

    from lavida.models.mask_decoder import load_sam2
    from lavida.models.mllm import load_base_mllm
    from lavida.models.text_encoder import load_clip_text

    paths = random_pretrained_paths(root)
    data = config.to_dict()
    torch.manual_seed(seed)

    # Each part is written beside its place and renamed into it, as real downloads are used: a kill
    # half-way leaves no directory that holds a config.json but not all of the weights.
    missing = unset_base_models(config)
    written = []
    for section in missing:
        path = paths[section]
        data[section]["pretrained"] = str(path)
        if reuse_existing and path.exists():
            continue
        written.append(section)
        if section == "mllm":
            model, processor = load_base_mllm(
                family=config.mllm.family, arch=config.mllm.arch, dtype=config.dtype
            )
            with atomic_dir(path) as staging:
                model.save_pretrained(staging)
                # Its tokenizer already holds <SEG>; adding it on load is a no-op.
                processor.save_pretrained(staging)
        elif section == "mask_decoder":
            sam = load_sam2(arch=config.mask_decoder.arch, dtype=config.dtype)
            with atomic_dir(path) as staging:
                sam.save_pretrained(staging)
        else:
            # Random on purpose, and the log line below says so: open_clip's notice would only repeat it.
            clip, _ = load_clip_text(
                model_name=config.text_encoder.model_name,
                arch=config.text_encoder.arch,
                dtype=config.dtype,
                random_notice=False,
            )
            with atomic_path(path) as staging:
                save_file({key: value.contiguous() for key, value in clip.state_dict().items()}, str(staging))

    if written:
        log.info("Wrote random base models (%s) to %s", ", ".join(written), root)
    return LavidaConfig.from_dict(data)
