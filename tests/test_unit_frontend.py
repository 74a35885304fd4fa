"""FBank subsampler (masked) and unit front end: lengths, alignment and padding invariance."""
import pytest
import torch
from fairseq.models.speech_to_text.modules.convolution import Conv1dSubsampler

from gsgn_fairseq.modules.unit_frontend import (
    MaskedConv1dSubsampler,
    UnitFrontend,
    parse_kernel_sizes,
    subsampled_length,
    subsampled_lengths,
)


def test_length_formula_matches_fairseq():
    ref = Conv1dSubsampler(80, 16, 8, [5, 5, 5])
    lengths = torch.arange(1, 200)
    torch.testing.assert_close(subsampled_lengths(lengths, 3), ref.get_out_seq_lens_tensor(lengths))
    assert [subsampled_length(n, 2) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]


def test_same_parameters_and_output_as_fairseq_without_padding():
    torch.manual_seed(0)
    ours = MaskedConv1dSubsampler(80, 32, 16, [5, 5])
    ref = Conv1dSubsampler(80, 32, 16, [5, 5])
    ref.load_state_dict(ours.state_dict())  # identical parameter names and shapes
    x = torch.randn(1, 37, 80)
    y, n = ours(x, torch.tensor([37]))
    y_ref, n_ref = ref(x, torch.tensor([37]))  # T x B x C
    torch.testing.assert_close(y, y_ref.transpose(0, 1))
    assert n.tolist() == n_ref.tolist() == [10]


def test_subsampler_padding_invariance():
    torch.manual_seed(0)
    sub = MaskedConv1dSubsampler(80, 32, 16, [5, 5, 5])
    x = torch.randn(1, 30, 80)
    y_alone, n_alone = sub(x, torch.tensor([30]))
    padded = torch.cat([x, torch.randn(1, 45, 80)], dim=1)  # garbage beyond the length
    y_pad, n_pad = sub(padded, torch.tensor([30]))
    assert n_alone.tolist() == n_pad.tolist() == [4]
    torch.testing.assert_close(y_pad[:, :4], y_alone)
    assert torch.all(y_pad[:, 4:] == 0)
    # fairseq's own subsampler is not invariant (the reason for the masked one)
    ref = Conv1dSubsampler(80, 32, 16, [5, 5, 5])
    ref.load_state_dict(sub.state_dict())
    zero_padded = torch.cat([x, torch.zeros(1, 45, 80)], dim=1)
    a, _ = ref(x, torch.tensor([30]))
    b, _ = ref(zero_padded, torch.tensor([30]))
    assert not torch.allclose(a, b[: a.size(0)])



@pytest.mark.parametrize("in_channels", [1, 6])
def test_subsampler_leaves_its_input_untouched(in_channels):
    """Padding is zeroed in place on a copy; with one channel (B, T, 1) -> (B, 1, T) is already
    contiguous, so a ``.contiguous()`` view there would zero the caller's tensor."""
    torch.manual_seed(0)
    sub = MaskedConv1dSubsampler(in_channels, 8, 4, [3])
    x = torch.randn(2, 9, in_channels, requires_grad=True)
    before = x.detach().clone()
    y, _ = sub(x, torch.tensor([9, 5]))
    y.sum().backward()
    assert torch.equal(x.detach(), before)
    assert torch.all(x.grad[1, 5:] == 0)  # padded frames get no gradient

@pytest.mark.parametrize("fbank_layers", [1, 2, 3])
def test_unit_view_lands_on_fbank_frame_rate(fbank_layers):
    torch.manual_seed(0)
    k, d = 20, 16
    frontend = UnitFrontend(k, d, 32, [5] * (fbank_layers - 1))
    assert frontend.n_layers == fbank_layers - 1
    t_fbank = torch.tensor([64, 51, 17, 9])
    t_unit = t_fbank // 2  # 20 ms units for 10 ms FBank frames
    units = torch.full((4, int(t_unit.max())), k, dtype=torch.long)
    for i, n in enumerate(t_unit.tolist()):
        units[i, :n] = torch.randint(k, (n,))
    x, n_out = frontend(units, t_unit)
    n_fbank = subsampled_lengths(t_fbank, fbank_layers)
    assert x.shape == (4, int(subsampled_length(units.size(1), fbank_layers - 1)), d)
    assert torch.all((n_out - n_fbank).abs() <= 1), (n_out, n_fbank)
    for i, n in enumerate(n_out.tolist()):
        assert torch.all(x[i, n:] == 0)


