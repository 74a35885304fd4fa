"""The gradient-sensitive gating network (GSGN) fusion layer, Eq. 3-4 of the paper.

For two aligned views ``x_fbank`` and ``x_unit`` of the same frames (both ``(..., D)``)::

    g_fbank  = act(Linear^1_fbank(x_fbank) + Linear^2_fbank(x_unit) + bias_fbank)   (Eq. 3)
    g_unit   = act(Linear^1_unit(x_fbank)  + Linear^2_unit(x_unit)  + bias_unit)
    x_fusion = g_fbank * x_fbank + g_unit * x_unit                                (Eq. 4)

More than one S-feature view (``x_1 .. x_N``, the paper's future work): every gate reads
every view, and the fusion sums them all::

    g_fbank  = act(Linear^1_fbank(x_fbank) + sum_k Linear^(k+1)_fbank(x_k) + bias_fbank)
    x_fusion = g_fbank * x_fbank + sum_k g_k * x_k                    (every g_k = 1 by default)

With one view this is Eq. 3-4, with the same parameters in the same order.

Choices:

* ``act``: the paper writes Sigmoid, yet reports ``g_fbank > 1`` for most elements and
  derives gate targets ``1 - |b| cos / |a| > 1`` (Eq. 11). The default is therefore
  ``2sigmoid`` = ``2 * sigmoid(z)``: range (0, 2) and exactly 1 at zero input, so the gate
  can reach every target Eq. 11 produces for ``cos > -|a|/|b|``. ``sigmoid`` reproduces the
  paper's formula literally.
* ``unit_gate="one"`` (default) fixes ``g_unit = 1``, the constraint under which Eq. 10-11
  are derived: with it, ``g_fbank = target`` makes the fused gradient ``target * a + b``,
  Eq. 10's corrected sum. ``"learned"`` computes it as in Eq. 3 (the gradient is then
  ``g_fbank a + g_unit b``, and hitting the target no longer yields Eq. 10).
* The two linear maps of each gate carry no bias of their own; the single ``bias_[.]`` of
  Eq. 3 is a separate parameter, so a test can set every weight by hand.
* Initialisation: Xavier-uniform weights (fairseq's convention for transformer linears) and
  zero biases, so the pre-activation has zero mean and the gates start around ``act(0)``
  (1 for ``2sigmoid``: the layer starts close to the plain sum ``x_fbank + x_unit``).

The layer is stateless between calls (no tensors are kept on ``self``), works on any
leading shape, and takes an optional padding mask: padded frames of the fused output are
zeroed so they cannot leak into later layers; gates are returned unmasked (consumers mask
them with the same padding mask).
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

GATE_ACTIVATIONS = ("2sigmoid", "sigmoid")
UNIT_GATES = ("one", "learned")


def gate_activation(z: Tensor, activation: str) -> Tensor:
    """``2 * sigmoid(z)`` (range (0, 2), 1 at 0) or ``sigmoid(z)`` (range (0, 1))."""
    if activation == "2sigmoid":
        return 2.0 * torch.sigmoid(z)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    raise ValueError(f"gate activation must be one of {GATE_ACTIVATIONS}, got {activation!r}")


class _Gate(nn.Module):
    """One gate of Eq. 3: ``act(x_fbank W1^T + x_unit W2^T + b)``, all maps D -> D; with more
    S-feature views, one more map per view (``weight_views``: the second view's, ...).

    Parameters are plain tensors (``weight_fbank`` = Linear^1, ``weight_unit`` = Linear^2,
    ``bias``) rather than bias-free ``nn.Linear`` modules, whose ``bias = None`` entries
    fairseq's trainer would report as parameters shared with every other bias-free layer.
    """

    def __init__(self, embed_dim: int, n_views: int = 1):
        super().__init__()
        self.weight_fbank = nn.Parameter(torch.empty(embed_dim, embed_dim))  # Linear^1_[.], (D_out, D_in)
        self.weight_unit = nn.Parameter(torch.empty(embed_dim, embed_dim))  # Linear^2_[.], (D_out, D_in)
        self.bias = nn.Parameter(torch.zeros(embed_dim))  # bias_[.]
        nn.init.xavier_uniform_(self.weight_fbank)
        nn.init.xavier_uniform_(self.weight_unit)
        self.weight_views = nn.ParameterList()  # views 2..N, (D_out, D_in) each
        for _ in range(n_views - 1):
            w = nn.Parameter(torch.empty(embed_dim, embed_dim))
            nn.init.xavier_uniform_(w)
            self.weight_views.append(w)

    def forward(self, x_fbank: Tensor, x_units: Sequence[Tensor], activation: str) -> Tensor:
        z = F.linear(x_fbank, self.weight_fbank) + F.linear(x_units[0], self.weight_unit)  # (..., D)
        for x, w in zip(x_units[1:], self.weight_views):
            z = z + F.linear(x, w)
        return gate_activation(z + self.bias, activation)


class GatedFusion(nn.Module):
    """GSGN fusion of FBank and ``n_views`` aligned S-feature views (Eq. 3-4).

    Args:
        embed_dim: D, the feature size of every view.
        activation: ``"2sigmoid"`` (default) or ``"sigmoid"``.
        unit_gate: ``"one"`` (every ``g_k = 1``, Eq. 10-11; default) or ``"learned"`` (Eq. 3).
        n_views: the number of S-feature views (1: the paper's).
    """

    def __init__(self, embed_dim: int, activation: str = "2sigmoid", unit_gate: str = "one", n_views: int = 1):
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if activation not in GATE_ACTIVATIONS:
            raise ValueError(f"--gate-activation must be one of {GATE_ACTIVATIONS}, got {activation!r}")
        if unit_gate not in UNIT_GATES:
            raise ValueError(f"--unit-gate must be one of {UNIT_GATES}, got {unit_gate!r}")
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        self.embed_dim = embed_dim
        self.activation = activation
        self.unit_gate_mode = unit_gate
        self.n_views = n_views
        self.fbank_gate = _Gate(embed_dim, n_views)
        self.unit_gate = _Gate(embed_dim, n_views) if unit_gate == "learned" else None  # the first view's
        self.more_unit_gates = nn.ModuleList(  # views 2..N
            [_Gate(embed_dim, n_views) for _ in range(n_views - 1)] if unit_gate == "learned" else [])

    def extra_repr(self) -> str:
        views = f", n_views={self.n_views}" if self.n_views > 1 else ""
        return f"embed_dim={self.embed_dim}, activation={self.activation}, unit_gate={self.unit_gate_mode}{views}"

    def forward(
        self,
        x_fbank: Tensor,
        x_unit: Union[Tensor, Sequence[Tensor]],
        padding_mask: Optional[Tensor] = None,
        gate_injector: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Union[Tensor, List[Tensor]]]:
        """Fuse the views.

        Args:
            x_fbank: (..., D), e.g. (B, T, D), the FBank view.
            x_unit: same shape as ``x_fbank``, the unit view aligned to it; or a list of the
                ``n_views`` S-feature views.
            padding_mask: optional bool (...) without the feature axis, e.g. (B, T), True at
                padded frames; those frames of ``x_fusion`` are set to 0.
            gate_injector: optional callable ``g_fbank -> g_fbank`` (same shape) applied
                after Eq. 3 and before Eq. 4 (used by gate-target computations).

        Returns:
            ``(x_fusion, g_fbank, g_unit)``, each with the shape of ``x_fbank`` (``g_unit`` a
            list, one per view, when ``x_unit`` is a list). With ``unit_gate="one"`` ``g_unit``
            is a tensor of ones.
        """
        listed = not torch.is_tensor(x_unit)
        x_units = list(x_unit) if listed else [x_unit]
        if len(x_units) != self.n_views:
            raise ValueError(f"expected {self.n_views} S-feature view(s), got {len(x_units)}")
        for x in x_units:
            if x_fbank.shape != x.shape:
                raise ValueError(
                    f"views must have the same shape, got x_fbank {tuple(x_fbank.shape)} and x_unit {tuple(x.shape)}"
                )
        if x_fbank.size(-1) != self.embed_dim:
            raise ValueError(f"expected feature size {self.embed_dim}, got {x_fbank.size(-1)}")
        g_fbank = self.fbank_gate(x_fbank, x_units, self.activation)  # (..., D)
        if gate_injector is not None:
            injected = gate_injector(g_fbank)
            if injected.shape != g_fbank.shape:
                raise ValueError(
                    f"gate_injector changed the gate shape from {tuple(g_fbank.shape)} to {tuple(injected.shape)}"
                )
            g_fbank = injected
        if self.unit_gate is not None:
            g_units = [gate(x_fbank, x_units, self.activation) for gate in [self.unit_gate, *self.more_unit_gates]]
        else:
            g_units = [torch.ones_like(x) for x in x_units]
        x_fusion = g_fbank * x_fbank  # (..., D), Eq. 4
        for g, x in zip(g_units, x_units):
            # a fixed unit gate of one adds the view as it is (the same numbers, one product less)
            x_fusion = x_fusion + (g * x if self.unit_gate is not None else x)
        if padding_mask is not None:
            if padding_mask.shape != x_fusion.shape[:-1]:
                raise ValueError(
                    f"padding_mask {tuple(padding_mask.shape)} does not match the frames {tuple(x_fusion.shape[:-1])}"
                )
            x_fusion = x_fusion.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return x_fusion, g_fbank, (g_units if listed else g_units[0])
