"""Every lavida module's ``__all__`` names what the module defines: ``from lavida.x import *`` (and the
API docs, which list ``__all__``) must not fail on a misspelt or stale name."""

import importlib
import re
from pathlib import Path

import pytest

import lavida

PACKAGE = Path(lavida.__file__).parent


def _modules_with_all() -> list[str]:
    """The dotted names of the modules whose source assigns ``__all__`` (read as text, nothing imported)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if re.search(r"^__all__\s*=", path.read_text(encoding="utf-8"), re.MULTILINE):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_all()


def test_the_modules_with_all_are_found():
    assert "lavida.settings_diff" in MODULES and len(MODULES) >= 30


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_in_their_module(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name}.__all__ is empty"
    assert [export for export in module.__all__ if not hasattr(module, export)] == []
