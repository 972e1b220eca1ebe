#!/usr/bin/env python3
"""PyTorch implementation of the FLT molecule model (issue-5 benchmark reference).

Never part of the test suite. Same architecture and hyper-parameters as flt::models::MoleculeModel
(src/models/molecule_model.hpp) for the two attention kinds the benchmark uses:

  * "exact" -- the configuration of the bundled default model (models/default.flt, trained with
    datasets/qm9/default_model.ini): exact softmax attention with a learned radial logit bias,
        out_i = sum_j softmax_j(q_i.k_j / sqrt(d) + u_h(|r_i - r_j|)) v_j,
        u_h(rho) = sum_k a_hk exp(-(rho - mu_k)^2 / (2 w^2)),  K = 32 centres mu_k evenly on
        [0, 10] Angstrom, w = their spacing (flt::exact::RadialBasis::uniform); a_hk learned (H x K).
    Padded keys get a logit of -inf. The radial basis depends on the coordinates only, so it is
    computed once per forward and shared by the blocks (the C++ kernel recomputes it per tile).
  * "bias" -- FLT variant B (E12/E13) with the radial_gaussian spectrum, the earlier benchmark
    configuration (ModelConfig defaults): see FltBiasAttention.

  x0   = E_Z[z]                                                   (embedding, 87 x D)
  pre-norm blocks:  x += Wo Attn(LN1 x);  x += MLP(LN2 x)          (D = 128, H = 8, d = 16, F = 256)
  head: y_n = MLP(LN x_n) (G = 128, SiLU), P targets, each summed over the atoms (extensive) or
        averaged (intensive) -- the default model has 8 targets, U0 homo lumo gap mu alpha zpve Cv
        with pooling sum mean mean mean mean sum sum sum.

Ragged batches: padding with masks. A batch of S molecules is padded to its largest molecule
(S x Nmax); padded atoms are excluded from attention (as keys), the centroid and the pooling.

load_flt reads a C++ .flt model file (either key prefix: "config." as written by `flt train`,
"model." as written by models::save_model) with every weight, random feature and the
normalisation, which is how the forward is checked against the C++ model (parity mode).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(width=128, heads=8, blocks=3, mlp_hidden=256, head_hidden=128, max_z=86,
                attention="bias", num_features=16, num_frequencies=16, spectrum_components=4,
                proposal_scale=0.4, init_sigma_min=0.15, init_sigma_max=0.6, init_beta=1.0,
                exact_rbf=32, exact_cutoff=10.0, pooling=["sum"])


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
    def __init__(self, c, gen):
        super().__init__()
        D = c["width"]
        self.ln1 = nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.attn = ExactRbfAttention(c) if c["attention"] == "exact" else FltBiasAttention(c, gen)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = Mlp(D, c["mlp_hidden"], D)

    def forward(self, x, geom, mask):
        # geom: the centred positions (bias kind) or the radial basis Phi (exact kind)
        u = self.ln1(x)
        x = x + self.o(self.attn(self.q(u), self.k(u), self.v(u), geom, mask))
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
        if self.c["attention"] == "exact":
            geom = self.blocks[0].attn.basis(pos)
        else:
            geom = (pos - (pos * maskf).sum(dim=1, keepdim=True) / n) * maskf     # centred
        x = self.embed(z)
        for b in self.blocks:
            x = b(x, geom, mask)
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
        """AdamW groups as the C++ decay_mask_matrices_only: decay tensors that are matrices in the
        C++ layout (Linear weights, the embedding), not vectors (biases, LayerNorm, spectra, beta)."""
        decay, no = [], []
        for name, p in self.named_parameters():
            # (the exact kind's H x K radial coefficients are a matrix in C++ too: decayed)
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
    """A MoleculeModel holding exactly the weights, random features and normalisation of a C++
    .flt model (C++ Linear weights are in x out, torch's out x in)."""
    meta, A = read_flt(path)
    prefix = "config." if "config.width" in meta else "model."
    cfg = lambda key: meta[prefix + key]
    c = {}
    for key in ("width", "heads", "blocks", "mlp_hidden", "head_hidden", "max_z", "num_features",
                "num_frequencies", "spectrum_components", "exact_rbf"):
        c[key] = int(cfg(key))
    for key in ("proposal_scale", "init_sigma_min", "init_sigma_max", "init_beta", "exact_cutoff"):
        c[key] = float(cfg(key))
    c["attention"] = cfg("attention")
    c["pooling"] = cfg("target_pooling").split(",")
    assert c["attention"] in ("bias", "exact"), "this reference implements the bias and exact kinds"
    assert c["attention"] == "exact" or cfg("spectrum") == "radial_gaussian"
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
        at = blk.attn
        if c["attention"] == "exact":
            at.rbf.data.copy_(P(f"{p}.attn.rbf"))
            continue
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
