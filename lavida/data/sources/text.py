"""One normalisation for every description a training source emits (class names and expressions).

The Anomaly Exposure Sampler compares descriptions to keep a present or genuine text out of the
irrelevant ones (``lavida.data.exposure``), so the same thing must always be spelt the same way: the
research notes (train_datasets.md §5.2) fix it as strip, collapse whitespace, drop a trailing period.
Case is kept — the sampler compares case-folded copies — so a dataset's own casing reaches the prompt.
"""

from __future__ import annotations

__all__ = ["normalize_text"]


def normalize_text(text: str) -> str:
    """Strip, collapse runs of whitespace (newlines, tabs) to one space, drop trailing periods.

    Every trailing period goes, not just one, so "a man.." and "a man." both become "a man"; a
    period inside the text ("st. george") is kept. Returns ``""`` for a text with no content; callers
    skip such targets.

    Args:
        text: A class name or referring expression.

    Returns:
        The normalised text.

    Raises:
        TypeError: ``text`` is not a str (e.g. the bytes of an undecoded Python-2 pickle string).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a str description, got {type(text).__name__}: {text!r}")
    return " ".join(text.split()).rstrip(". ").strip()
