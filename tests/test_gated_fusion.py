"""GSGN fusion layer (Eq. 3-4) against hand-computed values."""
import math

import pytest
import torch

from gsgn_fairseq.modules.gated_fusion import GatedFusion, gate_activation

LN3 = math.log(3.0)


def _set_weights(fusion: GatedFusion) -> None:
    """D = 2 weights chosen so the pre-activations are z_fbank = [0, ln 3], z_unit = [-ln 3, 0]
    for x_fbank = [1, 2], x_unit = [3, -1]."""
    with torch.no_grad():
        fusion.fbank_gate.weight_fbank.copy_(torch.tensor([[1.0, -0.5], [0.0, 0.0]]))  # -> [0, 0]
        fusion.fbank_gate.weight_unit.copy_(torch.tensor([[0.0, 0.0], [0.0, -1.0]]))  # -> [0, 1]
        fusion.fbank_gate.bias.copy_(torch.tensor([0.0, LN3 - 1.0]))
        if fusion.unit_gate is not None:
            fusion.unit_gate.weight_fbank.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))  # -> [0, 1]
            fusion.unit_gate.weight_unit.copy_(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))  # -> [0, 0]
            fusion.unit_gate.bias.copy_(torch.tensor([-LN3, -1.0]))


X_FBANK = torch.tensor([[[1.0, 2.0]]])  # (B=1, T=1, D=2)
X_UNIT = torch.tensor([[[3.0, -1.0]]])


def test_eq3_eq4_with_2sigmoid():
    fusion = GatedFusion(2, activation="2sigmoid", unit_gate="learned")
    _set_weights(fusion)
    x, g_fbank, g_unit = fusion(X_FBANK, X_UNIT)
    # 2 * sigmoid(0) = 1, 2 * sigmoid(ln 3) = 2 * 3/4 = 1.5, 2 * sigmoid(-ln 3) = 2 * 1/4 = 0.5
    torch.testing.assert_close(g_fbank, torch.tensor([[[1.0, 1.5]]]))
    torch.testing.assert_close(g_unit, torch.tensor([[[0.5, 1.0]]]))
    # [1 * 1 + 0.5 * 3, 1.5 * 2 + 1 * (-1)]
    torch.testing.assert_close(x, torch.tensor([[[2.5, 2.0]]]))


def test_eq3_eq4_with_sigmoid():
    fusion = GatedFusion(2, activation="sigmoid", unit_gate="learned")
    _set_weights(fusion)
    x, g_fbank, g_unit = fusion(X_FBANK, X_UNIT)
    torch.testing.assert_close(g_fbank, torch.tensor([[[0.5, 0.75]]]))
    torch.testing.assert_close(g_unit, torch.tensor([[[0.25, 0.5]]]))
    torch.testing.assert_close(x, torch.tensor([[[0.5 + 0.75, 1.5 - 0.5]]]))


def test_unit_gate_one():
    fusion = GatedFusion(2, activation="2sigmoid", unit_gate="one")
    assert fusion.unit_gate is None
    assert not any("unit_gate" in n for n, _ in fusion.named_parameters())
    _set_weights(fusion)
    x, g_fbank, g_unit = fusion(X_FBANK, X_UNIT)
    torch.testing.assert_close(g_unit, torch.ones(1, 1, 2))
    torch.testing.assert_close(x, torch.tensor([[[1.0 + 3.0, 3.0 - 1.0]]]))


def test_activation_ranges():
    z = torch.tensor([-1e4, -1.0, 0.0, 1.0, 1e4])
    two = gate_activation(z, "2sigmoid")
    one = gate_activation(z, "sigmoid")
    torch.testing.assert_close(two, 2 * one)
    assert two[2].item() == 1.0 and one[2].item() == 0.5
    assert two.min() >= 0 and two.max() <= 2
    with pytest.raises(ValueError, match="tanh"):
        gate_activation(z, "tanh")


def test_bad_options_name_the_flag():
    with pytest.raises(ValueError, match="--gate-activation"):
        GatedFusion(4, activation="relu")
    with pytest.raises(ValueError, match="--unit-gate"):
        GatedFusion(4, unit_gate="zero")


def test_padding_mask_zeroes_fused_padding_only():
    torch.manual_seed(0)
    fusion = GatedFusion(8)
    x_f, x_u = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])  # (B, T)
    x, g_f, g_u = fusion(x_f, x_u, padding_mask=mask)
    x_ref, _, _ = fusion(x_f, x_u)
    assert x.shape == g_f.shape == g_u.shape == (2, 5, 8)
    assert torch.all(x[1, 3:] == 0)
    torch.testing.assert_close(x[~mask], x_ref[~mask])
    with pytest.raises(ValueError, match="padding_mask"):
        fusion(x_f, x_u, padding_mask=mask[:, :4])


def test_gate_injector_replaces_g_fbank_before_eq4():
    torch.manual_seed(0)
    fusion = GatedFusion(4)
    x_f, x_u = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    seen = []

    def injector(g):
        seen.append(g.shape)
        return torch.full_like(g, 0.25)

    x, g_f, g_u = fusion(x_f, x_u, gate_injector=injector)
    assert seen == [torch.Size([3, 2, 4])]
    torch.testing.assert_close(g_f, torch.full((3, 2, 4), 0.25))
    torch.testing.assert_close(x, 0.25 * x_f + g_u * x_u)
    with pytest.raises(ValueError, match="gate_injector"):
        fusion(x_f, x_u, gate_injector=lambda g: g[..., :2])


def test_stateless_and_shape_checked():
    torch.manual_seed(0)
    fusion = GatedFusion(4)
    before = {k: v.clone() for k, v in fusion.state_dict().items()}
    x_f, x_u = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    a = fusion(x_f, x_u)
    b = fusion(x_f, x_u)
    for t1, t2 in zip(a, b):
        torch.testing.assert_close(t1, t2)
    assert set(fusion.state_dict()) == set(before)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(2, 2, 4\)"):
        fusion(x_f, x_u[:, :2])


def test_backward_reaches_both_gates():
    torch.manual_seed(0)
    fusion = GatedFusion(4)
    x, _, _ = fusion(torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 4, requires_grad=True))
    x.pow(2).sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
