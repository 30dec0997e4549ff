"""Tabular files: CSV with a class column, and ``.npz`` archives of a ready-made split.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
>>> _ = open(path, "w").write("size,colour,label\\n1.5,red,yes\\n2.0,blue,no\\n0.5,red,no\\n")
>>> X, y, info = load_csv(path, target="label", return_info=True)
>>> X.tolist(), y.tolist()
([[1.5, 0.0, 1.0], [2.0, 1.0, 0.0], [0.5, 0.0, 1.0]], [1, 0, 0])
>>> info["feature_names"], info["classes"]
(['size', 'colour=blue', 'colour=red'], ['no', 'yes'])
"""
from __future__ import annotations

import numpy as np

from ..core.checks import NonFiniteError, check_dtype
from ._io import check_path, read_text

__all__ = ["load_csv", "load_npz", "MISSING_TOKENS", "NUMERIC_SHARE"]

#: cell values read as missing (compared after stripping spaces, case-insensitive)
MISSING_TOKENS = frozenset({"", "?", "na", "n/a", "nan", "null"})

#: a column whose present cells are at least this share numbers is numeric; its few other cells
#: are typos (``"1O8"``), not categories — see ``non_numeric`` in :func:`load_csv`
NUMERIC_SHARE = 0.9

_DELIMITERS = (",", ";", "\t", "|")


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _is_missing(s: str) -> bool:
    return s.lower() in MISSING_TOKENS


def _read_rows(path: str, delimiter):
    """Rows of stripped fields with their line numbers; blank lines skipped; equal widths checked."""
    import csv
    import io

    text = read_text(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), None)
    if first is None:
        raise ValueError(f"{path!r} holds no rows")
    if delimiter is None:
        counts = {d: first.count(d) for d in _DELIMITERS}
        delimiter = max(_DELIMITERS, key=lambda d: counts[d])
        if counts[delimiter] == 0:
            raise ValueError(f"{path!r}: no column separator (one of , ; tab |) in the first line; "
                             f"a table needs at least a feature and a target column")
    elif not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character or None, got {delimiter!r}")
    rows, lines = [], []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            rows.append([f.strip() for f in fields])
            lines.append(reader.line_num)
    except csv.Error as e:
        raise ValueError(f"{path!r} line {reader.line_num}: {e}") from None
    if not rows:
        raise ValueError(f"{path!r} holds no rows")
    width = len(rows[0])
    for r, ln in zip(rows, lines):
        if len(r) != width:
            raise ValueError(f"{path!r} line {ln}: {len(r)} fields, expected {width} like the first "
                             f"row")
    if width < 2:
        raise ValueError(f"{path!r} has one column; a table needs at least a feature and a target")
    return rows, lines


def _has_header(rows) -> bool:
    """Guess whether the first row names the columns.

    Yes if some column is numeric below the first row while its first cell is not a number; no if
    some numeric column also has a number in the first row. With no numeric column at all: yes when
    no first-row cell occurs again in its own column.
    """
    first, body = rows[0], rows[1:]
    if not body:                    # a lone row of names is a header over no data
        return any(not _is_number(c) and not _is_missing(c) for c in first)
    numeric_seen = False
    for j, head in enumerate(first):
        cells = [r[j] for r in body if not _is_missing(r[j])]
        if cells and all(_is_number(c) for c in cells):
            numeric_seen = True
            if not _is_number(head) and not _is_missing(head):
                return True
    if numeric_seen:
        return False
    return all(head not in {r[j] for r in body} for j, head in enumerate(first))


def _resolve_target(target, names, has_header, path):
    width = len(names)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer, str)):
        raise TypeError(f"target must be a column name (str) or index (int), got {target!r}")
    if isinstance(target, str):
        if not has_header:
            raise ValueError(f"target={target!r} names a column, but {path!r} has no header row; "
                             f"give the column's index instead (0..{width - 1}, or -1 for the last)")
        if target not in names:
            raise ValueError(f"target={target!r} is not a column of {path!r}; columns: "
                             f"{', '.join(names)}")
        return names.index(target)
    t = int(target)
    if not -width <= t < width:
        raise ValueError(f"target={t} is out of range for {path!r} with {width} columns "
                         f"(valid: {-width}..{width - 1})")
    return t % width


