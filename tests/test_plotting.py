"""nograd.plotting: every figure function writes a valid PNG of the stated pixel size with the data
drawn in it; bad input names the argument; a missing matplotlib gives the one-line install hint;
``compare --plot DIR`` writes its learning curves."""
import struct
import sys
import zlib

import numpy as np
import pytest

from nograd import plotting
from nograd.__main__ import main

pytest.importorskip("matplotlib")

C0, C1 = (31, 119, 180), (255, 127, 14)        # matplotlib's first two cycle colours


def read_png(path):
    """``(width, height, RGB array)`` of a PNG, its chunks checked by their CRC; fails on anything
    that is not a whole PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    from matplotlib.image import imread

    rgb = (imread(str(path))[..., :3] * 255).round().astype(int)
    assert rgb.shape == (height, width, 3)
    return width, height, rgb


def count_colour(rgb, colour, tol=40):
    return int((np.abs(rgb - np.array(colour)).sum(-1) < tol).sum())


def check(path, size):
    """A valid PNG of ``size`` pixels, under 150 kB, with both of the first two line colours."""
    w, h, rgb = read_png(path)
    assert (w, h) == size
    assert path.stat().st_size < 150_000
    return rgb


def test_learning_curves(tmp_path):
    runs = {"backprop": {"epoch": [1, 2, 3], "val_accuracy": [0.5, 0.8, 0.9], "loss": [1.0, 0.4, 0.2]},
            "fa": {"epoch": [1, 2, 3], "val_accuracy": [0.3, 0.6, None], "loss": [2.0, 1.0, 0.8]}}
    assert plotting.learning_curves(runs, tmp_path / "a.png", title="t") == str(tmp_path / "a.png")
    rgb = check(tmp_path / "a.png", (1000, 380))
    for panel in (rgb[:, :500], rgb[:, 500:]):          # accuracy left, loss right: both runs in each
        assert count_colour(panel, C0) > 50 and count_colour(panel, C1) > 50
    with pytest.raises(ValueError, match="runs\\['fa'\\].*lengths"):
        plotting.learning_curves({"fa": {**runs["fa"], "loss": [1.0]}}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="no column 'val_accuracy'"):
        plotting.learning_curves({"fa": {"epoch": [1], "loss": [1.0]}}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="runs must be a non-empty mapping"):
        plotting.learning_curves({}, tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_alignment_curves(tmp_path):
    angles = {"fa": {"0.weight": [88, 70, 55], "2.weight": [80, 62, 50]},
              "dfa": {"0.weight": [89, 75, 60], "2.weight": [85, 66, 40]}}
    plotting.alignment_curves([1, 2, 3], angles, tmp_path / "a.png")
    rgb = check(tmp_path / "a.png", (740, 340))          # 3.4 * 2 + 0.6 in by 3.4 in
    assert count_colour(rgb, C0) > 50 and count_colour(rgb, C1) > 50
    with pytest.raises(ValueError, match="angles\\['dfa'\\] has no layer '2.weight'"):
        plotting.alignment_curves([1, 2, 3], {**angles, "dfa": {"0.weight": [1, 2, 3]}},
                                  tmp_path / "b.png")
    with pytest.raises(ValueError, match="2 values for 3 epochs"):
        plotting.alignment_curves([1, 2, 3], {"fa": {"0.weight": [1, 2]}}, tmp_path / "b.png")


def test_sparsity_histograms(tmp_path):
    rng = np.random.default_rng(0)
    groups = {"FF": [rng.uniform(0.6, 1, 300), rng.uniform(0.5, 1, 300)],
              "backprop": [rng.uniform(0, 0.5, 300), rng.uniform(0.1, 0.4, 300)]}
    plotting.sparsity_histograms(groups, tmp_path / "a.png", bands={"FF": (0.63, 0.9)})
    rgb = check(tmp_path / "a.png", (840, 320))          # 4 * 2 + 0.4 in by 3.2 in
    assert count_colour(rgb, C0) > 50 and count_colour(rgb, C1) > 50
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        plotting.sparsity_histograms({"FF": [np.array([0.2, 1.5])]}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="no value"):
        plotting.sparsity_histograms({"FF": [np.array([np.nan, np.nan])]}, tmp_path / "b.png")
    silent = {"FF": [np.append(groups["FF"][0], np.nan)], "bp": [groups["backprop"][0]]}
    plotting.sparsity_histograms(silent, tmp_path / "c.png")      # a silent sample is left out
    check(tmp_path / "c.png", (440, 320))
    with pytest.raises(ValueError, match="groups\\['bp'\\] has 1 layers"):
        plotting.sparsity_histograms({"FF": groups["FF"], "bp": groups["backprop"][:1]},
                                     tmp_path / "b.png")


def test_grouped_bars(tmp_path):
    values = {"phoneme": {"grande": 0.85, "hgb": 0.87},
              "climate-model-simulation-crashes": {"grande": 0.7, "hgb": 0.6}}
    errors = {d: {m: 0.02 for m in v} for d, v in values.items()}
    plotting.grouped_bars(values, tmp_path / "a.png", errors=errors, ylabel="F1", ylim=(0, 1))
    rgb = check(tmp_path / "a.png", (600, 380))          # at least 6 in by 3.8 in
    assert count_colour(rgb, C0, tol=10) > 500 and count_colour(rgb, C1, tol=10) > 500
    with pytest.raises(ValueError, match="values\\['x'\\] has series"):
        plotting.grouped_bars({**values, "x": {"grande": 1.0}}, tmp_path / "b.png")
    with pytest.raises(ValueError, match="errors\\['phoneme'\\]"):
        plotting.grouped_bars(values, tmp_path / "b.png", errors={})


def test_line_plot_leaves_out_missing_points(tmp_path):
    series = {"ours": ([16, 32, 64], [0.1, 0.4, 1.6]), "dense": ([16, 32, 64], [3.0, 100.0, None])}
    plotting.line_plot(series, tmp_path / "a.png", logx=True, logy=True, xlabel="H")
    rgb = check(tmp_path / "a.png", (600, 400))
    assert count_colour(rgb, C0) > 50 and count_colour(rgb, C1) > 50
    with pytest.raises(ValueError, match="series\\['ours'\\]: a log axis needs positive"):
        plotting.line_plot({"ours": ([1, 2], [0.0, 1.0])}, tmp_path / "b.png", logy=True)
    with pytest.raises(ValueError, match="x has 2 values, y 1"):
        plotting.line_plot({"ours": ([1, 2], [1.0])}, tmp_path / "b.png")


def test_image_grid_scales_and_clips(tmp_path):
    black = np.zeros((6, 1, 8, 8))
    plotting.image_grid(black, tmp_path / "a.png", cols=3, title="x")
    _, _, rgb = read_png(tmp_path / "a.png")
    assert rgb.shape == (200, 240, 3)                    # 0.8 * 3 in by 0.8 * 2 + 0.4 in
    n_black = count_colour(rgb, (0, 0, 0), tol=5)
    assert n_black > 0.5 * 6 * 60 * 60 * 0.8             # six images of about 70 x 70 px, dark
    plotting.image_grid(black + 2.0, tmp_path / "b.png", cols=3, vmax=1.0)   # clipped to white
    assert count_colour(read_png(tmp_path / "b.png")[2], (0, 0, 0), tol=5) == 0
    plotting.image_grid(black + 2.0, tmp_path / "c.png", cols=3, vmin=2.0, vmax=3.0)   # = vmin
    assert count_colour(read_png(tmp_path / "c.png")[2], (0, 0, 0), tol=5) == n_black
    with pytest.raises(ValueError, match="images must be"):
        plotting.image_grid(np.zeros((2, 2, 8, 8)), tmp_path / "d.png")


def test_failed_write_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        plotting.line_plot({"a": ([1, 2], [1, 2])}, tmp_path / "nope" / "a.png")
    assert [p.name for p in tmp_path.iterdir()] == []        # no temporary file left behind


def test_plot_dir(tmp_path):
    d = plotting.plot_dir(tmp_path / "a" / "b")
    assert d == str(tmp_path / "a" / "b") and (tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="--plot .*: is a file"):
        plotting.plot_dir(tmp_path / "f")


def test_missing_matplotlib_gives_the_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # `import matplotlib` now fails
    with pytest.raises(ImportError, match=r"^--plot: plotting needs matplotlib.*pip install 'nograd\[plot\]'$"):
        plotting.plot_dir(tmp_path / "figs")
    with pytest.raises(ImportError, match=r"pip install 'nograd\[plot\]'"):
        plotting.line_plot({"a": ([1, 2], [1, 2])}, tmp_path / "a.png")
    assert not (tmp_path / "figs").exists()
    code = main(["compare", "--rules", "backprop", "--epochs", "1", "--no-memory",
                 "--plot", str(tmp_path / "figs")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""                             # stopped before any training
    assert err.strip().splitlines()[-1].endswith("--plot: " + plotting.MISSING_MESSAGE)


def test_compare_plot_writes_learning_curves(tmp_path, capsys):
    figs = tmp_path / "figs"
    code = main(["compare", "--rules", "backprop", "--epochs", "2", "--batch-size", "128",
                 "--no-memory", "--plot", str(figs)])
    out, _ = capsys.readouterr()
    assert code == 0
    path = figs / "learning_curves.png"
    assert f"figure: {path}" in out
    rgb = check(path, (1000, 380))
    assert count_colour(rgb, C0) > 50


SCRIPTS = ["examples/feedback_alignment.py", "examples/ff_representations.py",
           "examples/inverse_flow.py", "examples/poset_pooling.py", "examples/hypernet_cnn.py",
           "examples/causal_rnn.py", "bench/grande_tabular.py", "bench/invconv.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_plot_stops_at_once_without_matplotlib(script, tmp_path, monkeypatch, capsys):
    """Every script's ``--plot DIR`` checks for matplotlib before it loads data or trains: exit
    status 2, the install hint on stderr, nothing on stdout, no folder made."""
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"_plot_{os.path.basename(script)[:-3]}",
                                                  os.path.join(root, script))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as stop:
        mod.main(["--plot", str(tmp_path / "figs")])
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == ""
    assert err.strip().endswith("--plot: " + plotting.MISSING_MESSAGE)
    assert not (tmp_path / "figs").exists()
