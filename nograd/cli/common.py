"""What every family of commands shares: the program name, the one-line error type and the parser
that reports argument errors in one line, the argument types, the data/model/training/output
options of ``train`` and ``compare``, and the exit on divergence.

Exit statuses (one place states them, :func:`nograd.cli.main` applies them):

* 0 — the command ran;
* 2 — a mistake in the command line or its inputs (:class:`UserError`, or argparse's own errors
  through :class:`Parser`): one line on stderr, no traceback;
* 1 — training diverged (a loss or an update turned NaN/inf): one line on stderr
  (:func:`exit_diverged`).

Nothing here imports NumPy or the rest of nograd at module level, so ``--help`` stays quick.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

PROG = "python -m nograd"

MEMORY_HELP = ("peak memory is measured with Python's tracemalloc (NumPy reports its array "
               "allocations to it) from model construction to the end of training: parameters, "
               "optimizer state, activations, gradients and batches, not the dataset; "
               "--no-memory turns the tracing (and its small time overhead) off")

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")   # = nograd.core.optim.OPTIMIZERS (tested)


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are the line ``PROG command: error: ...`` alone (no usage
    block) and exit status 2, like a :class:`UserError`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- argument types
def _int_at_least(s, low, what):
    """``s`` as an integer ≥ ``low``; otherwise an ``ArgumentTypeError`` "must be {what}"."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {s}")
    return v


def positive_int(s):
    """``s`` as an integer ≥ 1; otherwise an ``ArgumentTypeError`` that quotes it."""
    return _int_at_least(s, 1, "a positive integer")


def whole_number(s):
    """``s`` as an integer ≥ 0; otherwise an ``ArgumentTypeError`` that quotes it."""
    return _int_at_least(s, 0, "a whole number ≥ 0")


