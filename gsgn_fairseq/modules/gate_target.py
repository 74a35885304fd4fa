"""The GSGN gate target (paper Eq. 8-11) and the factorized gradient inner products (Eq. 6-7).

Let ``a = dL_fbank/dW`` and ``b = dL_unit/dW`` be the gradients that the two views alone give
a reference parameter set ``W``. PCGrad's projection (Eq. 8) removes from ``b`` its component
that conflicts with ``a``; Eq. 10 writes the corrected sum ``a + Deconflict(a, b)`` as a
re-weighting of ``a``, so the ideal FBank gate is (Eq. 11)::

    cos    = <a, b> / (|a| |b|)
    target = 1                      if cos >= 0
             1 - |b| cos / |a|      otherwise  (= 1 - <a, b> / |a|^2 > 1)

With N S-feature views ``b_1..b_N`` (every ``g_k = 1``) each conflicting view's component is
removed, ``a + sum_k Deconflict(a, b_k)``, which is ``target * a + sum_k b_k`` with
``target = 1 - sum_{k: cos_k < 0} |b_k| cos_k / |a|`` (:func:`views_gate_target_from_inner_products`).

Everything here is a free function of tensors, testable alone (like fairseq's
``label_smoothed_nll_loss``): the target (Eq. 8-11), the inner products of linear-map weight
gradients that both target modes need (Eq. 6-7, per utterance or pooled), and Eq. 12's
masked MSE. The scalar arithmetic runs in float64, so neither fp16 inputs
nor tiny gradient norms lose the target.
"""
from typing import Optional, Sequence, Tuple, Union

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
    target, cos = views_gate_target_from_inner_products(ab.unsqueeze(0), aa, bb.unsqueeze(0), eps, max_target)
    return target, cos[0]


def views_gate_target_from_inner_products(
    ab: Tensor,
    aa: Tensor,
    bb: Tensor,
    eps: float = 1e-20,
    max_target: Optional[float] = None,
) -> Tuple[Tensor, Tensor]:
    """The target of ``g_fbank`` with N S-feature views (every ``g_k = 1``), from the inner
    products of ``a = dL_fbank/dW`` with each view's ``b_k = dL_k/dW``.

    Eq. 9 with each conflicting view's component removed, ``a + sum_k Deconflict(a, b_k)``
    (``Deconflict(a, b_k) = b_k`` when ``cos_k >= 0``), is ``target * a + sum_k b_k`` with::

        target = 1 - sum_{k: cos_k < 0} |b_k| cos_k / |a|

    With one view this is Eq. 11 (:func:`gate_target_from_inner_products`).

    Args:
        ab: ``(N, *S)`` ``<a, b_k>``; aa: ``S`` ``|a|^2``; bb: ``(N, *S)`` ``|b_k|^2``.
        eps, max_target: see :func:`gate_target_from_inner_products`.
    Returns:
        ``(target S, cos (N, *S))``, float64.
    """
    if ab.dim() < 1 or ab.shape != bb.shape or ab.shape[1:] != aa.shape:
        raise ValueError(f"views_gate_target_from_inner_products: shapes disagree: ab {tuple(ab.shape)}, "
                         f"aa {tuple(aa.shape)}, bb {tuple(bb.shape)}")
    ab, aa, bb = ab.double(), aa.double(), bb.double()
    na = aa.clamp_min(0).sqrt()  # S
    target = torch.ones_like(aa)
    cosines = []
    for ab_k, bb_k in zip(ab, bb):  # one S-feature view at a time
        nb = bb_k.clamp_min(0).sqrt()
        valid = (na > eps) & (nb > eps)
        one = torch.ones_like(ab_k)
        cos = torch.where(valid, ab_k / torch.where(valid, na * nb, one), torch.zeros_like(ab_k))
        cos = cos.clamp(-1.0, 1.0)
        # - |b_k| cos_k / |a| where the view conflicts; na > eps wherever cos < 0
        removed = nb * cos / torch.where(valid, na, one)
        target = torch.where(cos < 0, target - removed, target)
        cosines.append(cos)
    if max_target is not None:
        target = target.clamp(max=max_target)
    return target, torch.stack(cosines)


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


