"""Optimizers that update a dict of live arrays in place, and gradient clipping; the lr schedules
of :mod:`nograd.schedules` that drive them are re-exported here.

An optimizer holds parameter groups (name → array, plus hyper-parameters) and applies
``opt.step(grads)`` where ``grads`` maps some of the names to arrays of the same shapes; a name
missing from ``grads`` is not updated in that step. All updates are in place, so passing
``model.params`` trains the model. The grads passed in are never modified.

Cost: after the first step a step allocates nothing. Adam/AdamW update a C-contiguous array in one
fused Numba pass (:mod:`nograd.kernels.adam`); SGD large arrays by the fused ``y += a·x``
(:mod:`nograd.kernels.axpy`), the rest by in-place ufuncs through reused scratch arrays. State keeps
the parameter's dtype; the finiteness check is one ``np.vdot`` per gradient.

>>> import numpy as np
>>> params = {"w": np.array([1.0, 2.0])}
>>> opt = SGD(params, lr=0.1, momentum=0.9)
>>> opt.step({"w": np.array([1.0, -1.0])})
>>> params["w"]
array([0.9, 2.1])
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .checks import FLOAT_DTYPES, NonFiniteError, check_float, check_positive

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm", "get_optimizer", "OPTIMIZERS",
           "StepLR", "CosineLR", "LambdaLR", "schedule", "SCHEDULES"]  # noqa: F822 (__getattr__)

# --------------------------------------------------------------------------- in-place kernels
_FUSED_MIN_SIZE = 1 << 16


def _axpy(a: float, x: np.ndarray, y: np.ndarray, tmp: np.ndarray) -> None:
    """``y += a * x`` in place; ``tmp`` is a scratch array shaped like ``y`` (may be ``x``).

    Large contiguous arrays of one dtype go through the fused Numba kernel
    (:mod:`nograd.kernels.axpy`, one memory pass, both cores); the rest through NumPy ufuncs.
    """
    if a == 0.0:
        return
    if (y.size >= _FUSED_MIN_SIZE and x.dtype == y.dtype and x.flags.c_contiguous
            and y.flags.c_contiguous):
        from ..kernels.axpy import axpy  # lazy: Numba loads on the first large update

        axpy(y.dtype.type(a), x.reshape(-1), y.reshape(-1))
        return
    if a == 1.0:
        np.add(y, x, out=y)
    elif a == -1.0:
        np.subtract(y, x, out=y)
    else:
        np.multiply(x, a, out=tmp)
        np.add(y, tmp, out=y)


def _scal(a: float, y: np.ndarray) -> None:
    """``y *= a`` in place."""
    if a != 1.0:
        np.multiply(y, a, out=y)


def _grad_norm(g: np.ndarray, name: str) -> float:
    """L2 norm of ``g`` (one BLAS dot); :class:`NonFiniteError` if ``g`` holds NaN or inf."""
    s = float(np.vdot(g, g))
    if math.isfinite(s):
        return math.sqrt(s)
    if not np.isfinite(g).all():
        raise NonFiniteError(f"grads[{name!r}] contains NaN or inf")
    g64 = g.astype(np.float64)                      # finite but the squares overflowed
    m = float(np.max(np.abs(g64)))
    g64 /= m
    return m * math.sqrt(float(np.vdot(g64, g64)))


def _total_norm(norms) -> float:
    """``sqrt(sum(n**2))`` without overflow."""
    m = max(norms, default=0.0)
    if m == 0.0 or not math.isfinite(m):
        return m
    return m * math.sqrt(sum((n / m) ** 2 for n in norms))


def clip_grad_norm(grads: Mapping, max_norm) -> tuple[dict, float]:
    """Rescale ``grads`` so their global L2 norm is at most ``max_norm``.

    With :math:`\\|g\\| = \\sqrt{\\sum_k \\|g_k\\|_2^2}` over every array, each array becomes
    :math:`g_k \\cdot \\min(1, c/\\|g\\|)` (Pascanu et al., "On the difficulty of training recurrent
    neural networks", ICML 2013, Alg. 1). Returns ``(clipped, total_norm)``; ``clipped`` is a new
    dict that holds the very same arrays when no scaling is needed and new arrays otherwise — the
    arrays passed in are never modified.
    """
    max_norm = float(check_positive(max_norm, "max_norm"))
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads must be a dict name -> array, got {type(grads).__name__}")
    norms = []
    for name, g in grads.items():
        if not isinstance(g, np.ndarray) or g.dtype not in FLOAT_DTYPES:
            raise TypeError(f"grads[{name!r}] must be a float32 or float64 numpy.ndarray, "
                            f"got {type(g).__name__}")
        norms.append(_grad_norm(g, name))
    total = _total_norm(norms)
    if total <= max_norm:
        return dict(grads), total
    scale = max_norm / total
    return {name: g * g.dtype.type(scale) for name, g in grads.items()}, total


# --------------------------------------------------------------------------- hyper checks
def _check_unit(value, name: str, *, closed: bool = False) -> float:
    """A number in [0, 1) (or [0, 1] when ``closed``)."""
    return check_float(value, name, low=0, high=1, high_open=not closed)


def _check_betas(betas, name: str = "betas") -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    return (_check_unit(betas[0], f"{name}[0]"), _check_unit(betas[1], f"{name}[1]"))


# --------------------------------------------------------------------------- base class
class Optimizer:
    """Parameter groups, gradient validation, clipping; subclasses write :meth:`_update`.

    ``params`` is a dict name → array, or a list of groups
    ``[{"params": {name: array, ...}, "lr": ..., <hyper overrides>}, ...]`` whose values override
    the defaults given as keywords. A name may belong to one group only. ``clip_norm`` (optional)
    rescales the step's gradients to a global L2 norm of at most ``clip_norm`` before the update
    (without copying them).

    An optimizer holds arrays, not a model: :meth:`step` refuses an array made read-only after it
    was built, which is what :meth:`nograd.core.Module.astype` does to the arrays it replaces.

    What a learning rule may use (DESIGN.md §3), instead of reading ``groups`` or testing the
    optimizer's class: :meth:`add_param_group` (a rule's own arrays join the same optimizer, so
    schedules reach them), :meth:`hyper` / :meth:`lr_of` (the hyper-parameters that govern one
    array, the lr as a schedule last set it) and :meth:`plain_sgd` (whether a step on an array is
    plain SGD, which a rule may then apply itself in place, as MeZO does).
    """

    def __init__(self, params, *, lr, clip_norm=None, **hyper):
        self.defaults = {"lr": lr, **hyper}
        self.clip_norm = None if clip_norm is None else float(check_positive(clip_norm, "clip_norm"))
        if isinstance(params, Mapping):
            raw = [{"params": params}]
        elif isinstance(params, (list, tuple)):
            raw = list(params)
        else:
            raise TypeError("params must be a dict name -> array or a list of parameter groups, "
                            f"got {type(params).__name__}")
        if not raw:
            raise ValueError("params is an empty list of parameter groups")
        self.groups: list[dict] = []
        self._where: dict = {}                      # name -> (array, group)
        for i, group in enumerate(raw):
            if not isinstance(group, Mapping) or "params" not in group:
                raise TypeError(f"params[{i}] must be a dict with a 'params' entry, got {group!r}")
            self._add_group(group, f"params[{i}]",
                            "" if isinstance(params, Mapping) else f" (group {i})")
        if not self._where:
            raise ValueError("params holds no arrays; the optimizer has nothing to update")
        self.state: dict = {}
        self._scratch: dict = {}

    def _add_group(self, group: Mapping, label: str, where: str) -> dict:
        """Validate ``group`` (``{"params": {name: array}, <hyper overrides>}``) against the
        defaults and the arrays already held, then append it; nothing changes if it is refused."""
        arrays = group["params"]
        if not isinstance(arrays, Mapping):
            raise TypeError(f"{label}['params'] must be a dict name -> array, "
                            f"got {type(arrays).__name__}")
        resolved = dict(self.defaults)
        for key, value in group.items():
            if key == "params":
                continue
            if key not in self.defaults:
                raise ValueError(f"{label} has unknown hyper-parameter {key!r}; valid: "
                                 f"{', '.join(self.defaults)}")
            resolved[key] = value
        resolved["lr"] = float(check_positive(resolved["lr"], "lr" + where))
        resolved.update(self._check_hyper(resolved, where))
        resolved["initial_lr"] = resolved["lr"]
        resolved["params"] = dict(arrays)
        seen_ids = {id(p): name for name, (p, _) in self._where.items()}
        for name, p in arrays.items():
            if not isinstance(p, np.ndarray) or p.dtype not in FLOAT_DTYPES:
                raise TypeError(f"params[{name!r}] must be a float32 or float64 numpy.ndarray, "
                                f"got {getattr(p, 'dtype', type(p).__name__)}")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only; the optimizer updates in place")
            if name in self._where:
                raise ValueError(f"parameter {name!r} appears in more than one group")
            if id(p) in seen_ids:
                raise ValueError(f"params[{name!r}] is the same array as "
                                 f"params[{seen_ids[id(p)]!r}]")
            seen_ids[id(p)] = name
        for name, p in arrays.items():
            self._where[name] = (p, resolved)
        self.groups.append(resolved)
        return resolved

    def _temp(self, p: np.ndarray, k: int = 0) -> np.ndarray:
        """Scratch array ``k`` shaped like ``p`` (a view of one growing buffer per dtype and k)."""
        buf = self._scratch.get((p.dtype, k))
        if buf is None or buf.size < p.size:
            buf = self._scratch[(p.dtype, k)] = np.empty(p.size, dtype=p.dtype)
        return buf[:p.size].reshape(p.shape)

    # -- subclass hooks
    def _check_hyper(self, group: dict, where: str) -> dict:
        """Validate and normalise a group's hyper-parameters (other than lr)."""
        return {}

    def _update(self, name, p: np.ndarray, g: np.ndarray, group: dict, scale: float) -> None:
        """Update ``p`` in place from ``scale * g``."""
        raise NotImplementedError

    # -- public
    @property
    def params(self) -> dict:
        """Flat dict name → array over every group."""
        return {name: p for name, (p, _) in self._where.items()}

    def add_param_group(self, params: Mapping, **hyper) -> dict:
        """Add ``params`` (name → array) as a new parameter group and return the group.

        ``hyper`` overrides the optimizer's defaults (the keywords it was built with, e.g.
        ``lr``, ``weight_decay``, ``momentum``) for this group only; the group's ``initial_lr`` is
        its lr, so a schedule (which sets every group's lr from its ``initial_lr`` when it steps)
        reaches it from its next step on. Names and arrays already held are refused, as in the
        constructor; a refused group changes nothing.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict name -> array, got {type(params).__name__}")
        if not params:
            raise ValueError("params is empty; a parameter group needs at least one array")
        if "params" in hyper or "initial_lr" in hyper:
            raise TypeError("add_param_group takes the arrays as its first argument and "
                            "hyper-parameters as keywords (initial_lr is the lr)")
        return self._add_group({"params": params, **hyper}, "add_param_group",
                               f" (group {len(self.groups)})")

    def _group_of(self, name) -> dict:
        try:
            return self._where[name][1]
        except (KeyError, TypeError):
            raise ValueError(f"the optimizer holds no parameter {name!r}; it holds "
                             f"{', '.join(map(repr, self._where))}") from None

    def hyper(self, name) -> dict:
        """The hyper-parameters governing ``params[name]``: a copy of its group without the
        arrays — ``lr`` (current, as a schedule last set it), ``initial_lr`` and the optimizer's
        own (``weight_decay``, ``momentum``, ``betas``, ...). ``ValueError`` for an unknown name."""
        return {k: v for k, v in self._group_of(name).items() if k != "params"}

    def lr_of(self, name) -> float:
        """The current learning rate of ``params[name]`` (its group's ``lr``)."""
        return float(self._group_of(name)["lr"])

    def plain_sgd(self, name) -> tuple[float, float] | None:
        """``(lr, weight_decay)`` when one step on ``params[name]`` is exactly
        :math:`\\theta \\leftarrow \\theta - \\eta\\,(g + \\lambda\\theta)` — no state (momentum,
        moments), no clipping — so a rule may apply it itself without materialising ``g`` (MeZO's
        in-place update); ``None`` otherwise. Here ``None``: subclasses that can say yes override it.
        """
        self._group_of(name)
        return None

    def zero_state(self) -> None:
        """Forget momentum/moment buffers and step counts (the lrs are left as they are)."""
        self.state.clear()

    reset = zero_state

    def step(self, grads: Mapping) -> None:
        """Apply one update from ``grads`` (name → array, any subset of the parameter names).
        Every gradient is checked (known name, shape, finite values), and every array it updates
        writeable (not retired by ``Module.astype``), before any array changes."""
        items, scale = self._prepare(grads)
        for name, p, g, group in items:
            self._update(name, p, g, group, scale)

    def _prepare(self, grads: Mapping) -> tuple[list, float]:
        """The checks of :meth:`step`; ``([(name, param, grad, group), ...], clipping scale)``."""
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict name -> array, got {type(grads).__name__}")
        items, norms = [], []
        for name, g in grads.items():
            if name not in self._where:
                hint = ("; a rule's own arrays (rule.params) join with add_param_group, as fit "
                        "does" if str(name).startswith("rule.") else "")
                raise ValueError(f"grads has unknown parameter name {name!r}; the optimizer knows "
                                 f"{', '.join(map(repr, self._where))}{hint}")
            p, group = self._where[name]
            if not isinstance(g, np.ndarray) or g.dtype not in FLOAT_DTYPES:
                raise TypeError(f"grads[{name!r}] must be a float32 or float64 numpy.ndarray, "
                                f"got {getattr(g, 'dtype', type(g).__name__)}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] has shape {g.shape}, expected {p.shape} "
                                 f"like params[{name!r}]")
            if not p.flags.writeable:
                raise ValueError(f"optimizer cannot update params[{name!r}]: it was made read-only "
                                 f"after the optimizer was built, as Module.astype does to the "
                                 f"arrays it replaces (the model now uses new ones); build the "
                                 f"optimizer again over model.params")
            norms.append(_grad_norm(g, name))
            items.append((name, p, g, group))
        scale = 1.0
        if self.clip_norm is not None:
            total = _total_norm(norms)
            if total > self.clip_norm:
                scale = self.clip_norm / total
        return items, scale

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({len(self._where)} arrays in {len(self.groups)} groups, {hyper})"


# --------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

    Same equations as ``torch.optim.SGD`` (Sutskever et al., "On the importance of initialization
    and momentum in deep learning", ICML 2013): :math:`d = g + \\lambda\\theta`;
    :math:`b \\leftarrow \\mu b + (1-\\tau) d` (first step :math:`b = d`); the direction is
    :math:`d + \\mu b` with Nesterov, :math:`b` with momentum, :math:`d` without;
    :math:`\\theta \\leftarrow \\theta - \\eta\\,\\text{direction}`.
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, *, clip_norm=None):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, weight_decay=weight_decay, clip_norm=clip_norm)

    def _check_hyper(self, group, where):
        out = {"momentum": _check_unit(group["momentum"], "momentum" + where),
               "dampening": _check_unit(group["dampening"], "dampening" + where, closed=True),
               "weight_decay": float(check_positive(group["weight_decay"],
                                                    "weight_decay" + where, allow_zero=True))}
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise TypeError(f"nesterov{where} must be a bool, got {group['nesterov']!r}")
        out["nesterov"] = bool(group["nesterov"])
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"nesterov{where} requires momentum > 0 and dampening == 0, got "
                             f"momentum={out['momentum']!r}, dampening={out['dampening']!r}")
        return out

    def plain_sgd(self, name):
        """``(lr, weight_decay)`` of ``params[name]`` when its group has no momentum and the
        optimizer does not clip (then a step is θ ← θ − lr (g + λθ)); ``None`` otherwise."""
        group = self._group_of(name)
        if self.clip_norm is not None or group["momentum"] != 0.0:
            return None
        return float(group["lr"]), float(group["weight_decay"])

    def _update(self, name, p, g, group, scale):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        tmp = self._temp(p)
        if mu == 0.0:                               # θ ← (1 - ηλ) θ - η s g
            _scal(1.0 - lr * wd, p)
            _axpy(-lr * scale, g, p, tmp)
            return
        st = self.state.get(name)
        if st is None:                              # b = s g + λ θ
            buf = np.empty_like(p)
            np.multiply(g, scale, out=buf)
            _axpy(wd, p, buf, tmp)
            self.state[name] = {"step": 1, "momentum_buffer": buf}
        else:                                       # b ← μ b + (1-τ)(s g + λ θ)
            buf = st["momentum_buffer"]
            damp = 1.0 - group["dampening"]
            _scal(mu, buf)
            _axpy(damp * scale, g, buf, tmp)
            _axpy(damp * wd, p, buf, tmp)
            st["step"] += 1
        if group["nesterov"]:                       # θ ← (1 - ηλ) θ - η s g - η μ b
            _scal(1.0 - lr * wd, p)
            _axpy(-lr * scale, g, p, tmp)
            _axpy(-lr * mu, buf, p, tmp)
        else:                                       # θ ← θ - η b
            _axpy(-lr, buf, p, tmp)


