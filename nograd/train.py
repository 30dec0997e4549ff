"""The fit loop: epochs of seeded mini-batches through any learning rule, a progress line, a
per-epoch :class:`History`, callbacks (early stopping, checkpoints, epoch lines) and lr schedules.
:func:`evaluate` gives the loss and accuracy of a model on a data set in batches.

The history and the callbacks live in :mod:`nograd.callbacks`, one per file; the names
:class:`History`, :class:`Callback`, :class:`TrainState`, :class:`EarlyStopping`,
:class:`Checkpoint` and :class:`EpochLogger` are re-exported here (the very same classes).

One step is the rule contract (DESIGN.md §3)::

    info = rule.step(model, x, y, optimizer=optimizer, rng=rng)   # info["loss"], info["output"]

by default ``grads, info = rule.grads(...)`` then ``optimizer.step(grads)``; the rule's own arrays
(``rule.params``) are in the same optimizer, as parameter groups.

>>> import numpy as np
>>> from nograd import Adam, Backprop, Linear, ReLU, Sequential
>>> from nograd.data import spirals
>>> X, y = spirals(100, 3, rng=0)
>>> net = Sequential(Linear(2, 32, rng=0), ReLU(), Linear(32, 3, rng=1))
>>> hist = fit(net, Backprop(), Adam(net.params, lr=0.01), (X, y), epochs=5, batch_size=32,
...            rng=0, progress=False)
>>> len(hist), hist["loss"][-1] < hist["loss"][0]
(5, True)
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping

import numpy as np

from .callbacks.base import Callback, TrainState
from .callbacks.checkpoint import Checkpoint
from .callbacks.early_stopping import EarlyStopping
from .callbacks.epoch_logger import EpochLogger
from .callbacks.history import History
from .core.checks import NonFiniteError, as_rng, check_positive
from .core.module import Module
from .data.split import batches, num_batches
from .metrics import predicted_labels

__all__ = ["fit", "evaluate", "predictor", "DivergenceError", "History", "Callback",
           "EarlyStopping", "Checkpoint", "EpochLogger", "TrainState"]

#: consecutive batches whose loss must stay above the divergence threshold before fit stops
DIVERGENCE_RUN = 5


class DivergenceError(FloatingPointError):
    """Training blew up while every number stayed finite: the loss stayed far above where it began
    (see ``divergence`` in :func:`fit`). A ``FloatingPointError`` like
    :class:`~nograd.core.checks.NonFiniteError` (the NaN/inf case), so ``except FloatingPointError``
    — what the command line does — catches both."""


# --------------------------------------------------------------------------- progress line
def _load_tqdm():
    """The ``tqdm`` class when the package is installed, else ``None`` (imported only here)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _fmt_eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class _NoProgress:
    def update(self, epoch, batch, loss, acc):
        pass

    def write(self, text, file):
        print(text, file=file, flush=True)

    def close(self):
        pass


class _PlainProgress(_NoProgress):
    """``\\r``-rewritten line on stderr: epoch, batch, running loss and accuracy, ETA of the run."""

    def __init__(self, stream, epochs, per_epoch):
        self.stream, self.epochs, self.per_epoch = stream, epochs, per_epoch
        self.t0, self.done, self.last, self.width, self.text = time.perf_counter(), 0, 0.0, 0, ""

    def update(self, epoch, batch, loss, acc):
        self.done += 1
        now = time.perf_counter()
        if now - self.last < 0.1 and batch != self.per_epoch:
            return
        self.last = now
        rate = (now - self.t0) / self.done
        eta = rate * (self.epochs * self.per_epoch - self.done)
        acc_s = "" if acc is None else f"  acc {acc:.3f}"
        self._draw(f"epoch {epoch}/{self.epochs}  batch {batch}/{self.per_epoch}  loss {loss:.4f}"
                   f"{acc_s}  ETA {_fmt_eta(eta)}")

    def _draw(self, text):
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width, self.text = len(text), text

    def write(self, text, file):
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
        print(text, file=file, flush=True)
        if self.text:
            self.width = 0
            self._draw(self.text)

    def close(self):
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
        self.width, self.text = 0, ""


class _TqdmProgress(_NoProgress):
    def __init__(self, tqdm, stream, epochs, per_epoch):
        self.tqdm, self.epochs = tqdm, epochs
        self.bar = tqdm(total=epochs * per_epoch, file=stream, unit="batch", leave=False,
                        dynamic_ncols=True)
        self.last = 0.0

    def update(self, epoch, batch, loss, acc):
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last >= 0.1:
            self.last = now
            post = {"loss": f"{loss:.4f}"} if acc is None else {"loss": f"{loss:.4f}",
                                                                  "acc": f"{acc:.3f}"}
            self.bar.set_description(f"epoch {epoch}/{self.epochs}", refresh=False)
            self.bar.set_postfix(post, refresh=False)

    def write(self, text, file):
        self.tqdm.write(text, file=file)

    def close(self):
        self.bar.close()


