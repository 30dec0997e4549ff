r"""GRANDE: an ensemble of hard, axis-aligned decision trees learned end to end by gradient descent.

Marton, Lüdtke, Bartelt & Stuckenschmidt, "GRANDE: Gradient-Based Decision Tree Ensembles for
Tabular Data", ICLR 2024. :class:`GrandeNet` is the network (a :class:`~nograd.core.Module` with
forward, backward and jvp by hand); the scikit-learn style estimators that train it are
:class:`~nograd.estimators.grande.GrandeClassifier` and
:class:`~nograd.estimators.grande.GrandeRegressor`.

The network, per estimator ``e`` (a complete tree of depth ``d``, ``N = 2^d - 1`` internal nodes,
``L = 2^d`` leaves, over a random subset ``sub_e`` of ``S`` features):

1. Feature choice (§2–3, GradTree's dense representation with the straight-through argmax): per node, logits :math:`\iota_{en} \in \mathbb R^S` through
   1.5-entmax (or softmax) give :math:`a_{en}`; the straight-through one-hot
   :math:`o = \operatorname{onehot}(\arg\max a)` is used forward, :math:`\partial o/\partial a = I`
   backward.
2. Split (§3.1, the softsign split function): :math:`t = \langle o, \tau_{en}\rangle`, :math:`x_n = \langle o,
   x_{sub_e}\rangle`, :math:`u = t - x_n`, :math:`s = \lfloor(\operatorname{softsign}(u)+1)/2\rceil`
   forward (1 = go left) and the softsign surrogate's derivative :math:`1/(2(1+|u|)^2)` backward.
3. Leaf membership (§3.2, the dense tree as a product over each leaf's path): :math:`p_{l} = \prod_k f_{lk}`, :math:`f = s` on a left turn,
   :math:`1-s` on a right one — one-hot over leaves in the forward pass.
4. Instance-wise estimator weights (§3.3): :math:`w_{be} = \sum_l W_{el}\,p_{bel}`,
   :math:`\omega_b = \operatorname{softmax}_e(w_{b\cdot})`, and the output
   :math:`y_{bc} = \sum_e \omega_{be}\sum_l p_{bel} V_{elc}` (logits for classification).
   Optional dropout in training drops estimators per sample, :math:`k_{be} \sim
   \operatorname{Bernoulli}(1-p)`, and renormalises the kept weights to sum to one,
   :math:`\tilde\omega_{be} = k_{be}\omega_{be} / \sum_{e'} k_{be'}\omega_{be'}` — the softmax
   over the kept estimators — as both reference implementations do (github.com/s-marton/GRANDE,
   ``apply_dropout_leaf`` in TensorFlow and the PyTorch port); a sample with every estimator
   dropped gets zero weights (the PyTorch port's clamped sum).

With ``straight_through=False`` every rounding is replaced by its surrogate (soft one-hot = the
entmax, soft split = the softsign): a smooth model whose gradients can be checked against finite
differences; the straight-through model's backward is that model's backward evaluated at the hard
forward values. The hard routing runs in Numba kernels (:mod:`nograd.kernels.grande`, loaded on
first use); the dense NumPy form (:mod:`nograd.kernels.grande_ref`) serves the soft model, the jvp
and ``backend="numpy"``.

>>> import numpy as np
>>> net = GrandeNet(3, 2, n_estimators=4, depth=2, rng=0)
>>> sorted(net.params)
['estimator_weights', 'feature_logits', 'leaf_values', 'split_values']
>>> net(np.zeros((5, 3), np.float32)).shape
(5, 2)
"""
from __future__ import annotations

import numpy as np

from ..core.checks import (
    as_rng,
    check_array,
    check_dtype,
    check_last_dim,
    check_like,
    check_positive,
)
from ..core.module import Module
from ..layers.entmax import entmax15, entmax15_vjp, softmax, softmax_vjp

__all__ = ["GrandeNet", "subset_size"]


def subset_size(n_features: int, fraction: float) -> int:
    """Features per estimator: ``round(fraction·F)`` clipped to [10, 50] and to F (the reference
    implementation's rule for the paper's ``selected_variables`` = 0.8)."""
    if fraction >= 1.0:
        return n_features
    k = min(max(round(fraction * n_features), 10), 50)
    return max(1, min(k, n_features))


