"""Uniform noise for the random-noise controls of the paper (Table II).

The paper draws noise "from a uniform distribution with the same maximum and minimum values
as the S-feature across the entire training set". The noise models have no unit branch of
their own, so the range is measured on a trained model's unit view (the unit front end's
output, ``x_unit``, over the valid frames of the training set:
``gsgn-measure-unit-range``) and given as ``--noise-range MIN,MAX``; the recipe
measures it from its GSGN run before it trains the noise variants and logs it. The model
keeps it as a buffer (``noise_range``), so checkpoints carry it and decoding uses the same
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


def parse_noise_range(spec: str, flag: str = "--noise-range") -> Tuple[float, float]:
    """``"MIN,MAX"`` -> (min, max), finite with min < max."""
    try:
        low, high = (float(v) for v in str(spec).split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected MIN,MAX (two numbers), got {spec!r}") from None
    if not (low < high) or not all(abs(v) < float("inf") for v in (low, high)):
        raise ValueError(f"{flag}: needs finite MIN < MAX, got {spec!r}")
    return low, high


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
