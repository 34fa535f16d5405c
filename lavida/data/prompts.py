"""Prompts for the MLLM (§3.5): templates filled with the anomaly categories, rendered in Qwen's chat format.

The templates are a data file (``resources/prompt_templates.json``: the official release's five user
and five answer templates). Training draws a template pair at random per sample; inference uses one
fixed pair so that evaluation does not depend on a random draw (the official code drew at random at
test time too; docs/fidelity.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from lavida.models.qwen_processor import SEG_TOKEN

# Category strings come from users and datasets; none may smuggle in a chat or <SEG> token.
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|<SEG>")


def _without_special_tokens(text: str) -> str:
    """``text`` with every chat and ``<SEG>`` token removed, also those that a removal reassembles
    ("<<SEG>SEG>" → "<SEG>" after one pass): removed until nothing changes."""
    while True:
        cleaned = _SPECIAL_TOKEN.sub("", text)
        if cleaned == text:
            return text
        text = cleaned


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered conversation: ``prompt`` (system + user turn + assistant header) and ``answer``.

    The answer (ending in ``<|im_end|>``) is the only supervised part (L_txt).
    """

    prompt: str
    answer: str


@dataclass(frozen=True)
class PromptTemplates:
    """User and answer templates.

    Attributes:
        user: Templates with ``{type}`` ('video' | 'image') and ``{categories}`` fields.
        answer: Answers, each containing ``<SEG>`` exactly once.
        system: The system prompt (Qwen2-VL's default).
        inference_user: Index of the user template used at inference.
        inference_answer: Index of the answer template used at inference; 2 is "Sure, it is <SEG>.",
            the answer of the paper's example prompt (§3.5).
    """

    user: tuple[str, ...]
    answer: tuple[str, ...]
    system: str = "You are a helpful assistant."
    inference_user: int = 0
    inference_answer: int = 2

    def __post_init__(self) -> None:
        if not self.user or not self.answer:
            raise ValueError("PromptTemplates needs at least one user and one answer template.")
        for template in self.user:
            if "{categories}" not in template:
                raise ValueError(f"User template {template!r} has no '{{categories}}' field.")
        for template in self.answer:
            if template.count(SEG_TOKEN) != 1:
                raise ValueError(f"Answer template {template!r} must contain {SEG_TOKEN} exactly once.")
        if not 0 <= self.inference_user < len(self.user) or not 0 <= self.inference_answer < len(self.answer):
            raise ValueError("inference_user / inference_answer index out of range of the templates.")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> PromptTemplates:
        """Read templates from a JSON file (default: the packaged official templates)."""
        if path is None:
            text = resources.files("lavida.data").joinpath("resources/prompt_templates.json").read_text()
            source = "lavida/data/resources/prompt_templates.json"
        else:
            text = Path(path).read_text()
            source = str(path)
        try:
            data = json.loads(text)
            return cls(
                user=tuple(data["user"]), answer=tuple(data["answer"]), system=data["system"], **overrides
            )
        except (KeyError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{source}: expected JSON with lists 'user', 'answer' and a string 'system' ({error})."
            ) from error

    def render(
        self,
        categories: Sequence[str],
        *,
        is_video: bool,
        user_index: int | None = None,
        answer_index: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> ChatPrompt:
        """Fill a template pair with ``categories`` and render it in Qwen's ChatML format.

        Args:
            categories: Category strings, joined with ", " in the given order.
            is_video: Says 'video' or 'image' in the prompt.
            user_index, answer_index: Template indices; None → drawn from ``rng`` if given, else the
                fixed inference pair.
            rng: Random generator for training-time template draws.

        Returns:
            The prompt (up to and including the assistant header) and the answer.
        """
        names = clean_categories(categories)
        if user_index is None:
            user_index = int(rng.integers(len(self.user))) if rng is not None else self.inference_user
        if answer_index is None:
            answer_index = int(rng.integers(len(self.answer))) if rng is not None else self.inference_answer
        question = self.user[user_index].format(
            type="video" if is_video else "image", categories=", ".join(names)
        )
        visual = "<|vision_start|>" + ("<|video_pad|>" if is_video else "<|image_pad|>") + "<|vision_end|>"
        # Qwen2-VL's chat template for one user turn (visual first, then text) and one assistant turn.
        prompt = (
            f"<|im_start|>system\n{self.system}<|im_end|>\n"
            f"<|im_start|>user\n{visual}{question}<|im_end|>\n"
            f"<|im_start|>assistant\n"
        )
        return ChatPrompt(prompt=prompt, answer=self.answer[answer_index] + "<|im_end|>")


def parse_categories(value: str | Sequence[str]) -> list[str]:
    """A command line's categories: ``"fire, fighting"`` or a list → ``["fire", "fighting"]``.

    Raises:
        ValueError: none is given.
    """
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    else:
        names = [str(item).strip() for item in value]
    names = [name for name in names if name]
    if not names:
        raise ValueError(
            f"categories is empty ({value!r}); give at least one, e.g. 'categories=\"fire, fighting\"' "
            "(quoted for the shell and for Hydra)."
        )
    return names


def clean_categories(categories: Sequence[str]) -> list[str]:
    """Strip whitespace and special tokens from category names; drop empty ones; keep order.

    Raises:
        ValueError: if no category is left.
    """
    if isinstance(categories, str):
        raise TypeError("categories must be a sequence of strings, not one string; split it first.")
    names = [_without_special_tokens(str(name)).strip() for name in categories]
    names = [name for name in names if name]
    if not names:
        raise ValueError(
            f"The category list is empty (got {list(categories)!r}); name at least one anomaly category."
        )
    return names
