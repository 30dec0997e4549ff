"""Testing helpers: gradient checks for any module (hypothesis strategies live in
:mod:`nograd.testing.strategies`, which imports hypothesis)."""
from .gradcheck import FunctionModule, NonSmoothError, check_adjoint, check_jvp, check_vjp

__all__ = ["check_vjp", "check_jvp", "check_adjoint", "FunctionModule", "NonSmoothError"]
