"""Write randomly initialised base models to disk in their native formats.

With no network there are no real weights on CI or developer machines. This writes a stand-in
"pretrained" directory for each base model from the architecture in a config — a Qwen2-VL model
directory (config, safetensors, tokenizer, processor), a transformers SAM2 directory and an open_clip
text-tower state dict — so that tests, the synthetic demo and the runtime benchmarks load them through
exactly the code path real weights take.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lavida.atomic import atomic_dir, atomic_path
from lavida.models.config import LavidaConfig

log = logging.getLogger(__name__)


def write_random_pretrained(config: LavidaConfig, root: str | Path, *, seed: int = 0) -> LavidaConfig:
    """Save random base models for ``config``'s architectures under ``root``; return a config pointing at them.

    Args:
        config: A config whose ``mllm``, ``text_encoder`` and ``mask_decoder`` sections have ``arch``.
        root: Output directory; gets ``mllm/``, ``sam2/`` and ``clip/open_clip_model.safetensors``.
        seed: Seed for the random weights.

    Returns:
        A copy of ``config`` with every ``pretrained`` set to the written paths (``arch`` kept, which the
        CLIP section needs to register its architecture with open_clip).
    """
    import torch
    from safetensors.torch import save_file

    from lavida.models.mask_decoder import load_sam2
    from lavida.models.mllm import load_base_mllm
    from lavida.models.text_encoder import load_clip_text

    root = Path(root)
    data = config.to_dict()
    torch.manual_seed(seed)

    # Each part is written beside its place and renamed into it, as real downloads are used: a kill
    # half-way leaves no directory that holds a config.json but not all of the weights.
    mllm_dir = root / "mllm"
    model, processor = load_base_mllm(family=config.mllm.family, arch=config.mllm.arch, dtype=config.dtype)
    with atomic_dir(mllm_dir) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)  # its tokenizer already holds <SEG>; adding it on load is a no-op
    data["mllm"]["pretrained"] = str(mllm_dir)

    sam_dir = root / "sam2"
    sam = load_sam2(arch=config.mask_decoder.arch, dtype=config.dtype)
    with atomic_dir(sam_dir) as staging:
        sam.save_pretrained(staging)
    data["mask_decoder"]["pretrained"] = str(sam_dir)

    clip_file = root / "clip" / "open_clip_model.safetensors"
    clip, _ = load_clip_text(
        model_name=config.text_encoder.model_name, arch=config.text_encoder.arch, dtype=config.dtype
    )
    with atomic_path(clip_file) as staging:
        save_file({key: value.contiguous() for key, value in clip.state_dict().items()}, str(staging))
    data["text_encoder"]["pretrained"] = str(clip_file)

    log.info("Wrote random base models to %s", root)
    return LavidaConfig.from_dict(data)
