r"""Forward-Forward: every layer learns to tell real from fake data by its own goodness.

Hinton (2022), "The Forward-Forward Algorithm: Some Preliminary Investigations" (arXiv:2212.13345).
Each hidden layer :math:`l` has a *goodness* :math:`G_l(h)` of its activity (§2: the sum of squared
activities, or minus it; Tosato et al. 2023, "Emergent representations in networks trained with the
Forward-Forward algorithm", arXiv:2305.18353, use the L2 norm) and its own loss, with the layer's
input held constant:

.. math::
    L_l = \overline{\operatorname{softplus}(θ - G_l(h^+))}
        + \overline{\operatorname{softplus}(G_l(h^-) - θ)},

the negative log-likelihood of :math:`p(\text{positive}) = σ(G - θ)` (§2, eq. 1), averaged over the
batch. Positive data are images with their true label written into the input; negative data the
same images with a wrong label (§3.3): a random one, or a *hard* one sampled from the softmax head's
prediction on a neutral-label pass, in proportion to the probability it gives each wrong label.
Between layers the activity is length-normalised (§2.1), so a layer cannot pass its goodness on.

The gradient of :math:`L_l` reaches only layer :math:`l`: :math:`\partial L_l/\partial h
= \partial L_l/\partial G \cdot \partial G/\partial h` (:math:`2h`, :math:`-2h` or :math:`h/\|h\|`),
then the layer's own backward (activation, then Linear) — no backward pass through the network.

Prediction (§3.3): run the image once per label and take the label with the largest goodness
accumulated over the layers (all but the first by default), or run it once with a neutral label
(every label entry :math:`1/C`) and read a linear softmax head on the normalised last hidden activity.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_array, check_float, is_int
from ..core.losses import softmax_cross_entropy
from ._layerwise import SeededRule, class_labels, parse_blocks, run_pre, sigmoid, softplus
from .base import Rule, register

__all__ = ["ForwardForward"]

GOODNESS = ("sumsq", "neg-sumsq", "l2")
NEGATIVES = ("random", "hard")
SCHEDULES = ("simultaneous", "greedy")
NORMS = ("rms", "l2", None)
PREDICT_MODES = ("goodness", "softmax")


def _choice(value, options, name):
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def _number(value, name, *, low=None, high=None, allow_low=True):
    check_float(value, name)          # "must be a finite number"
    if low is not None and (value < low or (value == low and not allow_low)):
        raise ValueError(f"{name} must be {'≥' if allow_low else '>'} {low}, got {value!r}")
    if high is not None and value >= high:
        raise ValueError(f"{name} must be < {high}, got {value!r}")
    return float(value)


@register("ff")
class ForwardForward(SeededRule, Rule):
    r"""Forward-Forward (Hinton 2022) with supervised label-in-input positives and negatives.

    Models: ``[Flatten] (Linear, activation)+ Linear`` — the hidden blocks are the FF layers; the
    final Linear (``C`` outputs) is the softmax head of the second prediction mode, trained by
    cross-entropy on the normalised last hidden activity of a neutral-label pass (its input held
    constant, so no error reaches the hidden layers). Anything else raises ``ValueError``.

    The label goes into the input as a one-hot code of height ``label_value``:

    - if the first Linear takes ``d + C`` inputs for ``d`` data features, the code is appended;
    - if it takes ``d``, the code *replaces* ``C`` input features, as Hinton replaces the first 10
      pixels of MNIST (§3.3). ``label_positions="low-variance"`` (default) picks the ``C`` features
      that vary least over the first batch the rule sees (on MNIST those are border pixels that are
      always 0, as Hinton's are); ``"first"`` takes features ``0..C-1``; or give the indices.

    Parameters
    ----------
    goodness : ``"sumsq"`` :math:`\sum_j h_j^2` (§2), ``"neg-sumsq"`` :math:`-\sum_j h_j^2` (§2:
        positive data then get *low* activity), ``"l2"`` :math:`\|h\|_2` (Tosato et al. 2023).
    theta : the threshold θ; default per layer of width ``J``: ``J``, ``-J`` and :math:`\sqrt J`
        (an activity of mean square 1 per unit — what RMS-normalised inputs give at initialisation).
    negatives : ``"random"`` (a uniformly drawn wrong label) or ``"hard"`` (sampled from the head).
    schedule : ``"simultaneous"`` — every layer learns from every batch; ``"greedy"`` — layer
        ``l`` learns during steps ``[l·steps_per_layer, (l+1)·steps_per_layer)`` (the last layer keeps
        learning after that), the others are left out of ``grads`` (nograd optimizers leave absent
        names untouched); the head learns throughout.
    peer_normalization : λ of peer normalisation (0 = off), Hinton's ``lambdamean`` from the
        code released with the paper (``ffnew.m``; he uses 0.03). A running mean
        :math:`μ_j \leftarrow m μ_j + (1-m)\,\overline{h^+_j}` of each unit's positive activity
        (``peer_momentum`` is :math:`m`, his 0.9; :math:`μ` starts at a constant, which cancels
        below) and, added to :math:`\partial L/\partial s_{nj}` of every positive case, where
        :math:`s` is the unit's total input (the Linear's output, *before* the activation):

        .. math:: \frac{2λ}{N}\,(μ_j - \bar μ), \qquad \bar μ = \operatorname{mean}_k μ_k .

        It does not go through the activation's derivative — Hinton's code leaves it ungated on
        purpose — so a unit that never fires still gets it and is pulled back towards the
        layer's mean activity, and a unit that is always on is damped. Scale: per case, Hinton
        ascends :math:`(1-p)h_j + λ(\bar μ - μ_j)` in :math:`s_j`, where :math:`(1-p)h_j` is half
        the exact :math:`\partial \log p/\partial s_j = 2(1-p)h_j`; nograd descends the exact
        gradient of the batch-mean loss, so for ``goodness="sumsq"`` its
        :math:`\partial L/\partial s` is :math:`-2/N` times his, both terms alike, and λ = 0.03
        means his 0.03 (tested against his update). Not the gradient of a loss;
        ``info["peer_loss"]`` reports :math:`λ\sum_j(μ_j - \bar μ)^2`, whose derivative in
        :math:`μ_j` is the term times :math:`N`.
    norm : ``"rms"`` (:math:`h/\sqrt{\overline{h^2}}`, the length scaled so each unit is about 1),
        ``"l2"`` (:math:`h/\|h\|`, Hinton §2.1) or ``None``; ``normalize_input`` applies it to the
        first layer's input too.
    predict_mode : what :meth:`predict` (and so ``fit``'s validation accuracy) uses by default,
        ``"goodness"`` or ``"softmax"``; ``skip_first`` leaves the first hidden layer out of the
        accumulated goodness (§3.3) when there are at least two.
    seed : int; the generator used when ``grads`` is called without ``rng=``.

    State: ``label_positions_`` (chosen on first use), the greedy step count and the peer running
    means live on the rule: use one rule per model. ``grads`` advances the step count and the
    running means, so call it once per training step.
    """

    defaults = {"optimizer": "adam", "lr": 3e-3, "epochs": 60, "batch_size": 64}

    def __init__(self, *, goodness="sumsq", theta=None, negatives="random",
                 schedule="simultaneous", steps_per_layer=None, peer_normalization=0.0,
                 peer_momentum=0.9, norm="rms", normalize_input=True,
                 label_positions="low-variance", label_value=1.0, predict_mode="goodness",
                 skip_first=True, seed=0):
        self.goodness = _choice(goodness, GOODNESS, "goodness")
        self.theta = None if theta is None else _number(theta, "theta")
        self.negatives = _choice(negatives, NEGATIVES, "negatives")
        self.schedule = _choice(schedule, SCHEDULES, "schedule")
        if schedule == "greedy":
            if not is_int(steps_per_layer) or steps_per_layer < 1:
                raise ValueError(f"schedule='greedy' needs steps_per_layer, a positive int "
                                 f"(training steps per layer), got {steps_per_layer!r}")
        elif steps_per_layer is not None:
            raise ValueError("steps_per_layer is for schedule='greedy' only")
        self.steps_per_layer = steps_per_layer
        self.peer_normalization = _number(peer_normalization, "peer_normalization", low=0)
        self.peer_momentum = _number(peer_momentum, "peer_momentum", low=0, high=1)
        self.norm = _choice(norm, NORMS, "norm")
        self.normalize_input = bool(normalize_input)
        if isinstance(label_positions, str):
            _choice(label_positions, ("low-variance", "first"), "label_positions")
            self.label_positions_ = None
        else:
            pos = np.asarray(label_positions)
            if pos.ndim != 1 or pos.dtype.kind not in "iu" or len(set(pos.tolist())) != len(pos):
                raise ValueError(f"label_positions must be 'low-variance', 'first' or distinct "
                                 f"integer indices, got {label_positions!r}")
            self.label_positions_ = pos.astype(np.int64)
        self.label_positions = label_positions
        self.label_value = _number(label_value, "label_value", low=0, allow_low=False)
        self.predict_mode = _choice(predict_mode, PREDICT_MODES, "predict_mode")
        self.skip_first = bool(skip_first)
        self._init_seed(seed)
        self._step = 0
        self._peer: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ the model
    def _net(self, model):
        pre, blocks = parse_blocks(model, "ForwardForward")
        head = blocks[-1]
        if head.acts:
            raise ValueError(f"ForwardForward needs a model that ends with a Linear layer, the "
                             f"softmax head (C outputs, no activation); it ends with "
                             f"{type(head.acts[-1][1]).__name__} at {head.acts[-1][0][:-1]!r}")
        if len(blocks) < 2:
            raise ValueError("ForwardForward needs at least one hidden (Linear, activation) layer "
                             "before the final Linear head")
        if head.linear.out_features < 2:
            raise ValueError("ForwardForward needs at least 2 classes (the head's outputs)")
        return pre, blocks[:-1], head

    def check_model(self, model):
        self._net(model)

    def _prepare(self, model, x):
        """The parsed model and the flattened data ``(N, d)``; fixes how labels are written."""
        pre, hidden, head = self._net(model)
        check_array(x, "x", min_ndim=2)
        x0 = run_pre(pre, x)
        c, d_in = head.linear.out_features, hidden[0].linear.in_features
        if x0.shape[1] + c == d_in:
            mode = "concat"
        elif x0.shape[1] == d_in:
            mode = "replace"
            if d_in < c:
                raise ValueError(f"ForwardForward: {d_in} input features cannot hold a {c}-class "
                                 f"label; give the first Linear {d_in + c} inputs (label appended)")
            self._positions(x0, c)
        else:
            raise ValueError(f"ForwardForward: x has {x0.shape[1]} features per sample; the first "
                             f"Linear must take that many (label written over {c} of them) or "
                             f"{x0.shape[1] + c} (label appended), not {d_in}")
        return hidden, head, x0, mode, c

    def _positions(self, x0, c):
        pos = self.label_positions_
        if pos is None:
            if self.label_positions == "first":
                pos = np.arange(c)
            else:      # the c least-varying features of the first batch seen (stable order)
                pos = np.sort(np.argsort(x0.astype(np.float64).var(axis=0), kind="stable")[:c])
            self.label_positions_ = pos
        if len(pos) != c or pos.min() < 0 or pos.max() >= x0.shape[1]:
            raise ValueError(f"label_positions must be {c} distinct indices in [0, {x0.shape[1]}), "
                             f"got {pos.tolist()}")

    def _embed(self, x0, labels, mode, c):
        """``x0`` with the label code written in: one-hot rows for ``labels`` (N,), neutral
        rows (every entry ``label_value / C``) for ``None``."""
        n = len(x0)
        if labels is None:
            code = np.full((n, c), self.label_value / c, dtype=x0.dtype)
        else:
            code = np.zeros((n, c), dtype=x0.dtype)
            code[np.arange(n), labels] = self.label_value
        if mode == "concat":
            return np.concatenate([x0, code], axis=1)
        out = x0.copy()
        out[:, self.label_positions_] = code
        return out

    # ------------------------------------------------------------------ pieces
    def _normalise(self, h):
        if self.norm is None:
            return h
        sq = np.einsum("ij,ij->i", h, h)[:, None]
        scale = np.sqrt(sq / h.shape[1] if self.norm == "rms" else sq)
        return h / (scale + h.dtype.type(1e-8))

    def _good(self, h):
        ss = np.einsum("ij,ij->i", h, h, dtype=np.float64)
        if self.goodness == "sumsq":
            return ss
        if self.goodness == "neg-sumsq":
            return -ss
        return np.sqrt(ss)

    def _dgood(self, h, g):
        """:math:`\\partial G/\\partial h` for each row."""
        if self.goodness == "sumsq":
            return 2 * h
        if self.goodness == "neg-sumsq":
            return -2 * h
        inv = np.divide(1.0, g, out=np.zeros_like(g), where=g > 0)
        return h * inv[:, None].astype(h.dtype)

    def threshold(self, width: int) -> float:
        """θ for a layer of ``width`` units."""
        if self.theta is not None:
            return self.theta
        defaults = {"sumsq": float(width), "neg-sumsq": -float(width), "l2": math.sqrt(width)}
        return defaults[self.goodness]

    def _states(self, hidden, z):
        """Raw activities of every hidden layer (evaluation mode) and the last normalised one."""
        hs = []
        if self.normalize_input:
            z = self._normalise(z)
        for block in hidden:
            h, _ = block.forward(z, train=False)
            hs.append(h)
            z = self._normalise(h)
        return hs, z

    def _active(self, n_layers):
        if self.schedule == "simultaneous":
            return range(n_layers)
        return [min(self._step // self.steps_per_layer, n_layers - 1)]

    def _wrong_labels(self, labels, logits, c, gen):
        n = len(labels)
        if self.negatives == "random":
            return (labels + gen.integers(1, c, size=n)) % c
        z = logits.astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p[np.arange(n), labels] = 0.0
        total = p.sum(axis=1, keepdims=True)
        p = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / (c - 1))
        p[np.arange(n), labels] = 0.0
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        u = gen.random(n)[:, None]
        neg = np.minimum((cdf < u).sum(axis=1), c - 1)
        clash = neg == labels                 # only at u == 0 with p[0] == 0, or rounding
        if clash.any():
            neg[clash] = (labels[clash] + gen.integers(1, c, size=int(clash.sum()))) % c
        return neg

    # ------------------------------------------------------------------ the rule
    def grads(self, model, x, y, *, rng=None):
        """Descent directions for the active hidden layers and the head; ``info`` has ``loss``
        (the sum of the layers' FF losses), ``layer_losses``, ``head_loss``, ``goodness_pos`` and
        ``goodness_neg`` (batch means per layer), ``peer_loss`` and ``output`` (the head's logits
        on the neutral-label pass)."""
        gen = self._gen(rng)
        hidden, head, x0, mode, c = self._prepare(model, x)
        n = len(x0)
        labels = class_labels(y, n, c, "ForwardForward")
        grads = {}

        # neutral pass: the softmax head (input held constant) and the hard negatives
        _, z_last = self._states(hidden, self._embed(x0, None, mode, c))
        logits, head_cache = head.forward(z_last, train=True)
        head_loss, dlogits = softmax_cross_entropy(logits, labels)
        grads.update(head.backward(head_cache, dlogits)[1])
        wrong = self._wrong_labels(labels, logits, c, gen)

        # positive and negative data side by side, one layer at a time
        z = np.concatenate([self._embed(x0, labels, mode, c), self._embed(x0, wrong, mode, c)])
        if self.normalize_input:
            z = self._normalise(z)
        active = set(self._active(len(hidden)))
        losses, g_pos, g_neg, peer_total = [], [], [], 0.0
        for i, block in enumerate(hidden):
            h, cache = block.forward(z, train=True)
            theta = self.threshold(block.width)
            g = self._good(h)
            gp, gn = g[:n], g[n:]
            losses.append(float(softplus(theta - gp).mean() + softplus(gn - theta).mean()))
            g_pos.append(float(gp.mean()))
            g_neg.append(float(gn.mean()))
            peer_ds, peer_loss = self._peer_term(i, h[:n])
            peer_total += peer_loss
            if i in active:
                dg = np.concatenate([-sigmoid(theta - gp), sigmoid(gn - theta)]) / n
                dh = self._dgood(h, g) * dg[:, None].astype(h.dtype)
                grads.update(self._layer_backward(block, cache, dh, peer_ds))
            z = self._normalise(h)
        self._step += 1
        order = [k for k in model.params if k in grads]
        info = {"loss": float(sum(losses)), "layer_losses": losses, "head_loss": head_loss,
                "goodness_pos": g_pos, "goodness_neg": g_neg, "peer_loss": peer_total,
                "output": logits, "active_layers": sorted(active)}
        return {k: grads[k] for k in order}, info

    def _peer_term(self, layer, h_pos):
        r"""Peer normalisation of ``layer`` (Hinton's ``ffnew.m``): advances the running mean
        :math:`μ` of the positive activity ``h_pos`` (N, J) and returns (the term added to
        :math:`\partial L/\partial s` of each positive case, (N, J) or ``None`` when λ = 0,
        :math:`λ\sum_j(μ_j - \bar μ)^2`)."""
        lam = self.peer_normalization
        if lam == 0:
            return None, 0.0
        m = self.peer_momentum
        batch = h_pos.astype(np.float64).mean(axis=0)
        prev = self._peer.get(layer)
        if prev is not None and prev.shape != batch.shape:
            raise ValueError(f"ForwardForward: peer normalisation keeps running means of "
                             f"{prev.shape[0]} units for hidden layer {layer}, but it now has "
                             f"{batch.shape[0]}; use a new rule per model")
        # μ starts at 0 (Hinton: 0.5); a constant start cancels in μ_j − μ̄
        mu = (1 - m) * batch if prev is None else m * prev + (1 - m) * batch
        self._peer[layer] = mu
        dev = mu - mu.mean()
        term = (2 * lam / len(h_pos)) * dev                 # per positive case, per unit
        return np.broadcast_to(term.astype(h_pos.dtype), h_pos.shape), lam * float(dev @ dev)

    @staticmethod
    def _layer_backward(block, cache, dh, peer_ds=None):
        r"""The block's own backward from :math:`\partial L/\partial h` (2N, J), with the peer term
        added to the first N rows *after* the activations' backward — on :math:`\partial
        L/\partial s`, not gated by :math:`f'(s)` — then the Linear's. Grads keyed like
        ``model.params``."""
        for (_, act), c in zip(reversed(block.acts), reversed(cache[1:])):
            dh, _ = act.backward(c, dh)
        if peer_ds is not None:
            n = len(peer_ds)
            dh = np.concatenate([dh[:n] + peer_ds, dh[n:]])
        _, g = block.linear.backward(cache[0], dh, need_dx=False)
        return {block.prefix + k: v for k, v in g.items()}

    # ------------------------------------------------------------------ prediction and analysis
    def predict(self, model, x, *, mode=None):
        """Class scores ``(N, C)``: with ``mode="goodness"`` the goodness accumulated over the
        hidden layers (all but the first when ``skip_first`` and there are two or more) for each
        label written into the input; with ``"softmax"`` the head's logits on a neutral-label pass.
        ``mode=None`` uses the rule's ``predict_mode``."""
        mode = self.predict_mode if mode is None else _choice(mode, PREDICT_MODES, "mode")
        hidden, head, x0, emb, c = self._prepare(model, x)
        if mode == "softmax":
            _, z_last = self._states(hidden, self._embed(x0, None, emb, c))
            return head.linear(z_last)
        start = 1 if self.skip_first and len(hidden) > 1 else 0
        scores = np.zeros((len(x0), c))
        for label in range(c):
            hs, _ = self._states(hidden, self._embed(x0, np.full(len(x0), label), emb, c))
            for h in hs[start:]:
                scores[:, label] += self._good(h)
        return scores.astype(x0.dtype)

    def hidden_states(self, model, x, y=None):
        """The raw activity of every hidden layer, ``[(N, J_l), ...]``, with the labels ``y``
        written into the input (``None``: the neutral label) — the representations Tosato et al.
        analyse (with the true label)."""
        hidden, head, x0, emb, c = self._prepare(model, x)
        labels = None if y is None else class_labels(y, len(x0), c, "ForwardForward")
        return self._states(hidden, self._embed(x0, labels, emb, c))[0]

    def layer_goodness(self, model, x, y):
        """Goodness of every hidden layer, ``[(N,), ...]``, with labels ``y`` in the input."""
        return [self._good(h) for h in self.hidden_states(model, x, y)]

    def __repr__(self):
        return (f"ForwardForward(goodness={self.goodness!r}, negatives={self.negatives!r}, "
                f"schedule={self.schedule!r}, norm={self.norm!r}, seed={self.seed})")
