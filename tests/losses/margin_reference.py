"""Independent float64 references of the normalised-softmax heads, written from the papers.

Everything here works on plain float64 tensors with ``acos`` for the angle (accurate enough in
float64 away from exactly 0 and pi) and the multiple-angle (Chebyshev) expansion for
SphereFace's ``cos(m theta)``, so that it shares no code path with ``facemetric.losses``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.special import binom


def cosines(x, w, sub_centers=1):
    c = F.normalize(x, dim=1) @ F.normalize(w, dim=1).t()
    if sub_centers > 1:
        c = c.view(x.shape[0], -1, sub_centers).max(dim=2).values
    return c


def cos_m_theta(c, m):
    """cos(m theta) from cos(theta) by the multiple-angle formula (SphereFace eq. / L-Softmax eq. 7)."""
    return sum((-1) ** n * binom(m, 2 * n) * c ** (m - 2 * n) * (1 - c**2) ** n for n in range(m // 2 + 1))


def arc(theta, m):
    """ArcFace target with the theta + m > pi rule."""
    out = torch.cos(theta + m)
    return torch.where(theta <= math.pi - m, out, torch.cos(theta) - m * torch.sin(torch.as_tensor(m, dtype=theta.dtype)))


def reference_logits(name, x, w, y, **p):
    """Logits [B, C] with the margin on the target column, float64."""
    k = p.get("sub_centers", 1)
    cos = cosines(x, w, k)
    cy = cos[torch.arange(len(y)), y]
    theta = torch.acos(cy.clamp(-1, 1))
    norms = x.norm(dim=1)
    s = p.get("scale")
    if name == "normface":
        target = cy
    elif name == "cosface":
        target = cy - p["margin"]
    elif name in ("arcface", "subcenter-arcface"):
        target = arc(theta, p["margin"])
    elif name == "combined-margin":
        m1, m2, m3 = p["m1"], p["m2"], p["m3"]
        if m1 == 1:
            target = arc(theta, m2) - m3
        else:
            tt = (math.pi - m2) / m1
            target = torch.where(theta <= tt, torch.cos(m1 * theta + m2) - m3, torch.cos(theta) - math.cos(tt) - 1 - m3)
    elif name == "sphereface":
        m, lam = p["margin"], p.get("lambda_", 0.0)
        kk = torch.floor(theta.detach() * m / math.pi).clamp(max=m - 1)
        psi = (-1.0) ** kk * cos_m_theta(cy, m) - 2 * kk
        target = (lam * cy + psi) / (1 + lam)
        s = norms[:, None]
    elif name == "magface":
        a = norms.clamp(p["l_a"], p["u_a"])
        margin = (p["u_m"] - p["l_m"]) / (p["u_a"] - p["l_a"]) * (a - p["l_a"]) + p["l_m"]
        target = torch.where(theta <= math.pi - margin, torch.cos(theta + margin), cy - margin * torch.sin(margin))
    elif name == "adaface":
        z = (p["h"] * (norms.detach().clamp(0.001, 100) - p["mu"]) / (p["sigma"] + 1e-3)).clamp(-1, 1)
        m = p["margin"]
        target = torch.cos((theta - m * z).clamp(1e-3, math.pi - 1e-3)) - (m * z + m)
    else:
        raise KeyError(name)
    onehot = F.one_hot(y, cos.shape[1]).bool()
    return s * torch.where(onehot, target[:, None], cos)


def reference_loss(name, x, w, y, **p):
    loss = F.cross_entropy(reference_logits(name, x, w, y, **p), y)
    if name == "magface":
        a = x.norm(dim=1).clamp(p["l_a"], p["u_a"])
        loss = loss + p["lambda_g"] * (a / p["u_a"] ** 2 + 1 / a).mean()
    return loss
