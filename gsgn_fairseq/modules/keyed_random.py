"""Random numbers that are functions of ``(seed, utterance)``, not of a random stream.

fairseq reseeds torch's generator with ``seed + update`` on every data-parallel rank, so
draws from it repeat across ranks at the same batch positions and depend on how utterances
are batched. The draws here are hashes instead (SplitMix64, a counter-based generator): an
utterance gets the same numbers in any batch, at any position, on any rank, and different
utterances get independent ones.

* :func:`utterance_key`: a stable 63-bit key of an utterance id (the dataset's ``utt_keys``).
* :func:`stream_seed`: one 64-bit seed from integers (a stream label, ``--seed``, epoch...).
* :func:`keyed_uniform`: one draw in [0, 1) per key (the branch draws, Eq. 13).
* :func:`keyed_uniform_frames`: a ``(T, D)`` block of draws per key whose value at frame t,
  channel d is the same whatever T is (the noise controls' noise).

The hash runs on int64 tensors on the keys' device: additions and products wrap modulo 2^64
as the uint64 arithmetic of SplitMix64 does, and right shifts are made logical with a mask.
"""
import hashlib

import torch
from torch import Tensor

_MASK64 = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _int64(value: int) -> int:
    """A uint64 as the int64 with the same bits."""
    value &= _MASK64
    return value - 2**64 if value >= 2**63 else value


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` on int64 copies the sign bit)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: Tensor) -> Tensor:
    """SplitMix64's output function on int64 tensors."""
    z = (z ^ _shift_right(z, 30)) * _int64(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _int64(_MIX2)
    return z ^ _shift_right(z, 31)


def splitmix64(z: Tensor) -> Tensor:
    """One SplitMix64 step of the states ``z`` (int64 tensor): the next output of each."""
    return _mix(z + _int64(_GOLDEN))


def utterance_key(utt_id: str) -> int:
    """A stable 63-bit key of an utterance id (the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(utt_id.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def stream_seed(*parts: int) -> int:
    """A 64-bit seed for the draws below from integers (e.g. stream label, seed, epoch)."""
    h = torch.zeros((), dtype=torch.int64)
    for part in parts:
        h = splitmix64(h ^ _int64(int(part)))
    return int(h) & _MASK64


def _key_states(keys: Tensor, seed: int) -> Tensor:
    """(n,) int64: each key's SplitMix64 state under ``seed``."""
    return keys.to(torch.int64) ^ _int64(seed * _GOLDEN)


def keyed_uniform(keys: Tensor, seed: int) -> Tensor:
    """(n,) float64 CPU draws in [0, 1), each a function of ``(seed, key)`` only."""
    z = splitmix64(_key_states(keys.detach().cpu(), seed))
    return _shift_right(z, 11).to(torch.float64) / float(2**53)


def keyed_uniform_frames(keys: Tensor, seed: int, frames: int, dim: int) -> Tensor:
    """(n, frames, dim) float32 draws in [0, 1) on ``keys``' device: key i's value at
    ``[t, d]`` is output ``t * dim + d`` of a SplitMix64 stream seeded from ``(seed, key i)``,
    so it does not depend on ``frames`` (the padded length), the batch or its order."""
    state = splitmix64(_key_states(keys, seed))  # (n,): a stream of its own per key
    counter = torch.arange(1, frames * dim + 1, dtype=torch.int64, device=keys.device).view(1, frames, dim)
    z = _mix(state.view(-1, 1, 1) + counter * _int64(_GOLDEN))  # (n, frames, dim)
    return _shift_right(z, 40).to(torch.float32) / float(2**24)  # 24 bits: exact in float32
