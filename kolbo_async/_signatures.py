"""One declaration of a call's parameters, lent to the calls that take the same ones.

A route's request class declares its fields once; the async call, the blocking call and the
raw-response call take exactly those (`arguments_of`). A blocking method takes its async
twin's parameters the same way (`parameters_of`). mypy and IDEs read them from the declaration
(a `ParamSpec`), `inspect.signature` and `help()` from a ``__signature__`` made when first
asked for: the route classes cost import time (attrs builds them), so they are loaded then
or at the first call, not when the namespaces are defined. The method itself is not wrapped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import suppress
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
    # `inspect.signature` follows ``__wrapped__`` until it finds a ``__signature__``: there it
    # finds `_Signature`'s, made on that first read and then set on the method itself. The
    # method stays a plain function in its class (getattr_static, iscoroutinefunction).
    cast(Any, method).__wrapped__ = _Signature(method, make)
    return method


class _Signature:
    """A method's ``__signature__``, made when `inspect.signature` first asks for it."""

    __slots__ = ("_make", "_method")

    def __init__(self, method: Callable[..., object], make: Callable[[], inspect.Signature]):
        self._method = method
        self._make = make

    @property
    def __signature__(self) -> inspect.Signature:
        signature = self._make()
        cast(Any, self._method).__signature__ = signature  # read from the method from now on
        with suppress(AttributeError):  # another thread got here first
            del cast(Any, self._method).__wrapped__
        return signature

    @property
    def __globals__(self) -> dict[str, Any]:
        # `typing.get_type_hints(method)` looks for the module's names at the end of the
        # ``__wrapped__`` chain.
        return cast(Any, self._method).__globals__  # type: ignore[no-any-return]
