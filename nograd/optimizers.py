"""More optimizers on the base class of :mod:`nograd.core.optim`: RMSprop, Adagrad and NAdam.

Each follows the update of its ``torch.optim`` namesake exactly (same hyper-parameters, defaults
and order of operations, so a float64 run equals PyTorch's to rounding), and inherits everything
else from :class:`~nograd.core.optim.Optimizer`: parameter groups, ``clip_norm``, gradient
validation before any array changes, in-place updates of the live arrays. State keeps the
parameter's dtype; after the first step a step allocates no array (scratch buffers are reused).

They live outside ``core/`` (whose line budget holds the contract and SGD/Adam/AdamW) and register
themselves in :data:`nograd.core.optim.OPTIMIZERS` when this module is imported — which
``import nograd`` does — so ``get_optimizer("rmsprop", ...)`` finds them while core never imports
upward.

>>> import numpy as np
>>> params = {"w": np.array([1.0, -2.0])}
>>> opt = Adagrad(params, lr=0.5)
>>> opt.step({"w": np.array([3.0, -4.0])})      # first step: θ − lr · g/|g|
>>> params["w"]
array([ 0.5, -1.5])
"""
from __future__ import annotations

import numpy as np

from .core.checks import check_float, check_positive
from .core.optim import OPTIMIZERS, Optimizer, _axpy, _check_betas, _scal

__all__ = ["RMSprop", "Adagrad", "NAdam"]


def _unit(value, name: str) -> float:
    """A number in [0, 1)."""
    return check_float(value, name, low=0, high=1, high_open=True)


def _non_negative(value, name: str) -> float:
    return float(check_positive(value, name, allow_zero=True))


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class _Decayed(Optimizer):
    """Shared step: the L2-decayed, clip-scaled gradient :math:`d = s\\,g + \\lambda\\theta`."""

    def _decayed(self, p, g, wd, scale):
        """``d`` in scratch buffer 1 (``g`` itself when there is nothing to add or scale)."""
        if wd == 0.0 and scale == 1.0:
            return g
        d = self._temp(p, 1)
        np.multiply(g, scale, out=d)
        _axpy(wd, p, d, self._temp(p))
        return d


# --------------------------------------------------------------------------- RMSprop
class RMSprop(_Decayed):
    """RMSprop (Tieleman & Hinton, COURSERA "Neural Networks for Machine Learning", lecture 6.5,
    2012), with the centred variant of Graves ("Generating sequences with recurrent neural
    networks", 2013, eqs. 38–41) and heavy-ball momentum, as ``torch.optim.RMSprop``.

    With :math:`d = g + \\lambda\\theta`: :math:`v \\leftarrow \\alpha v + (1-\\alpha) d^2`;
    centred, also :math:`\\bar g \\leftarrow \\alpha\\bar g + (1-\\alpha) d` and
    :math:`r = \\sqrt{v - \\bar g^2} + \\epsilon`, else :math:`r = \\sqrt{v} + \\epsilon`; with
    momentum :math:`b \\leftarrow \\mu b + d / r`, :math:`\\theta \\leftarrow \\theta - \\eta b`,
    without :math:`\\theta \\leftarrow \\theta - \\eta\\, d / r`. Defaults as PyTorch's.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, clip_norm=None):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, clip_norm=clip_norm)

    def _check_hyper(self, group, where):
        return {"alpha": _unit(group["alpha"], "alpha" + where),
                "eps": float(check_positive(group["eps"], "eps" + where)),
                "weight_decay": _non_negative(group["weight_decay"], "weight_decay" + where),
                "momentum": _unit(group["momentum"], "momentum" + where),
                "centered": _flag(group["centered"], "centered" + where)}

    def _update(self, name, p, g, group, scale):
        lr, alpha, eps, mu = group["lr"], group["alpha"], group["eps"], group["momentum"]
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "square_avg": np.zeros_like(p)}
        st["step"] += 1
        d = self._decayed(p, g, group["weight_decay"], scale)
        tmp, v = self._temp(p), st["square_avg"]
        _scal(alpha, v)                                   # v ← α v + (1-α) d²
        np.multiply(d, d, out=tmp)
        _axpy(1.0 - alpha, tmp, v, tmp)
        if group["centered"]:                             # ḡ ← ḡ + (1-α)(d - ḡ); r = √(v - ḡ²)
            avg = st.setdefault("grad_avg", np.zeros_like(p))
            np.subtract(d, avg, out=tmp)
            _axpy(1.0 - alpha, tmp, avg, tmp)
            np.multiply(avg, avg, out=tmp)
            np.subtract(v, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(v, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(d, tmp, out=tmp)                        # d / r
        if mu > 0:                                        # b ← μ b + d / r; θ ← θ - η b
            buf = st.setdefault("momentum_buffer", np.zeros_like(p))
            _scal(mu, buf)
            np.add(buf, tmp, out=buf)
            _axpy(-lr, buf, p, tmp)
        else:
            _axpy(-lr, tmp, p, tmp)


# --------------------------------------------------------------------------- Adagrad
class Adagrad(_Decayed):
    """Adagrad (Duchi, Hazan & Singer, "Adaptive subgradient methods for online learning and
    stochastic optimization", JMLR 12, 2011, the diagonal update of §1), as ``torch.optim.Adagrad``.

    With :math:`d = g + \\lambda\\theta` and the step count :math:`t` of the array:
    :math:`\\eta_t = \\eta / (1 + (t-1)\\,\\kappa)` (``lr_decay`` :math:`\\kappa`),
    :math:`s \\leftarrow s + d^2` (:math:`s_0` = ``initial_accumulator_value``),
    :math:`\\theta \\leftarrow \\theta - \\eta_t\\, d / (\\sqrt{s} + \\epsilon)`. Defaults as
    PyTorch's. Unlike PyTorch, a group's own ``initial_accumulator_value`` is honoured.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, clip_norm=None):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         clip_norm=clip_norm)

    def _check_hyper(self, group, where):
        return {"lr_decay": _non_negative(group["lr_decay"], "lr_decay" + where),
                "weight_decay": _non_negative(group["weight_decay"], "weight_decay" + where),
                "initial_accumulator_value": _non_negative(group["initial_accumulator_value"],
                                                           "initial_accumulator_value" + where),
                "eps": float(check_positive(group["eps"], "eps" + where))}

    def _update(self, name, p, g, group, scale):
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "sum": np.full_like(
                p, group["initial_accumulator_value"])}
        st["step"] += 1
        clr = group["lr"] / (1.0 + (st["step"] - 1) * group["lr_decay"])
        d = self._decayed(p, g, group["weight_decay"], scale)
        tmp, s = self._temp(p), st["sum"]
        np.multiply(d, d, out=tmp)                        # s ← s + d²
        np.add(s, tmp, out=s)
        np.sqrt(s, out=tmp)                               # θ ← θ - η_t d / (√s + ε)
        np.add(tmp, group["eps"], out=tmp)
        np.divide(d, tmp, out=tmp)
        _axpy(-clr, tmp, p, tmp)


