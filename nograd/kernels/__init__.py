"""Numba kernels, each with a plain NumPy reference beside it (DESIGN.md §5).

Nothing here is imported by ``import nograd``: layers import a kernel module on first use, so
Numba loads and compiles (with ``cache=True``) only when a convolution or pooling layer first
runs. This package imports nothing from the rest of nograd.

- :mod:`.conv` / :mod:`.conv_ref` — im2col and col2im for 2-D convolution.
- :mod:`.comq` — one COMQ quantization sweep (its NumPy reference is :func:`nograd.compress.comq.sweep_numpy`).
- :mod:`.winograd` / :mod:`.winograd_ref` — the transforms of Winograd's F(2×2, 3×3) convolution (forward,
  input cotangent, weight gradient; Lavin & Gray 2016).
- :mod:`.pool` / :mod:`.pool_ref` — max pooling with argmax indices, average pooling.
- :mod:`.poset` / :mod:`.poset_ref` — poset (order-polytope) pooling with arg-max up-sets.
- :mod:`.invconv` / :mod:`.invconv_ref` — triangular solves of the inverse convolution, and the
  causal convolution itself, in a diagonal layout.
- :mod:`.grande` / :mod:`.grande_ref` — hard routing of GRANDE's trees and its straight-through
  backward.
- :mod:`.axpy` — fused in-place ``y += a·x`` for the optimizers.
- :mod:`.gelu` — the exact GELU and its backward (vectorised float32 route).
- :mod:`.layernorm` — LayerNorm forward and backward over rows (references beside them).
- :mod:`.softmax` — masked (causal) softmax over rows and its Jacobian-vector product.
- :mod:`.batchnorm` — BatchNorm2d's training forward and backward (shifted sums; optional fused ReLU),
  references beside them.
- :mod:`.recurrent` / :mod:`.recurrent_ref` — the GRU's fused gate backward over many steps and the
  diagonal linear recurrence of DSF's feedback.
- :mod:`.fused` / :mod:`.fused_ref` — convolution with bias, ReLU and 2×2 max pooling in one pass.
- :mod:`.vcas` — VCAS's leverage-score row sampler and its variance sums (references beside them).

All kernels are serial: on a 2-core machine NumPy's OpenBLAS threads spin after each matrix product
and a parallel region started then waits on them (see :mod:`.conv`).
"""
