#!/usr/bin/env python3
"""PyTorch implementation of the FLT molecule model (the model benchmark's reference).

Never part of the test suite. Same architecture, hyper-parameters and arithmetic as
flt::models::MoleculeModel (src/models/molecule_model.hpp) with its default attention kind
`near_far` (exact near field with distance filters and vector features, FLT far field, gated
equivariant update); load_flt reads a C++ .flt model of that kind (docs/model-format.md), which is
how the forward is checked against the C++ one (bench_torch.py parity). The previous version of
this file implemented the `exact` kind (the default model until the near_far commit 30e4300); it
is in the history of this file.

Shapes: a ragged batch of S molecules is a flat array of N atoms (`mol[n]`: molecule of atom n);
D = H d channels (H heads of width d), V = 3D value columns, K radial nodes, P near pairs (i, j)
with |r_j - r_i| < r_c (self pairs included), Pf far pairs (same molecule, beyond r_c).

  x0 = E_Z[z]                                                                 N x D
  block b (src/models/molecule_model.cpp, near_field.hpp, far_field.hpp, equivariant_update.hpp):
    u = LN1(x);  q = u Wq + bq,  k = u Wk + bk,  v = u Wv + bv = [v^s | v^a | v^b]
    near pairs p = (i, j), rho = |r_j - r_i|, unit vector e_ij = (r_j - r_i) / rho (0 for i = j),
      envelope e(rho) = 1 - 28 x^6 + 48 x^7 - 21 x^8 (x = rho / r_c),
      filters [F^k | F^s | F^a | F^b] = silu(b(rho) Wf + bf) with the Bessel basis
      b_n(rho) = j0((n + 1) pi rho / r_c), evaluated as the cubic Hermite interpolant of a table
      of the exact values and slopes on G = 256 intervals of [0, r_c], built per forward in double
      logit_ijh = sum_{c in h} q_ic k_jc F^k_c / sqrt(d);  m_ih = max(sink_h, max_j logit_ijh)
      w_ijh = e_ij exp(logit_ijh - m_ih);  den_ih = exp(sink_h - m_ih) + sum_j w_ijh
      a_ic = sum_j (w_ijh / den_ih) v^s_jc F^s_c                              (near field)
           + sum_{j in same molecule, j != i} c_h(i, j) v^s_jc               (far field)
      c_h(i, j) = sum_n A_hn g_n(i, j),  A_hn = exp(theta_hn),  kappa_n = n * far_spacing:
        near pairs (exact):  g_n = (1 - e(rho)) j0(2 pi kappa_n rho)
        far pairs (FLT estimate with the block's spherical design {u_m, lam_m}):
                             g_n = sum_m lam_m cos(2 pi kappa_n u_m.(r_i - r_j))
      dvec_i[x] = sum_j e_ij (v^a_j F^a vec_j[x] + v^b_j F^b e_ij[x])         (vector messages)
    x += a Wo + bo;  vec += dvec
    update: U = vec Wu, W = vec Ww (per component), n_c = sqrt(sum_x W_xc^2 + 1e-8),
            [g^vv | g^sv | g^ss] = MLP([LN(x) | n]) (2D -> F -> 3D, SiLU),
            vec += g^vv U;  x += g^sv sum_x U_x W_x + g^ss
  head: y_n = MLP(LN(x_n)) (D -> G -> P, SiLU); per target the sum (extensive) or mean
        (intensive) over the molecule's atoms; denormalise() maps to physical units.

The far field: the C++ code estimates far pairs through spherical-design features (for QM9-sized
molecules the Gram matrices Psi Psi^T of the molecule's rows masked to the far pairs; for large
sets the linear-time sums). That is the same estimator as the per-pair form above,
psi_n(r_i).psi_n(r_j) = sum_m lam_m cos(2 pi kappa_n u_m.(r_i - r_j)), which is what a PyTorch
implementation over a flat pair list computes (quadratic in the molecule size, like the C++ small-
set path). Near pairs are exact on both sides. The design directions and weights of each block
are read from the model file; training rotates them by a random rotation at every step, as the C++
trainer does (begin_step).

Implementation notes (efficiency choices any PyTorch author would make; both sides do them):
  * the geometry (pairs, distances, envelope, Hermite weights, far-field radial terms) depends
    on the coordinates only: computed once per forward (no gradient; training has no forces) and
    shared by the blocks;
  * the filters of all pairs are one F.embedding_bag over the stacked [values; slopes] table with
    the four Hermite weights as per_sample_weights (a fused weighted gather, P x 512 written once);
  * the far field's near-pair coefficients are added to the near field's per-pair scalar
    weights, so v^s is gathered and scattered once over the near pairs;
  * block 0's input is the embedding, a function of the element only: its LN1 and q/k/v run on
    the distinct elements of the batch and are gathered (as the C++ AtomTypes);
  * block 0's vector features are zero, so its v^a F^a vec_j term is skipped.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(width=128, heads=8, blocks=3, mlp_hidden=256, head_hidden=128, max_z=86,
                cutoff=5.0, radial_nodes=16, table_intervals=256, far_nodes=4, far_spacing=0.025,
                far_directions=56, pooling=["sum"])
VECTOR_NORM_EPS = 1e-8


# ---------------------------------------------------------------------------------------------
# Radial functions (src/attention/radial.hpp), float64.

def j0_and_derivative(x):
    """j0(x) = sin(x)/x and dj0/dx, with the series below |x| = 1e-3 (as flt::attn)."""
    small = x.abs() < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    x2 = x * x
    j0 = torch.where(small, 1.0 - x2 / 6.0 + x2 * x2 / 120.0, torch.sin(xs) / xs)
    dj0 = torch.where(small, -x / 3.0 + x * x2 / 30.0, (xs * torch.cos(xs) - torch.sin(xs)) / (xs * xs))
    return j0, dj0


def envelope(rho, cutoff):
    x = rho / cutoff
    e = 1.0 + x ** 6 * (-28.0 + x * (48.0 - 21.0 * x))
    return torch.where(x < 1.0, e, torch.zeros_like(e))


def bessel_basis(rho, count, cutoff):
    """b_n(rho) = j0(2 pi kappa_n rho), kappa_n = (n + 1) / (2 r_c), and d b_n / d rho: len(rho) x K."""
    k = 2.0 * math.pi * (torch.arange(count, dtype=torch.float64) + 1.0) / (2.0 * cutoff)
    j0, dj0 = j0_and_derivative(rho[:, None] * k)
    return j0, dj0 * k


# ---------------------------------------------------------------------------------------------
# Geometry of a batch: pairs and everything that depends on the coordinates only.

class Geometry:
    """Near pairs (i, j) with rho < cutoff in increasing (i, j), self pairs included, as
    flt::attn::build_neighbour_list; far pairs (same molecule, rho >= cutoff); per near pair the
    envelope, unit vector, Hermite table indices and weights, and the far field's exact radial
    terms (1 - e) j0(2 pi kappa_n rho). Float64 throughout, then cast to `dtype`."""

    def __init__(self, pos, sizes, cfg, dtype):
        rc, G = cfg["cutoff"], cfg["table_intervals"]
        S = sizes.shape[0]
        # Every ordered pair of atoms of the same molecule: pair k of molecule s (n_s^2 of them)
        # is (k // n_s, k % n_s) in the molecule's rows.
        first = torch.cumsum(sizes, 0) - sizes
        n2 = sizes * sizes
        pmol = torch.repeat_interleave(torch.arange(S), n2)
        k = torch.arange(int(n2.sum())) - torch.repeat_interleave(torch.cumsum(n2, 0) - n2, n2)
        n = sizes[pmol]
        i, j = first[pmol] + k // n, first[pmol] + k % n
        d = pos[j] - pos[i]                                       # r_j - r_i, Angstrom
        rho = torch.sqrt((d * d).sum(1))
        near = rho < rc
        self.i, self.j = i[near], j[near]
        self.far_i, self.far_j = i[~near], j[~near]
        self.far_d = (-d[~near]).to(dtype)                        # r_i - r_j
        rho_n, d_n = rho[near], d[near]
        env = envelope(rho_n, rc)
        self.env = env.to(dtype)
        self.unit = torch.where(rho_n[:, None] > 0, d_n / rho_n.clamp_min(1e-300)[:, None],
                                torch.zeros_like(d_n)).to(dtype)
        # Interval g and position t of each distance in the table (near_field.cpp: locate).
        x = rho_n / (rc / G)
        g = torch.floor(x)
        t = x - g
        g = g.long()
        last = g >= G
        g = torch.where(last, torch.full_like(g, G - 1), g)
        t = torch.where(last, torch.ones_like(t), t)
        t2, t3 = t * t, t * t * t
        # F(t) = h00 F_g + h10 S_g + h01 F_g+1 + h11 S_g+1 on the stacked table [values; slopes].
        self.bag_index = torch.stack([g, G + 1 + g, g + 1, G + 2 + g], 1)
        self.bag_weight = torch.stack([2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2,
                                       t3 - t2], 1).to(dtype)
        kappa = torch.arange(cfg["far_nodes"], dtype=torch.float64) * cfg["far_spacing"]
        self.far_kappa = kappa.to(dtype)
        j0, _ = j0_and_derivative(2.0 * math.pi * rho_n[:, None] * kappa)
        self.far_near = ((1.0 - env)[:, None] * j0).to(dtype)     # P x Kf


# ---------------------------------------------------------------------------------------------
# Layers.

class Mlp(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.fc1 = nn.Linear(i, h)
        self.fc2 = nn.Linear(h, o)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


class NearFarAttention(nn.Module):
    """The near field (exact attention over the near pairs with filters, sink and vector messages)
    plus the FLT far field on v^s. Returns the scalar output a (N x D) and the vector messages
    (N x 3 x D)."""

    def __init__(self, c):
        super().__init__()
        D, H, K, G = c["width"], c["heads"], c["radial_nodes"], c["table_intervals"]
        self.H, self.d, self.D = H, D // H, D
        self.step = c["cutoff"] / G
        # Filters as nn.Linear(K, .) of the radial basis (the C++ stores them K x out).
        self.filter_k = nn.Linear(K, D)
        self.filter_v = nn.Linear(K, 3 * D)
        self.sink = nn.Parameter(torch.zeros(H))
        self.far_log_coeffs = nn.Parameter(torch.full((H, c["far_nodes"]), math.log(1e-3)))
        # The basis and its derivative at the table nodes rho_g = g h (constants).
        nodes = torch.arange(G + 1, dtype=torch.float64) * self.step
        b, db = bessel_basis(nodes, K, c["cutoff"])
        self.register_buffer("table_basis", b)
        self.register_buffer("table_dbasis", db)
        # The block's spherical design (directions M x 3, weights M): set by load_flt, rotated
        # at every training step (MoleculeModel.rotate_designs).
        M = c["far_directions"]
        self.register_buffer("far_directions", torch.zeros(M, 3))
        self.register_buffer("far_weights", torch.zeros(M))

    def filter_table(self, dtype):
        """[values; slopes] of the filters at the nodes, (2 (G + 1)) x (D + V): F = silu(z),
        S = h silu'(z) dz/drho with z = b W + bias, in double (near_field.cpp: build_table)."""
        W = torch.cat([self.filter_k.weight, self.filter_v.weight]).double()       # (D+V) x K
        bias = torch.cat([self.filter_k.bias, self.filter_v.bias]).double()
        z = F.linear(self.table_basis.double(), W, bias)
        zs = F.linear(self.table_dbasis.double(), W)
        s = torch.sigmoid(z)
        value = z * s
        slope = self.step * s * (1.0 + z * (1.0 - s)) * zs
        return torch.cat([value, slope]).to(dtype)

    def forward(self, q, k, v, vec, geo):
        N, D, H, d = q.shape[0], self.D, self.H, self.d
        i, j = geo.i, geo.j
        P = i.shape[0]
        gather = lambda t, idx: torch.index_select(t, 0, idx)
        filt = F.embedding_bag(geo.bag_index, self.filter_table(q.dtype), mode="sum",
                               per_sample_weights=geo.bag_weight)                  # P x 4D
        fk, fs, fa, fb = filt.split(D, dim=1)
        vs, va, vb = gather(v, j).split(D, dim=1)                                   # P x D each
        # Softmax over each row's neighbours and the sink, weighted by the envelope.
        logit = (gather(q, i) * gather(k, j) * fk).view(P, H, d).sum(-1) * (1.0 / math.sqrt(d))
        with torch.no_grad():  # the stabiliser cancels; no gradient through it
            m = self.sink.detach().expand(N, H).contiguous()
            m = m.scatter_reduce(0, i[:, None].expand(P, H), logit, reduce="amax")
        ex = geo.env[:, None] * torch.exp(logit - gather(m, i))                    # P x H
        den = torch.exp(self.sink - m).index_add(0, i, ex)
        alpha = ex / gather(den, i)
        # Far field: exact coefficients on the near pairs, the design's estimate on far pairs.
        A = torch.exp(self.far_log_coeffs)                                          # H x Kf
        c_near = geo.far_near @ A.T                                                 # P x H
        coef = torch.addcmul(c_near[:, :, None], alpha[:, :, None], fs.view(P, H, d)).view(P, D)
        a = torch.zeros_like(q).index_add(0, i, coef * vs)
        if geo.far_i.numel():
            proj = geo.far_d @ self.far_directions.T                                # Pf x M
            phase = (2.0 * math.pi) * geo.far_kappa[1:, None] * proj[:, None, :]    # Pf x (Kf-1) x M
            est = torch.cat([torch.ones_like(proj[:, :1]), torch.cos(phase) @ self.far_weights], 1)
            c_far = est @ A.T                                                       # Pf x H
            Pf = c_far.shape[0]
            vf = gather(v[:, :D], geo.far_j).view(Pf, H, d)
            a = a.index_add(0, geo.far_i, (c_far[:, :, None] * vf).view(Pf, D))
        # Vector messages e (v^a F^a vec_j + v^b F^b e_ij), components x, y, z: P x 3 x D.
        msg = (vb * fb)[:, None, :] * (geo.env[:, None] * geo.unit)[:, :, None]
        if vec is not None:
            msg = torch.addcmul(msg, (geo.env[:, None] * va * fa)[:, None, :], gather(vec, j))
        dvec = torch.zeros(N, 3, D, dtype=q.dtype).index_add(0, i, msg)
        return a, dvec


