"""Front ends that bring both views to the encoder frame rate: FBank subsampler and unit branch.

FBank frames come every 10 ms; fairseq's ``Conv1dSubsampler`` (stride-2 convolutions + GLU)
reduces them by ``2^n`` for ``n`` layers (paper: n = 2, 40 ms). HuBERT units come every
20 ms, so the unit branch must reduce by half that factor, ``2^(n-1)``, to land on the same
frame rate.

Unit branch choice: an ``Embedding(K + 1, D, padding_idx=K)`` followed by the same
``Conv1dSubsampler`` with ``n - 1`` layers, input and output size D. We reuse the FBank
subsampler rather than averaging or striding because it is (a) learnable, like the FBank
branch, so each view gets a comparable local-context projection before fusion, and (b) it
shares the FBank branch's length formula ``L -> floor((L - 1) / 2) + 1`` per layer, so the
two views differ by at most a frame or two for HuBERT-aligned inputs (units: about
``T_fbank / 2`` frames). With ``n = 1`` (2x FBank subsampling) the unit branch is the
embedding alone.

Padding: fairseq's ``Conv1dSubsampler`` is not padding invariant: after the first layer the
frames beyond an utterance's length hold ``glu(bias)`` rather than zeros, and the second
layer reads them near the utterance's end, so an utterance's output depends on how much
padding its batch added. ``MaskedConv1dSubsampler`` has the same parameters (a
``s2t_transformer`` checkpoint's ``subsample.*`` loads into it unchanged) but zeroes every
frame past each utterance's length before and after each layer; for odd kernel sizes the
real frames then equal those computed on the unpadded utterance alone.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models.speech_to_text.modules.convolution import Conv1dSubsampler
from fairseq.models.transformer import Embedding
from torch import Tensor


def subsampled_lengths(lengths: Tensor, n_layers: int) -> Tensor:
    """Lengths after ``n_layers`` stride-2 convolutions with odd kernels and ``k // 2`` padding.

    ``L -> floor((L - 1) / 2) + 1`` per layer (the formula of fairseq's Conv1dSubsampler).
    """
    out = lengths.clone().long()
    for _ in range(n_layers):
        out = torch.div(out - 1, 2, rounding_mode="floor") + 1
    return out


def subsampled_length(length: int, n_layers: int) -> int:
    """Integer version of :func:`subsampled_lengths`."""
    for _ in range(n_layers):
        length = (length - 1) // 2 + 1
    return length


def frames_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True at frames ``>= length``."""
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)  # (B, T)


def parse_kernel_sizes(spec: str, flag: str) -> List[int]:
    """``"5,5"`` -> [5, 5]; kernels must be odd (the length formula assumes it)."""
    try:
        kernels = [int(k) for k in str(spec).split(",") if k.strip() != ""]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {spec!r}") from None
    for k in kernels:
        if k <= 0 or k % 2 == 0:
            raise ValueError(f"{flag}: kernel sizes must be positive and odd, got {spec!r}")
    return kernels


class MaskedConv1dSubsampler(Conv1dSubsampler):
    """fairseq's ``Conv1dSubsampler`` (same parameters) made padding invariant, batch first.

    Args:
        in_channels: input feature size (80 for FBank, D for unit embeddings).
        mid_channels: channels between layers (before GLU halves them).
        out_channels: output feature size D.
        kernel_sizes: one odd kernel size per stride-2 layer; may be empty (identity, which
            then requires ``in_channels == out_channels``).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_sizes: Sequence[int]):
        kernel_sizes = list(kernel_sizes)
        for k in kernel_sizes:
            if k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd for the length formula, got {kernel_sizes}")
        if not kernel_sizes and in_channels != out_channels:
            raise ValueError(
                f"a subsampler without layers needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        super().__init__(in_channels, mid_channels, out_channels, kernel_sizes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            x: (B, T, C_in) padded input.
            lengths: (B,) valid frames per utterance.

        Returns:
            ``(y, out_lengths)``: y (B, T', C_out) with zeros past each ``out_lengths`` frame,
            ``T' = floor((T - 1) / 2) + 1`` per layer.
        """
        # A contiguous (B, C, T) copy, as fairseq's subsampler feeds its convolutions (a transposed
        # view costs oneDNN a reorder in every pass); being a copy, it is zeroed in place.
        x = x.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # (B, T, C) -> (B, C, T)
        x.masked_fill_(frames_padding_mask(lengths, x.size(2)).unsqueeze(1), 0.0)
        return self.layers_from(x, lengths, 0)

    def layers_from(self, x: Tensor, lengths: Tensor, first: int) -> Tuple[Tensor, Tensor]:
        """Layers ``first..`` on x (B, C, T), zero past ``lengths``; returns ``(y (B, T', C'), lengths)``."""
        for conv in self.conv_layers[first:]:
            x = nn.functional.glu(conv(x), dim=1)  # (B, 2C', T') -> (B, C', T')
            lengths = subsampled_lengths(lengths, 1)
            # in place: GLU's output is fresh and its backward needs only its input
            x = x.masked_fill_(frames_padding_mask(lengths, x.size(2)).unsqueeze(1), 0.0)
        return x.transpose(1, 2).contiguous(), lengths  # (B, C', T') -> (B, T', C')