# --------------------------------------------------------------------------- Adam / AdamW
class Adam(Optimizer):
    """Adam (Kingma & Ba, "Adam: A method for stochastic optimization", ICLR 2015, Alg. 1).

    With :math:`d = g + \\lambda\\theta` (L2 decay, as ``torch.optim.Adam``) and step count
    :math:`t` per parameter: :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) d`,
    :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) d^2`,
    :math:`\\theta \\leftarrow \\theta - \\frac{\\eta}{1-\\beta_1^t}\\,
    \\frac{m}{\\sqrt{v}/\\sqrt{1-\\beta_2^t} + \\epsilon}`. State is kept in the parameter's dtype;
    a step allocates nothing after the first.
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 clip_norm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm)

    def _check_hyper(self, group, where):
        return {"betas": _check_betas(group["betas"], "betas" + where),
                "eps": float(check_positive(group["eps"], "eps" + where)),
                "weight_decay": float(check_positive(group["weight_decay"],
                                                     "weight_decay" + where, allow_zero=True))}

    def _update(self, name, p, g, group, scale):
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"step": 0, "exp_avg": np.zeros_like(p),
                                     "exp_avg_sq": np.zeros_like(p)}
        st["step"] += 1
        t = st["step"]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        if g.dtype == p.dtype and p.flags.c_contiguous and g.flags.c_contiguous:
            from ..kernels.adam import adam_update  # one fused pass, bit-equal to the ufuncs below
            adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                        kwd=1.0 - lr * wd if self._decoupled else 1.0, scale=scale,
                        l2=0.0 if self._decoupled else wd, b1=b1, b2=b2,
                        bias_c2=math.sqrt(1.0 - b2 ** t), eps=eps, a=-lr / (1.0 - b1 ** t))
            return
        tmp = self._temp(p)
        if self._decoupled:                         # AdamW: θ ← θ (1 - η λ)
            _scal(1.0 - lr * wd, p)
            wd = 0.0
        d = g
        if wd != 0.0 or scale != 1.0:               # d = s g + λ θ
            d = self._temp(p, 1)
            np.multiply(g, scale, out=d)
            _axpy(wd, p, d, tmp)
        _scal(b1, m)                                # m ← β1 m + (1-β1) d
        _axpy(1.0 - b1, d, m, tmp)
        np.multiply(d, d, out=tmp)                  # v ← β2 v + (1-β2) d²
        _scal(b2, v)
        _axpy(1.0 - b2, tmp, v, tmp)
        np.sqrt(v, out=tmp)                         # denom = √v / √(1-β2^t) + ε
        np.divide(tmp, math.sqrt(1.0 - b2 ** t), out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(m, tmp, out=tmp)                  # θ ← θ - η/(1-β1^t) · m / denom
        _axpy(-lr / (1.0 - b1 ** t), tmp, p, tmp)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR 2019, Alg. 2).

    The decay is applied to the weights, not added to the gradient:
    :math:`\\theta \\leftarrow \\theta(1 - \\eta\\lambda)`, then the Adam step with :math:`d = g`
    (as ``torch.optim.AdamW``).
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, *,
                 clip_norm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(name: str, params, **kw) -> Optimizer:
    """Build an optimizer by name, a key of :data:`OPTIMIZERS` (``"sgd"``, ``"adam"``, ``"adamw"``,
    and ``"rmsprop"``, ``"adagrad"``, ``"nadam"``, which :mod:`nograd.optimizers` adds on import)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    return cls(params, **kw)


def __getattr__(name):  # PEP 562: the lr schedules moved to nograd.schedules, looked up there
    if name in ("StepLR", "CosineLR", "LambdaLR", "schedule", "SCHEDULES", "_Schedule"):
        from .. import schedules
        return getattr(schedules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
