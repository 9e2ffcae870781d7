"""One declaration of a call's parameters, lent to the calls that take the same ones.

A route's request class declares its fields once; the async call, the blocking call and the
raw-response call take exactly those (`arguments_of`). A blocking method takes its async
twin's parameters the same way (`parameters_of`). mypy and IDEs read them from the declaration
(a `ParamSpec`), `inspect.signature` and `help()` from the ``__signature__`` set here; the method
itself is returned as it is, with no wrapper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

__all__ = ["arguments_of", "parameters_of"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def arguments_of(
    request: Callable[_P, object],
) -> Callable[[Callable[..., _T]], Callable[Concatenate[Any, _P], _T]]:
    """Give a method ``(self, *args, **kwargs)`` the parameters of a route class.

    The class stays the one declaration of a call's parameters: mypy and IDEs read them from
    its typed ``__init__`` (attrs'), `inspect.signature` and `help()` from the
    ``__signature__`` set here. The method is returned as it is, with no wrapper.
    """

    def declare(method: Callable[..., _T]) -> Callable[Concatenate[Any, _P], _T]:
        init = inspect.signature(cast(Any, request).__init__)  # (self, ...) -> None
        returns = method.__annotations__.get("return", inspect.Signature.empty)
        cast(Any, method).__signature__ = init.replace(return_annotation=returns)
        return method

    return declare


def parameters_of(
    method: Callable[Concatenate[Any, _P], object],
) -> Callable[[Callable[..., _T]], Callable[Concatenate[Any, _P], _T]]:
    """Give a method ``(self, *args, **kwargs)`` the parameters of another method (its async
    twin): one declaration of them, the return type the method's own."""

    def declare(target: Callable[..., _T]) -> Callable[Concatenate[Any, _P], _T]:
        returns = target.__annotations__.get("return", inspect.Signature.empty)
        signature = inspect.signature(method).replace(return_annotation=returns)
        cast(Any, target).__signature__ = signature
        return target

    return declare
