"""The schedule and DDPM loss, the rewards' gradients, the PNG writer and the weights file."""
import struct
import zlib

import numpy as np
import pytest

from nograd.diffusion import (ClassifierReward, NoiseSchedule, SymmetryReward, ddpm_loss, encode_png,
                              image_grid, write_png)
from nograd.diffusion.pretrained import build_classifier, load_pretrained, save_pretrained

from diffusion._tiny import tiny_unet


def test_schedule_is_ho_et_al():
    s = NoiseSchedule(1000)
    np.testing.assert_allclose(s.betas[[0, -1]], [1e-4, 0.02])
    ab = 1.0
    for t in range(5):
        ab *= 1 - s.betas[t]
    np.testing.assert_allclose(s.alpha_bar[4], ab, rtol=1e-14)
    x0, z = np.ones((2, 1, 2, 2)), np.full((2, 1, 2, 2), 2.0)
    xt = s.q_sample(x0, np.array([0, 999]), z)
    np.testing.assert_allclose(xt[1, 0, 0, 0], np.sqrt(s.alpha_bar[999]) + 2 * np.sqrt(1 - s.alpha_bar[999]))
    ts = s.timesteps(5)
    assert ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    with pytest.raises(ValueError, match="t must lie"):
        s.q_sample(x0, np.array([0, 1000]), z)
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule(10, kind="quadratic")
    cos = NoiseSchedule(100, kind="cosine")
    assert np.all(np.diff(cos.alpha_bar) < 0) and cos.alpha_bar[-1] < 1e-3


def test_ddpm_loss_gradient_matches_differences():
    net, s = tiny_unet(), NoiseSchedule(50)
    x0 = np.random.default_rng(0).uniform(-1, 1, (3, 1, 4, 4))
    loss, grads = ddpm_loss(net, s, x0, rng=1)
    assert loss > 0
    rng = np.random.default_rng(2)
    base = {k: v.copy() for k, v in net.params.items()}
    d = {k: rng.standard_normal(v.shape) for k, v in base.items()}
    h = 1e-5
    f = []
    for sign in (1, -1):
        for k, v in net.params.items():
            v[...] = base[k] + sign * h * d[k]
        f.append(ddpm_loss(net, s, x0, rng=1)[0])
    fd = (f[0] - f[1]) / (2 * h)
    analytic = sum(float(np.sum(grads[k] * d[k])) for k in d)
    assert abs(analytic - fd) < 1e-7 * abs(fd)


@pytest.mark.parametrize("reward", ["classifier", "symmetry"])
def test_reward_gradients_match_differences(reward):
    rng = np.random.default_rng(0)
    r = (ClassifierReward(build_classifier(rng=1, dtype=np.float64), 3) if reward == "classifier"
         else SymmetryReward())
    x = rng.uniform(-1, 1, (4, 1, 8, 8))
    val, g = r.value_and_grad(x)
    assert val.shape == (4,) and g.shape == x.shape
    d = rng.standard_normal(x.shape)
    h = 1e-6
    fd = (r(x + h * d) - r(x - h * d)) / (2 * h)
    np.testing.assert_allclose(np.sum((g * d).reshape(4, -1), axis=1), fd, rtol=1e-6, atol=1e-9)


def test_classifier_reward_is_a_log_probability():
    clf = build_classifier(rng=0, dtype=np.float64)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 1, 8, 8))
    total = sum(np.exp(ClassifierReward(clf, c)(x)) for c in range(10))
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)
    sym = SymmetryReward()(np.concatenate([x, x[..., ::-1]], axis=3))      # a mirrored pair: symmetric
    np.testing.assert_allclose(sym, 0.0, atol=1e-15)
    with pytest.raises(ValueError, match="target"):
        ClassifierReward(clf, 10)(x)


def _chunks(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        out.append((kind, body))
        pos += 12 + n
    return out


def test_png_round_trip(tmp_path):
    img = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5) * 8
    chunks = _chunks(encode_png(img))
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (w, h, depth, colour) == (5, 6, 8, 0)
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(6, 6)
    assert np.all(raw[:, 0] == 0)
    np.testing.assert_array_equal(raw[:, 1:], img)
    grid = image_grid(np.full((3, 1, 2, 2), 1.0), nrow=2, pad=1, scale=2)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1) and grid.max() == 255 and grid[0].max() == 0
    write_png(tmp_path / "g.png", grid)
    assert (tmp_path / "g.png").read_bytes() == encode_png(grid)
    with pytest.raises(TypeError, match="uint8"):
        encode_png(img.astype(np.float32))


def test_weights_file_round_trip(tmp_path):
    from nograd.models.diffusion import UNet

    unet = UNet(1, 8, (1, 2), groups=4, rng=0)
    clf = build_classifier(hidden=(16,), rng=1)
    config = {"unet": {"in_channels": 1, "channels": 8, "channel_mult": [1, 2], "groups": 4},
              "classifier": {"hidden": [16]}, "schedule": {"num_steps": 100}}
    save_pretrained(tmp_path / "w.npz", unet, clf, config)
    u2, c2, s2, cfg = load_pretrained(tmp_path / "w.npz")
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(u2(x, t=5), unet(x, t=5), rtol=2e-2, atol=2e-2)   # float16 storage
    np.testing.assert_array_equal(c2(x), clf(x))
    assert s2.num_steps == 100 and cfg["unet"]["channels"] == 8
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(tmp_path / "missing.npz")
