"""Category feature encoding (§3.6, Eq. 6; B.5): the frozen CLIP ViT-B/32 text tower, f_c ∈ R^{K×512}.

Built with open_clip. Its BPE vocabulary ships inside the wheel, so tokenising works offline; the
weights come from a local file (``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin`` of
the OpenAI ViT-B/32 checkpoint) or from the transformers folder the official code reads
(``openai/clip-vit-base-patch32``; renamed into open_clip's names by ``lavida.models.clip_transformers``).
Only the text tower is kept: the image tower is deleted after construction and its weights are never
read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from lavida.models.clip_transformers import (
    check_activation,
    check_transformers_clip_folder,
    is_transformers_clip_folder,
    is_transformers_clip_state,
    open_clip_text_state,
    read_config,
    read_transformers_clip_folder,
)
from lavida.models.weights import WeightsNotFoundError, check_weights_file, load_state_dict_file

log = logging.getLogger(__name__)

CLIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# The 0-dim parameters of CLIP's contrastive loss (temperature; SigLIP's bias), not of its text tower.
LOSS_ONLY_KEYS = ("logit_scale", "logit_bias")

CLIP_HINT = (
    "Download the open_clip weights of OpenAI's ViT-B/32 once (e.g. `hf download "
    "timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors --local-dir DIR`) and point "
    "`model.text_encoder.pretrained` (or LAVIDA_CLIP_PATH) at DIR/open_clip_model.safetensors, or point it at "
    "a transformers copy of `openai/clip-vit-base-patch32` (`hf download openai/clip-vit-base-patch32 "
    "--local-dir DIR`: the folder with config.json)."
)


class CategoryEncoder(nn.Module):
    """Frozen CLIP text tower mapping category strings to features.

    Args:
        clip: An open_clip model whose ``encode_text`` works (the image tower may be deleted).
        tokenizer: The matching open_clip tokenizer (callable: list[str] -> (K, context) int64).
        dim: Output feature width (512 for ViT-B/32).

    Note:
        The features are open_clip's ``encode_text`` output (after the text projection). The official
        code took the pooled output before the projection; both are 512-d and differ by a fixed
        linear map that the projector's learned W_c absorbs (docs/fidelity.md).
    """

    def __init__(self, *, clip: nn.Module, tokenizer, dim: int) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.dim = dim
        self.clip.requires_grad_(False)
        self.clip.eval()

    def train(self, mode: bool = True) -> CategoryEncoder:
        # Frozen (B.2): stay in eval mode whatever the parent does.
        super().train(mode)
        self.clip.eval()
        return self

    def tokenize(self, categories: Sequence[str]) -> torch.Tensor:
        """(K,) strings → (K, context_length) int64 token ids, truncated to the context length."""
        return self.tokenizer(list(categories))

    def outside_parameters(self) -> list[nn.Parameter]:
        """CLIP's own parameters (positional embedding, text projection), which ``encode_text`` reads
        outside any module's forward (see :meth:`MultiLevelMaskDecoder.outside_parameters`)."""
        return list(self.clip.parameters(recurse=False))

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(K, context_length) int64 → (K, dim) features, in the dtype of the tower's weights."""
        return self.clip.encode_text(tokens)


def build_category_encoder(
    *,
    model_name: str = "ViT-B-32-quickgelu",
    pretrained: str | None = None,
    arch: dict | None = None,
    dtype: str = "float32",
) -> CategoryEncoder:
    """Build the CLIP text tower from open_clip's config ``model_name`` and a local weights file.

    Args:
        model_name: An open_clip model name. The paper's encoder is OpenAI's ViT-B/32, which uses
            QuickGELU: ``ViT-B-32-quickgelu``.
        pretrained: Local ``.safetensors``/``.bin``/``.pt`` state dict (open_clip key names); ``None``
            keeps random weights (tests, ``lavida-info``, runtime benchmarks).
        arch: An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) registered under
            ``model_name`` before building, for tiny or custom towers.
        dtype: Parameter dtype.

    Raises:
        WeightsNotFoundError: the weights file is missing, unreadable, or lacks text-tower keys.
    """
    clip, tokenizer = load_clip_text(model_name=model_name, pretrained=pretrained, arch=arch, dtype=dtype)
    dim = _output_dim(clip)
    log.info("Built CLIP text tower %s (%s), %d-d", model_name, pretrained or "random init", dim)
    return CategoryEncoder(clip=clip, tokenizer=tokenizer, dim=dim)


