"""A function that forwards its arguments gets the signature of what it forwards to.

``fem_operator(F, u, **options)`` returns ``FEMOperator(F, u, **options)``: restating the
class's parameters would keep two lists to update for one idea. :func:`signature_of` gives
the function the class's parameters instead, for type checkers (through a ``ParamSpec``) and
for ``inspect.signature``, ``help()`` and editors (through ``__signature__``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast


def signature_of[**P, R](target: Callable[P, R]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Decorate a function that passes its arguments on to ``target`` unchanged.

    The function keeps its name, docstring and return annotation; its parameters become those
    of ``target`` (a class: those of its ``__init__`` without ``self``).
    """

    def decorate(function: Callable[..., R]) -> Callable[P, R]:
        returns = inspect.signature(function).return_annotation
        cast(Any, function).__signature__ = inspect.signature(target).replace(
            return_annotation=returns
        )
        return cast(Callable[P, R], function)

    return decorate
