#!/usr/bin/env python3
"""PyTorch implementation of the default FLT molecule model (issue-5 benchmark reference).

Never part of the test suite. Same architecture and hyper-parameters as flt::models::MoleculeModel
with the defaults of models::ModelConfig (src/models/molecule_model.hpp):

  x0   = E_Z[z]                                                   (embedding, 87 x 128)
  3 pre-norm blocks:  x += Wo Attn(LN1 x);  x += MLP(LN2 x)       (D = 128, H = 8, d = 16, F = 256)
  head: y_n = MLP(LN x_n) (G = 128, SiLU), summed over the atoms (extensive target)
  Attn: FLT attention, variant "bias" (E12/E13) with the radial_gaussian spectrum (T = 4),
        m = 16 Performer features, R = 16 RPE frequencies per head, gaussian proposal s0 = 0.4:
        x^_i = [q_i / d^(1/4); beta sqrt(R) c~ o cs(r_i - c)],  y^_j = [k_j / d^(1/4); cs(r_j - c) / sqrt(R)]
        phi(x) = m^(-1/2) exp(W x - |x|^2/2 - stab)    (FAVOR+, E2)
        out_i = sum_j phi(x^_i).phi(y^_j) v_j / sum_j phi(x^_i).phi(y^_j)
        cs = [cos 2 pi xi.r, sin 2 pi xi.r],  c~_k = g(xi_k) / (R p(xi_k)),
        g(xi) = sum_t exp(logw_t) exp(-|xi|^2 / sigma_t^2),  sigma_t^2 = exp(lmax - softplus(lmax - lambda_t)),
        lmax = log(2 s0^2); c = the molecule's centroid; stab: per-row max for queries, per
        (molecule, head) max over keys (detached: it cancels).
  Training: MSE on the standardised target, global-norm clipping at 10, AdamW (lr 5e-4, betas
  0.9/0.999, eps 1e-8, weight decay 0.01 on matrices only), batch size 32, float32.

Ragged batches: padding with masks. A batch of S molecules is padded to its largest molecule
(S x Nmax); padded keys get phi = 0 (they add nothing to the sums), padded atoms are excluded from
the centroid, the key stabiliser and the pooling. Attention is linear (the FLT estimator), so no
Nmax x Nmax matrix is formed, as in the C++ kernel.

The random features (Performer frequencies W: m x (d + 2R) per head, RPE frequencies xi: R x 3 and
their proposal density) are buffers, fixed as in the C++ default (redraw_features = false). They
are either drawn here from the same distributions (orthogonal Gaussian blocks with chi norms; xi
with spread directions and s0 chi(3) radii) or loaded with every weight from a C++ .flt file
(load_flt), which is how the forward is checked against the C++ model (parity mode).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(width=128, heads=8, blocks=3, mlp_hidden=256, head_hidden=128, max_z=86,
                num_features=16, num_frequencies=16, spectrum_components=4, proposal_scale=0.4,
                init_sigma_min=0.15, init_sigma_max=0.6, init_beta=1.0, targets=1)


class Mlp(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.fc1 = nn.Linear(i, h)
        self.fc2 = nn.Linear(h, o)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


def _orthogonal_gaussian(m, D, gen):
    """m x D rows in blocks of D orthogonal directions, each row norm from chi(D)."""
    rows = []
    while sum(r.shape[0] for r in rows) < m:
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
        rows.append(q.T)
    w = torch.cat(rows)[:m]
    norms = torch.randn(m, D, generator=gen, dtype=torch.float64).norm(dim=1)
    return w * norms[:, None]


class FltBiasAttention(nn.Module):
    """Multi-head FLT attention, variant bias, radial_gaussian spectrum (see module docstring)."""

    def __init__(self, c, gen):
        super().__init__()
        H, d, m, R, T = c["heads"], c["width"] // c["heads"], c["num_features"], c["num_frequencies"], c["spectrum_components"]
        self.H, self.d, self.m, self.R, self.T = H, d, m, R, T
        s0 = c["proposal_scale"]
        self.lmax = math.log(2.0 * s0 * s0)
        # Spectrum parameters: geometric sigma ladder, f(0) = 1 (equal share per component).
        sig = [c["init_sigma_min"] * (c["init_sigma_max"] / c["init_sigma_min"]) ** (t / (T - 1)) for t in range(T)]
        lam, logw = [], []
        for s in sig:
            ls = min(math.log(s * s), self.lmax - 0.1)
            y = self.lmax - ls
            lam_t = self.lmax - (y if y > 30 else math.log(math.expm1(y)))
            s_eff = math.exp(0.5 * (self.lmax - F.softplus(torch.tensor(self.lmax - lam_t, dtype=torch.float64)).item()))
            lam.append(lam_t)
            logw.append(math.log((1.0 / T) / (math.sqrt(math.pi) * s_eff) ** 3))
        self.logw = nn.Parameter(torch.tensor([logw] * H, dtype=torch.float32))    # H x T
        self.lam = nn.Parameter(torch.tensor([lam] * H, dtype=torch.float32))      # H x T
        self.beta = nn.Parameter(torch.full((H,), c["init_beta"], dtype=torch.float32))
        # Random features.
        W = torch.stack([_orthogonal_gaussian(m, d + 2 * R, gen) for _ in range(H)])
        xi = []
        for _ in range(H):
            u = torch.randn(R, 3, generator=gen, dtype=torch.float64)
            u = u / u.norm(dim=1, keepdim=True)
            rad = s0 * torch.randn(R, 3, generator=gen, dtype=torch.float64).norm(dim=1)
            xi.append(u * rad[:, None])
        xi = torch.stack(xi)
        pdf = (2 * math.pi * s0 * s0) ** -1.5 * torch.exp(-(xi ** 2).sum(-1) / (2 * s0 * s0))
        self.register_buffer("W", W.float())        # H x m x (d + 2R)
        self.register_buffer("xi", xi.float())      # H x R x 3
        self.register_buffer("pdf", pdf.float())    # H x R

    def ctilde(self):
        # g(xi_k) per head (H x R) and c~ = g / (R pdf)
        s2inv = torch.exp(-(self.lmax - F.softplus(self.lmax - self.lam)))       # H x T
        r2 = (self.xi ** 2).sum(-1)                                               # H x R
        g = (torch.exp(self.logw)[:, None, :] * torch.exp(-r2[:, :, None] * s2inv[:, None, :])).sum(-1)
        return g / (self.R * self.pdf)

    def forward(self, q, k, v, pos, mask):
        # q, k, v: S x N x D; pos: S x N x 3 (centred); mask: S x N (bool)
        S, N, _ = q.shape
        H, d, R, m = self.H, self.d, self.R, self.m
        q = q.view(S, N, H, d).transpose(1, 2) * d ** -0.25                       # S H N d
        k = k.view(S, N, H, d).transpose(1, 2) * d ** -0.25
        v = v.view(S, N, H, d).transpose(1, 2)
        theta = 2 * math.pi * torch.einsum("snc,hrc->shnr", pos, self.xi)          # S H N R
        cs = torch.cat([torch.cos(theta), torch.sin(theta)], dim=-1)               # S H N 2R
        ct = self.ctilde()
        a = (self.beta[:, None] * math.sqrt(R)) * torch.cat([ct, ct], dim=-1)      # H x 2R
        xq = torch.cat([q, cs * a[None, :, None, :]], dim=-1)                      # S H N (d+2R)
        yk = torch.cat([k, cs / math.sqrt(R)], dim=-1)
        Wt = self.W.transpose(1, 2)[None]                                          # 1 H (d+2R) m
        lq = xq @ Wt - 0.5 * (xq * xq).sum(-1, keepdim=True)                       # S H N m
        lk = yk @ Wt - 0.5 * (yk * yk).sum(-1, keepdim=True)
        mk = mask[:, None, :, None]
        stab_q = lq.detach().amax(dim=-1, keepdim=True)
        stab_k = lk.detach().masked_fill(~mk, -math.inf).amax(dim=(2, 3), keepdim=True)
        phq = torch.exp(lq - stab_q)       # the m^(-1/2) factors cancel between num and den
        phk = torch.exp(lk - stab_k) * mk
        kv = phk.transpose(2, 3) @ v                                               # S H m d
        z = phk.sum(dim=2)                                                         # S H m
        num = phq @ kv                                                             # S H N d
        den = (phq * z[:, :, None, :]).sum(-1, keepdim=True)
        out = num / den
        return out.transpose(1, 2).reshape(S, N, H * d)


class Block(nn.Module):
    def __init__(self, c, gen):
        super().__init__()
        D = c["width"]
        self.ln1 = nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.attn = FltBiasAttention(c, gen)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = Mlp(D, c["mlp_hidden"], D)

    def forward(self, x, pos, mask):
        u = self.ln1(x)
        x = x + self.o(self.attn(self.q(u), self.k(u), self.v(u), pos, mask))
        return x + self.mlp(self.ln2(x))


class MoleculeModel(nn.Module):
    def __init__(self, c=None, seed=0):
        super().__init__()
        c = dict(DEFAULTS, **(c or {}))
        self.c = c
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(c["max_z"] + 1, c["width"])
        self.blocks = nn.ModuleList(Block(c, gen) for _ in range(c["blocks"]))
        self.ln_out = nn.LayerNorm(c["width"])
        self.head = Mlp(c["width"], c["head_hidden"], c["targets"])

    def forward(self, z, pos, mask):
        """z: S x N (long, 0 = padding), pos: S x N x 3 Angstrom, mask: S x N bool -> S x P
        (normalised units, summed over atoms)."""
        maskf = mask.to(pos.dtype)[..., None]
        n = maskf.sum(dim=1, keepdim=True)
        pos = (pos - (pos * maskf).sum(dim=1, keepdim=True) / n) * maskf          # centred
        x = self.embed(z)
        for b in self.blocks:
            x = b(x, pos, mask)
        y = self.head(self.ln_out(x))
        return (y * maskf).sum(dim=1)

    def param_groups(self, weight_decay):
        """AdamW groups as the C++ decay_mask_matrices_only: decay tensors that are matrices in the
        C++ layout (Linear weights, the embedding), not vectors (biases, LayerNorm, spectra, beta)."""
        decay, no = [], []
        for name, p in self.named_parameters():
            is_matrix = p.dim() == 2 and not (name.endswith(".logw") or name.endswith(".lam"))
            (decay if is_matrix else no).append(p)
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
    """A MoleculeModel holding exactly the weights and random features of a C++ .flt model
    (default configuration; C++ Linear weights are in x out, torch's out x in)."""
    meta, A = read_flt(path)
    c = {}
    for key in ("width", "heads", "blocks", "mlp_hidden", "head_hidden", "max_z", "num_features",
                "num_frequencies", "spectrum_components"):
        c[key] = int(meta["model." + key])
    for key in ("proposal_scale", "init_sigma_min", "init_sigma_max", "init_beta"):
        c[key] = float(meta["model." + key])
    c["targets"] = len(meta["model.targets"].split(","))
    assert meta["model.attention"] == "bias" and meta["model.spectrum"] == "radial_gaussian"
    assert meta["model.activation"] == "silu" and meta["model.use_charges"] == "false"
    for t in meta["model.target_pooling"].split(","):
        assert t == "sum", "this reference implements sum pooling (the default U0 target)"
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
        at = blk.attn
        at.logw.data.copy_(torch.stack([P(f"{p}.attn.rpe.h{h}.logw").reshape(-1) for h in range(at.H)]))
        at.lam.data.copy_(torch.stack([P(f"{p}.attn.rpe.h{h}.lambda").reshape(-1) for h in range(at.H)]))
        at.beta.data.copy_(P(f"{p}.attn.rpe.beta").reshape(-1))
        f = f"features.block{b}.h"
        at.W.copy_(torch.stack([torch.from_numpy(A[f"{f}{h}.omega"]) for h in range(at.H)]).float())
        at.xi.copy_(torch.stack([torch.from_numpy(A[f"{f}{h}.xi"]) for h in range(at.H)]).float())
        at.pdf.copy_(torch.stack([torch.from_numpy(A[f"{f}{h}.pdf"]).reshape(-1) for h in range(at.H)]).float())
    ln(model.ln_out, "head.ln")
    lin(model.head.fc1, "head.mlp.fc1")
    lin(model.head.fc2, "head.mlp.fc2")
    return model


# ---------------------------------------------------------------------------------------------
# Data (the file of prepare_data.py) and padded batches.

def read_molecules(path):
    with open(path) as f:
        tok = f.read().split()
    M = int(tok[0])
    i = 1
    mols = []
    for _ in range(M):
        n, y = int(tok[i]), float(tok[i + 1])
        i += 2
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
    y = torch.tensor([[m[2]] for m in sel], dtype=torch.float32)
    return z, pos, mask, y
