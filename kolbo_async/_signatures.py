"""One declaration of a call's parameters, lent to the calls that take the same ones.

A route's request class declares its fields once; the async call, the blocking call and the
raw-response call take exactly those (`arguments_of`). A blocking method takes its async
twin's parameters the same way (`parameters_of`). mypy and IDEs read them from the declaration
(a `ParamSpec`), `inspect.signature` and `help()` from its ``__signature__``, whose
parameters are made when first read: the route classes cost import time (attrs builds them),
so they are loaded then or at the first call, not when the namespaces are defined. The method
itself is not wrapped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

__all__ = ["arguments_of", "parameters_of"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def arguments_of(
    request: Callable[[], Callable[_P, object]],
) -> Callable[[Callable[..., _T]], Callable[Concatenate[Any, _P], _T]]:
    """Give a method ``(self, *args, **kwargs)`` the parameters of a route class.

    `request` returns the class (``lambda: _routes_video.FramesToVideo``), which stays the one
    declaration of a call's parameters: mypy and IDEs read them from its typed ``__init__``
    (attrs'), `inspect.signature` and `help()` from the ``__signature__`` made when first asked.
    """

    def declare(method: Callable[..., _T]) -> Callable[Concatenate[Any, _P], _T]:
        def signature() -> inspect.Signature:
            init = inspect.signature(cast(Any, request()).__init__)  # (self, ...) -> None
            return init.replace(return_annotation=_returns(method))

        return cast("Callable[Concatenate[Any, _P], _T]", _deferred(method, signature))

    return declare


def parameters_of(
    method: Callable[[], Callable[Concatenate[Any, _P], object]],
) -> Callable[[Callable[..., _T]], Callable[Concatenate[Any, _P], _T]]:
    """Give a method ``(self, *args, **kwargs)`` the parameters of another method (its async
    twin, returned by `method`): one declaration of them, the return type the method's own."""

    def declare(target: Callable[..., _T]) -> Callable[Concatenate[Any, _P], _T]:
        def signature() -> inspect.Signature:
            return inspect.signature(method()).replace(return_annotation=_returns(target))

        return cast("Callable[Concatenate[Any, _P], _T]", _deferred(target, signature))

    return declare


def _returns(method: Callable[..., object]) -> Any:
    return method.__annotations__.get("return", inspect.Signature.empty)


def _deferred(
    method: Callable[..., _T], make: Callable[[], inspect.Signature]
) -> Callable[..., _T]:
    cast(Any, method).__signature__ = _Signature(make)
    return method


class _Signature(inspect.Signature):
    """A method's signature, made on its first read: `inspect.signature`, `getfullargspec`,
    `help()` and the rest read ``__signature__`` directly (a `Signature`, as they require),
    and each of its readers goes through ``_parameters`` and ``_return_annotation``."""

    __slots__ = ("_made", "_make")

    def __init__(self, make: Callable[[], inspect.Signature]) -> None:
        self._make = make
        self._made: inspect.Signature | None = None

    def _signature(self) -> inspect.Signature:
        made = self._made
        if made is None:  # two threads may both make it: the same signature either way
            made = self._made = self._make()
        return made

    @property
    def _parameters(self) -> Mapping[str, inspect.Parameter]:
        return self._signature().parameters

    @property
    def _return_annotation(self) -> Any:
        return self._signature().return_annotation

    def replace(self, **changes: Any) -> inspect.Signature:  # type: ignore[override]
        return self._signature().replace(**changes)

    def __reduce__(self) -> Any:
        return self._signature().__reduce__()

    def __repr__(self) -> str:
        return repr(self._signature())
