"""Shared tiny models for the diffusion tests (float64, a few hundred arrays' entries)."""
import numpy as np

from nograd.core.module import Module
from nograd.models.diffusion import UNet


def tiny_unet(num_classes=None, seed=0, dtype=np.float64, jitter=0.1):
    """A 2-level U-Net of width 4 on 4×4 images, every array moved off its init (zero biases)."""
    net = UNet(1, 4, (1, 2), num_classes=num_classes, groups=2, rng=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for v in net.params.values():
        v += rng.normal(0, jitter, v.shape).astype(v.dtype)
    return net


class Bound(Module):
    """The U-Net with its time steps and labels fixed: a one-input module for the gradient checks."""

    def __init__(self, net, t, labels=None):
        super().__init__()
        self._children["net"] = net
        self.t, self.labels = t, labels

    def forward(self, x, *, train=False, rng=None, params=None):
        return self._children["net"].forward(x, t=self.t, labels=self.labels, params=self._split(params, "net"))

    def backward(self, cache, dy, *, params=None, need_dx=True):
        dx, g = self._children["net"].backward(cache, dy, params=self._split(params, "net"), need_dx=need_dx)
        return dx, self._prefixed(g, "net")

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        return self._children["net"].jvp(x, dx, self._split(dparams, "net"), t=self.t, labels=self.labels,
                                         params=self._split(params, "net"))


def _groups(module):
    """Parameter directions by top-level block of the U-Net (``net.<child>.*``), each a key list."""
    out = {}
    for k in module.params:
        parts = k.split(".")
        head = ".".join(parts[:2]) if parts[0] == "net" else parts[0]
        out.setdefault(head, []).append(k)
    return out


def check_maps(module, x, seed=0, h=1e-5):
    """Worst relative errors ``(vjp, jvp, adjoint)`` of a module in float64, along random directions
    of the input alone, of the arrays of each top-level block, and of everything at once: central
    differences of ``⟨v, f⟩`` against ``backward`` and of ``f`` against ``jvp``, and
    ``⟨backward(v), u⟩ = ⟨v, jvp(u)⟩``. (One direction per block rather than per array, as
    ``nograd.testing`` does, keeps a U-Net's check to seconds.)"""
    rng = np.random.default_rng(seed)
    params = dict(module.params)
    y, cache = module.forward(x)
    v = rng.standard_normal(y.shape)
    dx, grads = module.backward(cache, v)
    dirs = [{"x": rng.standard_normal(x.shape)}]
    for keys in _groups(module).values():
        dirs.append({k: rng.standard_normal(params[k].shape) for k in keys})
    dirs.append({"x": rng.standard_normal(x.shape), **{k: rng.standard_normal(a.shape) for k, a in params.items()}})
    worst = [0.0, 0.0, 0.0]
    cot = dict(grads, x=dx)

    def f(s, d):
        ps = {k: a + s * d[k] if k in d else a for k, a in params.items()}
        return module.forward(x + s * d["x"] if "x" in d else x, params=ps)[0]

    for d in dirs:
        fd = (f(h, d) - f(-h, d)) / (2 * h)
        dp = {k: a for k, a in d.items() if k != "x"} or None
        _, jv = module.jvp(x, d.get("x"), dp)
        lhs = sum(float(np.sum(cot[k] * a)) for k, a in d.items())
        rhs = float(np.sum(v * jv))
        scale = np.linalg.norm(v) * np.linalg.norm(fd) + 1e-300
        worst[0] = max(worst[0], abs(lhs - float(np.sum(v * fd))) / scale)
        worst[1] = max(worst[1], float(np.linalg.norm(jv - fd) / (np.linalg.norm(fd) + 1e-300)))
        worst[2] = max(worst[2], abs(lhs - rhs) / scale)
    return tuple(worst)
