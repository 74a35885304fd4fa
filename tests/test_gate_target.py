"""The gate target (Eq. 8-11) and the factorized inner products (Eq. 6-7)."""
import math

import pytest
import torch

from gsgn_fairseq.modules.gate_target import (
    factorized_inner_products,
    gate_target,
    gate_target_from_inner_products,
)


def test_no_conflict_gives_one():
    target, cos = gate_target(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5]))
    assert target.item() == 1.0
    assert cos.item() == pytest.approx(4.0 / (math.sqrt(5.0) * math.sqrt(9.25)))


def test_orthogonal_is_not_a_conflict():
    target, cos = gate_target(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0]))
    assert cos.item() == 0.0 and target.item() == 1.0


def test_hand_computed_conflict():
    # a = (1, 0), b = (-1, 1): cos = -1/sqrt(2), |b| = sqrt(2), |a| = 1
    # target = 1 - sqrt(2) * (-1/sqrt(2)) / 1 = 2
    target, cos = gate_target(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert cos.item() == pytest.approx(-1.0 / math.sqrt(2.0))
    assert target.item() == pytest.approx(2.0)


def test_target_realizes_pcgrad_projection():
    # Eq. 8-10: target * a + b == a + (b - (|b| cos / |a|) a) for a conflicting pair
    torch.manual_seed(0)
    a = torch.randn(7, dtype=torch.float64)
    b = -a + 0.3 * torch.randn(7, dtype=torch.float64)
    target, cos = gate_target(a, b)
    assert cos.item() < 0
    projected = b - (b.norm() * cos / a.norm()) * a
    torch.testing.assert_close(target * a + b, a + projected)
    # the corrected b no longer conflicts with a
    assert torch.dot(projected, a).abs().item() < 1e-12


def test_scaled_gradients_give_the_same_target():
    # loss scaling multiplies a and b by the same factor: target and cos do not change
    a, b = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.5, 1.0])
    t1, c1 = gate_target(a, b)
    t2, c2 = gate_target(1024.0 * a, 1024.0 * b)
    torch.testing.assert_close(t1, t2)
    torch.testing.assert_close(c1, c2)


@pytest.mark.parametrize(
    "a,b",
    [([0.0, 0.0], [0.0, 0.0]), ([0.0, 0.0], [-1.0, 1.0]), ([1.0, 0.0], [0.0, 0.0])],
)
def test_zero_gradients_give_one(a, b):
    target, cos = gate_target(torch.tensor(a), torch.tensor(b))
    assert target.item() == 1.0 and cos.item() == 0.0
    assert torch.isfinite(target) and torch.isfinite(cos)


def test_batched_shapes_match_loop():
    torch.manual_seed(1)
    a = torch.randn(3, 4, 10)
    b = torch.randn(3, 4, 10)
    b[0, 0] = -a[0, 0]  # a certain conflict
    b[1, 2] = 0.0  # a zero gradient
    target, cos = gate_target(a, b)
    assert target.shape == (3, 4) and cos.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            t, c = gate_target(a[i, j], b[i, j])
            assert target[i, j].item() == pytest.approx(t.item())
            assert cos[i, j].item() == pytest.approx(c.item())
    assert target[0, 0].item() == pytest.approx(2.0)  # b = -a: 1 + |b|/|a| = 2
    assert target[1, 2].item() == 1.0


def test_fp16_inputs():
    target, cos = gate_target(torch.tensor([1.0, 0.0]).half(), torch.tensor([-1.0, 1.0]).half())
    assert target.item() == pytest.approx(2.0)


def test_max_target_clamps():
    a, b = torch.tensor([1e-3, 0.0]), torch.tensor([-1.0, 0.0])
    assert gate_target(a, b)[0].item() == pytest.approx(1001.0)
    assert gate_target(a, b, max_target=2.0)[0].item() == 2.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        gate_target(torch.zeros(3), torch.zeros(4))


def test_inner_products_entry_point():
    target, cos = gate_target_from_inner_products(
        torch.tensor([-1.0, 3.0]), torch.tensor([1.0, 4.0]), torch.tensor([2.0, 9.0])
    )
    torch.testing.assert_close(target, torch.tensor([2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(cos, torch.tensor([-1 / math.sqrt(2), 0.5], dtype=torch.float64))


# ------------------------------------------------------------------------ factorized (Eq. 6-7)


def _explicit_outer(delta, x_f, x_u, mask):
    """a_i = sum_t delta_t x_f,t^T per utterance (D x D), materialized."""
    m = mask.unsqueeze(-1).to(delta.dtype)
    a = torch.einsum("btd,bte->bde", delta * m, x_f)
    b = torch.einsum("btd,bte->bde", delta * m, x_u)
    return a.flatten(1), b.flatten(1)


@pytest.mark.parametrize("method", ["auto", "outer", "gram"])
def test_factorized_matches_explicit_outer_products(method):
    torch.manual_seed(2)
    B, T, D = 3, 5, 6
    delta = torch.randn(B, T, D, dtype=torch.float64)
    x_f = torch.randn(B, T, D, dtype=torch.float64)
    x_u = torch.randn(B, T, D, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2] = False  # an utterance without valid frames
    x_f[1, 4] = float("nan")  # padded frames may hold anything
    a, b = _explicit_outer(delta, x_f.nan_to_num(0.0), x_u, mask)

    ab, aa, bb = factorized_inner_products(delta, x_f, x_u, mask, per_utterance=True, method=method)
    torch.testing.assert_close(ab, (a * b).sum(-1))
    torch.testing.assert_close(aa, (a * a).sum(-1))
    torch.testing.assert_close(bb, (b * b).sum(-1))
    assert aa[2].item() == 0.0
    target, _ = gate_target_from_inner_products(ab, aa, bb)
    torch.testing.assert_close(target, gate_target(a, b)[0])

    # batch granularity pools every valid frame into one gradient
    ab, aa, bb = factorized_inner_products(delta, x_f, x_u, mask, per_utterance=False, method=method)
    a, b = a.sum(0), b.sum(0)
    assert ab.shape == ()
    torch.testing.assert_close(ab, (a * b).sum())
    torch.testing.assert_close(aa, (a * a).sum())
    torch.testing.assert_close(bb, (b * b).sum())


def test_gram_and_outer_agree_in_float32():
    torch.manual_seed(3)
    delta, x_f, x_u = (torch.randn(4, 7, 16) for _ in range(3))
    outer = factorized_inner_products(delta, x_f, x_u, per_utterance=True, method="outer")
    gram = factorized_inner_products(delta, x_f, x_u, per_utterance=True, method="gram")
    for o, g in zip(outer, gram):
        assert o.dtype == torch.float32
        torch.testing.assert_close(o, g, rtol=1e-4, atol=1e-3)


def test_factorized_rejects_bad_shapes_and_method():
    with pytest.raises(ValueError, match="shapes disagree"):
        factorized_inner_products(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="unknown method"):
        factorized_inner_products(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), method="x")
