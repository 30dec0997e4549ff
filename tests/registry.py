"""The registry of every layer and composite, for the property tests over all of them.

An entry says how to build the module (for a dtype and a seed) and how to draw a valid input
away from its non-smooth points. A module class exported by ``nograd.layers`` (or ``nograd.core``)
without an entry here fails ``test_every_layer_is_registered``; a new layer adds its entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nograd.core import Residual, Sequential
from nograd.layers import (GELU, Activation, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d,
                           ConvTranspose2d, Dropout, Embedding, Flatten, GlobalAvgPool2d, GroupNorm,
                           Identity, InverseConv2d, LayerNorm, LeakyReLU, Linear, MaxPool2d, ReLU,
                           Reshape, Sigmoid, Softplus, Softsign, Tanh, Upsample2d)
from nograd.layers.poset import Poset, PosetPool2d
from nograd.layers.recurrent import GRU, LSTM, RNN
from nograd.layers.entmax import Entmax15, entmax15
from nograd.layers import PatchEmbed, RMSNorm, SiLU
from nograd.layers.lora import LoRA
from nograd.layers import LogSoftmax, MultiheadAttention, PositionalEmbedding, Softmax, TransformerBlock
from nograd.models.gpt import GPT
from nograd.models.flow import InverseFlow
from nograd.models.flow_steps import ActNorm, AffineCoupling, FlowStep
from nograd.models.grande_net import GrandeNet
from nograd.models.hypernet import HyperLSTM, HyperNetwork, KernelGenerator
from nograd.models.vit import ViT
from nograd.layers import SinusoidalEmbedding
from nograd.models.diffusion_lora import LoRAConv2d
from nograd.layers import QuantizedConv2d, QuantizedLinear
from nograd.layers import FusedSequential
from nograd.layers import (ELU, AdaptiveAvgPool2d, AvgPool1d, Conv1d, Dropout2d, Hardtanh, MaxPool1d,
                           Mish, PReLU)


@dataclass
class Entry:
    name: str
    cls: type
    make: Callable          # make(dtype, rng) -> Module
    sample: Callable        # sample(rng, batch, dtype, module) -> x
    modes: tuple = (False,)  # train flags to check
    per_sample: bool = True  # output of sample i depends on sample i only (in eval mode)
    float_input: bool = True
    bad_shape: Callable | None = None  # bad_shape(good_shape) -> a shape forward must refuse
    extra: dict = field(default_factory=dict)


def LAST(shape):
    return shape[:-1] + (shape[-1] + 1,)


def CHANNELS(shape):
    return shape[:1] + (shape[1] + 1,) + shape[2:]


def NDIM3(shape):
    return shape[:3]


def NDIM2(shape):
    return shape[:2]


def normal(shape):
    return lambda rng, n, dt, m: rng.standard_normal((n,) + shape).astype(dt)


def away_from_zero(shape, margin=0.05):
    def draw(rng, n, dt, m):
        x = rng.standard_normal((n,) + shape)
        return (np.sign(x) * (np.abs(x) + margin)).astype(dt)
    return draw


def away_from(kinks, shape, margin=0.05):
    """Normal draws at least ``margin`` away from every kink (Hardtanh's bounds)."""
    def draw(rng, n, dt, m):
        x = 2 * rng.standard_normal((n,) + shape)
        for k in kinks:
            near = np.abs(x - k) < margin
            x[near] = k + 2 * margin * np.where(x[near] >= k, 1, -1)
        return x.astype(dt)
    return draw


def relu_mlp_input(rng, n, dt, m, margin=0.02):
    """Inputs whose first-layer pre-activations are all at least ``margin`` from the kink."""
    for _ in range(1000):
        x = rng.standard_normal((n, 4)).astype(dt)
        if np.abs(m[0](x)).min() > margin:
            return x
    raise RuntimeError("could not draw an input away from the ReLU kinks")


def distinct(shape, gap=0.05):
    """Entries that differ pairwise by at least ``gap`` (no ties for max pooling)."""
    def draw(rng, n, dt, m):
        size = n * int(np.prod(shape))
        return (rng.permutation(size).reshape((n,) + shape) * gap - size * gap / 2).astype(dt)
    return draw


def poset_generic(shape, margin=0.05):
    """Inputs for poset pooling away from its kinks: in every window the largest up-set sum beats
    every up-set that differs on real (unpadded) positions by ``margin``. Distinct values are not
    enough here: sums of different subsets can tie, and the empty set puts a kink at 0."""
    def draw(rng, n, dt, m):
        x = rng.standard_normal((n,) + shape)
        (KH, KW), (sh, sw) = m.kernel_size, m.stride
        _, _, OH, OW = m.output_shape(x.shape)
        elem, parent, cand, masks = m._table
        H, W = shape[1:]
        for _ in range(200):
            clean = True
            for a, c, oh, ow in np.ndindex(n, shape[0], OH, OW):
                rows, cols = slice(oh * sh, oh * sh + KH), slice(ow * sw, ow * sw + KW)
                win = np.zeros((KH, KW))
                real = np.zeros((KH, KW), dtype=bool)
                part = x[a, c, rows, cols]
                win[:part.shape[0], :part.shape[1]] = part
                real[:part.shape[0], :part.shape[1]] = True
                on = int(sum(1 << i for i, r in enumerate(real.ravel()) if r))
                vals = np.zeros(len(masks))
                for k in range(1, len(masks)):
                    vals[k] = win.ravel()[elem[k]] + vals[parent[k]]
                ks = np.flatnonzero(cand)
                best = ks[np.argmax(vals[ks])]
                rivals = [vals[k] for k in ks if (int(masks[k]) & on) != (int(masks[best]) & on)]
                if rivals and vals[best] - max(rivals) < margin:
                    x[a, c, rows, cols] = rng.standard_normal(part.shape)
                    clean = False
            if clean:
                return x.astype(dt)
        raise RuntimeError("could not draw an input away from the poset pooling kinks")
    return draw


def entmax_generic(shape, margin=0.02):
    """Inputs for 1.5-entmax away from its support changes: every X_i = x_i/2 at least ``margin``
    from the threshold tau."""
    def draw(rng, n, dt, m):
        for _ in range(1000):
            x = 2 * rng.standard_normal((n,) + shape)
            p = entmax15(x, m.axis)
            X = np.moveaxis(x, m.axis, -1) / 2
            P = np.moveaxis(p, m.axis, -1)
            top = np.argmax(P, axis=-1)[..., None]
            tau = np.take_along_axis(X, top, -1) - np.sqrt(np.take_along_axis(P, top, -1))
            if np.abs(X - tau).min() > margin:
                return x.astype(dt)
        raise RuntimeError("could not draw an input away from the entmax support changes")
    return draw


def grande_generic(n_features, margin=0.01):
    """Inputs for the smooth GRANDE surrogate with every split argument |t - x_n| >= ``margin``
    (softsign's |u| is not twice differentiable at 0)."""
    def draw(rng, n, dt, m):
        for _ in range(1000):
            x = rng.standard_normal((n, n_features))
            params = {k: v.astype(np.float64) for k, v in m.params.items()}
            T, FL = params["split_values"], params["feature_logits"]
            a = m._select(FL)
            t = np.einsum("ens,ens->en", a, T)
            xn = np.einsum("ens,esb->enb", a, x.T[m.subsets])
            if np.abs(t[:, :, None] - xn).min() > margin:
                return x.astype(dt)
        raise RuntimeError("could not draw an input away from the GRANDE split kinks")
    return draw


def _sin_pair():
    return Activation(np.sin, lambda x, y: np.cos(x), name="sin")


ENTRIES = [
    Entry("linear", Linear, lambda dt, r: Linear(5, 3, rng=r, dtype=dt), normal((5,)),
          bad_shape=LAST),
    Entry("linear-nobias-3d", Linear, lambda dt, r: Linear(4, 2, bias=False, rng=r, dtype=dt),
          normal((3, 4)), bad_shape=LAST),
    Entry("identity", Identity, lambda dt, r: Identity(), normal((4,))),
    Entry("relu", ReLU, lambda dt, r: ReLU(), away_from_zero((6,))),
    Entry("leaky-relu", LeakyReLU, lambda dt, r: LeakyReLU(0.1), away_from_zero((2, 3))),
    Entry("gelu", GELU, lambda dt, r: GELU(), normal((6,))),
    Entry("gelu-tanh", GELU, lambda dt, r: GELU("tanh"), normal((6,))),
    Entry("tanh", Tanh, lambda dt, r: Tanh(), normal((6,))),
    Entry("sigmoid", Sigmoid, lambda dt, r: Sigmoid(), normal((6,))),
    Entry("softsign", Softsign, lambda dt, r: Softsign(), away_from_zero((6,))),
    Entry("softplus", Softplus, lambda dt, r: Softplus(beta=2.0), normal((6,))),
    Entry("activation-pair", Activation, lambda dt, r: _sin_pair(), normal((6,))),
    Entry("dropout", Dropout, lambda dt, r: Dropout(0.3), normal((8,)), modes=(False, True)),
    Entry("layernorm", LayerNorm, lambda dt, r: _perturbed(LayerNorm(5, dtype=dt), r),
          normal((5,)), bad_shape=LAST),
    Entry("layernorm-2d", LayerNorm, lambda dt, r: _perturbed(LayerNorm((2, 3), dtype=dt), r),
          normal((2, 3)), bad_shape=LAST),
    Entry("batchnorm1d", BatchNorm1d, lambda dt, r: _perturbed(BatchNorm1d(4, dtype=dt), r),
          normal((4,)), modes=(False, True), per_sample=False, bad_shape=LAST),
    Entry("batchnorm1d-3d", BatchNorm1d, lambda dt, r: _perturbed(BatchNorm1d(3, dtype=dt), r),
          normal((3, 5)), modes=(False, True), per_sample=False),
    Entry("flatten", Flatten, lambda dt, r: Flatten(), normal((2, 3, 2))),
    Entry("reshape", Reshape, lambda dt, r: Reshape(2, 1, 3), normal((6,)), bad_shape=LAST),
    Entry("embedding", Embedding, lambda dt, r: Embedding(7, 3, rng=r, dtype=dt),
          lambda rng, n, dt, m: rng.integers(0, 7, size=(n, 4)), float_input=False),
    Entry("sequential-mlp", Sequential,
          lambda dt, r: Sequential(Linear(4, 6, rng=r, dtype=dt), ReLU(), Linear(6, 3, rng=r, dtype=dt)),
          relu_mlp_input, bad_shape=LAST),
    Entry("residual", Residual,
          lambda dt, r: Residual(Sequential(Linear(5, 5, rng=r, dtype=dt), Tanh())), normal((5,)),
          bad_shape=LAST),
    Entry("residual-shortcut", Residual,
          lambda dt, r: Residual(Sequential(Linear(5, 3, rng=r, dtype=dt), GELU()),
                                 Linear(5, 3, bias=False, rng=r, dtype=dt)),
          normal((5,)), bad_shape=LAST),
    Entry("conv2d", Conv2d, lambda dt, r: _biased(Conv2d(3, 4, 3, padding=1, rng=r, dtype=dt), r),
          normal((3, 5, 6)), bad_shape=CHANNELS),
    Entry("conv2d-strided-dilated-groups", Conv2d,
          lambda dt, r: _biased(Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1),
                                       groups=2, rng=r, dtype=dt), r),
          normal((4, 7, 5)), bad_shape=CHANNELS),
    Entry("conv2d-winograd", Conv2d,
          lambda dt, r: _biased(Conv2d(3, 4, 3, padding=1, rng=r, dtype=dt, algorithm="winograd"), r),
          normal((3, 5, 6)), bad_shape=CHANNELS),
    Entry("conv2d-winograd-odd-unpadded", Conv2d,
          lambda dt, r: _biased(Conv2d(2, 3, 3, rng=r, dtype=dt, algorithm="winograd"), r),
          normal((2, 7, 4)), bad_shape=CHANNELS),
    # 7 output tiles a row (>= PLANES_MIN_TW): the polyphase-plane transforms, odd width
    Entry("conv2d-winograd-planes", Conv2d,
          lambda dt, r: _biased(Conv2d(2, 2, 3, padding=1, rng=r, dtype=dt, algorithm="winograd"), r),
          normal((2, 12, 13)), bad_shape=CHANNELS),
    # 32 input and output channels (>= CL_MIN_CHANNELS): the channels-last transforms
    Entry("conv2d-winograd-channels-last", Conv2d,
          lambda dt, r: _biased(Conv2d(32, 32, 3, padding=1, rng=r, dtype=dt, algorithm="winograd"), r),
          normal((32, 3, 5)), bad_shape=CHANNELS),
    Entry("conv2d-winograd-pad2-nobias", Conv2d,
          lambda dt, r: Conv2d(2, 3, 3, padding=2, bias=False, rng=r, dtype=dt, algorithm="winograd"),
          normal((2, 3, 4)), bad_shape=CHANNELS),
    Entry("conv-transpose2d", ConvTranspose2d,
          lambda dt, r: _biased(ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2,
                                                rng=r, dtype=dt), r),
          normal((4, 3, 4)), bad_shape=CHANNELS),
    Entry("maxpool2d", MaxPool2d, lambda dt, r: MaxPool2d(2), distinct((2, 5, 6)), bad_shape=NDIM3),
    Entry("maxpool2d-overlap-pad", MaxPool2d, lambda dt, r: MaxPool2d(3, stride=2, padding=1),
          distinct((2, 7, 6)), bad_shape=NDIM3),
    Entry("avgpool2d", AvgPool2d, lambda dt, r: AvgPool2d(2), normal((2, 5, 6)), bad_shape=NDIM3),
    Entry("avgpool2d-pad-exclude", AvgPool2d,
          lambda dt, r: AvgPool2d((3, 2), stride=(2, 1), padding=1, count_include_pad=False),
          normal((2, 6, 5)), bad_shape=NDIM3),
    Entry("global-avgpool2d", GlobalAvgPool2d, lambda dt, r: GlobalAvgPool2d(), normal((3, 4, 5)),
          bad_shape=NDIM3),
    Entry("upsample2d", Upsample2d, lambda dt, r: Upsample2d((2, 3)), normal((2, 3, 2)), bad_shape=NDIM3),
    Entry("batchnorm2d", BatchNorm2d, lambda dt, r: _perturbed(BatchNorm2d(3, dtype=dt), r),
          normal((3, 4, 2)), modes=(False, True), per_sample=False, bad_shape=CHANNELS),
    Entry("groupnorm", GroupNorm, lambda dt, r: _perturbed(GroupNorm(2, 4, dtype=dt), r),
          normal((4, 3, 2)), bad_shape=CHANNELS),
    Entry("groupnorm-2d-input", GroupNorm, lambda dt, r: _perturbed(GroupNorm(3, 6, dtype=dt), r),
          normal((6,)), bad_shape=CHANNELS),
    # poset pooling: inputs away from ties between up-set sums; odd sizes are zero-padded
    Entry("posetpool2d-antichain", PosetPool2d, lambda dt, r: PosetPool2d("antichain"),
          poset_generic((2, 5, 6)), bad_shape=NDIM3),
    Entry("posetpool2d-chain", PosetPool2d, lambda dt, r: PosetPool2d("chain"), poset_generic((2, 4, 5)),
          bad_shape=NDIM3),
    Entry("posetpool2d-N", PosetPool2d, lambda dt, r: PosetPool2d("N"), poset_generic((3, 5, 4)),
          bad_shape=NDIM3),
    Entry("posetpool2d-diamond", PosetPool2d, lambda dt, r: PosetPool2d("diamond"), poset_generic((2, 6, 6)),
          bad_shape=NDIM3),
    Entry("posetpool2d-6pt-overlap", PosetPool2d,
          lambda dt, r: PosetPool2d(Poset(6, [(0, 1), (1, 2), (3, 4), (0, 4)]), (1, 2), kernel_size=(2, 3)),
          poset_generic((2, 5, 7)), bad_shape=NDIM3),
    Entry("inverse-conv2d", InverseConv2d,
          lambda dt, r: _invconv(InverseConv2d(3, 3, rng=r, dtype=dt), r), normal((3, 5, 6)),
          bad_shape=CHANNELS),
    Entry("inverse-conv2d-learned-diag-bottom-right", InverseConv2d,
          lambda dt, r: _invconv(InverseConv2d(2, 2, corner="bottom-right", learn_diag=True, rng=r,
                                               dtype=dt), r), normal((2, 4, 5)), bad_shape=CHANNELS),
    # hypernetworks (nograd.models.hypernet): the generator alone, then generated conv kernels and
    # a chunked MLP hypernetwork; smooth targets (tanh) so no input sits on a kink
    Entry("kernel-generator", KernelGenerator,
          lambda dt, r: _biased_all(KernelGenerator(3, 2, 3, (2, 3), hidden=4, rng=r, dtype=dt), r),
          normal((3,)), bad_shape=LAST),
    Entry("hypernet-conv", HyperNetwork,
          lambda dt, r: _biased_all(HyperNetwork(
              Sequential(Conv2d(2, 4, 3, padding=1, rng=r, dtype=dt), Tanh(),
                         Conv2d(4, 4, 3, rng=r, dtype=dt)), block=(2, 2), z_dim=3, hidden=2,
              rng=r, dtype=dt), r),
          normal((2, 5, 4)), bad_shape=CHANNELS),
    Entry("hypernet-mlp-chunked", HyperNetwork,
          lambda dt, r: _biased_all(HyperNetwork(
              Sequential(Linear(3, 4, rng=r, dtype=dt), Tanh(), Linear(4, 2, rng=r, dtype=dt)),
              kind="mlp", names=["0.weight", "2.weight"], num_conditions=2, emb_dim=3,
              hidden=(5,), chunk_size=7, chunk_dim=2, rng=r, dtype=dt), r),
          normal((3,)), bad_shape=LAST),
    # recurrent layers (nograd.layers.recurrent) on short sequences (batch, time, features)
    Entry("rnn", RNN, lambda dt, r: RNN(3, 4, rng=r, dtype=dt), normal((4, 3)), bad_shape=LAST),
    Entry("lstm", LSTM, lambda dt, r: LSTM(2, 3, rng=r, dtype=dt), normal((4, 2)), bad_shape=LAST),
    Entry("lstm-layernorm", LSTM, lambda dt, r: _biased_all(LSTM(2, 3, layer_norm=True, rng=r, dtype=dt), r),
          normal((4, 2)), bad_shape=LAST),
    Entry("gru", GRU, lambda dt, r: GRU(3, 2, rng=r, dtype=dt), normal((5, 3)), bad_shape=LAST),
    Entry("hyperlstm", HyperLSTM,
          lambda dt, r: _biased_all(HyperLSTM(2, 3, hyper_size=4, embed_size=2, rng=r, dtype=dt), r),
          normal((3, 2)), bad_shape=LAST),
    Entry("entmax15", Entmax15, lambda dt, r: Entmax15(), entmax_generic((6,))),
    Entry("entmax15-axis1", Entmax15, lambda dt, r: Entmax15(axis=1), entmax_generic((5, 2))),
    # GRANDE (nograd.models.grande_net) with its straight-through parts replaced by their smooth
    # surrogates (the hard model is piecewise constant in x, thresholds and feature logits)
    Entry("grande-soft-entmax", GrandeNet,
          lambda dt, r: GrandeNet(4, 3, n_estimators=3, depth=2, straight_through=False,
                                  init_std=1.0, rng=r, dtype=dt), grande_generic(4), bad_shape=LAST),
    Entry("grande-soft-softmax-dropout", GrandeNet,
          lambda dt, r: GrandeNet(5, 2, n_estimators=4, depth=3, selection="softmax", dropout=0.3,
                                  straight_through=False, init_std=1.0, rng=r, dtype=dt),
          grande_generic(5), modes=(False, True), bad_shape=LAST),
    # the Inverse-Flow's bijectors (nograd.models.flow_steps; the z output here, the log-determinant
    # in tests/models/test_flow.py) and the whole flow (bits/dim of images in (0, 1)); smooth
    # coupling networks, ReLU's kinks are checked per coupling there
    Entry("actnorm", ActNorm, lambda dt, r: _biased_all(ActNorm(3, dtype=dt), r), normal((3, 4, 2)),
          bad_shape=CHANNELS),
    Entry("affine-coupling-swap", AffineCoupling,
          lambda dt, r: _biased_all(AffineCoupling(3, 4, swap=True, activation="tanh", rng=r,
                                                   dtype=dt), r), normal((3, 4, 3)), bad_shape=CHANNELS),
    Entry("flow-step-learned-diag", FlowStep,
          lambda dt, r: _biased_all(FlowStep(4, 3, corner="top-right", learn_diag=True,
                                             activation="tanh", rng=r, dtype=dt), r),
          normal((4, 3, 4)), bad_shape=CHANNELS),
    Entry("inverse-flow", InverseFlow,
          lambda dt, r: _flow(InverseFlow((1, 4, 4), levels=2, steps=1, hidden=3, n_bins=17,
                                          activation="tanh", rng=r, dtype=dt), r),
          lambda rng, n, dt, m: rng.uniform(0.05, 0.95, (n, 1, 4, 4)).astype(dt), bad_shape=CHANNELS),
    # LoRA (nograd.layers.lora) around a frozen Linear, B moved off its zero init so the B path
    # counts; (batch, time, features) input with adapter dropout in training
    Entry("lora", LoRA, lambda dt, r: _lora(LoRA(_biased(Linear(5, 4, rng=r, dtype=dt), r), 2,
                                                 alpha=3.0, rng=r), r),
          normal((5,)), bad_shape=LAST),
    Entry("lora-3d-dropout", LoRA,
          lambda dt, r: _lora(LoRA(Linear(4, 3, bias=False, rng=r, dtype=dt), 2, dropout=0.3, rng=r), r),
          normal((3, 4)), modes=(False, True), bad_shape=LAST),
    # transformer pieces: RMSNorm (gain off 1), SiLU, ViT patch embedding (non-zero bias; a
    # rectangular image, and rectangular patches without bias)
    Entry("rmsnorm", RMSNorm, lambda dt, r: _perturbed(RMSNorm(5, dtype=dt), r), normal((5,)),
          bad_shape=LAST),
    Entry("rmsnorm-2d", RMSNorm, lambda dt, r: _perturbed(RMSNorm((2, 3), eps=1e-5, dtype=dt), r),
          normal((4, 2, 3)), bad_shape=LAST),
    Entry("silu", SiLU, lambda dt, r: SiLU(), normal((6,))),
    Entry("patch-embed", PatchEmbed,
          lambda dt, r: _biased(PatchEmbed((4, 6), 2, 3, 5, rng=r, dtype=dt), r), normal((3, 4, 6)),
          bad_shape=CHANNELS),
    Entry("patch-embed-rect-nobias", PatchEmbed,
          lambda dt, r: PatchEmbed(4, (2, 1), 2, 3, bias=False, rng=r, dtype=dt), normal((2, 4, 4)),
          bad_shape=CHANNELS),
    # attention and the transformer (nograd.layers.attention, transformer, softmax; models.gpt):
    # (batch, time, embed) inputs, biases and gains moved off their init
    Entry("softmax", Softmax, lambda dt, r: Softmax(), normal((5,))),
    Entry("log-softmax-axis1", LogSoftmax, lambda dt, r: LogSoftmax(axis=1), normal((4, 3))),
    Entry("positional-embedding", PositionalEmbedding,
          lambda dt, r: PositionalEmbedding(6, 3, rng=r, dtype=dt), normal((4, 3)), bad_shape=LAST),
    Entry("attention", MultiheadAttention,
          lambda dt, r: _biased_all(MultiheadAttention(6, 2, rng=r, dtype=dt), r), normal((4, 6)),
          bad_shape=LAST),
    Entry("attention-causal", MultiheadAttention,
          lambda dt, r: _biased_all(MultiheadAttention(6, 3, causal=True, rng=r, dtype=dt), r),
          normal((5, 6)), bad_shape=LAST),
    Entry("attention-bool-mask-nobias", MultiheadAttention,
          lambda dt, r: MultiheadAttention(4, 2, bias=False, attn_mask=_bool_mask(r, 4), rng=r, dtype=dt),
          normal((4, 4)), bad_shape=LAST),
    Entry("attention-float-mask-dropout", MultiheadAttention,
          lambda dt, r: _biased_all(MultiheadAttention(4, 1, dropout=0.3, rng=r, dtype=dt,
                                                       attn_mask=r.normal(size=(3, 3))), r),
          normal((3, 4)), modes=(False, True), bad_shape=LAST),
    Entry("transformer-block", TransformerBlock,
          lambda dt, r: _biased_all(TransformerBlock(6, 2, mlp_ratio=2, rng=r, dtype=dt), r),
          normal((4, 6)), bad_shape=LAST),
    Entry("transformer-block-causal-dropout", TransformerBlock,
          lambda dt, r: _biased_all(TransformerBlock(4, 2, causal=True, bias=False, dropout=0.2,
                                                     activation="tanh", rng=r, dtype=dt), r),
          normal((5, 4)), modes=(False, True), bad_shape=LAST),
    Entry("gpt-tied", GPT,
          lambda dt, r: GPT(7, n_layer=2, n_head=2, n_embd=4, block_size=5, rng=r, dtype=dt),
          lambda rng, n, dt, m: rng.integers(0, 7, size=(n, 5)), float_input=False),
    Entry("gpt-untied-bias-dropout", GPT,
          lambda dt, r: _biased_all(GPT(6, n_layer=1, n_head=2, n_embd=4, block_size=4, bias=True,
                                        tie_weights=False, dropout=0.2, rng=r, dtype=dt), r),
          lambda rng, n, dt, m: rng.integers(0, 6, size=(n, 3)), modes=(False, True), float_input=False),
    # the Vision Transformer (nograd.models.vit) on 1×4×4 images in 2×2 patches, every array off its init
    Entry("vit-cls", ViT,
          lambda dt, r: _biased_all(ViT(4, 2, 1, 3, dim=4, depth=1, heads=2, rng=r, dtype=dt), r),
          normal((1, 4, 4)), bad_shape=CHANNELS),
    Entry("vit-mean", ViT,
          lambda dt, r: _biased_all(ViT(4, 2, 1, 3, dim=4, depth=1, heads=2, pool="mean", dropout=0.2,
                                        rng=r, dtype=dt), r),
          normal((1, 4, 4)), modes=(False, True), bad_shape=CHANNELS),
    # the common layers of issue #20: activations, channel dropout, adaptive and 1-d pooling, Conv1d
    # (a non-zero bias, groups, dilation), stacked and bidirectional recurrent layers
    Entry("elu", ELU, lambda dt, r: ELU(0.7), away_from_zero((6,))),
    Entry("mish", Mish, lambda dt, r: Mish(), normal((6,))),
    Entry("hardtanh", Hardtanh, lambda dt, r: Hardtanh(-0.5, 1.0), away_from((-0.5, 1.0), (6,))),
    Entry("prelu-shared", PReLU, lambda dt, r: _biased_all(PReLU(dtype=dt), r), away_from_zero((2, 3))),
    Entry("prelu-channels", PReLU, lambda dt, r: _biased_all(PReLU(3, dtype=dt), r),
          away_from_zero((3, 4, 2)), bad_shape=CHANNELS),
    Entry("dropout2d", Dropout2d, lambda dt, r: Dropout2d(0.3), normal((3, 4, 5)), modes=(False, True),
          bad_shape=NDIM3),
    Entry("adaptive-avgpool2d", AdaptiveAvgPool2d, lambda dt, r: AdaptiveAvgPool2d((2, 3)),
          normal((2, 5, 4)), bad_shape=NDIM3),
    Entry("adaptive-avgpool2d-up-none", AdaptiveAvgPool2d, lambda dt, r: AdaptiveAvgPool2d((None, 6)),
          normal((3, 3, 4)), bad_shape=NDIM3),
    Entry("conv1d", Conv1d, lambda dt, r: _biased(Conv1d(3, 4, 3, padding=1, rng=r, dtype=dt), r),
          normal((3, 7)), bad_shape=CHANNELS),
    Entry("conv1d-strided-dilated-groups", Conv1d,
          lambda dt, r: _biased(Conv1d(4, 6, 2, stride=2, padding=1, dilation=2, groups=2, rng=r, dtype=dt), r),
          normal((4, 9)), bad_shape=CHANNELS),
    Entry("maxpool1d", MaxPool1d, lambda dt, r: MaxPool1d(3, stride=2, padding=1), distinct((2, 9)),
          bad_shape=NDIM2),
    Entry("avgpool1d-pad-exclude", AvgPool1d, lambda dt, r: AvgPool1d(3, 2, 1, count_include_pad=False),
          normal((2, 8)), bad_shape=NDIM2),
    Entry("rnn-2layer-bidirectional", RNN,
          lambda dt, r: RNN(3, 4, num_layers=2, bidirectional=True, rng=r, dtype=dt), normal((4, 3)),
          bad_shape=LAST),
    Entry("lstm-2layer-dropout", LSTM, lambda dt, r: LSTM(2, 3, num_layers=2, dropout=0.3, rng=r, dtype=dt),
          normal((4, 2)), modes=(False, True), bad_shape=LAST),
    Entry("gru-3layer-bidirectional-dropout", GRU,
          lambda dt, r: GRU(3, 2, num_layers=3, bidirectional=True, dropout=0.25, rng=r, dtype=dt),
          normal((3, 3)), modes=(False, True), bad_shape=LAST),
    Entry("lstm-layernorm-bidirectional", LSTM,
          lambda dt, r: _biased_all(LSTM(2, 3, layer_norm=True, bidirectional=True, rng=r, dtype=dt), r),
          normal((3, 2)), bad_shape=LAST),
    # the diffusion U-Net's time embedding (issue #26): one time step per sample, spread over
    # [0, 50) so that low and high frequencies both vary
    Entry("sinusoidal-embedding", SinusoidalEmbedding, lambda dt, r: SinusoidalEmbedding(6, max_period=100.0),
          lambda rng, n, dt, m: rng.uniform(0, 50, n).astype(dt), bad_shape=lambda s: s + (2,)),
    # the U-Net's convolution adapter (nograd.models.diffusion_lora), B off its zero init
    Entry("lora-conv2d", LoRAConv2d,
          lambda dt, r: _lora(LoRAConv2d(_biased(Conv2d(4, 6, 3, padding=1, groups=2, rng=r, dtype=dt), r), 2,
                                         alpha=3.0, rng=r), r), normal((4, 5, 6)), bad_shape=CHANNELS),
    # low-bit layers of nograd.compress.quantize (issue #22): random codes on the grid, scales and
    # offsets per channel or per layer; the scale and bias are the trainable arrays
    Entry("quantized-linear", QuantizedLinear,
          lambda dt, r: _coded(QuantizedLinear(5, 3, bits=3, dtype=dt), r), normal((5,)), bad_shape=LAST),
    Entry("quantized-linear-layer-3d", QuantizedLinear,
          lambda dt, r: _coded(QuantizedLinear(4, 2, bits=6, bias=False, granularity="layer", dtype=dt), r),
          normal((3, 4)), bad_shape=LAST),
    Entry("quantized-conv2d", QuantizedConv2d,
          lambda dt, r: _coded(QuantizedConv2d(2, 3, 3, stride=(2, 1), padding=1, bits=4, dtype=dt), r),
          normal((2, 5, 6)), bad_shape=CHANNELS),
    Entry("quantized-conv2d-layer", QuantizedConv2d,
          lambda dt, r: _coded(QuantizedConv2d(3, 2, (2, 3), dilation=(2, 1), bits=2, granularity="layer",
                                               dtype=dt), r),
          normal((3, 6, 5)), bad_shape=CHANNELS),
]