class UnitFrontend(nn.Module):
    """Discrete units -> (B, T', D) at the FBank branch's frame rate.

    Args:
        num_units: K, the number of clusters; id K is padding.
        embed_dim: D.
        conv_channels: channels between the downsampling layers.
        kernel_sizes: ``n - 1`` odd kernels for an FBank subsampler with ``n`` layers.
    """

    def __init__(self, num_units: int, embed_dim: int, conv_channels: int, kernel_sizes: Sequence[int]):
        super().__init__()
        if num_units <= 0:
            raise ValueError(f"--num-units must be positive, got {num_units}")
        self.num_units = num_units
        self.padding_idx = num_units
        self.embed_units = Embedding(num_units + 1, embed_dim, self.padding_idx)  # (K + 1, D)
        self.kernel_sizes = list(kernel_sizes)
        self.downsample = (
            MaskedConv1dSubsampler(embed_dim, conv_channels, embed_dim, self.kernel_sizes) if self.kernel_sizes else None
        )
        # the first convolution as table lookups (see _first_layer_by_lookup): None picks by size
        self.first_layer_lookup: Optional[bool] = None

    @property
    def n_layers(self) -> int:
        return len(self.kernel_sizes)

    def forward(self, units: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            units: (B, T_unit) long ids in [0, K], K = padding.
            lengths: (B,) valid units per utterance.

        Returns:
            ``(x_unit, out_lengths)``: x_unit (B, T', D), zeros past each length;
            ``T' = T_unit`` downsampled ``n - 1`` times.
        """
        if self.downsample is None:
            x = self.embed_units(units)  # (B, T_unit) -> (B, T_unit, D)
            x = x.masked_fill(frames_padding_mask(lengths, x.size(1)).unsqueeze(-1), 0.0)
            return x, lengths
        lookup = self.first_layer_lookup
        if lookup is None:  # auto: tables of V rows beat convolving B x T' frames once V < B x T'
            lookup = self.padding_idx + 1 < units.size(0) * subsampled_length(units.size(1), 1)
        if not lookup:
            return self.downsample(self.embed_units(units), lengths)
        y = self._first_layer_by_lookup(units, lengths)  # (B, C0 / 2, T')
        return self.downsample.layers_from(y, subsampled_lengths(lengths, 1), 1)

    def _first_layer_by_lookup(self, units: Tensor, lengths: Tensor) -> Tensor:
        """The first stride-2 convolution (and its GLU) of the embedded units, by table lookups.

        With taps ``W_j`` (C0, D) and padding p, ``conv(E[u])[t] = b + sum_j W_j E[u[2t + j - p]]
        = b + sum_j T_j[u[2t + j - p]]`` for ``T_j = E W_j^T`` (V, C0): the same function of the
        same parameters, costing V x D x C0 x k multiply-adds a step for the tables instead of
        B x T' x D x C0 x k for the convolution, then a k-row sum per output frame
        (``embedding_bag``). Positions past a length and the conv's zero padding read the
        padding row, which is zeroed in the tables as the masked subsampler zeroes those frames.

        Args:
            units: (B, T_unit) ids in [0, K], K = padding; lengths: (B,).

        Returns:
            (B, C0 / 2, T') after the GLU, zero past the subsampled lengths.
        """
        conv = self.downsample.conv_layers[0]
        k, p, V = conv.kernel_size[0], conv.padding[0], self.padding_idx + 1
        bsz, t_unit = units.shape
        keep = torch.ones(V, 1, dtype=self.embed_units.weight.dtype, device=units.device)
        keep[self.padding_idx] = 0
        emb = self.embed_units.weight * keep  # (V, D), the padding row zero whatever its values
        tables = torch.einsum("vd,cdk->kvc", emb, conv.weight).reshape(k * V, -1)  # (k V, C0): row j V + u is T_j[u]
        ids = units.masked_fill(frames_padding_mask(lengths, t_unit), self.padding_idx)  # (B, T_unit)
        ids = F.pad(ids, (p, p), value=self.padding_idx)  # (B, T_unit + 2p)
        windows = ids.unfold(1, k, conv.stride[0])  # (B, T', k): the ids under each output frame's taps
        windows = windows + torch.arange(k, device=units.device) * V  # tap j reads table j
        t_out = windows.size(1)
        y = F.embedding_bag(windows.reshape(-1, k), tables, mode="sum")  # (B T', C0)
        y = F.glu(y + conv.bias, dim=-1).view(bsz, t_out, -1)  # (B, T', C0 / 2)
        y = y.masked_fill(frames_padding_mask(subsampled_lengths(lengths, 1), t_out).unsqueeze(-1), 0.0)
        return y.transpose(1, 2).contiguous()  # (B, C0 / 2, T'), contiguous for the next convolution
