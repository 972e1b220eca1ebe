#!/usr/bin/env python3
"""PyTorch implementation of the FLT molecule model (issue-5 benchmark reference).

Never part of the test suite. Same architecture and hyper-parameters as flt::models::MoleculeModel
(src/models/molecule_model.hpp) with the attention of the bundled default model (models/default.flt,
trained with datasets/qm9/default_model.ini): exact softmax attention with a learned radial logit
bias,
    out_i = sum_j softmax_j(q_i.k_j / sqrt(d) + u_h(|r_i - r_j|)) v_j,
    u_h(rho) = sum_k a_hk exp(-(rho - mu_k)^2 / (2 w^2)),  K = 32 centres mu_k evenly on
    [0, 10] Angstrom, w = their spacing (flt::exact::RadialBasis::uniform); a_hk learned (H x K).
Padded keys get a logit of -inf. The radial basis depends on the coordinates only, so it is
computed once per forward and shared by the blocks (the C++ kernel recomputes it per tile).
(The first version of this benchmark also implemented FLT's bias variant, for the then-default
configuration; it is in the history of this file, before commit cf400ce.)

  x0   = E_Z[z]                                                   (embedding, 87 x D)
  pre-norm blocks:  x += Wo Attn(LN1 x);  x += MLP(LN2 x)          (D = 128, H = 8, d = 16, F = 256)
  head: y_n = MLP(LN x_n) (G = 128, SiLU), P targets, each summed over the atoms (extensive) or
        averaged (intensive) -- the default model has 8 targets, U0 homo lumo gap mu alpha zpve Cv
        with pooling sum mean mean mean mean sum sum sum.

Ragged batches: padding with masks. A batch of S molecules is padded to its largest molecule
(S x Nmax); padded atoms are excluded from attention (as keys) and from the pooling.

load_flt reads a C++ .flt model file (the layout of src/models/model_io.hpp) with every weight
and the normalisation, which is how the forward is checked against the C++ model (parity mode).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(width=128, heads=8, blocks=3, mlp_hidden=256, head_hidden=128, max_z=86,
                exact_rbf=32, exact_cutoff=10.0, pooling=["sum"])


class Mlp(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.fc1 = nn.Linear(i, h)
        self.fc2 = nn.Linear(h, o)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


class ExactRbfAttention(nn.Module):
    """Multi-head exact softmax attention with the learned radial logit bias (kind "exact")."""

    def __init__(self, c):
        super().__init__()
        H, K = c["heads"], c["exact_rbf"]
        self.H, self.d = H, c["width"] // H
        # The C++ initialisation (u_h(rho) ~ -rho^2 / (2 l_h^2), l_h geometric in [0.75, 3] A);
        # the benchmark loads the C++ weights anyway.
        spacing = c["exact_cutoff"] / (K - 1)
        mu = [spacing * k for k in range(K)]
        a = []
        for h in range(H):
            ell = 0.75 * 4.0 ** (h / (H - 1) if H > 1 else 0.0)
            a.append([max(-20.0, -m * m / (2 * ell * ell)) / math.sqrt(2 * math.pi) for m in mu])
        self.rbf = nn.Parameter(torch.tensor(a, dtype=torch.float32))            # H x K
        self.register_buffer("centres", torch.tensor(mu, dtype=torch.float32))  # K
        self.width = spacing

    def basis(self, pos):
        """Phi: S x N x N x K radial basis of the pairwise distances (shared by all blocks)."""
        rho = torch.cdist(pos, pos)                                                # S N N
        z = rho[..., None] - self.centres
        return torch.exp(z * z * (-0.5 / (self.width * self.width)))

    def forward(self, q, k, v, phi, mask):
        # q, k, v: S x N x D; phi: S x N x N x K; mask: S x N (bool)
        S, N, _ = q.shape
        H, d = self.H, self.d
        q = q.view(S, N, H, d).transpose(1, 2)                                     # S H N d
        k = k.view(S, N, H, d).transpose(1, 2)
        v = v.view(S, N, H, d).transpose(1, 2)
        bias = (phi @ self.rbf.T).permute(0, 3, 1, 2)                              # S H N N
        logits = (q @ k.transpose(2, 3)) * d ** -0.5 + bias
        logits = logits.masked_fill(~mask[:, None, None, :], -math.inf)
        out = torch.softmax(logits, dim=-1) @ v                                    # S H N d
        return out.transpose(1, 2).reshape(S, N, H * d)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["width"]
        self.ln1 = nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.attn = ExactRbfAttention(c)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = Mlp(D, c["mlp_hidden"], D)

    def forward(self, x, phi, mask):
        # phi: the radial basis of the pairwise distances (ExactRbfAttention.basis)
        u = self.ln1(x)
        x = x + self.o(self.attn(self.q(u), self.k(u), self.v(u), phi, mask))
        return x + self.mlp(self.ln2(x))


class MoleculeModel(nn.Module):
    def __init__(self, c=None):
        super().__init__()
        c = dict(DEFAULTS, **(c or {}))
        self.c = c
        self.embed = nn.Embedding(c["max_z"] + 1, c["width"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["blocks"]))
        self.ln_out = nn.LayerNorm(c["width"])
        self.head = Mlp(c["width"], c["head_hidden"], len(c["pooling"]))
        self.register_buffer("intensive", torch.tensor([p == "mean" for p in c["pooling"]]))
        # Normalisation (identity until load_flt): per target mean m_t, scale sigma_t and
        # per-element reference values e_t[Z] (P x (max_z + 1)).
        P = len(c["pooling"])
        self.register_buffer("norm_mean", torch.zeros(P, dtype=torch.float64))
        self.register_buffer("norm_scale", torch.ones(P, dtype=torch.float64))
        self.register_buffer("norm_reference", torch.zeros(P, c["max_z"] + 1, dtype=torch.float64))

    def forward(self, z, pos, mask):
        """z: S x N (long, 0 = padding), pos: S x N x 3 Angstrom, mask: S x N bool -> S x P
        (normalised units, summed or averaged over the atoms per target)."""
        maskf = mask.to(pos.dtype)[..., None]
        n = maskf.sum(dim=1, keepdim=True)
        phi = self.blocks[0].attn.basis(pos)
        x = self.embed(z)
        for b in self.blocks:
            x = b(x, phi, mask)
        y = self.head(self.ln_out(x))
        pooled = (y * maskf).sum(dim=1)                                            # S x P
        return torch.where(self.intensive, pooled / n[:, 0], pooled)

    def denormalise(self, z, mask, out):
        """Physical units (float64, S x P), as MoleculeModel::denormalise: extensive
        y = sum_n e[Z_n] + |s| m + sigma out; intensive y = m + sigma out."""
        n = mask.sum(dim=1, keepdim=True).double()
        ref = self.norm_reference[:, z].sum(dim=-1).T                              # S x P (row 0 = 0)
        ext = ref + n * self.norm_mean + self.norm_scale * out.double()
        inten = self.norm_mean + self.norm_scale * out.double()
        return torch.where(self.intensive, inten, ext)

    def param_groups(self, weight_decay):
        """AdamW groups as the C++ decay_mask_matrices_only: decay tensors that are matrices (Linear
        weights, the embedding, the H x K radial coefficients), not vectors (biases, LayerNorm)."""
        decay, no = [], []
        for p in self.parameters():
            (decay if p.dim() == 2 else no).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# .flt reader (docs/model-format.md, numpy only) and weight import.

DTYPES = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def read_flt(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    buf = data[8 + n:]
    arrays = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        arrays[name] = np.frombuffer(buf[b:e], dtype=DTYPES[t["dtype"]]).reshape(t["shape"]).copy()
    return meta, arrays


def load_flt(path):
    """A MoleculeModel holding exactly the weights and normalisation of a C++ .flt model of the
    exact attention kind (C++ Linear weights are in x out, torch's out x in)."""
    meta, A = read_flt(path)
    cfg = lambda key: meta["config." + key]
    c = {}
    for key in ("width", "heads", "blocks", "mlp_hidden", "head_hidden", "max_z", "exact_rbf"):
        c[key] = int(cfg(key))
    c["exact_cutoff"] = float(cfg("exact_cutoff"))
    c["pooling"] = cfg("target_pooling").split(",")
    assert cfg("attention") == "exact", "this reference implements the exact attention kind"
    assert cfg("activation") == "silu" and cfg("use_charges") == "false"
    assert all(t in ("sum", "mean") for t in c["pooling"])
    model = MoleculeModel(c)
    P = lambda name: torch.from_numpy(A["param." + name].astype(np.float32))

    def lin(mod, name):
        mod.weight.data.copy_(P(name + ".weight").T)
        mod.bias.data.copy_(P(name + ".bias").reshape(-1))

    def ln(mod, name):
        mod.weight.data.copy_(P(name + ".weight").reshape(-1))
        mod.bias.data.copy_(P(name + ".bias").reshape(-1))

    model.embed.weight.data.copy_(P("embed.element.weight"))
    for b, blk in enumerate(model.blocks):
        p = f"block{b}"
        ln(blk.ln1, p + ".ln1")
        ln(blk.ln2, p + ".ln2")
        for nm in ("q", "k", "v", "o"):
            lin(getattr(blk, nm), f"{p}.attn.{nm}")
        lin(blk.mlp.fc1, p + ".mlp.fc1")
        lin(blk.mlp.fc2, p + ".mlp.fc2")
        blk.attn.rbf.data.copy_(P(f"{p}.attn.rbf"))
    ln(model.ln_out, "head.ln")
    lin(model.head.fc1, "head.mlp.fc1")
    lin(model.head.fc2, "head.mlp.fc2")
    model.norm_mean.copy_(torch.from_numpy(A["norm.mean"].reshape(-1)))
    model.norm_scale.copy_(torch.from_numpy(A["norm.scale"].reshape(-1)))
    model.norm_reference.copy_(torch.from_numpy(A["norm.reference"]))
    return model


# ---------------------------------------------------------------------------------------------
# Data (the file of prepare_data.py) and padded batches.

def read_molecules(path):
    """The file of prepare_data.py: "M P", then per molecule "n y_1 .. y_P" and n "Z x y z" lines."""
    with open(path) as f:
        tok = f.read().split()
    M, P = int(tok[0]), int(tok[1])
    i = 2
    mols = []
    for _ in range(M):
        n, y = int(tok[i]), [float(t) for t in tok[i + 1:i + 1 + P]]
        i += 1 + P
        arr = np.array(tok[i:i + 4 * n], dtype=np.float64).reshape(n, 4)
        i += 4 * n
        mols.append((arr[:, 0].astype(np.int64), arr[:, 1:], y))
    return mols


def make_batch(mols, first, count):
    """Padded batch of molecules first .. first+count-1 (cycling): z, pos, mask, y."""
    sel = [mols[(first + k) % len(mols)] for k in range(count)]
    N = max(len(m[0]) for m in sel)
    z = torch.zeros(count, N, dtype=torch.long)
    pos = torch.zeros(count, N, 3, dtype=torch.float32)
    mask = torch.zeros(count, N, dtype=torch.bool)
    for s, (zz, pp, _) in enumerate(sel):
        n = len(zz)
        z[s, :n] = torch.from_numpy(zz)
        pos[s, :n] = torch.from_numpy(pp).float()
        mask[s, :n] = True
    y = torch.tensor([m[2] for m in sel], dtype=torch.float32)
    return z, pos, mask, y
