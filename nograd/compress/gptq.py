r"""GPTQ: column-by-column quantization with second-order error feedback.

Frantar, Ashkboos, Hoefler & Alistarh (2023), "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", ICLR, §3 and Algorithm 1. For one layer with calibration
inputs :math:`X` ``(m, d)`` and weight :math:`W` ``(n, d)`` it minimises
:math:`\|XW^\top - XQ^\top\|_F^2` greedily, one input column at a time, all rows at once:

* Hessian :math:`H = 2X^\top X + \lambda I`, with dampening :math:`\lambda` = ``damp`` × the mean
  of the diagonal (§3, "Cholesky reformulation": 1 % by default); an input that is always zero
  (:math:`H_{ii} = 0`) gets :math:`H_{ii} = 1` and its weights are zeroed, as the authors do;
* :math:`U` = the upper Cholesky factor of :math:`H^{-1}` (:math:`H^{-1} = U^\top U`), whose rows
  hold the inverse Hessians of the remaining columns (§3, "Step 3"); :math:`H^{-1}` itself comes
  from the Cholesky factor of :math:`H` (LAPACK ``potrf``/``potri``), as the authors' code does
  (``cholesky_inverse``): half the work of a general inverse, and stable;
* for column :math:`j`: :math:`q_{:,j} = \operatorname{quant}(w_{:,j})`, error
  :math:`e = (w_{:,j} - q_{:,j}) / U_{jj}`, and the columns not yet quantized absorb it,
  :math:`W_{:,k} \mathrel{-}= e\, U_{jk}` (the OBS update, eq. 3);
* lazy batches (§3, "Step 2"): inside a block of ``block`` columns the update touches the block
  only; the rest of the matrix gets the block's errors at once, :math:`W_{:,\text{rest}}
  \mathrel{-}= E\, U_{\text{block},\text{rest}}` (one GEMM).

``quant`` rounds to nearest on the grid fixed beforehand from the weights' range
(:func:`~nograd.compress.grid.minmax_grid`), the grid RTN uses and COMQ starts from. Cost:
``O(d³)`` for the factorisation plus ``O(n·d²)`` for the updates.
"""
from __future__ import annotations

import numpy as np

from .grid import levels, minmax_grid, rows


def _inverse_cholesky(H):
    """The upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = UᵀU``) for a symmetric positive definite
    ``H``, via the Cholesky factor of ``H`` (LAPACK ``dpotrf``, ``dpotri``, ``dpotrf``)."""
    from scipy.linalg import lapack

    C, info = lapack.dpotrf(H, lower=0, clean=1)
    if info == 0:
        Hinv, info = lapack.dpotri(C, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"GPTQ: the dampened Hessian is not positive definite (LAPACK "
                                    f"info {info}); raise damp")
    U, info = lapack.dpotrf(Hinv, lower=0, clean=1)           # reads the upper triangle only
    if info != 0:
        raise np.linalg.LinAlgError(f"GPTQ: the inverse Hessian is not positive definite (LAPACK "
                                    f"info {info}); raise damp")
    return U


def gptq(W, G, bits: int, granularity: str = "channel", *, block: int = 128, damp: float = 0.01):
    """Quantize ``W (n, d)`` with GPTQ given the Gram matrix ``G = XᵀX (d, d)`` of the inputs.

    Returns ``(codes uint8 (n, d), scale, offset)`` (scale/offset ``(n,)`` or ``(1,)``).
    """
    W = np.array(W, dtype=np.float64)
    n, d = W.shape
    scale, offset = minmax_grid(W, bits, granularity)
    s, o, top = rows(scale, n)[:, 0], rows(offset, n)[:, 0], levels(bits) - 1
    H = 2.0 * np.array(G, dtype=np.float64)
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    lam = damp * np.mean(np.diag(H))
    codes = np.empty((n, d), np.uint8)
    # A dead input's row and column of H are zero but for H_ii, so it is decoupled: its rows of
    # H⁻¹ and of U are zero off the diagonal and its (zeroed) weights feed no error to the others.
    # The factorisation and the column loop run on the live inputs alone, with the same result.
    codes[:, dead] = np.clip(-o, 0, top)[:, None]        # the code of 0
    live = np.flatnonzero(~dead)
    if live.size < d:
        H, W = H[np.ix_(live, live)], np.ascontiguousarray(W[:, live])
    H[np.diag_indices(live.size)] += lam
    U = _inverse_cholesky(H)                            # upper: H⁻¹ = UᵀU
    out = np.empty((n, live.size), np.uint8)
    for a in range(0, live.size, block):
        b = min(a + block, live.size)
        E = np.empty((n, b - a))
        for j in range(a, b):
            w = W[:, j]
            c = np.clip(np.rint(w / s) - o, 0, top)
            out[:, j] = c
            err = (w - s * (c + o)) / U[j, j]
            W[:, j:b] -= np.outer(err, U[j, j:b])
            E[:, j - a] = err
        W[:, b:] -= E @ U[a:b, b:]
    codes[:, live] = out
    return codes, scale, offset
