"""Keyed draws (gsgn_fairseq/modules/keyed_random.py): SplitMix64 on int64 tensors equals the
uint64 reference, and a key's draws depend on nothing but (seed, key)."""
import numpy as np
import pytest
import torch

from gsgn_fairseq.modules.keyed_random import (
    keyed_uniform, keyed_uniform_frames, splitmix64, stream_seed, utterance_key,
)

GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def reference_splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 in numpy uint64 (wrapping) arithmetic."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        return z ^ (z >> np.uint64(31))


def test_int64_splitmix64_is_the_uint64_one():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.integers(0, 2**64, size=5000, dtype=np.uint64),
                        np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)])
    got = splitmix64(torch.from_numpy(z.view(np.int64))).numpy().view(np.uint64)
    assert np.array_equal(got, reference_splitmix64(z))


def test_keyed_uniform_matches_the_uint64_reference():
    keys = torch.tensor([utterance_key(f"ted_{i}") for i in range(1000)])
    for seed in (0, 1, 2**40 + 3):
        z = keys.numpy().astype(np.uint64) ^ np.uint64((seed * GOLDEN) % 2**64)
        expected = (reference_splitmix64(z) >> np.uint64(11)).astype(np.float64) / 2**53
        assert np.array_equal(keyed_uniform(keys, seed).numpy(), expected)


def test_stream_seed_is_splitmix64_over_the_parts():
    h = np.uint64(0)
    for part in (7, 1, 3):
        h = reference_splitmix64(np.array([h ^ np.uint64(part)], dtype=np.uint64))[0]
    assert stream_seed(7, 1, 3) == int(h)
    assert stream_seed(7, 1, 3) != stream_seed(7, 1, 4)


def test_frame_draws_depend_on_the_key_alone():
    keys = torch.tensor([utterance_key(f"utt_{i}") for i in range(4)])
    full = keyed_uniform_frames(keys, seed=5, frames=30, dim=8)  # (4, 30, 8)
    assert full.dtype == torch.float32 and full.shape == (4, 30, 8)
    assert 0 <= float(full.min()) and float(full.max()) < 1
    assert abs(float(full.mean()) - 0.5) < 0.05
    # another padded length, another order, a batch of one
    assert torch.equal(keyed_uniform_frames(keys.flip(0), 5, 12, 8), full.flip(0)[:, :12])
    assert torch.equal(keyed_uniform_frames(keys[2:3], 5, 30, 8), full[2:3])
    assert not torch.equal(keyed_uniform_frames(keys, 6, 30, 8), full)
    assert not torch.equal(full[0], full[1])  # independent keys, independent noise


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_frame_draws_are_the_same_on_cuda():
    keys = torch.tensor([utterance_key(f"utt_{i}") for i in range(4)])
    cpu = keyed_uniform_frames(keys, 5, 30, 8)
    assert torch.equal(keyed_uniform_frames(keys.cuda(), 5, 30, 8).cpu(), cpu)
