"""Figures for the examples, the benchmarks and the command line, written straight to PNG files.

Every function takes plain numbers (lists, arrays, dicts of them — a
:class:`~nograd.train.History` works wherever a table of columns is asked for), draws one figure
and writes it to ``path``; nothing is shown on screen and no global state of matplotlib is touched
(figures are built with the object API, :class:`matplotlib.figure.Figure`, never ``pyplot``).

- :func:`learning_curves` — test accuracy and training loss per epoch, one line per run (rule);
- :func:`alignment_curves` — angle between a rule's update and the true gradient per epoch, a panel
  per layer (Lillicrap et al. 2016, Fig. 2; Nøkland 2016);
- :func:`sparsity_histograms` — per-sample Hoyer sparsity, a panel per layer, one histogram per
  network (Tosato et al. 2023, Fig. 3);
- :func:`grouped_bars` — one group of bars per dataset, one bar per model, optional error bars;
- :func:`line_plot` — any set of ``(x, y)`` series, optionally on log axes (timings against size);
- :func:`image_grid` — a grid of images (samples of a generative model).

matplotlib is an optional dependency (``pip install 'nograd[plot]'``), imported inside the
functions: ``import nograd`` never loads it. Without it every function, and :func:`plot_dir`
which scripts call *before* any training, raise an :class:`ImportError` that says how to install
it. A figure is written to a temporary file in the same folder and renamed, so a failed write
never leaves half a PNG in place of a good one.
"""
from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping

import numpy as np

__all__ = ["MISSING_MESSAGE", "require_matplotlib", "plot_dir", "learning_curves",
           "alignment_curves", "sparsity_histograms", "grouped_bars", "line_plot", "image_grid"]

#: the one line shown when matplotlib is absent
MISSING_MESSAGE = "plotting needs matplotlib, which is not installed: pip install 'nograd[plot]'"

DPI = 100


def require_matplotlib(option: str | None = None):
    """Import and return :mod:`matplotlib`; raise ``ImportError`` with :data:`MISSING_MESSAGE`
    (prefixed by ``option``, e.g. ``"--plot"``, when given) if it is not installed."""
    try:
        import matplotlib
    except ImportError:
        prefix = f"{option}: " if option else ""
        raise ImportError(prefix + MISSING_MESSAGE) from None
    return matplotlib