def _stray_cells(rows, lines, j):
    """``[(row index, line, cell), ...]``: the cells of column ``j`` that are not numbers when the
    numbers are at least :data:`NUMERIC_SHARE` of its present cells (typos); else ``[]``."""
    present = sum(not _is_missing(r[j]) for r in rows)
    stray = [(i, ln, r[j]) for i, (r, ln) in enumerate(zip(rows, lines))
             if not _is_missing(r[j]) and not _is_number(r[j])]
    return stray if stray and present - len(stray) >= NUMERIC_SHARE * present else []


def _stray_message(path, names, strays):
    parts = []
    for j, cells in strays.items():
        shown = ", ".join(f"{c!r} on line {ln}" for _, ln, c in cells[:5])
        more = f" and {len(cells) - 5} more" if len(cells) > 5 else ""
        parts.append(f"column {names[j]!r} is numeric but for {len(cells)} cell"
                     f"{'s' if len(cells) > 1 else ''}: {shown}{more}")
    return (f"{path!r}: {'; '.join(parts)}; fix the cells, or load with non_numeric='missing' to "
            f"read them as missing values (non_numeric='category' reads such a column as categories)")


def _check_magnitude(path, name, v, lines, dt):
    """Refuse a numeric column with a value whose square overflows ``dt`` (|x| > sqrt(max)): it
    becomes inf in ``dt`` or overflows the first product a model takes of it."""
    limit = float(np.sqrt(np.finfo(dt).max))
    big = np.abs(np.nan_to_num(v))
    if big.max(initial=0.0) > limit:
        i = int(np.argmax(big))
        raise ValueError(f"{path!r}: column {name!r} holds {v[i]:g} on line {lines[i]}, beyond "
                         f"±{limit:.3g} where squares overflow {np.dtype(dt).name} (the loader's "
                         f"dtype); rescale the column, drop the row, or pass dtype=np.float64")


