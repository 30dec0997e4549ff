"""nograd's GPT (nanoGPT's architecture: pre-norm blocks, LayerNorm and Linear without bias, causal
attention, exact GELU, tied head) written with ``torch.nn``, for the benchmarks' PyTorch peer.

:func:`build` returns the module loaded with a nograd GPT's parameters (``init``: name → array), so
both start from the same weights; it raises when the names do not match one to one. torch is
imported inside, so a machine without it can import this file.
"""
from __future__ import annotations


def build(init: dict, *, vocab: int, n_layer: int, n_head: int, n_embd: int, block_size: int):
    import torch
    import torch.nn.functional as F

    nn = torch.nn
    E, H, L = n_embd, n_head, n_layer

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(E, bias=False), nn.LayerNorm(E, bias=False)
            self.qkv, self.proj = nn.Linear(E, 3 * E, bias=False), nn.Linear(E, E, bias=False)
            self.fc, self.out = nn.Linear(E, 4 * E, bias=False), nn.Linear(4 * E, E, bias=False)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(E, dim=2)
            q, k, v = (t.view(B, T, H, E // H).transpose(1, 2) for t in (q, k, v))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(o.transpose(1, 2).reshape(B, T, E))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="none"))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, E)
            self.wpe = nn.Parameter(torch.zeros(block_size, E))
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(E, bias=False)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe[:idx.shape[1]]
            for b in self.h:
                x = b(x)
            return self.ln_f(x) @ self.wte.weight.T        # tied head

    model = TorchGPT()
    names = {"wte.weight": "wte.weight", "wpe.weight": "wpe", "ln_f.weight": "ln_f.weight"}
    for i in range(L):
        for ours, theirs in (("ln1.weight", "ln1.weight"), ("ln2.weight", "ln2.weight"),
                             ("attn.in_proj.weight", "qkv.weight"), ("attn.out_proj.weight", "proj.weight"),
                             ("mlp.0.weight", "fc.weight"), ("mlp.2.weight", "out.weight")):
            names[f"h.{i}.{ours}"] = f"h.{i}.{theirs}"
    state = {theirs: torch.from_numpy(init[ours].copy()) for ours, theirs in names.items() if ours in init}
    missing = set(model.state_dict()) ^ set(state)
    if missing or set(names) != set(init):
        raise RuntimeError(f"weight names do not match: {sorted(missing ^ (set(names) ^ set(init)))}")
    model.load_state_dict(state)
    return model
