"""Muon's orthogonalisation as pure tensor functions.

`orthogonalize` maps a batch of matrices G [..., m, n] to approximately U V^T (the polar factor)
with the quintic Newton-Schulz iteration of Keller Jordan's Muon (coefficients 3.4445, -4.7750,
2.0315; 5 steps), the iteration torch.optim.Muon runs for single 2-D matrices, here batched and
in a chosen dtype (see selfcritic/optim/muon.py for why we do not call torch's).
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(
    matrices: torch.Tensor,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Approximate polar factor of each matrix in [..., m, n], iterated in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    x = matrices.to(dtype)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = x.mT  # iterate on the wide orientation: X X^T is the smaller Gram matrix
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.mT
    return x.to(matrices.dtype)


def adamw_rms_scale(rows: int, cols: int) -> float:
    """Factor that gives an orthogonalised update AdamW's RMS (Moonlight: 0.2 * sqrt(max))."""
    return 0.2 * math.sqrt(max(rows, cols))