def _coded(layer, rng):
    """Fill a quantized layer with random codes, positive scales, offsets and a non-zero bias."""
    out, fan_in = layer._rows
    k = layer.params["scale"].size
    bias = rng.normal(size=out) if "bias" in layer.params else None
    return layer.load_codes(rng.integers(0, 1 << layer.bits, (out, fan_in)), rng.uniform(0.5, 1.5, k),
                            rng.integers(-(1 << (layer.bits - 1)), 1, k), bias)


def _bool_mask(rng, t):
    """A random boolean attention mask with the diagonal kept, so no query sees no key."""
    return (rng.random((t, t)) < 0.6) | np.eye(t, dtype=bool)


def _lora(module, rng):
    """A LoRA whose B is off zero (else the gradient of A and the tangent of A are zero)."""
    B = module._own["lora_B"]
    module._own["lora_B"] = rng.normal(0, 0.5, B.shape).astype(B.dtype)
    return module


def _flow(module, rng):
    """A flow with every array moved off its init and its learned diagonals kept away from 0."""
    _biased_all(module, rng)
    for _, m in module.modules():
        if "diag" in m._own:
            m._own["diag"] = rng.uniform(0.6, 1.4, m._own["diag"].shape).astype(m._own["diag"].dtype)
    return module


def _biased_all(module, rng):
    """Move every array of a generator-based module off its init (zero biases included)."""
    for store in (module._own, *(m._own for _, m in module.modules())):
        for k, v in store.items():
            store[k] = (v + rng.normal(0, 0.3, v.shape)).astype(v.dtype)
    return module


