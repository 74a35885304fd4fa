"""The GSGN gate target (paper Eq. 8-11) and the factorized gradient inner products (Eq. 6-7).

Let ``a = dL_fbank/dW`` and ``b = dL_unit/dW`` be the gradients that the two views alone give
a reference parameter set ``W``. PCGrad's projection (Eq. 8) removes from ``b`` its component
that conflicts with ``a``; Eq. 10 writes the corrected sum ``a + Deconflict(a, b)`` as a
re-weighting of ``a``, so the ideal FBank gate is (Eq. 11)::

    cos    = <a, b> / (|a| |b|)
    target = 1                      if cos >= 0
             1 - |b| cos / |a|      otherwise  (= 1 - <a, b> / |a|^2 > 1)

Everything here is a free function of tensors, testable alone (like fairseq's
``label_smoothed_nll_loss``). The scalar arithmetic runs in float64, so neither fp16 inputs
nor tiny gradient norms lose the target.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def gate_target_from_inner_products(
    ab: Tensor,
    aa: Tensor,
    bb: Tensor,
    eps: float = 1e-20,
    max_target: Optional[float] = None,
) -> Tuple[Tensor, Tensor]:
    """Gate target and cosine from ``<a, b>``, ``|a|^2`` and ``|b|^2`` (any equal shapes).

    A gradient with norm ``<= eps`` carries no direction: its cosine is reported as 0 and its
    target is 1 (no correction), which also covers an all-zero gradient (e.g. a batch whose
    loss was multiplied by 0).

    Args:
        ab, aa, bb: inner products, same shape ``S``.
        eps: norm below which a gradient counts as zero.
        max_target: if set, the target is clamped to at most this value (Eq. 11 has no
            bound: ``|a| -> 0`` with a conflicting ``b`` sends it to infinity).
    Returns:
        ``(target, cos)``, both shape ``S``, float64.
    """
    ab, aa, bb = ab.double(), aa.double(), bb.double()
    na = aa.clamp_min(0).sqrt()
    nb = bb.clamp_min(0).sqrt()
    valid = (na > eps) & (nb > eps)
    one = torch.ones_like(ab)
    cos = torch.where(valid, ab / torch.where(valid, na * nb, one), torch.zeros_like(ab))
    cos = cos.clamp(-1.0, 1.0)
    # 1 - |b| cos / |a|; na > eps wherever cos < 0
    corrected = 1.0 - nb * cos / torch.where(valid, na, one)
    target = torch.where(cos < 0, corrected, one)
    if max_target is not None:
        target = target.clamp(max=max_target)
    return target, cos


def gate_target(
    a: Tensor, b: Tensor, eps: float = 1e-20, max_target: Optional[float] = None
) -> Tuple[Tensor, Tensor]:
    """Eq. 8-11 for gradient vectors ``a`` (FBank view) and ``b`` (unit view).

    Args:
        a, b: ``(..., P)`` gradients, flattened over the reference parameters.
        eps, max_target: see :func:`gate_target_from_inner_products`.
    Returns:
        ``(target, cos)``, each of shape ``(...)``, float64.

    >>> gate_target(torch.tensor([1., 0.]), torch.tensor([-1., 1.]))[0]  # cos = -1/sqrt(2)
    tensor(2., dtype=torch.float64)
    """
    if a.shape != b.shape:
        raise ValueError(f"gate_target: a {tuple(a.shape)} and b {tuple(b.shape)} differ in shape")
    a, b = a.double(), b.double()
    return gate_target_from_inner_products(
        (a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1), eps=eps, max_target=max_target
    )


def factorized_inner_products(
    delta: Tensor,
    x_fbank: Tensor,
    x_unit: Tensor,
    mask: Optional[Tensor] = None,
    per_utterance: bool = False,
    method: str = "auto",
) -> Tuple[Tensor, Tensor, Tensor]:
    """``<a, b>``, ``|a|^2``, ``|b|^2`` for the factorized gradients of Eq. 6-7.

    For a layer ``h_1 = W x + ...`` with output gradient ``delta_t = dL/dh_1,t`` (the
    input-independent factor), the gradient that view ``v`` alone gives ``W`` is
    ``sum_t delta_t x_v,t^T``; so ``a = sum_t delta_t ⊗ x_fbank,t`` and
    ``b = sum_t delta_t ⊗ x_unit,t`` (each ``D_out x D_in``), summed over the unmasked frames
    of one utterance (``per_utterance``) or of the whole batch.

    Methods: ``outer`` materializes ``a`` and ``b`` (``O(T D^2)`` time, ``D^2`` memory per
    group); ``gram`` uses ``<a, b> = sum_{t,s} (delta_t . delta_s)(x_f,t . x_u,s)``, i.e. the
    Frobenius product of two ``T x T`` Gram matrices (``O(T^2 D)`` time, ``T^2`` memory);
    ``auto`` picks ``gram`` when ``T < D`` for ``per_utterance`` and ``outer`` for a pooled
    batch (one ``D x D`` matrix, independent of the number of frames). Computed in float32
    (float64 inputs stay float64) with autocast off.

    Args:
        delta: ``(B, T, D_out)``; x_fbank, x_unit: ``(B, T, D_in)``.
        mask: ``(B, T)`` bool, True at frames that count; None = all frames.
        per_utterance: one result per utterance ``(B,)`` instead of a scalar.
        method: ``auto`` | ``outer`` | ``gram``.
    Returns:
        ``(ab, aa, bb)``: shape ``(B,)`` if ``per_utterance`` else ``()``.
    """
    if method not in ("auto", "outer", "gram"):
        raise ValueError(f"factorized_inner_products: unknown method {method!r}")
    if x_fbank.shape != x_unit.shape or delta.shape[:2] != x_fbank.shape[:2]:
        raise ValueError(
            "factorized_inner_products: shapes disagree: delta "
            f"{tuple(delta.shape)}, x_fbank {tuple(x_fbank.shape)}, x_unit {tuple(x_unit.shape)}"
        )
    with torch.autocast(device_type=delta.device.type, enabled=False):
        dtype = torch.promote_types(delta.dtype, torch.float32)  # float32, or float64 kept
        delta, x_f, x_u = delta.to(dtype), x_fbank.to(dtype), x_unit.to(dtype)
        if mask is not None:
            keep = mask.unsqueeze(-1)  # B x T x 1
            # masked_fill, not multiply: padded frames may hold inf/nan
            delta = delta.masked_fill(~keep, 0.0)
            x_f = x_f.masked_fill(~keep, 0.0)
            x_u = x_u.masked_fill(~keep, 0.0)
        B, T, D_out = delta.shape
        D_in = x_f.size(-1)
        if not per_utterance:
            # pool every frame of the batch into one group: a = Delta^T X (D_out x D_in)
            delta = delta.reshape(1, B * T, D_out)
            x_f = x_f.reshape(1, B * T, D_in)
            x_u = x_u.reshape(1, B * T, D_in)
            T = B * T
        if method == "gram" or (method == "auto" and per_utterance and T < max(D_out, D_in)):
            g_dd = torch.bmm(delta, delta.transpose(1, 2))  # G x T x T
            g_ff = torch.bmm(x_f, x_f.transpose(1, 2))
            g_uu = torch.bmm(x_u, x_u.transpose(1, 2))
            g_fu = torch.bmm(x_f, x_u.transpose(1, 2))
            ab = (g_dd * g_fu).sum((1, 2))
            aa = (g_dd * g_ff).sum((1, 2))
            bb = (g_dd * g_uu).sum((1, 2))
        else:
            a = torch.bmm(delta.transpose(1, 2), x_f)  # G x D_out x D_in
            b = torch.bmm(delta.transpose(1, 2), x_u)
            ab = (a * b).sum((1, 2))
            aa = (a * a).sum((1, 2))
            bb = (b * b).sum((1, 2))
    if not per_utterance:
        ab, aa, bb = ab[0], aa[0], bb[0]
    return ab, aa, bb