class EquivariantUpdate(nn.Module):
    def __init__(self, D, hidden):
        super().__init__()
        self.ln = nn.LayerNorm(D)
        self.vec_u = nn.Linear(D, D, bias=False)
        self.vec_w = nn.Linear(D, D, bias=False)
        self.mlp = Mlp(2 * D, hidden, 3 * D)

    def forward(self, x, vec):
        U, W = self.vec_u(vec), self.vec_w(vec)                                     # N x 3 x D
        norms = torch.sqrt((W * W).sum(1) + VECTOR_NORM_EPS)
        gvv, gsv, gss = self.mlp(torch.cat([self.ln(x), norms], 1)).chunk(3, dim=1)
        return x + gsv * (U * W).sum(1) + gss, vec + gvv[:, None, :] * U


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        D = c["width"]
        self.ln1 = nn.LayerNorm(D)
        self.q, self.k, self.o = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.v = nn.Linear(D, 3 * D)
        self.attn = NearFarAttention(c)
        self.update = EquivariantUpdate(D, c["mlp_hidden"])

    def forward(self, x, vec, geo, types=None):
        """types = (x rows of the distinct atom types, type of each atom): block 0's input
        depends on the type only, so LN1 and the projections run per type."""
        if types is None:
            u = self.ln1(x)
            q, k, v = self.q(u), self.k(u), self.v(u)
        else:
            u = self.ln1(types[0])
            q, k, v = self.q(u)[types[1]], self.k(u)[types[1]], self.v(u)[types[1]]
        a, dvec = self.attn(q, k, v, vec, geo)
        x = x + self.o(a)
        vec = dvec if vec is None else vec + dvec
        return self.update(x, vec)


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
        self.base_designs = None  # directions of the model file's draw (rotated in training)

    def forward(self, batch):
        """Normalised outputs S x P (per target summed or averaged over the molecule's atoms)."""
        dtype = self.embed.weight.dtype
        geo = Geometry(batch.pos, batch.sizes, self.c, dtype)
        elements, of_atom = torch.unique(batch.z, return_inverse=True)
        x = self.embed(batch.z)
        vec = None
        for b, blk in enumerate(self.blocks):
            x, vec = blk(x, vec, geo, (self.embed(elements), of_atom) if b == 0 else None)
        y = self.head(self.ln_out(x))                                               # N x P
        S = batch.sizes.shape[0]
        pooled = torch.zeros(S, y.shape[1], dtype=y.dtype).index_add(0, batch.mol, y)
        return torch.where(self.intensive, pooled / batch.sizes[:, None].to(y.dtype), pooled)

    def denormalise(self, batch, out):
        """Physical units (float64, S x P), as MoleculeModel::denormalise: extensive
        y = sum_n e[Z_n] + |s| m + sigma out; intensive y = m + sigma out."""
        S = batch.sizes.shape[0]
        ref = torch.zeros(S, out.shape[1], dtype=torch.float64).index_add(
            0, batch.mol, self.norm_reference[:, batch.z].T)
        n = batch.sizes[:, None].double()
        ext = ref + n * self.norm_mean + self.norm_scale * out.double()
        inten = self.norm_mean + self.norm_scale * out.double()
        return torch.where(self.intensive, inten, ext)

    def rotate_designs(self, generator=None):
        """A uniformly random rotation of every block's design (the C++ begin_step with
        redraw_features): unit quaternion from four normals."""
        if self.base_designs is None:
            self.base_designs = [blk.attn.far_directions.clone() for blk in self.blocks]
        for blk, base in zip(self.blocks, self.base_designs):
            w, x, y, z = (torch.randn(4, dtype=torch.float64, generator=generator)).tolist()
            s = 1.0 / math.sqrt(w * w + x * x + y * y + z * z)
            w, x, y, z = w * s, x * s, y * s, z * s
            R = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                              [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                              [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]],
                             dtype=torch.float64)
            blk.attn.far_directions.copy_((base.double() @ R.T).to(base.dtype))

    def param_groups(self, weight_decay):
        """AdamW groups as the C++ decay_mask_matrices_only: decay the tensors with more than one
        row and column (Linear weights, filters, the embedding, the far-field H x K log
        coefficients), not biases, LayerNorm parameters or the sinks."""
        decay, no = [], []
        for p in self.parameters():
            (decay if p.dim() == 2 and min(p.shape) > 1 else no).append(p)
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
    if meta.get("format") == "flt-ensemble":
        # An ensemble keeps each member's entries under "member.<k>."; the benchmark (bench_model
        # too) uses member 1.
        prefix = "member.1."
        meta = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
        arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    return meta, arrays


