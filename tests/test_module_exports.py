"""Every lavida module's ``__all__`` names what the module defines: ``from lavida.x import *`` (and the
API docs, which list ``__all__``) must not fail on a misspelt or stale name."""

import importlib
import pkgutil

import pytest

import lavida

MODULES = sorted(info.name for info in pkgutil.walk_packages(lavida.__path__, prefix="lavida."))


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_in_their_module(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", [])
    assert [export for export in exported if not hasattr(module, export)] == []
