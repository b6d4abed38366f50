"""Validation of UFL forms and controls, and the derivative forms the bridge assembles."""

from __future__ import annotations

from collections.abc import Sequence

import dolfinx
import ufl
from ufl.algorithms import expand_derivatives


def check_controls(
    form: ufl.Form,
    controls: Sequence[dolfinx.fem.Function],
    form_name: str,
    exempt: Sequence[bool] | None = None,
) -> list[dolfinx.fem.Function]:
    """Check that every control is a ``fem.Function`` that appears in ``form``.

    ``exempt[i]`` marks controls that need not appear (e.g. Dirichlet data).
    """
    controls = list(controls)
    coefficients = form.coefficients()
    for i, c in enumerate(controls):
        if exempt is not None and exempt[i]:
            continue
        if not isinstance(c, dolfinx.fem.Function):
            raise TypeError(
                f"control {i} must be a dolfinx.fem.Function, got {type(c).__name__}."
            )
        if c not in coefficients:
            names = ", ".join(repr(f.name) for f in coefficients) or "none"
            raise ValueError(
                f"control {i} ({c.name!r}) does not appear in {form_name}; the coefficients of "
                f"{form_name} are: {names}."
            )
    if len({id(c) for c in controls}) != len(controls):
        raise ValueError(f"the controls of {form_name} must be distinct functions.")
    return controls


def is_empty(form: ufl.Form) -> bool:
    """True if ``form`` vanishes identically after expanding derivatives."""
    return expand_derivatives(form).empty()


def gradient_form(
    functional: ufl.Form, control: dolfinx.fem.Function, **compile_options
) -> dolfinx.fem.Form | None:
    """Compile ``d functional / d control`` as a linear form on the control's space.

    Returns ``None`` when the derivative vanishes identically.
    """
    w = ufl.TestFunction(control.function_space)
    dform = ufl.derivative(functional, control, w)
    if is_empty(dform):
        return None
    return dolfinx.fem.form(dform, **compile_options)
