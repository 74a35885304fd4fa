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
  (the gate was trained on noise, so it must see noise at test time too).

Each utterance's noise is a function of a seed and its utterance key (:func:`keyed_noise`,
``keyed_random.keyed_uniform_frames``), not a draw from torch's generator: fairseq reseeds
that with ``seed + update`` on every data-parallel rank, so every rank would add the same
noise at the same batch positions, and at evaluation the noise of a frame would depend on
the batch it was decoded in. The model keys training noise on ``(--seed, epoch)`` (fresh
every epoch, different across ranks, the same on a resume) and evaluation noise on
``--inference-seed`` (the same whatever the batch size or order).
"""
from typing import Tuple

from torch import Tensor

from .keyed_random import keyed_uniform_frames


def parse_noise_range(spec: str, flag: str = "--noise-range") -> Tuple[float, float]:
    """``"MIN,MAX"`` -> (min, max), finite with min < max."""
    try:
        low, high = (float(v) for v in str(spec).split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected MIN,MAX (two numbers), got {spec!r}") from None
    if not (low < high) or not all(abs(v) < float("inf") for v in (low, high)):
        raise ValueError(f"{flag}: needs finite MIN < MAX, got {spec!r}")
    return low, high


def keyed_noise(x: Tensor, keys: Tensor, seed: int, noise_range: Tensor) -> Tensor:
    """Noise ~ U[low, high) with the shape (B, T, D), dtype and device of ``x`` (no gradient),
    utterance b's from ``(seed, keys[b])`` only: frame t gets the same value at any padded
    length T, batch or position. ``noise_range``: (2,) tensor ``[low, high]``."""
    low, high = noise_range.float()  # 0-d tensors on x's device: no host sync
    u = keyed_uniform_frames(keys.to(x.device), seed, x.size(1), x.size(2))  # (B, T, D) in [0, 1)
    return (low + (high - low) * u).to(x.dtype).detach()