def _perturbed(module, rng):
    """Move norm layers' affine parameters (and running statistics) off their trivial init values."""
    for store in (module._own, module._buffers):
        for k, v in store.items():
            positive = "weight" in k or "var" in k
            value = rng.uniform(0.5, 1.5, v.shape) if positive else rng.normal(0, 0.5, v.shape)
            store[k] = value.astype(v.dtype)
    return module


def _biased(module, rng):
    """Give a layer a non-zero bias, so that a wrong bias gradient or tangent shows."""
    if "bias" in module._own:
        b = module._own["bias"]
        module._own["bias"] = rng.normal(size=b.shape).astype(b.dtype)
    return module


def _invconv(module, rng):
    """An inverse convolution with a non-trivial diagonal of both signs (when it is learned)."""
    if "diag" in module._own:
        d = module._own["diag"]
        module._own["diag"] = (rng.uniform(0.6, 1.4, d.shape) * rng.choice([-1, 1], d.shape)).astype(d.dtype)
    return module


def build(entry: Entry, dtype, seed: int, batch: int):
    rng = np.random.default_rng(seed)
    module = entry.make(np.dtype(dtype), rng)
    x = entry.sample(rng, batch, np.dtype(dtype), module)
    return module, x


# ---- fused conv → ReLU → 2×2 max pooling (issue 28): FusedSequential and MaxPool2d(relu=True)
def fused_cnn_input(shape, margin=5e-3):
    """Inputs whose convolution outputs (``m[0]``) are all ``margin`` from ReLU's kink and whose
    2×2 windows have a positive maximum ``margin`` above the rest (no ties, no kinks)."""
    def draw(rng, n, dt, m):
        for _ in range(1000):
            x = rng.standard_normal((n,) + shape).astype(dt)
            z = m[0](x).astype(np.float64)
            N, C, H, W = z.shape
            w = np.maximum(z, 0)[:, :, :H // 2 * 2, :W // 2 * 2].reshape(N, C, H // 2, 2, W // 2, 2)
            s = np.sort(w.transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H // 2, W // 2, 4), axis=-1)
            if np.abs(z).min() > margin and not ((s[..., 3] > 0) & (s[..., 3] - s[..., 2] < margin)).any():
                return x
        raise RuntimeError("could not draw an input away from the ReLU kinks and pooling ties")
    return draw


def _shifted_distinct(shape, gap=0.05):
    """Distinct entries (no pooling ties), none within ``gap/2`` of ReLU's kink at 0."""
    base = distinct(shape, gap)
    return lambda rng, n, dt, m: (base(rng, n, dt, m) + dt.type(gap / 2)).astype(dt)


ENTRIES += [
    Entry("fused-sequential", FusedSequential,
          lambda dt, r: FusedSequential(_biased(Conv2d(2, 3, 3, padding=1, rng=r, dtype=dt), r), ReLU(),
                                        MaxPool2d(2)),
          fused_cnn_input((2, 5, 6)), bad_shape=CHANNELS),
    Entry("fused-sequential-winograd-odd", FusedSequential,
          lambda dt, r: FusedSequential(_biased(Conv2d(2, 2, 3, rng=r, dtype=dt, algorithm="winograd"), r),
                                        ReLU(), MaxPool2d(2), Flatten(), Linear(8, 3, rng=r, dtype=dt)),
          fused_cnn_input((2, 7, 6)), bad_shape=CHANNELS),
    Entry("maxpool2d-relu", MaxPool2d, lambda dt, r: MaxPool2d(2, relu=True), _shifted_distinct((2, 5, 6)),
          bad_shape=NDIM3),
    Entry("maxpool2d-relu-overlap-pad", MaxPool2d, lambda dt, r: MaxPool2d(3, stride=2, padding=1, relu=True),
          _shifted_distinct((2, 7, 6)), bad_shape=NDIM3),
]


# ---- fused batch norm → ReLU (issue 28): FusedSequential(BatchNorm2d, ReLU), training and evaluation
def batchnorm_relu_input(shape, margin=0.02):
    """Inputs whose batch-norm outputs (``m[0]``), with the batch's statistics (training) and with
    the running ones (evaluation), are all ``margin`` from ReLU's kink."""
    from nograd.kernels.batchnorm import batchnorm_forward_ref

    def draw(rng, n, dt, m):
        bn = m[0]
        for _ in range(1000):
            x = rng.standard_normal((n,) + shape).astype(dt)
            train, _ = batchnorm_forward_ref(x, bn.params["weight"], bn.params["bias"], bn.eps)
            if min(np.abs(train).min(), np.abs(bn(x)).min()) > margin:
                return x
        raise RuntimeError("could not draw an input away from the ReLU kinks")
    return draw


ENTRIES += [
    Entry("fused-sequential-batchnorm-relu", FusedSequential,
          lambda dt, r: FusedSequential(_perturbed(BatchNorm2d(2, dtype=dt), r), ReLU()),
          batchnorm_relu_input((2, 3, 2)), modes=(False, True), per_sample=False, bad_shape=CHANNELS),
]
