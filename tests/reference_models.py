"""Independent torch formulations of the published models, used as references.

`ReferenceRippleGPT` follows Tavernari/RippleGPT src/model.py structurally (one module per head,
q/k/v Linear(n_embd, head_size), decay_factor per head, heads concatenated with no output
projection, RippleMLP, untied head); `ReferenceNanoGPT` follows nanoGPT (fused c_attn, c_proj,
GELU MLP, tied head). Both are written out here independently of physnets' code so tests can
check that our presets compute the published function, and benchmarks can time the published
formulation. `load_from_physnets` copies a physnets_torch state_dict into them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _RippleHead(nn.Module):
    def __init__(self, n_embd, head_size, bias):
        super().__init__()
        self.head_size = head_size
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        self.value = nn.Linear(n_embd, head_size, bias=bias)
        self.decay_factor = nn.Parameter(torch.tensor([-0.8]))

    def forward(self, x):
        T = x.shape[1]
        wei = self.query(x) @ self.key(x).transpose(-2, -1) * self.head_size**-0.5
        idx = torch.arange(T, device=x.device)
        dist = (idx[None, :] - idx[:, None]).clamp(max=0)
        wei = wei + dist * torch.abs(self.decay_factor)
        wei = wei.masked_fill(torch.tril(torch.ones(T, T, device=x.device)) == 0, float("-inf"))
        return F.softmax(wei, dim=-1) @ self.value(x)


class _RippleMLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        hidden = int(n_embd * 8 / 3)
        hidden += hidden % 2
        self.fc1 = nn.Linear(n_embd, hidden)
        self.fc2 = nn.Linear(hidden // 2, n_embd)

    def forward(self, x):
        a, g = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * F.silu(g))


class _RippleBlock(nn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.heads = nn.ModuleList([_RippleHead(n_embd, n_embd // n_head, bias) for _ in range(n_head)])
        self.ln2 = nn.LayerNorm(n_embd)
        self.ffwd = _RippleMLP(n_embd)

    def forward(self, x):
        h = self.ln1(x)
        x = x + torch.cat([head(h) for head in self.heads], dim=-1)
        return x + self.ffwd(self.ln2(x))


class ReferenceRippleGPT(nn.Module):
    """The published RippleGPT forward (eval mode: dropout omitted)."""

    def __init__(self, vocab_size, n_layer, n_head, n_embd, bias=False):
        super().__init__()
        self.n_head = n_head
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.Sequential(*[_RippleBlock(n_embd, n_head, bias) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx):
        return self.lm_head(self.ln_f(self.blocks(self.token_embedding_table(idx))))

    @torch.no_grad()
    def load_from_physnets(self, sd):
        """Copy a physnets_torch ripplegpt state_dict (fused per-layer q/k/v) into per-head modules."""
        self.token_embedding_table.weight.copy_(sd["embedding.wte.weight"])
        self.ln_f.weight.copy_(sd["norm_f.weight"])
        self.ln_f.bias.copy_(sd["norm_f.bias"])
        self.lm_head.weight.copy_(sd["head.proj.weight"])
        for i, block in enumerate(self.blocks):
            p = f"blocks.{i}."
            for ref, ours in (("ln1", "norm1"), ("ln2", "norm2")):
                getattr(block, ref).weight.copy_(sd[p + ours + ".weight"])
                getattr(block, ref).bias.copy_(sd[p + ours + ".bias"])
            hs = block.heads[0].head_size
            for h, head in enumerate(block.heads):
                rows = slice(h * hs, (h + 1) * hs)
                for name in ("query", "key", "value"):
                    getattr(head, name).weight.copy_(sd[p + f"mixer.{name}.weight"][rows])
                    if getattr(head, name).bias is not None:
                        getattr(head, name).bias.copy_(sd[p + f"mixer.{name}.bias"][rows])
                head.decay_factor.copy_(sd[p + "mixer.decay"][h : h + 1])
            for name in ("fc1", "fc2"):
                getattr(block.ffwd, name).weight.copy_(sd[p + f"mlp.{name}.weight"])
                getattr(block.ffwd, name).bias.copy_(sd[p + f"mlp.{name}.bias"])
        return self


class _NanoAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(torch.tril(torch.ones(T, T, dtype=torch.bool)) == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class _NanoBlock(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = _NanoAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class ReferenceNanoGPT(nn.Module):
    """nanoGPT's GPT forward (bias=True, tied head; eval mode)."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([_NanoBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()

    @torch.no_grad()
    def load_from_physnets(self, sd):
        """Copy a physnets_torch gpt state_dict into the nanoGPT layout."""
        self.wte.weight.copy_(sd["embedding.wte.weight"])
        self.wpe.weight.copy_(sd["embedding.wpe.weight"])
        self.ln_f.weight.copy_(sd["norm_f.weight"])
        self.ln_f.bias.copy_(sd["norm_f.bias"])
        for i, block in enumerate(self.h):
            p = f"blocks.{i}."
            pairs = [("ln_1", "norm1"), ("ln_2", "norm2"), ("attn.c_attn", "mixer.qkv"),
                     ("attn.c_proj", "mixer.out"), ("c_fc", "mlp.fc1"), ("c_proj", "mlp.fc2")]
            for ref, ours in pairs:
                module = block.get_submodule(ref)
                module.weight.copy_(sd[p + ours + ".weight"])
                module.bias.copy_(sd[p + ours + ".bias"])
        return self