def load_csv(path, target=-1, *, header="auto", delimiter=None, categorical="onehot",
             missing="error", non_numeric="error", dtype=np.float32, return_info=False):
    """A classification table from a CSV file (plain or gzip): features ``X`` and labels ``y``.

    Parameters
    ----------
    path : the file. The separator (``,`` ``;`` tab ``|``) is detected from the first line unless
        ``delimiter`` is given.
    target : the class column — a header name, or an index counted from 0 (negative counts from the
        end; the default ``-1`` is the last column). Its distinct values become labels 0..K-1 in
        sorted order (numerically when they are all integers, else as strings).
    header : ``"auto"`` (guessed: a first row of names over numeric columns), ``True`` or ``False``.
        Without a header, columns are named ``col0``, ``col1``, ….
    categorical : how a feature column that holds any non-number is encoded: ``"onehot"`` (one 0/1
        column per category, named ``name=value``, categories sorted) or ``"codes"`` (one column of
        category numbers 0, 1, … in sorted order).
    missing : cells that are empty or one of ``? NA N/A NaN null`` are missing. ``"error"`` (default)
        raises ``ValueError`` stating how many there are and in which columns; ``"drop"`` drops every
        row that has one; ``"nan"`` keeps missing feature cells as NaN in ``X`` (for an imputer
        downstream, e.g. :class:`nograd.data.TabularPreprocessor`): in a categorical column, NaN as
        its code (``"codes"``) or NaN in each of its one-hot columns (``"onehot"``), its categories
        taken from the present cells. A row whose target cell is missing is dropped in every mode
        but ``"error"`` (counted in ``dropped_rows``).
    non_numeric : a column that is numbers in at least :data:`NUMERIC_SHARE` (90 %) of its present
        cells is numeric, and its other cells are typos (Pima's glucose ``"1O8"``), not categories:
        ``"error"`` (default) raises ``ValueError`` naming each such column with its cells and
        their line numbers; ``"missing"`` reads those cells as missing, then ``missing`` applies
        (counts per column in ``info["non_numeric"]``); ``"category"`` encodes the column as
        categories per ``categorical``. Columns with fewer numbers are categorical as they are.
    dtype : float dtype of ``X``. A numeric value whose square overflows it (beyond ±1.8e19 in
        float32) is a ``ValueError`` naming the column and line: a model cannot train on it.
    return_info : also return a dict with ``feature_names``, ``target_name``, ``classes``,
        ``categorical`` (column → categories), ``header`` (bool), ``dropped_rows`` and
        ``non_numeric``.

    Returns ``X (N, F)``, ``y (N,)`` int64 (and ``info``). The file is only read.
    """
    path = check_path(path)
    dt = check_dtype(dtype)
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    if categorical not in ("onehot", "codes"):
        raise ValueError(f"categorical must be 'onehot' or 'codes', got {categorical!r}")
    if missing not in ("error", "drop", "nan"):
        raise ValueError(f"missing must be 'error', 'drop' or 'nan', got {missing!r}")
    if non_numeric not in ("error", "missing", "category"):
        raise ValueError(f"non_numeric must be 'error', 'missing' or 'category', got "
                         f"{non_numeric!r}")
    rows, lines = _read_rows(path, delimiter)
    has_header = _has_header(rows) if header == "auto" else bool(header)
    if has_header:
        names, rows, lines = rows[0], rows[1:], lines[1:]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{path!r}: the header repeats column names {dup}")
    else:
        names = [f"col{j}" for j in range(len(rows[0]))]
    if not rows:
        raise ValueError(f"{path!r} has a header but no data rows")
    t = _resolve_target(target, names, has_header, path)
    strays = {} if non_numeric == "category" else {
        j: cells for j in range(len(names)) if (cells := _stray_cells(rows, lines, j))}
    if strays and non_numeric == "error":
        raise ValueError(_stray_message(path, names, strays))
    for j, cells in strays.items():                  # non_numeric="missing"
        for i, _, _ in cells:
            rows[i][j] = ""

    holes = np.array([[_is_missing(c) for c in r] for r in rows], dtype=bool)
    dropped = 0
    if holes.any():
        per_col = holes.sum(axis=0)
        if missing == "error":
            where = ", ".join(f"{names[j]!r} ({per_col[j]})" for j in np.flatnonzero(per_col))
            first = lines[int(np.flatnonzero(holes.any(axis=1))[0])]
            raise ValueError(f"{path!r} has {int(per_col.sum())} missing values in "
                             f"{int(holes.any(axis=1).sum())} rows (first on line {first}), in "
                             f"columns {where}; pass missing='drop' to drop those rows")
        keep = ~(holes[:, t] if missing == "nan" else holes.any(axis=1))
        dropped = int((~keep).sum())
        rows = [r for r, k in zip(rows, keep) if k]
        lines = [ln for ln, k in zip(lines, keep) if k]
        holes = holes[keep]
        if not rows:
            raise ValueError(f"{path!r}: every row has a missing value; nothing is left after "
                             f"dropping them")
    columns = list(zip(*rows))

    y_cells = columns[t]
    if all(_is_number(c) for c in y_cells):
        vals = np.array([float(c) for c in y_cells])
        if not np.all(np.isfinite(vals)) or not np.all(vals == np.round(vals)):
            raise ValueError(f"{path!r}: target column {names[t]!r} holds non-integer numbers; "
                             f"load_csv reads class labels (integers or names), not regression "
                             f"targets")
        classes_num, y = np.unique(vals.astype(np.int64), return_inverse=True)
        classes = [int(c) for c in classes_num]
    else:
        classes_str, y = np.unique(np.array(y_cells, dtype=str), return_inverse=True)
        classes = [str(c) for c in classes_str]

    feats, feature_names, cats = [], [], {}
    for j, col in enumerate(columns):
        if j == t:
            continue
        hole = holes[:, j]                        # only missing="nan" leaves any
        if all(_is_number(c) for c, h in zip(col, hole) if not h):
            v = np.array([np.nan if h else float(c) for c, h in zip(col, hole)])
            if np.isinf(v).any():
                raise NonFiniteError(f"{path!r}: column {names[j]!r} holds an infinite value")
            _check_magnitude(path, names[j], v, lines, dt)
            feats.append(v)
            feature_names.append(names[j])
            continue
        present = np.array(col, dtype=str)[~hole]
        levels, found = np.unique(present, return_inverse=True)
        codes = np.full(len(col), np.nan)
        codes[~hole] = found
        cats[names[j]] = [str(c) for c in levels]
        if categorical == "codes":
            feats.append(codes)
            feature_names.append(names[j])
        else:
            for k, level in enumerate(levels):
                feats.append(np.where(hole, np.nan, (codes == k).astype(np.float64)))
                feature_names.append(f"{names[j]}={level}")
    X = np.stack(feats, axis=1).astype(dt)
    y = y.astype(np.int64).reshape(-1)
    if not return_info:
        return X, y
    info = {"feature_names": feature_names, "target_name": names[t], "classes": classes,
            "categorical": cats, "header": has_header, "dropped_rows": dropped,
            "non_numeric": {names[j]: len(cells) for j, cells in strays.items()}}
    return X, y, info