def load_flt(path):
    """A MoleculeModel holding exactly the weights, far-field designs and normalisation of a C++
    .flt model of the near_far kind (C++ Linear weights are in x out, torch's out x in; the
    filters are stored K x out like the Linear weights)."""
    meta, A = read_flt(path)
    cfg = lambda key: meta["config." + key]
    c = {}
    for key in ("width", "heads", "blocks", "mlp_hidden", "head_hidden", "max_z", "radial_nodes",
                "far_nodes"):
        c[key] = int(cfg(key))
    c["cutoff"] = float(cfg("cutoff"))
    c["far_spacing"] = float(cfg("far_spacing"))
    c["pooling"] = cfg("target_pooling").split(",")
    want = dict(attention="near_far", activation="silu", use_charges="false", vectors="true",
                far_field="flt")
    for key, value in want.items():
        if cfg(key) != value:
            raise ValueError(f"{path}: this reference implements {key} = {value}, the model has {cfg(key)}")
    c["far_directions"] = A["features.block0.far_directions"].shape[0]
    model = MoleculeModel(c)
    P = lambda name: torch.from_numpy(A["param." + name].astype(np.float32))

    def lin(mod, name, bias=True):
        mod.weight.data.copy_(P(name + ".weight").T)
        if bias:
            mod.bias.data.copy_(P(name + ".bias").reshape(-1))

    def ln(mod, name):
        mod.weight.data.copy_(P(name + ".weight").reshape(-1))
        mod.bias.data.copy_(P(name + ".bias").reshape(-1))

    model.embed.weight.data.copy_(P("embed.element.weight"))
    for b, blk in enumerate(model.blocks):
        p = f"block{b}"
        ln(blk.ln1, p + ".ln1")
        for nm in ("q", "k", "v", "o"):
            lin(getattr(blk, nm), f"{p}.attn.{nm}")
        at = blk.attn
        lin(at.filter_k, p + ".attn.filter_k")
        lin(at.filter_v, p + ".attn.filter_v")
        at.sink.data.copy_(P(p + ".attn.sink").reshape(-1))
        at.far_log_coeffs.data.copy_(P(p + ".attn.far.log_coeffs"))
        at.far_directions.copy_(torch.from_numpy(A[f"features.block{b}.far_directions"]).float())
        at.far_weights.copy_(torch.from_numpy(A[f"features.block{b}.far_weights"].reshape(-1)).float())
        up = blk.update
        ln(up.ln, p + ".update.ln")
        lin(up.vec_u, p + ".update.vec_u", bias=False)
        lin(up.vec_w, p + ".update.vec_w", bias=False)
        lin(up.mlp.fc1, p + ".update.mlp.fc1")
        lin(up.mlp.fc2, p + ".update.mlp.fc2")
    ln(model.ln_out, "head.ln")
    lin(model.head.fc1, "head.mlp.fc1")
    lin(model.head.fc2, "head.mlp.fc2")
    model.norm_mean.copy_(torch.from_numpy(A["norm.mean"].reshape(-1)))
    model.norm_scale.copy_(torch.from_numpy(A["norm.scale"].reshape(-1)))
    model.norm_reference.copy_(torch.from_numpy(A["norm.reference"]))
    return model