def test_unit_embedding_padding_row_is_zero_and_in_range():
    frontend = UnitFrontend(20, 8, 16, [])
    assert frontend.embed_units.weight.shape == (21, 8)
    assert torch.all(frontend.embed_units.weight[20] == 0)
    x, n = frontend(torch.tensor([[3, 4, 20]]), torch.tensor([2]))
    assert n.tolist() == [2] and x.shape == (1, 3, 8) and torch.all(x[0, 2] == 0)


def test_kernel_errors():
    with pytest.raises(ValueError, match="odd"):
        parse_kernel_sizes("5,4", "--conv-kernel-sizes")
    with pytest.raises(ValueError, match="--unit-conv-kernel-sizes"):
        parse_kernel_sizes("a,b", "--unit-conv-kernel-sizes")
    with pytest.raises(ValueError, match="odd"):
        MaskedConv1dSubsampler(8, 8, 8, [4])
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        MaskedConv1dSubsampler(80, 8, 16, [])
    with pytest.raises(ValueError, match="--num-units"):
        UnitFrontend(0, 8, 8, [5])


def _lookup_vs_conv(frontend, units, lengths):
    """Outputs, lengths and parameter grads of the conv path and of the lookup path."""
    runs = []
    for lookup in (False, True):
        frontend.zero_grad()
        frontend.first_layer_lookup = lookup
        y, n = frontend(units, lengths)
        (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y).sin()).sum().backward()
        runs.append((y.detach(), n, {k: p.grad.clone() for k, p in frontend.named_parameters()}))
    return runs


@pytest.mark.parametrize("kernels", [[5], [5, 5], [3, 5], [7]])
def test_first_layer_lookup_equals_convolution(kernels):
    """The first conv as table lookups is the same function of the same parameters (value and grads)."""
    torch.manual_seed(0)
    k = 20
    frontend = UnitFrontend(k, 16, 32, kernels)
    with torch.no_grad():  # a non-zero padding row must still read as zero frames
        frontend.embed_units.weight[k].normal_()
    lengths = torch.tensor([37, 30, 5, 1, 2])
    units = torch.randint(k, (5, 37))
    units[1, 30:] = k
    units[2, 5:] = 7  # garbage (not padding ids) past the length
    units[3, 1:] = 3
    (y_conv, n_conv, g_conv), (y_look, n_look, g_look) = _lookup_vs_conv(frontend, units, lengths)
    assert n_conv.tolist() == n_look.tolist()
    torch.testing.assert_close(y_look, y_conv)
    assert g_look.keys() == g_conv.keys()
    for name in g_conv:
        torch.testing.assert_close(g_look[name], g_conv[name], msg=name)
    for i, n in enumerate(n_look.tolist()):
        assert torch.all(y_look[i, n:] == 0)


def test_first_layer_lookup_auto_choice(monkeypatch):
    """Auto picks the lookup only when the V-row tables are cheaper than convolving B x T' frames."""
    frontend = UnitFrontend(100, 8, 16, [5])
    calls = []
    real = UnitFrontend._first_layer_by_lookup
    monkeypatch.setattr(UnitFrontend, "_first_layer_by_lookup", lambda self, *a: calls.append(1) or real(self, *a))
    frontend(torch.randint(100, (2, 40)), torch.tensor([40, 40]))  # B x T' = 40 < V = 101
    assert calls == []
    frontend(torch.randint(100, (8, 40)), torch.full((8,), 40))  # B x T' = 160 > 101
    assert calls == [1]
    frontend.first_layer_lookup = False
    frontend(torch.randint(100, (8, 40)), torch.full((8,), 40))
    assert calls == [1]