# --------------------------------------------------------------------------- NAdam
class NAdam(_Decayed):
    """NAdam: Adam with Nesterov momentum (Dozat, "Incorporating Nesterov momentum into Adam",
    ICLR 2016 workshop, Alg. 2), with PyTorch's momentum-decay schedule, as ``torch.optim.NAdam``.

    With :math:`d = g + \\lambda\\theta` (or, ``decoupled_weight_decay=True``,
    :math:`\\theta \\leftarrow \\theta(1-\\eta\\lambda)` and :math:`d = g`) and step :math:`t`:
    :math:`\\mu_t = \\beta_1(1 - \\tfrac12\\, 0.96^{t\\psi})` (``momentum_decay`` :math:`\\psi`),
    :math:`\\Pi_t = \\prod_{i \\le t}\\mu_i`, :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) d`,
    :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) d^2`,
    :math:`r = \\sqrt{v / (1-\\beta_2^t)} + \\epsilon`, and

    .. math::

        \\theta \\leftarrow \\theta - \\eta\\,\\frac{1-\\mu_t}{1-\\Pi_t}\\,\\frac{d}{r}
                               - \\eta\\,\\frac{\\mu_{t+1}}{1-\\Pi_t\\,\\mu_{t+1}}\\,\\frac{m}{r}.

    Defaults as PyTorch's.
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, clip_norm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, clip_norm=clip_norm)

    def _check_hyper(self, group, where):
        return {"betas": _check_betas(group["betas"], "betas" + where),
                "eps": float(check_positive(group["eps"], "eps" + where)),
                "weight_decay": _non_negative(group["weight_decay"], "weight_decay" + where),
                "momentum_decay": _non_negative(group["momentum_decay"], "momentum_decay" + where),
                "decoupled_weight_decay": _flag(group["decoupled_weight_decay"],
                                                "decoupled_weight_decay" + where)}

    def _update(self, name, p, g, group, scale):
        lr, wd, psi = group["lr"], group["weight_decay"], group["momentum_decay"]
        b1, b2 = group["betas"]
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "mu_product": 1.0, "exp_avg": np.zeros_like(p),
                                     "exp_avg_sq": np.zeros_like(p)}
        st["step"] += 1
        t = st["step"]
        if group["decoupled_weight_decay"]:
            _scal(1.0 - lr * wd, p)
            wd = 0.0
        d = self._decayed(p, g, wd, scale)
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        st["mu_product"] *= mu
        prod = st["mu_product"]
        tmp, q, m, v = self._temp(p), self._temp(p, 2), st["exp_avg"], st["exp_avg_sq"]
        np.subtract(d, m, out=tmp)                        # m ← m + (1-β1)(d - m)
        _axpy(1.0 - b1, tmp, m, tmp)
        _scal(b2, v)                                      # v ← β2 v + (1-β2) d²
        np.multiply(d, d, out=tmp)
        _axpy(1.0 - b2, tmp, v, tmp)
        np.divide(v, 1.0 - b2 ** t, out=tmp)              # r = √(v / (1-β2^t)) + ε
        np.sqrt(tmp, out=tmp)
        np.add(tmp, group["eps"], out=tmp)
        np.divide(d, tmp, out=q)
        _axpy(-lr * (1.0 - mu) / (1.0 - prod), q, p, q)
        np.divide(m, tmp, out=q)
        _axpy(-lr * mu_next / (1.0 - prod * mu_next), q, p, q)


OPTIMIZERS.update({"rmsprop": RMSprop, "adagrad": Adagrad, "nadam": NAdam})
