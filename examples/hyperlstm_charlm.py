"""Character-level language model: LSTM against HyperLSTM of similar size, same time budget.

    python examples/hyperlstm_charlm.py [--text PATH] [--seconds 50] [--seed 0] [--json]

Ha, Dai & Le, "HyperNetworks" (2016) §4.1 (Penn Treebank: 1.265 bits per character for the
HyperLSTM against 1.312 for the LSTM). The model is embedding → (Hyper)LSTM → linear, trained with
truncated backpropagation through time (the state is carried from one window to the next, the
gradient is cut at the window's start), Adam and global-norm gradient clipping. The last 10 % of
the text is held out; validation bits per character are measured on it with the state carried
across windows. ``--text`` takes any UTF-8 file (e.g. ../shared/data/tinyshakespeare/input.txt);
without it the corpus is nograd's own Python sources, which ship with the package (up to 300 KB).
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nograd.losses import softmax_cross_entropy  # noqa: E402
from nograd.core.optim import Adam  # noqa: E402
from nograd.layers import LSTM, Embedding, Linear  # noqa: E402
from nograd.models import HyperLSTM  # noqa: E402


def load_text(path, limit=300_000):
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nograd")
    parts = []
    for name in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        with open(name, encoding="utf-8") as f:
            parts.append(f.read())
    return "".join(parts)[:limit]


class CharLM:
    """Embedding → recurrent layer → Linear, with the chain rule written out for truncated BPTT."""

    def __init__(self, vocab, kind, hidden, rng, *, embed=32, hyper_size=32, embed_size=8):
        self.emb = Embedding(vocab, embed, rng=rng)
        if kind == "lstm":
            self.rnn = LSTM(embed, hidden, rng=rng)
        else:
            self.rnn = HyperLSTM(embed, hidden, hyper_size=hyper_size, embed_size=embed_size, rng=rng)
        self.head = Linear(hidden, vocab, rng=rng, init="xavier_uniform")
        self.parts = {"emb": self.emb, "rnn": self.rnn, "head": self.head}

    @property
    def params(self):
        return {f"{n}.{k}": v for n, m in self.parts.items() for k, v in m.params.items()}

    @property
    def num_params(self):
        return sum(m.num_params for m in self.parts.values())

    def step(self, idx, target, state):
        """Loss (nats per character), gradients and the final state of one window."""
        e, ce = self.emb.forward(idx)
        h, cr = self.rnn.forward(e, state=state)
        z, ch = self.head.forward(h)
        V = z.shape[-1]
        loss, dz = softmax_cross_entropy(z.reshape(-1, V), target.reshape(-1))
        dh, gh = self.head.backward(ch, dz.reshape(z.shape))
        de, gr, _ = self.rnn.backward_state(cr, dh)
        _, ge = self.emb.backward(ce, de, need_dx=False)
        grads = {}
        for n, g in (("emb", ge), ("rnn", gr), ("head", gh)):
            grads.update({f"{n}.{k}": v for k, v in g.items()})
        return loss, grads, self.rnn.final_state(cr)

    def evaluate(self, data, batch, window):
        """Bits per character on ``data`` (split into ``batch`` streams, state carried)."""
        n = (len(data) - 1) // batch
        X = data[:n * batch].reshape(batch, n)
        Y = data[1:n * batch + 1].reshape(batch, n)
        state, total, count = None, 0.0, 0
        for t in range(0, n, window):
            e = self.emb(X[:, t:t + window])
            h, cr = self.rnn.forward(e, state=state)
            state = self.rnn.final_state(cr)
            z = self.head(h)
            V = z.shape[-1]
            loss, _ = softmax_cross_entropy(z.reshape(-1, V), Y[:, t:t + window].reshape(-1))
            total += loss * Y[:, t:t + window].size
            count += Y[:, t:t + window].size
        return total / count / np.log(2)


def train(kind, hidden, train_ids, val_ids, vocab, args):
    rng = np.random.default_rng(args.seed)
    model = CharLM(vocab, kind, hidden, rng)
    opt = Adam(model.params, lr=args.lr, clip_norm=args.clip)
    B, T = args.batch, args.window
    n = (len(train_ids) - 1) // B
    X = train_ids[:n * B].reshape(B, n)
    Y = train_ids[1:n * B + 1].reshape(B, n)
    start, pos, state, steps, curve = time.perf_counter(), 0, None, 0, []
    while time.perf_counter() - start < args.seconds:
        if pos + T > n:
            pos, state = 0, None
        loss, grads, state = model.step(X[:, pos:pos + T], Y[:, pos:pos + T], state)
        opt.step(grads)
        pos, steps = pos + T, steps + 1
        if steps % 50 == 0:
            curve.append((round(time.perf_counter() - start, 1), round(loss / np.log(2), 4)))
    bpc = model.evaluate(val_ids, min(B, 16), T)
    return {"model": kind, "params": model.num_params, "steps": steps, "val_bpc": round(float(bpc), 4),
            "curve": curve}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", default=None, help="a UTF-8 text file (default: nograd's own sources)")
    ap.add_argument("--seconds", type=float, default=50.0, help="training time per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--window", type=int, default=50, help="truncated-BPTT window")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    ap.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    ap.add_argument("--hyper-hidden", type=int, default=100, help="HyperLSTM hidden size")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = ap.parse_args(argv)
    text = load_text(args.text)
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.array([lookup[c] for c in text], dtype=np.int64)
    cut = int(0.9 * len(ids))
    rows = [train("lstm", args.hidden, ids[:cut], ids[cut:], len(chars), args),
            train("hyperlstm", args.hyper_hidden, ids[:cut], ids[cut:], len(chars), args)]
    print(f"text: {args.text or 'nograd sources'}, {len(text)} characters, {len(chars)} symbols; "
          f"{args.seconds:g} s of training each")
    print(f"{'model':<11}{'params':>9}{'steps':>7}{'val bpc':>9}")
    for r in rows:
        print(f"{r['model']:<11}{r['params']:>9}{r['steps']:>7}{r['val_bpc']:>9.4f}")
    if args.json:
        print(json.dumps({"text": args.text or "nograd-sources", "chars": len(text), "seed": args.seed,
                          "seconds": args.seconds, "bpc_lstm": rows[0]["val_bpc"],
                          "bpc_hyperlstm": rows[1]["val_bpc"], "params_lstm": rows[0]["params"],
                          "params_hyperlstm": rows[1]["params"], "steps_lstm": rows[0]["steps"],
                          "steps_hyperlstm": rows[1]["steps"], "curve_lstm": rows[0]["curve"],
                          "curve_hyperlstm": rows[1]["curve"]}))


if __name__ == "__main__":
    main()