def load_npz(path, *, dtype=np.float32):
    """A ready-made split from an ``.npz`` archive with arrays ``X_train, y_train, X_test, y_test``.

    ``X_*`` must be numeric with samples first and the same per-sample shape; they are cast to
    ``dtype`` (not rescaled). ``y_*`` must be 1-D non-negative integer labels, one per sample. The
    archive is opened with ``allow_pickle=False``: object arrays are refused. Returns
    ``X_train, y_train, X_test, y_test`` (labels int64).
    """
    import zipfile

    path = check_path(path)
    dt = check_dtype(dtype)
    keys = ("X_train", "y_train", "X_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it holds a single array, not an archive of named arrays")
            absent = [k for k in keys if k not in data.files]
            if absent:
                raise ValueError(f"arrays {absent} are missing (found {sorted(data.files)}); "
                                 f"expected {', '.join(keys)}")
            arrays = {k: data[k] for k in keys}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path!r} is not a usable .npz split: {e}") from None
    for part in ("train", "test"):
        X, y = arrays[f"X_{part}"], arrays[f"y_{part}"]
        if X.dtype.kind not in "biuf" or X.ndim < 2:
            raise ValueError(f"{path!r}: X_{part} must be a numeric array (N, ...) with samples "
                             f"first, got shape {X.shape} of {X.dtype}")
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise ValueError(f"{path!r}: y_{part} must be 1-D integer class labels, got shape "
                             f"{y.shape} of {y.dtype}")
        if len(X) != len(y):
            raise ValueError(f"{path!r}: X_{part} has {len(X)} samples but y_{part} has {len(y)}")
        if len(X) == 0:
            raise ValueError(f"{path!r}: X_{part} is empty")
        if y.min() < 0:
            raise ValueError(f"{path!r}: y_{part} has negative labels (min {y.min()})")
        if X.dtype.kind == "f" and not np.isfinite(X).all():
            raise NonFiniteError(f"{path!r}: X_{part} contains NaN or inf")
    if arrays["X_train"].shape[1:] != arrays["X_test"].shape[1:]:
        raise ValueError(f"{path!r}: X_train samples have shape {arrays['X_train'].shape[1:]} but "
                         f"X_test samples {arrays['X_test'].shape[1:]}")
    return (arrays["X_train"].astype(dt), arrays["y_train"].astype(np.int64),
            arrays["X_test"].astype(dt), arrays["y_test"].astype(np.int64))