def _make_progress(progress: bool, epochs: int, per_epoch: int):
    stream = sys.stderr
    if not progress or stream is None or not getattr(stream, "isatty", lambda: False)():
        return _NoProgress()
    tqdm = _load_tqdm()
    if tqdm is not None:
        return _TqdmProgress(tqdm, stream, epochs, per_epoch)
    return _PlainProgress(stream, epochs, per_epoch)


# --------------------------------------------------------------------------- evaluation
def _first_layer(model) -> str:
    """``"; the model's first layer takes F features"`` when its first leaf that is not a reshape
    declares ``dense`` (Linear), else ``""`` — for messages about inputs of the wrong shape."""
    for _, leaf in model.leaves():
        if not leaf.shape_only:
            return (f"; the model's first layer takes {leaf.in_features} features"
                    if leaf.dense else "")
    return ""


def _check_xy(data, name, model=None):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (X, y) of arrays, got {type(data).__name__}")
    X, y = data
    if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must hold numpy arrays (X, y), got ({type(X).__name__}, "
                        f"{type(y).__name__})")
    if X.ndim == 0 or len(X) == 0:
        raise ValueError(f"{name} is empty: X has shape {X.shape}; fit needs at least one sample")
    if X.dtype.kind != "f":
        raise TypeError(f"{name} X must be a float array (float32 or float64), got {X.dtype}")
    if X.ndim == 1:
        raise ValueError(f"{name} X has shape {X.shape}, 1-D, but samples come first: X is "
                         f"(n_samples, features...){'' if model is None else _first_layer(model)}; "
                         f"one sample is X[None], one feature per sample X[:, None]")
    if not np.isfinite(X).all():
        raise NonFiniteError(f"{name} X contains NaN or inf")
    if len(y) != len(X):
        raise ValueError(f"{name} has {len(X)} samples in X but {len(y)} in y; they must match")
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            raise ValueError(f"{name} y of integer labels must be 1-D, got shape {y.shape}")
        if y.min() < 0:
            raise ValueError(f"{name} y has negative labels (min {y.min()})")
    elif y.dtype.kind != "f":
        raise TypeError(f"{name} y must hold integer labels or float targets, got {y.dtype}")
    return X, y


def _labels(y):
    return y if y.ndim == 1 and y.dtype.kind in "iu" else predicted_labels(y, "y")


def _loss_of(rule, loss):
    from .losses import get_loss

    if loss is not None:
        return get_loss(loss), {}
    fn = getattr(rule, "loss", None)
    # a loss function stored on the rule (as Backprop, FA, DFA do), not a method of the rule
    if callable(fn) and getattr(fn, "__self__", None) is not rule:
        return fn, dict(getattr(rule, "loss_options", {}) or {})
    return get_loss("cross-entropy"), {}


def predictor(model, rule=None):
    """The function ``x -> scores (N, C)`` that evaluates ``model``: ``rule.predict(model, x)``
    when the rule defines ``predict`` (Forward-Forward scores every label by its goodness, which a
    plain forward pass cannot do), else ``model(x)`` in evaluation mode."""
    hook = getattr(rule, "predict", None)
    if callable(hook):
        return lambda x: hook(model, x)
    return model


def evaluate(model, X, y, *, loss="cross-entropy", batch_size: int = 1024, loss_options=None,
             predict=None) -> dict:
    """Loss and accuracy of ``model`` (evaluation mode) on ``(X, y)``, in batches of ``batch_size``.

    ``predict`` (optional) maps a batch to scores in place of ``model(x)`` — see :func:`predictor`.
    Returns ``{"loss": float, "accuracy": float}``; the loss is the sample-weighted mean of the
    batch losses (exact for mean-reduced losses).
    """
    from .losses import get_loss

    X, y = _check_xy((X, y), "data", model)
    check_positive(batch_size, "batch_size", integer=True)
    fn = get_loss(loss)
    opts = dict(loss_options or {})
    total, correct = 0.0, 0
    for start in range(0, len(X), batch_size):
        xb, yb = X[start:start + batch_size], y[start:start + batch_size]
        out = model(xb) if predict is None else predict(xb)
        total += fn(out, yb, **opts)[0] * len(xb)
        correct += int(np.sum(predicted_labels(out, "output") == _labels(yb)))
    return {"loss": total / len(X), "accuracy": correct / len(X)}