# ---------------------------------------------------------------------------------------------
# Data (the file of prepare_data.py) and flat (ragged) batches.

class Molecules:
    """The file of prepare_data.py ("M P", then per molecule "n y_1 .. y_P" and n "Z x y z"
    lines), kept as flat arrays: z (all atoms), pos (all atoms x 3, float64), sizes, first atom
    of each molecule, y (M x P)."""

    def __init__(self, path):
        with open(path) as f:
            tok = f.read().split()
        M, P = int(tok[0]), int(tok[1])
        i = 2
        sizes, ys, atoms = [], [], []
        for _ in range(M):
            n = int(tok[i])
            ys.append([float(t) for t in tok[i + 1:i + 1 + P]])
            i += 1 + P
            atoms.append(np.array(tok[i:i + 4 * n], dtype=np.float64).reshape(n, 4))
            i += 4 * n
            sizes.append(n)
        flat = np.concatenate(atoms)
        self.z = torch.from_numpy(flat[:, 0].astype(np.int64))
        self.pos = torch.from_numpy(np.ascontiguousarray(flat[:, 1:]))
        self.sizes = torch.tensor(sizes, dtype=torch.int64)
        self.first = torch.cumsum(self.sizes, 0) - self.sizes
        self.y = torch.tensor(ys, dtype=torch.float32)

    def __len__(self):
        return self.sizes.shape[0]


class Batch:
    """Molecules first .. first+count-1 (cycling) as flat arrays: z (N), pos (N x 3, float64),
    sizes (S), mol (N: molecule of each atom), y (S x P)."""

    def __init__(self, data, first, count):
        M = len(data)
        if first % M + count <= M:  # consecutive molecules: slices of the flat arrays
            s = first % M
            a0 = int(data.first[s])
            a1 = int(data.first[s + count - 1] + data.sizes[s + count - 1])
            self.z, self.pos = data.z[a0:a1], data.pos[a0:a1]
            self.sizes, self.y = data.sizes[s:s + count], data.y[s:s + count]
        else:
            idx = [(first + k) % M for k in range(count)]
            parts = [(int(data.first[m]), int(data.first[m] + data.sizes[m])) for m in idx]
            self.z = torch.cat([data.z[a:b] for a, b in parts])
            self.pos = torch.cat([data.pos[a:b] for a, b in parts])
            self.sizes, self.y = data.sizes[idx], data.y[idx]
        self.mol = torch.repeat_interleave(torch.arange(count), self.sizes)

    @property
    def num_atoms(self):
        return self.z.shape[0]