def positive_float(s):
    """``s`` as a finite number > 0; otherwise an ``ArgumentTypeError`` that quotes it."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v


def fraction(s):
    """``s`` as a number strictly between 0 and 1 (a test fraction)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {s!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {s}")
    return v


def target(s):
    """A CSV class column: an index when ``s`` reads as an integer (negative counts from the end),
    otherwise a header name."""
    try:
        return int(s)
    except ValueError:
        return s


# --------------------------------------------------------------------------- shared steps
def user_errors(fn):
    """Call ``fn()`` and return its result, turning the ``ValueError``/``TypeError`` a user's input
    can cause (an unknown name, a malformed file) into a one-line :class:`UserError`."""
    try:
        return fn()
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def exit_diverged(command, message) -> NoReturn:
    """Report a run that turned NaN/inf as the line ``PROG command: message`` on stderr and leave
    with exit status 1 (``SystemExit``)."""
    print(f"{PROG} {command}: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_writable(path, option):
    """Refuse (UserError naming ``option``), before any training time is spent, an output ``path``
    that is a directory, or whose folder does not exist or is not writable. Writability is tried,
    not guessed from mode bits (root, ACLs, read-only mounts): an anonymous temporary file is
    created in the folder and dropped at once, so nothing is left behind."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a directory; give a file name inside it")
    if not os.path.isdir(folder):
        raise UserError(f"{option} {path}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        raise UserError(f"{option} {path}: folder {folder} is not writable") from None


def load_data(args):
    """The dataset named by ``--data`` (with ``--data-dir``, ``--target``, ``--seed`` for the split,
    ``--download``), as :func:`nograd.data.load_dataset` returns it."""
    from ..data import load_dataset

    try:
        return load_dataset(args.data, data_dir=args.data_dir, target=args.target, seed=args.seed,
                            download=args.download, non_numeric=getattr(args, "non_numeric", "error"))
    except ValueError as e:
        raise ValueError(cli_wording(str(e))) from None


def cli_wording(message):
    """A library error message with its advice in command-line terms (``--non-numeric missing``
    for ``non_numeric='missing'``, ``--missing drop`` for ``missing='drop'``)."""
    return (message.replace("load with non_numeric='missing'", "pass --non-numeric missing")
            .replace(" (non_numeric='category' reads such a column as categories)", "")
            .replace("pass missing='drop'", "pass --missing drop"))


def add_non_numeric(p):
    """``--non-numeric {error,missing}``: stray non-numbers in a CSV's numeric column."""
    p.add_argument("--non-numeric", choices=("error", "missing"), default="error",
                   help="a CSV column of numbers with a few other cells (a typo such as 1O8): an error "
                        "naming the column, lines and cells (default), or read those cells as missing")


def hyperparameters(rule_cls, args):
    """The rule's defaults (``rule_cls.hyperparameters()``), overridden by the options the user gave
    (``--optimizer``, ``--lr``, ``--epochs``, ``--batch-size``). Options of the rule's own optimizer
    (``optimizer_options``, e.g. SGD momentum) are dropped when the user picks another optimizer."""
    hp = rule_cls.hyperparameters()
    if args.optimizer is not None and args.optimizer != hp["optimizer"]:
        hp.pop("optimizer_options", None)
    for key in ("optimizer", "lr", "epochs", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            hp[key] = value
    return hp


# --------------------------------------------------------------------------- shared options
def add_common(p):
    """The options ``train`` and ``compare`` share: data and model, training hyper-parameters
    (each left unset means the rule's own default), and output (``--json``, ``--no-memory``)."""
    g = p.add_argument_group("data and model")
    g.add_argument("--data", default="digits", metavar="NAME",
                   help="digits (default, embedded), mnist, fashion-mnist, cifar10, spirals, moons, "
                        "blobs, teacher, csv:PATH or npz:PATH (see `list`)")
    g.add_argument("--target", type=target, default=-1, metavar="COL",
                   help="class column of a CSV: a header name or an index (negative counts from the "
                        "end; default -1, the last column)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder of the mnist / fashion-mnist IDX files or the cifar10 batches")
    g.add_argument("--non-numeric", choices=("error", "missing"), default="error",
                   help="a CSV column of numbers with a few other cells (a typo such as 1O8): an error "
                        "naming the column, lines and cells (default), or read those cells as missing "
                        "and drop their rows")
    g.add_argument("--download", action="store_true",
                   help="let mnist / fashion-mnist fetch missing files (SHA-256 checked) into "
                        "--data-dir or the cache folder")
    g.add_argument("--model", default="mlp", help="a registered model (default mlp; see `list`)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the initial weights and the batch order (default 0)")
    h = p.add_argument_group("training (default: each rule's own defaults, see `list`)")
    h.add_argument("--epochs", type=positive_int)
    h.add_argument("--batch-size", type=positive_int)
    h.add_argument("--lr", type=positive_float, help="learning rate")
    h.add_argument("--optimizer", choices=OPTIMIZERS)
    add_threads(p)
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print JSON only (no table or epoch lines)")
    o.add_argument("--no-memory", action="store_true", help=MEMORY_HELP)


def add_threads(p):
    """``--threads N``: the BLAS threads of the run (default: chosen by :func:`nograd.threads.auto_threads`)."""
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="BLAS threads for the run. Default: one thread for a small training step (every "
                        "built-in model at its defaults), all cores for a step over 20 GFLOP, or what "
                        "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say when set. Results can differ in the "
                        "last digits between thread counts; verbose output names the choice")


def threads_context(args):
    """``(context manager, description)`` for the run's BLAS threads.

    ``--threads N``: :func:`nograd.blas_threads` with ``N``. Without it the automatic choice of
    :func:`nograd.threads.auto_threads` for a small step (one thread unless the environment sets
    the count); a command that builds a large model raises it with :func:`auto_threads_for`.
    The description (a list holding one string, updated in place) names the threads the run used."""
    import contextlib

    from ..threads import auto_threads, blas_threads

    n = getattr(args, "threads", None)
    if n is not None:
        return blas_threads(n), [f"BLAS threads: {n} (--threads)"]
    stack = contextlib.ExitStack()
    described = [""]
    args._threads_stack, args._threads_described = stack, described
    _apply_auto(args, auto_threads(0))
    return stack, described


def _apply_auto(args, choice):
    from ..threads import blas_libraries, blas_threads

    n, reason = choice
    if n is not None:
        args._threads_stack.enter_context(blas_threads(n))
    counts = sorted({lib["threads"] for lib in blas_libraries()})
    shown = counts[0] if len(counts) == 1 else (counts or "unknown")
    args._threads_described[0] = f"BLAS threads: {shown} ({reason}; --threads N to set)"


def step_flops(model, input_shape, batch_size):
    """FLOPs of one training step (forward + backward of a batch) of ``model``: by
    :func:`nograd.metrics.count_flops` where it can walk the model, else ``6 · parameters · rows``
    (rows: the batch times the tokens of a sample, for integer token inputs)."""
    from ..metrics import count_flops

    try:
        f = count_flops(model, input_shape, batch_size=batch_size)
        return f["forward"] + f["backward"]
    except (ValueError, TypeError):
        rows = batch_size
        for d in input_shape:
            rows *= int(d)
        return 6 * model.num_params * rows


def auto_shards_for(args, model, input_shape, batch_size):
    """Without ``--shards`` and ``--threads``, inside :func:`nograd.cli.main`: the shard count for
    backprop's step of ``model`` (:func:`nograd.threads.auto_shards`: the usable cores for a step of
    1 GFLOP or more), ``(k, reason)``; ``(None, reason)`` for the serial step — also for a model with
    running batch statistics it cannot synchronise between the shards (batch norms it can:
    :mod:`nograd.parallel`). ``(None, "")`` when the choice is not the command line's to make."""
    if (getattr(args, "shards", None) is not None or getattr(args, "threads", None) is not None
            or not hasattr(args, "_threads_stack")):
        return None, ""
    from ..parallel import check_shardable
    from ..threads import auto_shards

    try:
        check_shardable(model)
    except ValueError:
        return None, "serial: batch statistics that cannot be synchronised"
    return auto_shards(step_flops(model, input_shape, batch_size))


def auto_sharded_rule(args, rule, model, input_shape, batch_size, quiet=False):
    """``(rule, shards)``: ``Backprop(shards=k)`` with a line saying why when
    :func:`auto_shards_for` picks ``k`` shards for ``model``'s step, else ``(rule, None)``."""
    shards, how = auto_shards_for(args, model, input_shape, batch_size)
    if shards is None:
        return rule, None
    if not quiet:
        print(how, flush=True)
    from ..rules import get_rule

    return get_rule("backprop", shards=shards), shards


def auto_threads_for(args, model, input_shape, batch_size):
    """Without ``--threads``: re-choose the BLAS threads for the training step of ``model`` (all
    cores when it is large, :func:`nograd.threads.auto_threads`). Does nothing with ``--threads``
    or outside :func:`nograd.cli.main` (a command called directly, as the tests do)."""
    if getattr(args, "threads", None) is not None or not hasattr(args, "_threads_stack"):
        return
    from ..threads import auto_threads

    _apply_auto(args, auto_threads(step_flops(model, input_shape, batch_size)))