class _OpenClipChatter(logging.Filter):
    """Drops open_clip's progress messages, and its "No pretrained weights loaded ... Model initialized
    randomly" unless ``keep_random_notice`` (lavida loads the weights from a local file right after, or
    makes a random tower on purpose and says so itself).

    open_clip (3.x) logs through the root logger (``logging.info``/``logging.warning``), about eight lines
    per build ("Parsing model identifier", "Instantiating model architecture", "Using default
    SimpleTokenizer", ...), and lavida logs what it built itself. Its other warnings and errors stay.
    A filter on the root logger sees only records logged on the root logger itself, never those
    that other loggers propagate to it.
    """

    def __init__(self, package_dir: str, *, keep_random_notice: bool) -> None:
        super().__init__()
        self.package_dir = package_dir
        self.keep_random_notice = keep_random_notice

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.package_dir):
            return True
        if record.levelno < logging.WARNING:
            return False
        return self.keep_random_notice or "initialized randomly" not in record.getMessage()


class _LastResortStandIn(logging.Handler):
    """Passes records on as Python does when no handler is configured (to ``logging.lastResort``)."""

    def emit(self, record: logging.LogRecord) -> None:
        last_resort = logging.lastResort
        if last_resort is not None and record.levelno >= last_resort.level:
            last_resort.handle(record)


@contextlib.contextmanager
def quiet_open_clip(*, keep_random_notice: bool) -> Iterator[None]:
    """The context in which open_clip builds a model or tokenizer, its chatter left out (see
    :class:`_OpenClipChatter`); the logging configuration is as it was afterwards.

    Args:
        keep_random_notice: Keep open_clip's warning that the model is initialised randomly: True where
            the caller leaves it random without saying so (``pretrained=None`` in
            :func:`load_clip_text`).
    """
    import open_clip

    root = logging.getLogger()
    package_dir = os.path.join(os.path.dirname(open_clip.__file__), "")  # with the trailing separator
    chatter = _OpenClipChatter(package_dir, keep_random_notice=keep_random_notice)
    root.addFilter(chatter)
    # logging.info() (module-level, as open_clip calls it) runs logging.basicConfig() when the root logger
    # has no handler: a Python API user's program would keep a stderr handler it never configured, and
    # print every later warning as "WARNING:root:...". A handler for the build's duration prevents that.
    stand_in = _LastResortStandIn() if not root.handlers else None
    if stand_in is not None:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeFilter(chatter)
        if stand_in is not None:
            root.removeHandler(stand_in)


def load_clip_text(
    *,
    model_name: str,
    pretrained: str | None = None,
    arch: dict | None = None,
    dtype: str = "float32",
    random_notice: bool = True,
):
    """The open_clip model without its image tower, and its tokenizer. Args as :func:`build_category_encoder`;
    ``random_notice=False`` leaves out open_clip's "initialized randomly" warning for a tower that is random
    on purpose and said to be by the caller (lavida.models.random_init)."""
    import open_clip

    if arch is not None:
        register_clip_config(model_name, arch)
    elif model_name not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip model '{model_name}'. Use one of open_clip.list_models() or give `arch`."
        )
    # With `pretrained`, the weights are loaded from that file below: open_clip's notice that the model
    # is initialised randomly would mislead. Without it, the model is random and the notice stays.
    with quiet_open_clip(keep_random_notice=pretrained is None and random_notice):
        clip = open_clip.create_model(model_name, pretrained=None, device=torch.get_default_device())
    del clip.visual  # only the text tower is used; this frees ~88M parameters for ViT-B/32
    # The contrastive temperature (and SigLIP's bias) belong to CLIP's training loss, not to the text
    # tower. They are 0-dim parameters, which DeepSpeed's start-up broadcast cannot send (it views
    # every parameter as bytes), so launcher=zero2|zero3 failed before the first step.
    for name in LOSS_ONLY_KEYS:
        if isinstance(getattr(clip, name, None), nn.Parameter):
            delattr(clip, name)
    if pretrained is not None:
        load_clip_text_weights(clip, pretrained, model_name=model_name)
    clip.to(getattr(torch, dtype))
    with quiet_open_clip(keep_random_notice=pretrained is None and random_notice):
        tokenizer = open_clip.get_tokenizer(model_name)
    return clip, tokenizer


