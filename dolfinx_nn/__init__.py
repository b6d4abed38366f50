"""dolfinx_nn: PyTorch networks inside DOLFINx forms, DOLFINx solves inside PyTorch autograd.

The bridge:

- :class:`NeuralFunction` evaluates a network at the dof points of a function space
  (Lagrange, DG or a basix quadrature element) and writes a ``dolfinx.fem.Function``;
- :func:`fem_operator` turns a DOLFINx solve (KSP or SNES) into a differentiable torch op
  whose backward pass is one PETSc adjoint solve;
- :class:`NeuralOperator` puts a network of the unknown, ``N(u, grad u, ...)``, inside a
  nonlinear form, with its derivatives in the Newton Jacobian and its parameters in the
  backward pass of :func:`fem_operator`;
- :func:`fem_functional` turns a scalar UFL form into a differentiable torch scalar;
- :func:`sync_gradients`, :func:`global_sum` and :func:`replicated` make data-parallel
  training under MPI exact;
- :func:`taylor_test` checks any of these gradients, :func:`second_order_taylor_test` their
  Hessian-vector products (second derivatives go through a tangent-linear and a second
  adjoint solve).

Tensors exchanged with DOLFINx hold the *owned* dofs of the rank (block size flattened);
ghosts are handled inside. :func:`to_torch` and :func:`from_torch` move values between a
``dolfinx.fem.Function`` and such a tensor.
"""

from dolfinx_nn.environment import check_environment

check_environment()

from dolfinx_nn.conversion import from_torch, to_torch  # noqa: E402
from dolfinx_nn.errors import GradientAccuracyError, SolverError  # noqa: E402
from dolfinx_nn.fem_functional import FEMFunctional, fem_functional  # noqa: E402
from dolfinx_nn.fem_operator import FEMOperator, fem_operator  # noqa: E402
from dolfinx_nn.neural_function import NeuralFunction  # noqa: E402
from dolfinx_nn.neural_operator import NeuralOperator, derivative  # noqa: E402
from dolfinx_nn.parallel import (  # noqa: E402
    global_sum,
    raise_on_all_ranks,
    replicated,
    sync_gradients,
)
from dolfinx_nn.taylor import second_order_taylor_test, taylor_test  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "FEMFunctional",
    "FEMOperator",
    "GradientAccuracyError",
    "NeuralFunction",
    "NeuralOperator",
    "SolverError",
    "derivative",
    "fem_functional",
    "fem_operator",
    "from_torch",
    "global_sum",
    "raise_on_all_ranks",
    "replicated",
    "second_order_taylor_test",
    "sync_gradients",
    "taylor_test",
    "to_torch",
]
