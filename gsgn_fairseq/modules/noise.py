"""Uniform noise for the random-noise controls of the paper (Table II).

The paper draws noise "from a uniform distribution with the same maximum and minimum values
as the S-feature across the entire training set". Our unit view starts as the embedding of
discrete units, and in the noise models no unit branch is trained, so there is no learned
S-feature to measure. We use the range of a unit embedding table as the unit branch
initialises it (``Embedding(K + 1, D)``, fairseq's N(0, D^-1/2) init, padding row excluded):
the values a unit frame starts from. The model computes it once at construction and keeps it
as a buffer (``noise_range``), so it is saved with checkpoints and decoding uses the same
range; the noise itself is detached (no gradient).

* ``noise-sum``: FBank-only model, ``x = x_fbank + noise``, in training only (a regulariser
  like dropout; evaluation and decoding stay deterministic).
* ``noise-replace``: GSGN with ``x_unit`` replaced by noise, in training and inference alike
  (the gate was trained on noise, so it must see noise at test time too; in eval mode the
  model draws it from a generator with a fixed seed, so decoding the same batches is
  reproducible; the noise is drawn for the padded batch tensor, so which value a frame gets
  depends on the batch layout).
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor


def embedding_range(weight: Tensor, padding_idx: Optional[int] = None) -> Tuple[float, float]:
    """(min, max) over an embedding table ``(V, D)``, excluding the padding row."""
    with torch.no_grad():
        w = weight.detach()
        if padding_idx is not None:
            keep = torch.ones(w.size(0), dtype=torch.bool, device=w.device)
            keep[padding_idx] = False
            w = w[keep]
        return float(w.min()), float(w.max())


def uniform_noise_like(
    x: Tensor,
    low: Union[float, Tensor],
    high: Union[float, Tensor],
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Noise ~ U[low, high) with the shape, dtype and device of ``x`` (no gradient).

    ``low``/``high`` may be floats or 0-d tensors on ``x``'s device (no host sync then).
    ``generator`` must live on ``x``'s device when given.
    """
    if not torch.is_tensor(low) and not torch.is_tensor(high) and not high >= low:
        raise ValueError(f"noise range needs high >= low, got [{low}, {high}]")
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return (low + (high - low) * u).to(x.dtype).detach()