def register_clip_config(model_name: str, arch: dict) -> None:
    """Make open_clip know ``model_name`` as the config ``arch`` (tiny or custom towers)."""
    import open_clip

    # open_clip reads configs from files; it parses them at registration, so the file can go at once.
    with tempfile.TemporaryDirectory(prefix="lavida-clip-config-") as directory:
        (Path(directory) / f"{model_name}.json").write_text(json.dumps(arch))
        open_clip.add_model_config(directory)


def _output_dim(clip: nn.Module) -> int:
    projection = getattr(clip, "text_projection", None)
    if isinstance(projection, nn.Linear):
        return projection.out_features
    if projection is not None:
        return projection.shape[1]
    return clip.transformer.width


def check_clip_weights(path: str | Path) -> Path:
    """Check, without reading the weights, that ``path`` is a CLIP weights file or transformers folder.

    Raises:
        WeightsNotFoundError: naming the path and what was expected there.
    """
    source = Path(path).expanduser()
    if is_transformers_clip_folder(source):
        check_transformers_clip_folder(source, hint=CLIP_HINT)
        return source
    return check_weights_file(source, what="CLIP text encoder", suffixes=CLIP_SUFFIXES, hint=CLIP_HINT)


def load_clip_text_weights(clip: nn.Module, path: str, *, model_name: str = "") -> None:
    """Load the text-tower tensors at ``path`` into ``clip`` (built without its image tower).

    ``path`` is an open_clip state dict file, or transformers' CLIP format: a folder with config.json,
    or its weights file (the config.json beside it, when there is one, is checked too).

    Raises:
        WeightsNotFoundError: the file is missing or unreadable, lacks text-tower tensors, or does not fit.
    """
    source = Path(path).expanduser()
    config, config_file = None, None
    if is_transformers_clip_folder(source):
        state, config = read_transformers_clip_folder(source, hint=CLIP_HINT)
        config_file = source / "config.json"
    else:
        file = check_clip_weights(source)
        state = load_state_dict_file(file, what="CLIP text encoder", hint=CLIP_HINT)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if is_transformers_clip_state(state):
        # The official code's openai/clip-vit-base-patch32: the same weights under other names.
        if config is None and (source.parent / "config.json").is_file():
            config_file = source.parent / "config.json"
            config = read_config(config_file, hint=CLIP_HINT)
        if config is not None:
            check_activation(clip, config, config_file=config_file, model_name=model_name, hint=CLIP_HINT)
        else:
            log.warning(
                "%s has transformers' CLIP names but no config.json beside it: whether it was trained with "
                "QuickGELU, as the configured open_clip model '%s' assumes, cannot be checked.",
                source,
                model_name,
            )
        state = open_clip_text_state(state, source=source, hint=CLIP_HINT)
    text_state = {key: value for key, value in state.items() if not key.startswith("visual.")}
    expected = set(clip.state_dict())
    # A file may hold the contrastive temperature or not (OpenAI's does; lavida's text-only files do
    # not), and the text tower may want it (stand-in pretraining) or not (load_clip_text).
    missing = sorted(expected - set(text_state) - set(LOSS_ONLY_KEYS))
    if missing:
        raise WeightsNotFoundError(
            f"CLIP text encoder: '{source}' lacks {len(missing)} text-tower tensors, e.g. {missing[:5]} (open_clip "
            f"names). Is it a CLIP of the configured model? {CLIP_HINT}"
        )
    unexpected = sorted(set(text_state) - expected - set(LOSS_ONLY_KEYS))
    deeper = [key for key in unexpected if key.startswith("transformer.resblocks.")]
    if deeper:
        # Layers the configured tower lacks: another (deeper) model, whose features would be computed
        # from its first layers only.
        raise WeightsNotFoundError(
            f"CLIP text encoder: '{source}' holds text layers the configured model lacks, e.g. {deeper[:3]}: "
            f"it is another (deeper) CLIP. Set model.text_encoder.model_name to its open_clip model. {CLIP_HINT}"
        )
    if unexpected:
        log.warning("Ignoring %d unexpected keys in %s, e.g. %s", len(unexpected), source, unexpected[:5])
    try:
        # Not strict only for a temperature the file lacks: every other key was checked above.
        clip.load_state_dict(
            {key: text_state[key] for key in expected if key in text_state}, strict=False, assign=False
        )
    except RuntimeError as error:  # shape mismatch: another model's weights
        raise WeightsNotFoundError(
            f"CLIP text encoder: '{source}' does not fit the configured model: {error}"
        ) from error