# --------------------------------------------------------------------------- fit
def _by_name(model, rule, optimizer):
    """A rule and an optimizer from names (``"backprop"``, ``"adam"``) or ``None`` (the rule's
    defaults: ``rule.defaults`` optimizer and lr), or passed through."""
    from .core.optim import get_optimizer
    from .rules import get_rule

    rule = get_rule(rule) if isinstance(rule, str) else rule
    defaults = getattr(rule, "defaults", {}) or {}
    if optimizer is None or isinstance(optimizer, str):
        optimizer = get_optimizer(optimizer or defaults.get("optimizer", "adam"), model.params,
                                  lr=defaults.get("lr", 1e-3), **defaults.get("optimizer_options", {}))
    return rule, optimizer, defaults


def fit(model, rule="backprop", optimizer=None, train=None, *, val=None, epochs=None, batch_size=None,
        rng=None, callbacks=(),
        progress=True, schedule=None, loss=None, eval_batch_size=1024, drop_last=False,
        schedule_every="epoch", divergence=10.0) -> History:
    """Train ``model`` with a learning ``rule`` and an ``optimizer`` for ``epochs`` epochs.

    Parameters
    ----------
    model : a nograd Module.
    rule, optimizer : objects, or names (``"backprop"``, ``"adam"``); ``optimizer=None`` is the
        rule's default optimizer at its default lr (``rule.defaults``), built on ``model.params``.
    rule : a learning rule (:class:`nograd.rules.Rule`); fit calls
        ``rule.step(model, x, y, optimizer=optimizer, rng=rng) -> info`` for every batch (by
        default ``rule.grads`` then ``optimizer.step``). Its ``check_model`` runs first, so a rule
        that cannot train the model fails at once; then ``rule.prepare(model, X[:batch_size])``
        (the rule creates its own arrays, ``rule.params``) and ``rule.add_params_to(optimizer)``:
        those arrays join the optimizer as one parameter group with its default hyper-parameters
        (or the rule's ``param_options()``), so ``schedule`` reaches them too.
    optimizer : built over ``model.params`` — the very arrays, after any ``model.astype`` — or a
        subset of them, and possibly ``rule.params`` (``optimizer.step(grads)`` updates them in
        place). An optimizer over other arrays (another model's, or the ones ``astype`` replaced)
        would train nothing: it is refused with a ``ValueError`` before the first step.
    train, val : pairs ``(X, y)``: float inputs with samples first, and integer labels ``(N,)`` or
        float targets ``(N, C)``. ``val`` (optional) is evaluated after every epoch, through
        ``rule.predict(model, x)`` when the rule has one (see :func:`predictor`).
    epochs, batch_size : positive ints (default: the rule's ``defaults``, else 10 and 64); the last
        batch of an epoch may be smaller.
    drop_last : skip that smaller last batch (batch norm cannot train on a batch of one; without
        ``drop_last`` such a failure is a ``ValueError`` that says so).
    rng : ``np.random.Generator`` or int seed — the batch order and the rule's randomness (dropout
        masks, perturbations) come from it only: same seed, same run. ``None`` draws a fresh seed
        from the OS and records it (an int seed too) in ``history.info["seed"]`` to rerun with.
    callbacks : :class:`Callback` instances, called in order after each epoch.
    progress : draw a progress line (epoch, batch, loss, accuracy, ETA) on stderr — with ``tqdm``
        when installed, a plain ``\\r`` line otherwise — only when stderr is a terminal.
    schedule : an lr schedule from :mod:`nograd.core.optim` (``StepLR``, ``CosineLR``, …) built on
        ``optimizer``; stepped once per epoch, or after every optimizer step with
        ``schedule_every="batch"`` (a schedule whose horizon counts steps, as GRANDE's cosine).
        ``ReduceLROnPlateau`` (``steps_on_metric``) gets ``step(val_loss)`` after each epoch, or
        the epoch's training loss when there is no ``val``.
    loss : the loss for ``val_loss`` (a name or function); default: the rule's own ``loss``
        attribute when it has one, else softmax cross-entropy.
    divergence : a number > 1, or None to turn the check off. With :math:`L_0` the first batch's
        loss (before any update acts on it) and :math:`C` the number of classes, a run whose batch
        loss stays above :math:`\\mathrm{divergence}\\cdot\\max(|L_0|, \\log C)` for
        ``DIVERGENCE_RUN`` (5) batches in a row has blown up — :math:`\\log C` is the
        cross-entropy of a uniform prediction, so a model that starts near zero loss is not held
        to ten times that — and :class:`DivergenceError` is raised naming the epoch and batch.

    Returns a :class:`History`. Divergence — a non-finite loss, output or gradient; the data were
    checked finite on entry — raises :class:`~nograd.core.checks.NonFiniteError` (a
    ``FloatingPointError``) naming the epoch and batch (lower the learning rate); a finite blow-up
    raises :class:`DivergenceError` (also a ``FloatingPointError``, see ``divergence``).
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    if train is None:
        raise TypeError("fit needs the training data: train=(X, y)")
    rule, optimizer, defaults = _by_name(model, rule, optimizer)
    epochs = defaults.get("epochs", 10) if epochs is None else epochs
    batch_size = defaults.get("batch_size", 64) if batch_size is None else batch_size
    seed = int(np.random.SeedSequence().entropy % 2 ** 63) if rng is None else rng
    if not (callable(getattr(rule, "grads", None)) and callable(getattr(rule, "step", None))):
        raise TypeError(f"rule must be a learning rule (a nograd.rules.Rule) with grads(model, x, "
                        f"y, rng=) and step(model, x, y, optimizer=, rng=) methods, "
                        f"got {type(rule).__name__}")
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError(f"optimizer must have a step(grads) method, got {type(optimizer).__name__}")
    X, y = _check_xy(train, "train", model)
    if val is not None:
        Xv, yv = _check_xy(val, "val", model)
        if Xv.shape[1:] != X.shape[1:]:
            raise ValueError(f"val samples have shape {Xv.shape[1:]} but train samples "
                             f"{X.shape[1:]}")
    check_positive(epochs, "epochs", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(eval_batch_size, "eval_batch_size", integer=True)
    rng = as_rng(seed)
    callbacks = tuple(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] must be a nograd.train.Callback, got {type(cb).__name__}")
    if schedule is not None and not callable(getattr(schedule, "step", None)):
        raise TypeError(f"schedule must have a step() method (e.g. nograd.core.optim.StepLR), "
                        f"got {type(schedule).__name__}")
    if schedule_every not in ("epoch", "batch"):
        raise ValueError(f"schedule_every must be 'epoch' or 'batch', got {schedule_every!r}")
    if divergence is not None and (isinstance(divergence, (bool, np.bool_)) or not isinstance(
            divergence, (int, float, np.integer, np.floating)) or not 1 < divergence < math.inf):
        raise ValueError(f"divergence must be a number > 1 (the loss factor that counts as "
                         f"blown up) or None to turn the check off, got {divergence!r}")
    n_classes = (int(y.max()) + 1 if y.dtype.kind in "iu" else y.shape[1] if y.ndim == 2 else 2)
    limit, above = None, 0         # the divergence threshold (set by the first batch), run length
    step_schedule_per_batch = schedule is not None and schedule_every == "batch"
    if step_schedule_per_batch and getattr(schedule, "steps_on_metric", False):
        raise ValueError("schedule_every='batch' cannot drive a schedule that steps on a metric "
                         f"({type(schedule).__name__} steps once per epoch on the val loss)")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    check = getattr(rule, "check_model", None)
    if callable(check):
        check(model)
    _check_optimizer_arrays(model, rule, optimizer)
    for hook, arg in (("prepare", (model, X[:batch_size])), ("add_params_to", (optimizer,))):
        if callable(getattr(rule, hook, None)):        # rule.params exist, then join the optimizer
            getattr(rule, hook)(*arg)
    loss_fn, loss_opts = _loss_of(rule, loss)
    _labels(y)                       # targets that give no labels fail here, not mid-epoch

    history = History()
    if isinstance(seed, (int, np.integer)):
        history.info["seed"] = int(seed)
    if not isinstance(drop_last, (bool, np.bool_)):
        raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
    if drop_last and len(X) < batch_size:
        raise ValueError(f"drop_last=True with batch_size {batch_size} larger than the {len(X)} "
                         f"training samples leaves no batch")
    per_epoch = num_batches(len(X), batch_size, drop_last)
    bar = _make_progress(bool(progress), epochs, per_epoch)
    state = TrainState(model, optimizer, rule, history, epochs, bar)
    t_start = time.perf_counter()
    try:
        for cb in callbacks:
            cb.on_train_begin(state)
        for epoch in range(1, epochs + 1):
            state.epoch = epoch
            t0 = time.perf_counter()
            lr = _current_lr(optimizer)
            loss_sum, correct, seen, counted, extra = 0.0, 0, 0, 0, None
            for b, (xb, yb) in enumerate(batches(X, y, batch_size, rng, drop_last=drop_last), start=1):
                try:             # the rule leaves the weights as they are when the loss is NaN
                    info = rule.step(model, xb, yb, optimizer=optimizer, rng=rng)
                    value = float(info["loss"])
                except NonFiniteError as e:
                    # the data passed the finiteness check above, so NaN/inf here means divergence
                    raise NonFiniteError(f"training diverged at epoch {epoch}, batch {b} ({e}); "
                                         f"lower the learning rate") from e
                except ValueError as e:
                    if len(xb) != 1 or len(X) == 1:
                        raise
                    raise ValueError(f"the last batch of epoch {epoch} holds one sample ({len(X)} "
                                     f"= {per_epoch - 1} × {batch_size} + 1) and the model cannot "
                                     f"train on it ({e}); pass drop_last=True or another "
                                     f"batch_size") from e
                if not math.isfinite(value):
                    raise NonFiniteError(f"training diverged: the loss is {value} at epoch {epoch}, "
                                         f"batch {b}; lower the learning rate")
                if divergence is not None:
                    if limit is None:
                        first = value
                        limit = divergence * max(abs(value), math.log(max(n_classes, 2)))
                    above = above + 1 if value > limit else 0
                    if above == DIVERGENCE_RUN:
                        raise DivergenceError(
                            f"training diverged at epoch {epoch}, batch {b}: the loss ({value:.4g})"
                            f" stayed above {limit:.4g} = {divergence:g} × max(first batch's loss "
                            f"{first:.4g}, log {n_classes} classes) for {DIVERGENCE_RUN} batches "
                            f"in a row; lower the learning rate (fit(divergence=None) turns this "
                            f"check off)")
                if step_schedule_per_batch:
                    schedule.step()
                n = len(xb)
                loss_sum += value * n
                seen += n
                out = info.get("output")
                if out is not None:
                    correct += int(np.sum(predicted_labels(out, "info['output']") == _labels(yb)))
                    counted += n
                extra = info.get("record")        # a rule's own columns (the last batch's values)
                bar.update(epoch, b, loss_sum / seen, correct / counted if counted else None)
            record = {"epoch": epoch, "loss": loss_sum / seen,
                      "train_accuracy": correct / counted if counted else None, "lr": lr}
            if extra:
                record.update({k: float(v) for k, v in extra.items() if k not in record})
            if val is not None:
                ev = evaluate(model, Xv, yv, loss=loss_fn, loss_options=loss_opts,
                              predict=predictor(model, rule),
                              batch_size=eval_batch_size)
                record["val_loss"], record["val_accuracy"] = ev["loss"], ev["accuracy"]
            if schedule is not None and not step_schedule_per_batch:    # plateau: step(val loss)
                schedule.step(*([record.get("val_loss", record["loss"])]
                                if getattr(schedule, "steps_on_metric", False) else []))
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            for cb in callbacks:
                cb.on_epoch_end(state)
            if state.stop:
                break
        for cb in callbacks:
            cb.on_train_end(state)
    finally:
        bar.close()
    history.info["train_seconds"] = time.perf_counter() - t_start
    history.info.setdefault("stopped_epoch", None)
    return history


def _check_optimizer_arrays(model, rule, optimizer) -> None:
    """Refuse an optimizer whose arrays are not, by identity, those of ``model.params`` (or of
    ``rule.params``) of the same names: it was built over another model's params or before
    ``model.astype`` replaced them, and its in-place steps would leave the model as it is. An
    optimizer over a subset is fine (frozen arrays); one without a ``params`` dict is not checked."""
    held = getattr(optimizer, "params", None)
    if not isinstance(held, Mapping):
        return
    live, own = model.params, getattr(rule, "params", None)
    what = "model.params"
    if isinstance(own, Mapping) and own:
        clash = [name for name in own if name in live]
        if clash:
            raise ValueError(f"rule.params and model.params both have {clash}; a rule's own "
                             f"arrays are named 'rule.<...>'")
        live, what = {**own, **live}, "model.params (or rule.params)"
    for name, p in held.items():
        q = live.get(name)
        if q is not p:
            has = ("no array of that name" if q is None else
                   f"another array ({getattr(q, 'dtype', '?')}; the optimizer's is "
                   f"{getattr(p, 'dtype', '?')})")
            raise ValueError(f"optimizer updates params[{name!r}] but {what} has {has}: the "
                             f"optimizer was built over another model's params or before "
                             f"Module.astype replaced the model's arrays, so its steps would not "
                             f"change the model; build it over {what} after any astype")


def _current_lr(optimizer):
    groups = getattr(optimizer, "groups", None)
    if groups:
        lr = groups[0].get("lr")
        return float(lr) if lr is not None else None
    return None
