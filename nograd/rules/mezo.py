r"""MeZO: memory-efficient zeroth-order SGD, which perturbs the parameters in place and regenerates
the random direction from a seed instead of storing it (S. Malladi, T. Gao, E. Nichani, A. Damian,
J. D. Lee, D. Chen, S. Arora (2023), "Fine-Tuning Language Models with Just Forward Passes",
NeurIPS, §2 (Definition 1: n-SPSA; Definition 2: ZO-SGD) and Algorithm 1).

A step needs the memory of inference when the optimizer's step is plain SGD (see
``bench/memory_zo.py``). The objectives and the parameter choice are shared with SPSA
(:mod:`nograd.rules.zo_common`); :mod:`nograd.rules.zeroth_order` states the central-difference
estimate both rules use.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..core.checks import NonFiniteError, as_rng, check_positive
from ..losses import get_loss
from .base import Rule, register
from .zo_common import (_check_batch, _check_eps, _check_flag, _evaluate, _move_buffers,
                        _no_decay_names, _put_back, _resolve_objective, select_params)

__all__ = ["MeZO"]

_CHUNK = 1 << 16                                   # elements of z drawn at a time
#: sample index of the generator of the statistics pass, ``default_rng([s, _STATS_STREAM, 0])``:
#: no z stream ``[s, j, k]`` reaches it (those have ``j < n``)
_STATS_STREAM = 2 ** 32 - 1


@register("mezo")
class MeZO(Rule):
    r"""MeZO: zeroth-order SGD with in-place perturbations regenerated from a seed
    (Malladi et al. 2023, Algorithm 1).

    One step on a batch :math:`B` with a fresh seed :math:`s` (z is drawn anew from :math:`s` each
    time it is needed, chunk by chunk, and never stored for the whole model):

    .. math::

        \theta \mathrel{+}= \varepsilon z \;\to\; \ell_+ ,\qquad
        \theta \mathrel{-}= 2\varepsilon z \;\to\; \ell_- ,\qquad
        \theta \mathrel{+}= \varepsilon z ,\qquad
        g = \frac{\ell_+ - \ell_-}{2\varepsilon} ,\qquad
        \theta \leftarrow \theta - \eta\,(g\,z + \lambda\,\theta).

    With ``n > 1`` the step is n-SPSA (Definition 1): n seeds probed at the same :math:`\theta`,
    then the update :math:`\theta \leftarrow \theta - \eta(\lambda\theta + \frac1n\sum_j g_j z_j)`.
    The weight decay :math:`\lambda` (not part of Algorithm 1, 0 by default) skips the names in
    ``no_decay`` (default: biases and the parameters of normalisation layers, the usual
    convention). :math:`z \sim \mathcal N(0, I)` in the parameter's dtype,
    drawn from ``np.random.default_rng([s, j, k])`` for sample ``j`` and parameter ``k`` of the
    model, so a parameter's z does not depend on which other parameters are trained.

    **Restoring θ.** In floating point the three in-place additions do not return θ bit for bit:
    :math:`\mathrm{fl}(\mathrm{fl}(\mathrm{fl}(\theta + \delta) - 2\delta) + \delta) \ne \theta`
    for about half of the float32 entries (each off by an ulp or so), and no in-place scheme can
    avoid it in general, because :math:`\theta \mapsto \mathrm{fl}(\theta + \delta)` is not
    injective where :math:`|\theta| \lesssim |\delta|`. The default (``exact_restore=False``) does
    exactly the paper's arithmetic. ``exact_restore=True`` instead restores after each probe
    (θ+δ, back to θ, θ−δ, back to θ) and keeps, for the few entries where
    :math:`\mathrm{fl}(\mathrm{fl}(\theta \pm \delta) \mp \delta) \ne \theta`, their index and
    value, so θ comes back bit for bit; the side table costs 8 bytes per such entry (5.9 % of the
    entries of a 4×4096 MLP at ε = 1e-3: twice the memory of inference there, see
    ``bench/memory_zo.py``; ``info["restore_entries"]`` counts them).

    **Running statistics.** The objective runs in evaluation mode, as in the authors' code (their
    trainer's ``zo_forward`` calls ``model.eval()``): no dropout, and a batch norm normalises with
    its running statistics and leaves them where they are — so the probes alone would freeze them
    for good (issue #19, item 7). With ``update_buffers=True`` (the default) a model that has
    buffers (``model.buffers`` not empty) gets, once per step and before the probes, one
    training-mode pass at the unperturbed θ, kept only for its move of the buffers: the move a
    backprop step's forward pass makes (:math:`m \leftarrow (1-\alpha)m + \alpha\mu_B`,
    :math:`v \leftarrow (1-\alpha)v + \alpha\frac{n_B}{n_B-1}\sigma^2_B`, the moving
    averages that stand for Ioffe & Szegedy 2015, Alg. 2), with dropout masks drawn from the
    step's seed. That costs one forward pass per step (three instead of two when n = 1) and no
    memory beyond a copy of the buffers; a model without buffers — the paper's language models,
    LayerNorm only — runs no extra pass. The move cannot be read off the probes: in evaluation
    mode a batch norm never computes the batch's statistics, and those of a deeper layer depend
    on the layers below normalising by their batch statistics, which differ from the running
    ones by O(1), not O(ε). If the step then fails (a target the loss refuses, a non-finite
    objective), the buffers are put back. ``update_buffers=False`` keeps them as they are (the
    authors' code taken literally: a fine-tune with frozen statistics).

    **Refused batches.** A float ``x`` with NaN or inf, a float ``y`` with NaN or inf and a ``y``
    without one target per sample (``len(y) != len(x)``) are refused before θ is touched, so
    θ stays bit for bit even with the paper's arithmetic. A target the loss refuses for its
    shape alone (``y`` of shape ``(N, 1)`` against ``N×C`` logits) is only found by the
    objective at θ + εz; θ is then restored to an ulp or so (bit for bit with
    ``exact_restore=True``) and not updated.

    **Use.** :meth:`step` is the whole of Algorithm 1, in place (``lr=`` or ``optimizer=``), and
    what :func:`nograd.fit` calls (it overrides :meth:`Rule.step <nograd.rules.base.Rule.step>`).
    It asks the optimizer, through its public API, what a step on each chosen array is:
    when :meth:`~nograd.core.optim.Optimizer.plain_sgd` answers ``(lr, weight_decay)`` — SGD
    without momentum or clipping — the update is done in place with that lr, as the schedule last
    set it, and that weight decay added to λ; with any other optimizer (momentum, Adam, clipping)
    the direction :math:`\frac1n\sum_j g_j z_j + \lambda\theta` is materialised as a dict and
    handed to ``optimizer.step`` (memory of one gradient). :meth:`grads` (the rule contract)
    returns that dict without updating.

    Parameters
    ----------
    loss, **loss_options : the loss of the default objective (evaluation mode, so both probes see
        the same function).
    eps : perturbation scale ε (the paper uses 1e-3).
    n : seeds per step (n-SPSA).
    weight_decay : λ.
    no_decay : ``"auto"``, ``None`` (decay everything), patterns or a callable name -> bool.
    params : the parameters to train (see :func:`select_params`), e.g. ``"4.*"`` for the last layer
        of an MLP; the others are neither perturbed nor updated. Kept as ``param_spec``.
    objective : ``None`` (the loss), ``"zero-one"`` (error rate), a loss name, or a callable
        ``(model, x, y) -> float | (float, output)``, minimised; need not be differentiable.
    exact_restore : see above.
    update_buffers : move the model's buffers (running statistics) once per step; see above.
    seed : seed of the rule's own generator, used when no ``rng`` is given.
    """

    defaults = {"optimizer": "sgd", "lr": 1e-3, "epochs": 100, "batch_size": 64}

    def __init__(self, loss="cross-entropy", *, eps=1e-3, n=1, weight_decay=0.0, no_decay="auto",
                 params=None, objective=None, exact_restore=False, update_buffers=True, seed=0,
                 **loss_options):
        self.eps = _check_eps(eps)
        self.n = int(check_positive(n, "n", integer=True))
        self.weight_decay = float(check_positive(weight_decay, "weight_decay", allow_zero=True))
        if not (no_decay is None or callable(no_decay) or isinstance(no_decay, (str, list, tuple))):
            raise TypeError(f"no_decay must be 'auto', None, patterns or a callable, "
                            f"got {no_decay!r}")
        self.no_decay = no_decay
        self.param_spec = params
        self.loss = get_loss(loss)
        self.loss_options = loss_options
        self.objective = _resolve_objective(objective, loss, loss_options)
        self.exact_restore = _check_flag(exact_restore, "exact_restore")
        self.update_buffers = _check_flag(update_buffers, "update_buffers")
        self._rng = as_rng(seed, "seed")

    # ------------------------------------------------------------------ the chosen arrays
    def _selection(self, model):
        """``[(k, name, array)]``: k is the parameter's index in ``model.params`` (its z stream)."""
        names = set(select_params(model, self.param_spec, who="MeZO"))
        sel = []
        for k, (name, a) in enumerate(model.params.items()):
            if name in names:
                if not a.flags.c_contiguous or not a.flags.writeable:
                    raise ValueError(f"MeZO perturbs parameters in place: {name!r} must be a "
                                     f"writeable C-contiguous array")
                sel.append((k, name, a))
        return sel

    def check_model(self, model):
        self._selection(model)

    @staticmethod
    def _chunks(seed, j, k, flat, buf):
        """Yield ``(start, stop, z)``: z for ``flat[start:stop]``, drawn into ``buf`` in place."""
        gen = np.random.default_rng([seed, j, k])
        for start in range(0, flat.size, _CHUNK):
            stop = min(start + _CHUNK, flat.size)
            z = buf[:stop - start]
            gen.standard_normal(out=z, dtype=flat.dtype)
            yield start, stop, z

    @staticmethod
    def _buffers(sel, count):
        """``count`` scratch vectors of ``_CHUNK`` entries per dtype in use."""
        out = {}
        for _, _, a in sel:
            if a.dtype not in out:
                out[a.dtype] = [np.empty(min(_CHUNK, max(b.size for _, _, b in sel)), a.dtype)
                                for _ in range(count)]
        return out

    def _perturb(self, sel, seed, j, scale):
        """θ += scale · z, in place, z regenerated chunk by chunk."""
        bufs = self._buffers(sel, 1)
        for k, _, p in sel:
            flat, buf = p.reshape(-1), bufs[p.dtype][0]
            s = p.dtype.type(scale)
            for a, b, z in self._chunks(seed, j, k, flat, buf):
                z *= s
                flat[a:b] += z

    def _perturb_exact(self, sel, seed, j, scale):
        """θ += scale · z in place; returns the entries that ``θ − scale · z`` would not restore."""
        bufs = self._buffers(sel, 3)
        kept = []
        for k, _, p in sel:
            flat = p.reshape(-1)
            zb, sb, tb = bufs[p.dtype]
            s = p.dtype.type(scale)
            for a, b, z in self._chunks(seed, j, k, flat, zb):
                z *= s
                th = flat[a:b]
                moved = np.add(th, z, out=sb[:b - a])
                back = np.subtract(moved, z, out=tb[:b - a])
                bad = np.flatnonzero(back != th)
                if bad.size:
                    idx = (bad + a).astype(np.int32 if flat.size < 2 ** 31 else np.int64)
                    kept.append((k, idx, th[bad].copy()))
                th[...] = moved
        return kept

    def _restore_exact(self, sel, seed, j, scale, kept):
        """Undo :meth:`_perturb_exact`: θ −= scale · z, then the kept entries by value."""
        self._perturb(sel, seed, j, -scale)
        by_k = {k: p.reshape(-1) for k, _, p in sel}
        for k, idx, vals in kept:
            by_k[k][idx] = vals

    # ------------------------------------------------------------------ the probes
    def _probe(self, model, x, y, sel, seed):
        """Check the batch, move the buffers (once, at θ), then the ±ε probes of every seed sample
        at the same θ; θ is restored afterwards, and the buffers too if a probe fails."""
        _check_batch(x, y, "MeZO")
        saved = None
        if self.update_buffers:
            saved = _move_buffers(model, x, np.random.default_rng([seed, _STATS_STREAM, 0]))
        try:
            return self._probes(model, x, y, sel, seed)
        except BaseException:
            _put_back(model, saved)
            raise

    def _probes(self, model, x, y, sel, seed):
        """The ±ε probes of every seed sample at the same θ; θ is restored afterwards."""
        coefs, losses, output, entries = [], [], None, 0
        for j in range(self.n):
            vals = []
            if self.exact_restore:
                for sign in (1.0, -1.0):
                    kept = self._perturb_exact(sel, seed, j, sign * self.eps)
                    entries = max(entries, sum(i.size for _, i, _ in kept))
                    try:
                        vals.append(_evaluate(self.objective, model, x, y, "MeZO"))
                    finally:
                        self._restore_exact(sel, seed, j, sign * self.eps, kept)
                    del kept
            else:
                self._perturb(sel, seed, j, self.eps)                 # θ + εz
                at = 1
                try:
                    vals.append(_evaluate(self.objective, model, x, y, "MeZO"))
                    self._perturb(sel, seed, j, -2.0 * self.eps)      # θ − εz
                    at = -1
                    vals.append(_evaluate(self.objective, model, x, y, "MeZO"))
                finally:
                    self._perturb(sel, seed, j, -at * self.eps)       # back to θ
            (lp, op), (lm, om) = vals
            g = (lp - lm) / (2.0 * self.eps)
            if not math.isfinite(g):
                raise NonFiniteError(f"MeZO: the objective is not finite at the perturbed "
                                         f"parameters (l+ = {lp}, l- = {lm}); lower the lr or eps")
            coefs.append(g)
            losses.append(0.5 * (lp + lm))
            if j == 0 and op is not None and om is not None:
                output = (op + om) / 2          # the output at θ, to O(ε²)
        info = {"loss": float(np.mean(losses)), "output": output, "projected_grads": coefs,
                "seed": seed}
        if self.exact_restore:
            info["restore_entries"] = entries
        return coefs, info

    def _seed(self, rng):
        rng = self._rng if rng is None else as_rng(rng)
        return int(rng.integers(0, 2 ** 63 - 1))

    # ------------------------------------------------------------------ updates
    def _decay(self, model):
        skip = _no_decay_names(model, self.no_decay)
        return lambda name: 0.0 if name in skip else self.weight_decay

    def _update_in_place(self, sel, seed, coefs, lr_of, wd_of):
        """θ ← θ − lr (λθ + Σ_j (g_j/n) z_j), chunk by chunk, z regenerated."""
        bufs = self._buffers(sel, 2)
        for k, name, p in sel:
            lr, wd = lr_of(name), wd_of(name)
            if lr == 0.0:
                continue
            flat = p.reshape(-1)
            zb, tb = bufs[p.dtype]
            t = p.dtype.type
            for j, g in enumerate(coefs):
                c = t(g / self.n)
                for a, b, z in self._chunks(seed, j, k, flat, zb):
                    th = flat[a:b]
                    z *= c
                    if j == 0 and wd:
                        z += np.multiply(th, t(wd), out=tb[:b - a])
                    z *= t(lr)
                    th -= z

    def _direction(self, sel, seed, coefs, wd_of):
        """The update direction λθ + Σ_j (g_j/n) z_j as a dict (one array per parameter)."""
        bufs = self._buffers(sel, 1)
        out = {}
        for k, name, p in sel:
            d = np.zeros_like(p)
            flat, buf = d.reshape(-1), bufs[p.dtype][0]
            for j, g in enumerate(coefs):
                c = p.dtype.type(g / self.n)
                for a, b, z in self._chunks(seed, j, k, flat, buf):
                    z *= c
                    flat[a:b] += z
            wd = wd_of(name)
            if wd:
                d += p.dtype.type(wd) * p
            out[name] = d
        return out

    # ------------------------------------------------------------------ public
    def grads(self, model, x, y, *, rng=None):
        """Probe, restore θ, and return the direction dict for the chosen parameters (no update of
        θ; the buffers move once, as in :meth:`step` and as in a backprop step's forward pass)."""
        sel = self._selection(model)
        seed = self._seed(rng)
        coefs, info = self._probe(model, x, y, sel, seed)
        return self._direction(sel, seed, coefs, self._decay(model)), info

    def step(self, model, x, y, *, lr=None, optimizer=None, rng=None):
        """One MeZO step (Algorithm 1): probe, then update θ in place. Returns the info dict.

        Give either ``lr`` (plain ZO-SGD with this rule's weight decay) or ``optimizer`` (any
        optimizer holding the chosen arrays; see *Use* above). The loss being non-finite raises
        :class:`~nograd.core.checks.NonFiniteError` after θ is restored, before any update.
        """
        if (lr is None) == (optimizer is None):
            raise TypeError("MeZO.step needs exactly one of lr= and optimizer=")
        sel = self._selection(model)
        decay = self._decay(model)
        table = None
        if optimizer is not None:
            table = _in_place_rates(optimizer, [name for _, name, _ in sel])
        else:
            lr = float(check_positive(lr, "lr", allow_zero=True))
        seed = self._seed(rng)
        coefs, info = self._probe(model, x, y, sel, seed)
        if optimizer is None:
            self._update_in_place(sel, seed, coefs, lambda name: lr, decay)
        elif table is not None:
            self._update_in_place(sel, seed, coefs, lambda name: table[name][0],
                                  lambda name: decay(name) + table[name][1])
        else:
            optimizer.step(self._direction(sel, seed, coefs, decay))
        if optimizer is not None:
            self.after_step(model, optimizer)
        return info

    def __repr__(self):
        return (f"MeZO(eps={self.eps:g}, n={self.n}, weight_decay={self.weight_decay:g}, "
                f"exact_restore={self.exact_restore}, update_buffers={self.update_buffers})")


def _in_place_rates(optimizer, names):
    """``{name: (lr, weight_decay)}`` when a step of ``optimizer`` on every one of ``names`` is plain
    SGD (its :meth:`~nograd.core.optim.Optimizer.plain_sgd` says so), else ``None``: then MeZO hands
    it the direction. An optimizer that does not hold one of the names is refused at once."""
    held = getattr(optimizer, "params", None)
    if isinstance(held, Mapping):
        missing = [name for name in names if name not in held]
        if missing:
            raise ValueError(f"MeZO: the optimizer does not hold parameters {missing}; build it "
                             f"over model.params")
    probe = getattr(optimizer, "plain_sgd", None)
    if not callable(probe):
        return None
    table = {}
    for name in names:
        rates = probe(name)
        if rates is None:
            return None
        table[name] = rates
    return table