class GrandeNet(Module):
    r"""The GRANDE tree ensemble as a module (see the module docstring for the maths).

    Shapes: ``x (B, F) -> y (B, C)``; params ``split_values (E, N, S)``, ``feature_logits
    (E, N, S)``, ``leaf_values (E, L, C)``, ``estimator_weights (E, L)``; the feature subsets
    ``subsets (E, S)`` are fixed integers (not trained).

    Parameters
    ----------
    n_features, n_outputs : F and C.
    n_estimators, depth : E trees of depth d.
    feature_fraction : share of the features each tree sees (paper default 0.8, see
        :func:`subset_size`).
    selection : ``"entmax"`` (1.5-entmax, the paper's choice) or ``"softmax"``.
    straight_through : hard trees with straight-through gradients (``True``), or the smooth
        surrogate model (``False``).
    dropout : probability of dropping an estimator per sample in training; the kept weights are
        renormalised to sum to one (§3.3 and the reference code; see the module docstring).
    backend : ``"numba"`` (kernels for the hard routing) or ``"numpy"`` (dense reference).
    init_std : standard deviation of the normal initialisation of every array (reference: 0.05).
    """

    def __init__(self, n_features: int, n_outputs: int, *, n_estimators: int = 64, depth: int = 5,
                 feature_fraction: float = 0.8, selection: str = "entmax",
                 straight_through: bool = True, dropout: float = 0.0, backend: str = "numba",
                 init_std: float = 0.05, rng=None, dtype=np.float32):
        super().__init__()
        for v, n in ((n_features, "n_features"), (n_outputs, "n_outputs"),
                     (n_estimators, "n_estimators"), (depth, "depth")):
            check_positive(v, n, integer=True)
        check_positive(feature_fraction, "feature_fraction")
        if feature_fraction > 1:
            raise ValueError(f"feature_fraction must be in (0, 1], got {feature_fraction!r}")
        if selection not in ("entmax", "softmax"):
            raise ValueError(f"selection must be 'entmax' or 'softmax', got {selection!r}")
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        self.n_features, self.n_outputs = int(n_features), int(n_outputs)
        self.n_estimators, self.depth = int(n_estimators), int(depth)
        self.selection, self.straight_through = selection, bool(straight_through)
        self.dropout, self.backend = float(dropout), backend
        E, N, L = self.n_estimators, 2 ** self.depth - 1, 2 ** self.depth
        S = subset_size(self.n_features, float(feature_fraction))
        self.subsets = np.stack([np.sort(rng.choice(self.n_features, S, replace=False))
                                 for _ in range(E)]).astype(np.int64)
        std = float(init_std)
        self._own["split_values"] = (std * rng.standard_normal((E, N, S))).astype(dt)
        self._own["feature_logits"] = (std * rng.standard_normal((E, N, S))).astype(dt)
        self._own["leaf_values"] = (std * rng.standard_normal((E, L, self.n_outputs))).astype(dt)
        self._own["estimator_weights"] = (std * rng.standard_normal((E, L))).astype(dt)

    def extra_repr(self):
        return (f"{self.n_features}, {self.n_outputs}, n_estimators={self.n_estimators}, "
                f"depth={self.depth}, subset={self.subsets.shape[1]}, selection={self.selection!r}, "
                f"straight_through={self.straight_through}")

    def init_thresholds(self, x: np.ndarray, rng=None) -> None:
        """Set every candidate threshold ``split_values[e, n, j]`` to feature ``sub_e[j]`` of a
        random row of ``x`` (each node its own row), so that the initial trees split the data
        where it lies rather than all at 0. Used by the estimators before training."""
        check_array(x, "x", ndim=2)
        check_last_dim(x, self.n_features)
        rng = as_rng(rng)
        T = self._own["split_values"]
        E, N, _S = T.shape
        rows = rng.integers(0, x.shape[0], size=(E, N))
        T[...] = x[rows[:, :, None], self.subsets[:, None, :]].astype(T.dtype)

    # ------------------------------------------------------------------ pieces
    def _select(self, logits):
        return entmax15(logits, -1) if self.selection == "entmax" else softmax(logits, -1)

    def _select_vjp(self, a, d):
        return entmax15_vjp(a, d, -1) if self.selection == "entmax" else softmax_vjp(a, d, -1)

    def _hard_choice(self, a, T):
        """Straight-through one-hot: index ``j (E, N)``, node features and thresholds."""
        j = np.argmax(a, axis=-1)
        E, _N = j.shape
        feat = self.subsets[np.arange(E)[:, None], j]
        thr = np.take_along_axis(T, j[:, :, None], axis=-1)[:, :, 0]
        return j, feat, thr

    def _mask(self, shape, dt, train, rng):
        """The 0/1 keep mask ``k (E, B)``, ``k = U ≥ p`` (one uniform per estimator and sample),
        or None outside training or without dropout."""
        if not train or self.dropout == 0:
            return None
        if rng is None:
            raise ValueError("GrandeNet needs rng= (a numpy Generator or seed) when train=True "
                             "and dropout > 0")
        return (as_rng(rng).random(shape) >= self.dropout).astype(dt)

    @staticmethod
    def _weights(om, mask):
        r"""The estimator weights used: ``ω`` without dropout, else the kept ones renormalised,
        :math:`\tilde ω_{be} = k_{be} ω_{be} / \sum_{e'} k_{be'} ω_{be'}` (0 where a sample kept no
        estimator). Their derivative is the softmax's over the kept estimators, so backward and
        jvp apply :func:`softmax_vjp` to :math:`\tilde ω` (zeros for the dropped)."""
        if mask is None:
            return om
        kept = om * mask
        total = kept.sum(axis=0, keepdims=True)
        return kept / np.where(total > 0, total, 1)

    def _arrays(self, x, params):
        check_array(x, "x", ndim=2)
        check_last_dim(x, self.n_features)
        p = self._use(params)
        dt = x.dtype
        return [p[k].astype(dt, copy=False) for k in
                ("split_values", "feature_logits", "leaf_values", "estimator_weights")]

    # ------------------------------------------------------------------ the three maps
    def forward(self, x, *, train=False, rng=None, params=None):
        T, FL, V, W = self._arrays(x, params)
        a = self._select(FL)
        kernel = self.straight_through and self.backend == "numba"
        if self.straight_through:
            j, feat, thr = self._hard_choice(a, T)
        if kernel:
            from ..kernels import grande as K

            leaf, w = K.route(x, feat, thr, W)
            dense = None
        else:
            from ..kernels import grande_ref as R

            o = a
            if self.straight_through:
                o = np.zeros_like(a)
                np.put_along_axis(o, j[:, :, None], 1, axis=-1)
            w, r, dense = R.dense_forward(x, o, T, self.subsets, W, V, self.straight_through)
        om = softmax(w, axis=0)                                   # over the estimators
        mask = self._mask(w.shape, x.dtype, train, rng)
        om_used = self._weights(om, mask)
        if kernel:
            y = K.combine(om_used, leaf, V)
            route = (feat, thr, leaf, j)
        else:
            y = np.einsum("eb,ebc->bc", om_used, r)
            route = r
        return y.astype(x.dtype, copy=False), (x, a, om, mask, om_used, route, dense)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x, a, om, mask, om_used, route, dense = cache
        check_like(dy, (x.shape[0], self.n_outputs))
        p = self._use(params)
        dt = x.dtype
        T, V, W = (p[k].astype(dt, copy=False) for k in ("split_values", "leaf_values",
                                                          "estimator_weights"))
        dy = dy.astype(dt, copy=False)
        if dense is None:
            from ..kernels import grande as K

            feat, thr, leaf, j = route
            dom = K.leaf_cotangent(dy, leaf, V)
        else:
            dom = np.einsum("bc,ebc->eb", dy, route)
        dw = softmax_vjp(om_used, dom, axis=0)      # over the kept estimators under dropout
        if dense is None:
            dthr, H, dW, dV, dx = K.backward_route(x, feat, thr, self.subsets, W, V, leaf, dw,
                                                    om_used, dy, need_dx)
            do = T * dthr[:, :, None] - H
            dT = np.zeros_like(T)
            np.put_along_axis(dT, j[:, :, None], dthr[:, :, None], axis=-1)
        else:
            from ..kernels import grande_ref as R

            dr = om_used[:, :, None] * dy[None, :, :]
            dx, do, dT, dW, dV = R.dense_backward(dense, dw, dr, need_dx)
        dFL = self._select_vjp(a, do)                             # straight through the one-hot
        grads = {"split_values": dT, "feature_logits": dFL, "leaf_values": dV,
                 "estimator_weights": dW}
        grads = {k: g.astype(p[k].dtype, copy=False) for k, g in grads.items()}
        return (dx.astype(dt, copy=False) if need_dx else None), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        """Forward mode through the dense form (the straight-through linearisation when hard):
        ``dx`` is the input tangent, ``dparams`` the parameter tangents."""
        from ..kernels import grande_ref as R

        T, FL, V, W = self._arrays(x, params)
        dparams = self._tangents(dparams) or {}
        if dx is not None:
            check_like(dx, x.shape, "dx")
        dt = x.dtype
        tan = {k: (None if dparams.get(k) is None else dparams[k].astype(dt, copy=False))
               for k in ("split_values", "feature_logits", "leaf_values", "estimator_weights")}
        a = self._select(FL)
        o = a
        if self.straight_through:
            j = np.argmax(a, axis=-1)
            o = np.zeros_like(a)
            np.put_along_axis(o, j[:, :, None], 1, axis=-1)
        w, r, dense = R.dense_forward(x, o, T, self.subsets, W, V, self.straight_through)
        do = None if tan["feature_logits"] is None else self._select_vjp(a, tan["feature_logits"])
        dw, dr = R.dense_jvp(dense, dx, do, tan["split_values"], tan["estimator_weights"],
                             tan["leaf_values"])
        mask = self._mask(w.shape, dt, train, rng)
        om = self._weights(softmax(w, axis=0), mask)
        dom = softmax_vjp(om, dw, axis=0)                         # softmax's Jacobian is symmetric
        y = np.einsum("eb,ebc->bc", om, r)
        ydot = np.einsum("eb,ebc->bc", dom, r) + np.einsum("eb,ebc->bc", om, dr)
        return y.astype(dt, copy=False), ydot.astype(dt, copy=False)
