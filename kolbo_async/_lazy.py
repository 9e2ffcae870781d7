"""Parts of the package imported on first use, so that `import kolbo_async` stays cheap.

Most of its import time is attrs building classes (about half a millisecond each): the
route classes, the models, the blocking client. A program pays for those it uses, when it
first uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["DeferredModule", "public"]


class DeferredModule:
    """Stands for a module of this package until a name is read from it; then imports it.

    Declare it typed as the module itself, so that mypy checks every name read through it::

        if TYPE_CHECKING:
            from . import _routes_video
        else:
            _routes_video = DeferredModule("_routes_video")

    Each name read is kept on the object: later reads are plain attribute reads.
    """

    def __init__(self, name: str) -> None:
        # "" stands for the package itself: public annotations (``-> kolbo_async.Model``)
        # are read through it by `typing.get_type_hints`, never while modules load.
        self._module = f"kolbo_async.{name}" if name else "kolbo_async"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (copy, inspect) must not import anything
            raise AttributeError(name)
        value = getattr(import_module(self._module), name)
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return f"<deferred module {self._module!r}>"


def public(*names: Callable[..., object]) -> None:
    """Name classes and functions as ``kolbo_async``'s (reprs, tracebacks, pickles), where
    users import them from.

    Called by the modules that define public names loaded on first use; `__init__` renames
    the ones it loads itself.
    """
    for name in names:
        name.__module__ = "kolbo_async"
