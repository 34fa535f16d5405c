"""Prompts for the MLLM (§3.5): templates filled with the anomaly categories, rendered in Qwen's chat format.

The templates are a data file (``resources/prompt_templates.json``: the official release's five user
and five answer templates). Training draws a template pair at random per sample; inference uses one
fixed pair so that evaluation does not depend on a random draw (the official code drew at random at
test time too; docs/fidelity.md).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from lavida.models.qwen_processor import SEG_TOKEN

# Category strings come from users and datasets; none may smuggle in a chat or <SEG> token.
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|<SEG>")
_CHAT_TOKEN = re.compile(r"<\|[^|>]*\|>")


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
            _check_user_template(template)
        for template in self.answer:
            if template.count(SEG_TOKEN) != 1:
                raise ValueError(f"Answer template {template!r} must contain {SEG_TOKEN} exactly once.")
        # The conversation's structure is ours: f_sem is read at the one <SEG> of the answer (Eq. 5) and
        # the labels are the answer after the assistant header. A template that brings its own <SEG> or
        # chat token would fail in the first forward or silently train on another conversation.
        for kind, texts in (("user", self.user), ("answer", self.answer), ("system", (self.system,))):
            for text in texts:
                chat = _CHAT_TOKEN.search(text)
                token = chat.group() if chat else None
                if token is None and kind != "answer" and SEG_TOKEN in text:
                    token = SEG_TOKEN
                if token is not None:
                    raise ValueError(
                        f"The {kind} {'prompt' if kind == 'system' else 'template'} {text!r} contains {token!r}: "
                        f"{SEG_TOKEN} belongs to the answer only (once), and chat tokens <|...|> are added by "
                        "the renderer; remove it."
                    )
        for name, templates in (("inference_user", self.user), ("inference_answer", self.answer)):
            index = getattr(self, name)
            if not 0 <= index < len(templates):
                kind = name.removeprefix("inference_")
                raise ValueError(
                    f"{name}={index} is out of range: there {'is' if len(templates) == 1 else 'are'} "
                    f"{len(templates)} {kind} template{'' if len(templates) == 1 else 's'}. Pass the index of "
                    f"the {kind} template to use at inference, e.g. PromptTemplates.load(path, {name}=0)."
                )

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> PromptTemplates:
        """Read templates from a JSON file (default: the packaged official templates).

        The file holds ``{"user": [str, ...], "answer": [str, ...], "system": str}``. ``overrides`` set
        the other fields, e.g. ``inference_answer=0`` for a file with fewer than three answers.

        Raises:
            ValueError: the file is not in that layout or a template is unusable; names the file.
        """
        if path is None:
            text = (
                resources.files("lavida.data")
                .joinpath("resources/prompt_templates.json")
                .read_text(encoding="utf-8")
            )
            source = "lavida/data/resources/prompt_templates.json"
        else:
            text = Path(path).read_text(encoding="utf-8")
            source = str(path)
        layout = 'a JSON object {"user": [str, ...], "answer": [str, ...], "system": str}'
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error}); expected {layout}.") from error
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected {layout}, got {type(data).__name__}.")
        missing = [key for key in ("user", "answer", "system") if key not in data]
        if missing:
            raise ValueError(f"{source}: missing {missing}; expected {layout}.")
        for key in ("user", "answer"):
            # A bare string would otherwise become a tuple of its characters.
            if not isinstance(data[key], list) or not all(isinstance(item, str) for item in data[key]):
                raise ValueError(
                    f"{source}: '{key}' must be a list of strings, got {type(data[key]).__name__} "
                    f"({data[key]!r}); expected {layout}."
                )
        if not isinstance(data["system"], str):
            raise ValueError(
                f"{source}: 'system' must be a string, got {type(data['system']).__name__}; expected {layout}."
            )
        try:
            return cls(
                user=tuple(data["user"]), answer=tuple(data["answer"]), system=data["system"], **overrides
            )
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

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


_USER_FIELDS = ("type", "categories")  # the fields render() fills in a user template


def _check_user_template(template: str) -> None:
    """Format ``template`` as :meth:`PromptTemplates.render` does, so that a bad field fails on load
    rather than in a dataloader worker mid-training."""
    fields = ", ".join("{" + name + "}" for name in _USER_FIELDS)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        unknown = [name for name in names if name not in _USER_FIELDS]
        if not unknown:
            template.format(type="video", categories="fire")  # also catches conversions such as {type!z}
    except (ValueError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(
            f"User template {template!r} is not a valid format string ({error}); its fields are {fields} "
            "and literal braces are written {{ }}."
        ) from error
    if unknown:
        raise ValueError(
            f"User template {template!r} has an unknown field {{{unknown[0]}}}; the fields are {fields} "
            "(write literal braces as {{ }})."
        )
    if "categories" not in names:
        raise ValueError(f"User template {template!r} has no '{{categories}}' field.")


def parse_categories(value: str | Sequence[str]) -> list[str]:
    """A command line's categories: ``"fire, fighting"`` or a list → ``["fire", "fighting"]``.

    Hydra reads an unquoted number as one (``categories=1984``): it is taken as its text.

    Raises:
        ValueError: none is given, or the value is neither text, a number nor a list.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, Iterable):
        names = [str(item).strip() for item in value]
    else:
        raise ValueError(
            f"categories must be text or a list of texts, got {value!r}; e.g. 'categories=\"fire, fighting\"' "
            "(quoted for the shell and for Hydra)."
        )
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
    if isinstance(categories, (str, bytes)):
        # list("fire") would search for 'f', 'i', 'r' and 'e'.
        text = categories.decode() if isinstance(categories, bytes) else categories
        split = [part.strip() for part in text.split(",") if part.strip()]
        hint = f"[{text!r}]" + (f", or {split!r} for several" if len(split) > 1 else "")
        raise TypeError(
            f"categories must be a list of category names, not one string: got {categories!r}; pass {hint}."
        )
    names = [_without_special_tokens(str(name)).strip() for name in categories]
    names = [name for name in names if name]
    if not names:
        raise ValueError(
            f"The category list is empty (got {list(categories)!r}); name at least one anomaly category."
        )
    return names
