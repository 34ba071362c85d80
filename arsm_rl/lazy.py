"""Names imported on first use (PEP 562), so that importing a light module of a package does not import the rest."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, namespace: dict[str, Any], homes: dict[str, str], submodules: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """
    A package's module-level ``__getattr__`` and ``__dir__`` (PEP 562).

    :param package: the package's name (``__name__``)
    :param namespace: its ``globals()``, where each name is kept once imported (later lookups skip ``__getattr__``)
    :param homes: public name -> the module that defines it
    :param submodules: modules reachable as attributes, as when the package imported them all
    :return: ``(__getattr__, __dir__)``
    """

    def getattr_(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted([*namespace, *namespace.get("__all__", [])])

    return getattr_, dir_
