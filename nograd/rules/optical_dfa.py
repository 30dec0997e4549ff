r"""Optical DFA: direct feedback alignment whose random projection of the output error is measured by
a simulated photonic co-processor (Launay et al. 2020, "Hardware beyond backpropagation: a
photonic co-processor for direct feedback alignment").

The learning rule is :class:`~nograd.rules.feedback.DFA`'s (Nøkland 2016); only the projection
:math:`B e` changes: it comes from a model of the device — a quantised error shown on a binary
mirror array, a fixed complex Gaussian scattering medium, a camera that records intensities — and an
interference trick that makes the recorded intensities a linear projection again.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_float, check_int
from .base import register
from .feedback import DFA

__all__ = ["OpticalDFA"]


@register("optical-dfa")
class OpticalDFA(DFA):
    r"""DFA with the projection measured by a simulated photonic random projector (an "OPU").

    The device of Launay et al. (2020) shows a binary image on a micromirror array, lets
    coherent light through a scattering medium — a fixed complex Gaussian matrix :math:`R` — and
    records the *intensity* :math:`|R u|^2` on a camera. Simulated here:

    1. **quantiser** — the error row :math:`e` (``(C,)`` per sample) becomes
       ``"ternary"``: :math:`t = \mathrm{sign}(e)\,[|e| \ge θ \max|e|]` (threshold ``θ``),
       ``"binary"``: :math:`t = \mathrm{sign}(e)`, or ``None``: an ideal analog modulator
       (:math:`t = e/\max|e|`). A ternary/binary :math:`t = t^+ - t^-` is shown as two binary
       frames, projected separately and subtracted.
    2. **optics** — :math:`R \in \mathbb{C}^{P\times(C+m)}`, entries
       :math:`\mathcal{CN}(0, 1)`; the last :math:`m` mirrors hold a fixed binary reference
       :math:`r` (``reference_size``, half of them on), next to the input's :math:`C` mirrors.
    3. **camera** — each frame's intensities are auto-exposed (the brightest pixel at full scale),
       get Gaussian read noise of standard deviation ``noise`` × full scale, and are quantised to
       ``bit_depth`` bits (clipped to [0, full scale]); ``bit_depth=None`` is an ideal detector.
    4. **recovery** — the interference identity
       :math:`|R(u+r)|^2 - |Ru|^2 - |Rr|^2 = 2\,\mathrm{Re}[(Ru)\odot\overline{(Rr)}]` turns three
       intensity frames into a *linear* projection
       :math:`y = \mathrm{Re}[\overline{(Rr)} \odot R_u]\,u = B_{\rm eff}\,u`.
    5. **centring** (``center=True``) — softmax cross-entropy errors sum to zero over the classes,
       a ternary code does not; the projection of one all-ones frame times the row mean of
       :math:`t` is subtracted, giving :math:`B(t - \bar t\,\mathbf 1)`. Each row is then
       rescaled to keep the error's norm (:math:`\|e\| / \|t - \bar t\mathbf 1\|`;
       :math:`\max|e|` for the analog modulator).

    :math:`B_{\rm eff}` (:meth:`effective_feedback`) is one ``(P, C)`` matrix for all hidden layers,
    :math:`P = \sum_l n_l`, split into the :math:`B_l` and scaled to DFA's standard deviation. With
    ``quantizer=None, bit_depth=None, noise=0`` the rule equals :class:`DFA` with
    ``feedback=effective_feedback()`` to rounding.

    The recovered projection differs from :math:`B_{\rm eff} t` only by the camera: quantisation
    to ``bit_depth`` bits and read noise; an ideal camera recovers it exactly. The quantised code
    :math:`t` itself differs from the error :math:`e`, so :math:`Bt` is not :math:`Be` even then.
    Measured recovery errors and accuracies: ``docs/notes/performance-notes.md``.

    Cost per step: a ternary code is shown as two binary frames (:math:`t^+`, :math:`t^-`), each
    one complex ``(N, C) @ (C, P)`` product and three simulated camera frames of ``(N, P)``
    intensities, in float64; centring adds one all-ones frame.

    Parameters
    ----------
    quantizer : ``"ternary"`` (default), ``"binary"`` or ``None``.
    threshold : θ of the ternary quantiser, in (0, 1]; default 0.25.
    center : subtract the projected mean of the code (default ``True``; see 5.).
    bit_depth : camera bits (default 8) or ``None``.
    noise : camera read noise, fraction of full scale (default 0.0).
    reference_size : mirrors of the reference :math:`r` (default: the number of outputs).
    seed, loss, **loss_options : as for :class:`DFA`; there is no ``feedback=`` (the device fixes B).
    """

    def __init__(self, loss="cross-entropy", *, seed=0, quantizer="ternary", threshold=0.25,
                 center=True, bit_depth=8, noise=0.0, reference_size=None, **loss_options):
        super().__init__(loss, seed=seed, **loss_options)
        if quantizer not in ("ternary", "binary", None):
            raise ValueError(f"quantizer must be 'ternary', 'binary' or None, got {quantizer!r}")
        self.threshold = check_float(threshold, "threshold", low=0, high=1, low_open=True)
        self.bit_depth = check_int(bit_depth, "bit_depth", low=1, high=24, allow_none=True)
        self.noise = check_float(noise, "noise", low=0)
        self.reference_size = check_int(reference_size, "reference_size", low=1, allow_none=True)
        if not isinstance(center, (bool, np.bool_)):
            raise TypeError(f"center must be a bool, got {center!r}")
        self.quantizer, self.center = quantizer, bool(center)
        self._device = None

    # ------------------------------------------------------------------ the device
    def _setup(self, sizes, n_out, dtype):
        P = sum(sizes.values())
        if self._device is not None:
            if self._device["sizes"] != sizes or self._device["n_in"] != n_out:
                raise ValueError(f"{type(self).__name__} was set up for projections "
                                 f"{self._device['sizes']} of {self._device['n_in']} outputs; got "
                                 f"{sizes} of {n_out} (use a new rule per model and input size)")
            return
        rng = np.random.default_rng(self.seed)
        m = self.reference_size or n_out
        R = (rng.standard_normal((P, n_out + m)) + 1j * rng.standard_normal((P, n_out + m))) / math.sqrt(2)
        r = np.zeros(m)
        r[rng.permutation(m)[:max(1, m // 2)]] = 1.0
        Rr = R[:, n_out:] @ r
        # expected std of an entry of Re[conj(Rr) R_u] is sqrt(|r|_0 / 2); rescale each layer's
        # block to DFA's U(±sqrt(6/n_l)) standard deviation sqrt(2/n_l)
        scale, start = np.empty(P), 0
        for n in sizes.values():
            scale[start:start + n] = math.sqrt(2.0 / n) / math.sqrt(r.sum() / 2)
            start += n
        self._device = {"sizes": dict(sizes), "n_in": n_out, "R_u": R[:, :n_out], "Rr": Rr,
                        "scale": scale}

    def effective_feedback(self) -> dict[str, np.ndarray]:
        r"""The linear map the device implements, split per hidden layer: ``{name: B_l}``, with
        :math:`B = \mathrm{diag}(s)\,\mathrm{Re}[\overline{(Rr)} \odot R_u]` (float64). Available
        after the first :meth:`grads` call."""
        if self._device is None:
            raise ValueError("the optical device is built on the first grads() call (it needs the "
                             "model's layer sizes); call grads once first")
        d = self._device
        B = d["scale"][:, None] * np.real(np.conj(d["Rr"])[:, None] * d["R_u"])
        out, start = {}, 0
        for k, n in d["sizes"].items():
            out[k] = B[start:start + n]
            start += n
        return out

    def _camera(self, intensity, rng):
        """Auto-exposed, noisy, quantised intensity frames (rows), returned in physical units."""
        full = intensity.max(axis=-1, keepdims=True)
        full = np.where(full > 0, full, 1.0)
        out = intensity
        if self.noise:
            out = out + self.noise * full * rng.standard_normal(out.shape)
        if self.bit_depth is not None:
            levels = 2 ** self.bit_depth - 1
            out = np.clip(np.rint(out / full * levels), 0, levels) * (full / levels)
        return out

    def optical_projection(self, u, rng=None) -> np.ndarray:
        r"""The recovered projection :math:`B_{\rm eff}\,u` (unscaled) of input rows ``u (N, C)``
        whose entries are the mirror states in {0, 1} (or any reals for an analog modulator),
        from three simulated camera frames per row (float64, ``(N, P)``)."""
        d = self._device
        if d is None:
            raise ValueError("the optical device is built on the first grads() call (it needs the "
                             "model's layer sizes); call grads once first")
        gen = self._gen(rng)
        Ru = np.asarray(u, np.float64) @ d["R_u"].T
        Rr = d["Rr"]
        with_ref = self._camera(np.abs(Ru + Rr) ** 2, gen)
        alone = self._camera(np.abs(Ru) ** 2, gen)
        ref = self._camera((np.abs(Rr) ** 2)[None, :], gen)
        return 0.5 * (with_ref - alone - ref)

    def quantize(self, e) -> tuple[np.ndarray, np.ndarray]:
        """The quantised error rows ``t`` and the per-row scale that restores ``‖e‖``."""
        e = np.asarray(e, np.float64)
        peak = np.abs(e).max(axis=1, keepdims=True)
        safe = np.where(peak > 0, peak, 1.0)
        if self.quantizer is None:
            return e / safe, peak[:, 0]
        if self.quantizer == "binary":
            t = np.where(e >= 0, 1.0, -1.0)
        else:
            t = np.sign(e) * (np.abs(e) >= self.threshold * safe)
        c = t - t.mean(axis=1, keepdims=True) if self.center else t
        norm_c = np.linalg.norm(c, axis=1)
        return t, np.linalg.norm(e, axis=1) / np.where(norm_c > 0, norm_c, 1.0)

    def _project(self, e, sizes, rng):
        t, s = self.quantize(e)
        if self.quantizer is None:
            y = self.optical_projection(t, rng)
        else:                       # t = t⁺ − t⁻, each shown as a binary frame
            y = (self.optical_projection((t > 0).astype(np.float64), rng)
                 - self.optical_projection((t < 0).astype(np.float64), rng))
            if self.center:         # B(t − t̄1) = Bt − t̄·B1, B1 from one all-ones frame
                ones = self.optical_projection(np.ones((1, t.shape[1])), rng)
                y = y - t.mean(axis=1, keepdims=True) * ones
        y = y * s[:, None] * self._device["scale"][None, :]
        out, start = {}, 0
        for k, n in sizes.items():
            out[k] = y[:, start:start + n].astype(e.dtype)
            start += n
        return out

    def __repr__(self):
        return (f"OpticalDFA(seed={self.seed}, quantizer={self.quantizer!r}, "
                f"bit_depth={self.bit_depth}, noise={self.noise})")
