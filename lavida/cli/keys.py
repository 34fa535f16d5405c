"""Top-level keys of an entry point's config: a key Hydra added with a leading ``+`` that nothing reads is
refused, naming the keys that exist."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def reject_unknown_keys(cfg: DictConfig, *, config_name: str, hints: dict[str, str] | None = None) -> None:
    """Refuse top-level keys that ``lavida/configs/<config_name>.yaml`` does not define.

    Hydra adds any key given with a leading ``+``, so a misspelt ``+treshold=0.9`` would otherwise run with
    the default threshold without a word. The known keys are the primary config's own and its config
    groups (``benchmark``, ``model``, ``experiment``, ...); an experiment sets only keys among these.
    ``hints`` maps a key to where it belongs instead (shown in place of the close matches).

    Raises:
        ValueError: naming each unknown key, its close matches and the valid keys.
    """
    primary = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / f"{config_name}.yaml")
    groups = [entry for entry in primary.get("defaults", []) if not isinstance(entry, str)]
    known = {key for key in primary if key != "defaults"} | {"hydra"}
    # A defaults entry is "[override |optional ]group[/subgroup]": the key is the group's first part ("override hydra/job_logging" configures Hydra itself, already "hydra", and is no key to list).
    known |= {_group_key(str(key)) for entry in groups for key in entry}
    unknown = sorted(set(cfg) - known)
    if not unknown:
        return
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=3)
        guess = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        if hints and key in hints:
            guess = f" ({hints[key]})"
        problems.append(f"{key!r}{guess}")
    raise ValueError(
        f"lavida-{config_name}: unknown key(s) {', '.join(problems)}; a leading + adds a key that "
        f"{config_name}.yaml does not define, and nothing reads it. Valid keys: {sorted(known - {'hydra'})}."
    )


def _group_key(entry: str) -> str:
    """The top-level key a defaults-list entry fills: ``optional local`` → ``local``, ``model/mllm`` →
    ``model``, ``override hydra/job_logging`` → ``hydra``."""
    return entry.split()[-1].lstrip("/").split("/")[0]