def plot_dir(path, option: str = "--plot") -> str:
    """Make ready the folder a script writes its figures to, before any work is done.

    Checks that matplotlib can be imported (``ImportError`` naming ``option`` and the install
    command otherwise), creates ``path`` with its parents when missing, and checks that a file
    can be created in it (``ValueError`` naming ``option`` when ``path`` is a file or not
    writable). Returns the absolute path of the folder."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{option} must be a folder name, got {path!r}")
    require_matplotlib(option)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a file; give a folder (figures are written "
                         f"into it as <name>.png)")
    try:
        os.makedirs(path, exist_ok=True)
        import tempfile

        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    return path


# --------------------------------------------------------------------------- helpers
def _figure(width, height, layout="constrained"):
    """A new :class:`~matplotlib.figure.Figure` of ``width × height`` inches (``DPI`` pixels per
    inch when saved), with constrained layout unless ``layout=None``, without pyplot."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def _save(fig, path) -> str:
    """Write ``fig`` as PNG to ``path`` through a temporary file in the same folder; return the
    path. ``ValueError`` naming ``path`` when its folder does not exist."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path {path!r}: folder {folder!r} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:                                    # open(): the umask's permissions, unlike mkstemp's 0600
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _series(values, name) -> np.ndarray:
    """A 1-D float64 array of ``values`` (``None`` becomes NaN); ``ValueError`` naming ``name``
    when empty or not one-dimensional."""
    try:
        a = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {a.shape}")
    return a


def _mapping(x, name):
    if not isinstance(x, Mapping) or not x:
        raise ValueError(f"{name} must be a non-empty mapping, got {type(x).__name__}"
                         + (" (empty)" if isinstance(x, Mapping) else ""))
    return x


def _column(run, key, label):
    try:
        return run[key]
    except (KeyError, TypeError, IndexError):
        raise ValueError(f"runs[{label!r}] has no column {key!r}") from None


# --------------------------------------------------------------------------- figures
def learning_curves(runs, path, *, title: str | None = None,
                    accuracy_key: str = "val_accuracy", loss_key: str = "loss") -> str:
    """Test accuracy (left) and training loss (right) against epoch, one line per run.

    ``runs`` maps a label (a rule's name) to a table of columns — a :class:`~nograd.train.History`
    or a dict of lists — holding ``"epoch"``, ``accuracy_key`` (default ``"val_accuracy"``, the
    held-out accuracy :func:`~nograd.fit` records with ``val=``) and ``loss_key`` (default
    ``"loss"``, the epoch's mean training loss), all of one length. The loss is the rule's own
    objective (Forward-Forward's goodness loss is not a cross-entropy), drawn on a log axis when
    every value is positive. Figure 10 × 3.8 in at 100 dpi (1000 × 380 px). Returns ``path``."""
    _mapping(runs, "runs")
    data = {}
    for label, run in runs.items():
        ep = _series(_column(run, "epoch", label), f"runs[{label!r}]['epoch']")
        acc = _series(_column(run, accuracy_key, label), f"runs[{label!r}][{accuracy_key!r}]")
        loss = _series(_column(run, loss_key, label), f"runs[{label!r}][{loss_key!r}]")
        if not len(ep) == len(acc) == len(loss):
            raise ValueError(f"runs[{label!r}]: epoch, {accuracy_key} and {loss_key} have lengths "
                             f"{len(ep)}, {len(acc)} and {len(loss)}; they must match")
        data[label] = (ep, acc, loss)
    from matplotlib.ticker import MaxNLocator

    fig = _figure(10, 3.8)
    a1, a2 = fig.subplots(1, 2)
    for label, (ep, acc, loss) in data.items():
        marker = "o" if len(ep) <= 12 else None
        a1.plot(ep, acc, marker=marker, ms=3, lw=1.3, label=str(label))
        a2.plot(ep, loss, marker=marker, ms=3, lw=1.3, label=str(label))
    a1.set(xlabel="epoch", ylabel="test accuracy", title="held-out accuracy")
    a2.set(xlabel="epoch", ylabel="training loss (each rule's objective)", title="training loss")
    losses = np.concatenate([d[2] for d in data.values()])
    if np.all(losses[np.isfinite(losses)] > 0) and np.isfinite(losses).any():
        a2.set_yscale("log")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.legend(fontsize=7, ncol=2 if len(data) > 6 else 1)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def alignment_curves(epochs, angles, path, *, title: str | None = None) -> str:
    """Per layer, the angle (degrees) between each rule's update and backprop's gradient per epoch.

    ``epochs`` is the shared x axis (length ``T``); ``angles`` maps a rule's name to a mapping
    ``layer name → T angles`` (``None``/NaN where not measured), as
    :class:`nograd.callbacks.AlignmentLogger` records them (``angle/<param>``). A panel per layer
    (the layers of the first rule, in order), a dashed line at 90° (below it the update is a
    descent direction for that layer). Under feedback alignment the hidden layers' angles fall
    during training as the forward weights come to align with the fixed feedback (Lillicrap et
    al. 2016, Nat. Commun. 7:13276, Fig. 2b). Figure ``3.4·L + 0.6`` × 3.4 in for ``L`` layers
    (at most 5). Returns ``path``."""
    ep = _series(epochs, "epochs")
    _mapping(angles, "angles")
    layers = list(_mapping(next(iter(angles.values())), f"angles[{next(iter(angles))!r}]"))
    if len(layers) > 5:
        raise ValueError(f"angles has {len(layers)} layers; at most 5 panels fit one figure")
    curves = {}
    for rule, per_layer in angles.items():
        _mapping(per_layer, f"angles[{rule!r}]")
        for layer in layers:
            if layer not in per_layer:
                raise ValueError(f"angles[{rule!r}] has no layer {layer!r}")
            a = _series(per_layer[layer], f"angles[{rule!r}][{layer!r}]")
            if len(a) != len(ep):
                raise ValueError(f"angles[{rule!r}][{layer!r}] has {len(a)} values for "
                                 f"{len(ep)} epochs")
            curves[rule, layer] = a
    from matplotlib.ticker import MaxNLocator

    fig = _figure(3.4 * len(layers) + 0.6, 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
    for ax, layer in zip(axes, layers):
        for rule in angles:
            ax.plot(ep, curves[rule, layer], lw=1.4, label=str(rule))
        ax.axhline(90, color="0.4", ls="--", lw=0.8)
        ax.set(title=str(layer), xlabel="epoch", ylim=(0, 100))
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("angle to backprop's gradient (°)")
    axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sparsity_histograms(groups, path, *, bins: int = 30, title: str | None = None,
                        bands: Mapping | None = None) -> str:
    """Histograms of per-sample Hoyer sparsity, a panel per layer, one histogram per network.

    ``groups`` maps a label (``"FF"``, ``"backprop"``) to a list of 1-D arrays, one per hidden
    layer, of per-sample Hoyer sparsities in [0, 1] (:func:`nograd.analysis.sparsity`: for an
    activity vector :math:`h \\in \\mathbb{R}^J`, :math:`(\\sqrt{J} - \\|h\\|_1/\\|h\\|_2) /
    (\\sqrt{J} - 1)`, Hoyer 2004; NaN for a silent sample, which is left out); every label has
    the same number of layers. The histograms are
    densities over ``bins`` equal bins of [0, 1], each label's mean marked by a vertical line.
    ``bands`` (optional) maps a label to a ``(low, high)`` range drawn as a bar at the top of
    the *first* layer's panel — e.g. the range Tosato et al. (2023, arXiv:2305.18353, Fig. 3) report on MNIST.
    Figure ``4·L + 0.4`` × 3.2 in for ``L`` layers (at most 5). Returns ``path``."""
    _mapping(groups, "groups")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    for label, band in (bands or {}).items():
        if len(band) != 2 or not 0 <= band[0] <= band[1] <= 1:
            raise ValueError(f"bands[{label!r}] must be a pair 0 <= low <= high <= 1, got {band!r}")
    n_layers = None
    for label, layers in groups.items():
        if isinstance(layers, np.ndarray) or not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"groups[{label!r}] must be a non-empty list of per-layer arrays")
        if n_layers is None:
            n_layers = len(layers)
        elif len(layers) != n_layers:
            raise ValueError(f"groups[{label!r}] has {len(layers)} layers, the first group "
                             f"{n_layers}; they must match")
    if n_layers > 5:
        raise ValueError(f"groups have {n_layers} layers; at most 5 panels fit one figure")
    data = {}
    for label, layers in groups.items():
        for i, h in enumerate(layers):
            a = _series(np.ravel(np.asarray(h, dtype=np.float64)), f"groups[{label!r}][{i}]")
            a = a[~np.isnan(a)]                 # silent samples have no sparsity: left out
            if a.size == 0 or np.any(np.isinf(a)) or a.min() < 0 or a.max() > 1:
                raise ValueError(f"groups[{label!r}][{i}]: Hoyer sparsities must be in [0, 1] "
                                 f"(NaN left out), got " + (f"range [{a.min():.3g}, {a.max():.3g}]"
                                                           if a.size else "no value"))
            data[label, i] = a
    fig = _figure(4 * n_layers + 0.4, 3.2)
    axes = np.atleast_1d(fig.subplots(1, n_layers, sharey=True))
    edges = np.linspace(0, 1, bins + 1)
    colours = {}
    for i, ax in enumerate(axes):
        for label in groups:
            a = data[label, i]
            _, _, patches = ax.hist(a, bins=edges, density=True, alpha=0.55, label=str(label),
                                    color=colours.get(label))
            colours[label] = patches[0].get_facecolor()[:3]
            ax.axvline(a.mean(), color=colours[label], lw=1.5)
        if i == 0 and bands:
            for k, (label, (lo, hi)) in enumerate(bands.items()):
                ax.plot([lo, hi], [0.96 - 0.05 * k] * 2, transform=ax.get_xaxis_transform(),
                        color=colours.get(label, "0.3"), lw=4, solid_capstyle="butt",
                        label=f"{label}: paper's range of means")
        ax.set(title=f"hidden layer {i + 1}", xlabel="Hoyer sparsity (per sample)", xlim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def grouped_bars(values, path, *, errors: Mapping | None = None, ylabel: str = "",
                 title: str | None = None, ylim: tuple | None = None) -> str:
    """One group of bars per key of ``values`` (datasets), one bar per inner key (models).

    ``values`` maps a group to a mapping ``series → number``; every group has the same series,
    drawn in the first group's order and colour-coded with a legend. ``errors`` (optional, same
    nesting) draws ± error bars, e.g. the standard deviation over cross-validation folds.
    ``ylim`` fixes the value axis. Figure ``clip((0.2 + 0.25·S)·G + 1.5, 6, 14)`` × 3.8 in for
    ``G`` groups of ``S`` series; with more than 8 groups the group names are slanted.
    Returns ``path``."""
    _mapping(values, "values")
    series = list(_mapping(next(iter(values.values())), f"values[{next(iter(values))!r}]"))
    table = np.empty((len(values), len(series)))
    err = None if errors is None else np.zeros_like(table)
    for g, (group, row) in enumerate(values.items()):
        _mapping(row, f"values[{group!r}]")
        if set(row) != set(series):
            raise ValueError(f"values[{group!r}] has series {sorted(row)}, the first group "
                             f"{sorted(series)}; they must match")
        table[g] = _series([row[s] for s in series], f"values[{group!r}]")
        if errors is not None:
            if group not in errors or set(errors[group]) != set(series):
                raise ValueError(f"errors[{group!r}] must give a value for each of {series}")
            err[g] = _series([errors[group][s] for s in series], f"errors[{group!r}]")
    fig = _figure(min(14.0, max(6.0, (0.2 + 0.25 * len(series)) * len(values) + 1.5)), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(values))
    for s, name in enumerate(series):
        ax.bar(x + (s - (len(series) - 1) / 2) * width, table[:, s], width,
               yerr=None if err is None else err[:, s], capsize=2, label=str(name))
    if len(values) > 8:
        ax.set_xticks(x, [str(g) for g in values], fontsize=8, rotation=40, ha="right")
    else:
        ax.set_xticks(x, [textwrap.fill(str(g), 18) for g in values], fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(series), 4))
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def line_plot(series, path, *, xlabel: str = "", ylabel: str = "", title: str | None = None,
              logx: bool = False, logy: bool = False, markers: bool = True) -> str:
    """Any number of lines: ``series`` maps a label to ``(x, y)``, two sequences of one length
    (``None``/NaN points are left out — e.g. a reference route only run up to some size).
    ``logx``/``logy`` put an axis on a log scale (base 2 for x, so image sizes 16, 32, 64 are
    evenly spaced; base 10 for y). Figure 6 × 4 in. Returns ``path``."""
    _mapping(series, "series")
    lines = {}
    for label, xy in series.items():
        if not isinstance(xy, (tuple, list)) or len(xy) != 2:
            raise ValueError(f"series[{label!r}] must be a pair (x, y)")
        x, y = _series(xy[0], f"series[{label!r}] x"), _series(xy[1], f"series[{label!r}] y")
        if len(x) != len(y):
            raise ValueError(f"series[{label!r}]: x has {len(x)} values, y {len(y)}")
        keep = np.isfinite(x) & np.isfinite(y)
        if (logx and np.any(x[keep] <= 0)) or (logy and np.any(y[keep] <= 0)):
            raise ValueError(f"series[{label!r}]: a log axis needs positive values")
        lines[label] = (x[keep], y[keep])
    fig = _figure(6, 4)
    ax = fig.subplots()
    for label, (x, y) in lines.items():
        ax.plot(x, y, marker="o" if markers else None, ms=4, lw=1.4, label=str(label))
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def image_grid(images, path, *, title: str | None = None, cols: int | None = None,
               vmin: float = 0.0, vmax: float = 1.0) -> str:
    """A grid of images: ``images`` of shape ``(N, H, W)`` (grey) or ``(N, C, H, W)`` with ``C``
    1 (grey) or 3 (RGB, NCHW as everywhere in nograd), values clipped to ``[vmin, vmax]``.
    ``cols`` defaults to ``ceil(sqrt(N))``. Each image gets a 0.8 in square; the figure is
    ``0.8·cols`` × ``0.8·rows + 0.4`` in. Returns ``path``."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    elif x.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W) with C in (1, 3), "
                         f"got shape {x.shape}")
    n = len(x)
    if n == 0 or not np.all(np.isfinite(x)):
        raise ValueError("images must hold at least one image of finite values")
    if not vmax > vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    x = np.clip((x - vmin) / (vmax - vmin), 0, 1)
    fig = _figure(0.8 * cols, 0.8 * rows + 0.4, layout=None)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.35 / (0.8 * rows + 0.4),
                        wspace=0.05, hspace=0.05)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i], cmap="gray" if x.ndim == 3 else None, vmin=0, vmax=1,
                      interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=8)
    return _save(fig, path)