def linear_grad_inner_products(
    dy_a: Tensor,
    x_a: Tensor,
    dy_b: Tensor,
    x_b: Tensor,
    mask: Optional[Tensor] = None,
    per_utterance: bool = False,
    method: str = "auto",
    bias: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``<a, b>``, ``|a|^2``, ``|b|^2`` for the weight gradients of one linear map ``y = W x``
    under two passes: ``a = sum_t dy_a,t ⊗ x_a,t``, ``b = sum_t dy_b,t ⊗ x_b,t`` (each
    ``D_out x D_in``), summed over the unmasked frames of each utterance (``per_utterance``,
    the per-sample-gradient trick) or of the whole batch. With ``bias`` the bias gradients
    ``sum_t dy_t`` are included (``<a, b>`` gains ``<sum dy_a, sum dy_b>``).

    Methods: ``outer`` materializes ``a`` and ``b`` (``O(T D^2)`` time, ``D^2`` memory per
    group); ``gram`` uses ``<a, b> = sum_{t,s} (dy_a,t . dy_b,s)(x_a,t . x_b,s)``, the
    Frobenius product of two ``T x T`` Gram matrices (``O(T^2 D)`` time, ``T^2`` memory);
    ``auto`` picks ``gram`` when ``T < D`` for ``per_utterance`` and ``outer`` for a pooled
    batch. Computed in float32 (float64 inputs stay float64) with autocast off.

    Args:
        dy_a, dy_b: ``(B, T, D_out)`` output gradients; x_a, x_b: ``(B, T, D_in)`` inputs.
        mask: ``(B, T)`` bool, True at frames that count; None = all frames.
    Returns:
        ``(ab, aa, bb)``: shape ``(B,)`` if ``per_utterance`` else ``()``.
    """
    if method not in ("auto", "outer", "gram"):
        raise ValueError(f"linear_grad_inner_products: unknown method {method!r}")
    if x_a.shape != x_b.shape or dy_a.shape != dy_b.shape or dy_a.shape[:2] != x_a.shape[:2]:
        raise ValueError(
            "linear_grad_inner_products: shapes disagree: dy_a "
            f"{tuple(dy_a.shape)}, x_a {tuple(x_a.shape)}, dy_b {tuple(dy_b.shape)}, x_b {tuple(x_b.shape)}"
        )
    with torch.autocast(device_type=dy_a.device.type, enabled=False):
        dtype = torch.promote_types(dy_a.dtype, torch.float32)  # float32, or float64 kept
        tensors = [t.to(dtype) for t in (dy_a, x_a, dy_b, x_b)]
        if mask is not None:
            keep = mask.unsqueeze(-1)  # B x T x 1; masked_fill, not multiply: padding may hold inf/nan
            tensors = [t.masked_fill(~keep, 0.0) for t in tensors]
        dy_a, x_a, dy_b, x_b = tensors
        B, T, D_out = dy_a.shape
        D_in = x_a.size(-1)
        if not per_utterance:  # pool every frame of the batch into one group
            dy_a, dy_b = dy_a.reshape(1, B * T, D_out), dy_b.reshape(1, B * T, D_out)
            x_a, x_b = x_a.reshape(1, B * T, D_in), x_b.reshape(1, B * T, D_in)
            T = B * T
        if method == "gram" or (method == "auto" and per_utterance and T < max(D_out, D_in)):
            def frob(d1, x1, d2, x2):
                return (torch.bmm(d1, d2.transpose(1, 2)) * torch.bmm(x1, x2.transpose(1, 2))).sum((1, 2))

            ab, aa, bb = frob(dy_a, x_a, dy_b, x_b), frob(dy_a, x_a, dy_a, x_a), frob(dy_b, x_b, dy_b, x_b)
        else:
            a = torch.bmm(dy_a.transpose(1, 2), x_a)  # G x D_out x D_in
            b = torch.bmm(dy_b.transpose(1, 2), x_b)
            ab, aa, bb = (a * b).sum((1, 2)), (a * a).sum((1, 2)), (b * b).sum((1, 2))
        if bias:
            sa, sb = dy_a.sum(1), dy_b.sum(1)  # G x D_out
            ab, aa, bb = ab + (sa * sb).sum(-1), aa + (sa * sa).sum(-1), bb + (sb * sb).sum(-1)
    if not per_utterance:
        ab, aa, bb = ab[0], aa[0], bb[0]
    return ab, aa, bb


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
    ``sum_t delta_t x_v,t^T``: :func:`linear_grad_inner_products` with the same ``delta`` for
    both views, ``a = sum_t delta_t ⊗ x_fbank,t`` and ``b = sum_t delta_t ⊗ x_unit,t``.

    Args:
        delta: ``(B, T, D_out)``; x_fbank, x_unit: ``(B, T, D_in)``.
        mask, per_utterance, method: see :func:`linear_grad_inner_products`.
    Returns:
        ``(ab, aa, bb)``: shape ``(B,)`` if ``per_utterance`` else ``()``.
    """
    return linear_grad_inner_products(delta, x_fbank, delta, x_unit, mask, per_utterance, method)


def factorized_gradients(
    delta: Tensor, x_fbank: Tensor, x_unit: Union[Tensor, Sequence[Tensor]], mask: Optional[Tensor] = None
) -> Tuple[Tensor, ...]:
    """The factorized gradients of Eq. 6-7 pooled over a batch, as matrices:
    ``a = sum_t delta_t ⊗ x_fbank,t``, ``b = sum_t delta_t ⊗ x_unit,t`` over the unmasked frames
    of every utterance. Unlike their inner products, these sum over data-parallel ranks.

    Args:
        delta: ``(B, T, D_out)``; x_fbank: ``(B, T, D_in)``; x_unit: ``(B, T, D_in)``, or a list
            of S-feature views; mask: ``(B, T)`` bool.
    Returns:
        ``(a, b)`` (``(a, b_1, ..., b_N)`` for a list of views), each ``(D_out, D_in)``, float32
        (float64 inputs stay float64).
    """
    x_units = [x_unit] if torch.is_tensor(x_unit) else list(x_unit)
    with torch.autocast(device_type=delta.device.type, enabled=False):
        dtype = torch.promote_types(delta.dtype, torch.float32)
        tensors = [t.to(dtype) for t in (delta, x_fbank, *x_units)]
        if mask is not None:  # masked_fill, not multiply: padding may hold inf/nan
            tensors = [t.masked_fill(~mask.unsqueeze(-1), 0.0) for t in tensors]
        delta, x_fbank, *x_units = (t.reshape(-1, t.size(-1)) for t in tensors)  # (B*T, D)
        return (delta.t() @ x_fbank, *(delta.t() @ x for x in x_units))


def inner_products(a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``<a, b>``, ``|a|^2``, ``|b|^2`` of two same-shape tensors (0-d, in their dtype)."""
    return (a * b).sum(), (a * a).sum(), (b * b).sum()


def masked_squared_error(g: Tensor, target: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Eq. 12's MSE(g_fbank, target) over the frames of ``mask``, as its parts.

    Args:
        g: ``(B, T, D)`` gate values; target: a scalar or ``(B,)`` (one per utterance);
        mask: ``(B, T)`` bool, True at the frames that count.
    Returns:
        ``(g - target)`` (0 outside ``mask``), its summed square, and the element count
        (``MSE = sum / count``); in float32 at least.
    """
    g = g.to(torch.promote_types(g.dtype, torch.float32))
    target = target.to(g.dtype)
    if target.dim() == 1:
        target = target.view(-1, 1, 1)
    diff = torch.where(mask.unsqueeze(-1), g - target, torch.zeros_like(g))
    elems = mask.sum() * g.size(-1)
    return diff, diff.pow(2).sum(), elems
