"""fairseq's ``numpy_seed`` context, at a fiftieth of its cost per utterance.

fairseq's feature transforms (SpecAugment) draw from the global ``np.random``. Seeding it per
utterance (``numpy_seed(seed, epoch, index)``) makes an utterance's draws independent of batch
composition, data-loader workers and where a resumed run restarted. fairseq's context saves and
restores the global state with ``np.random.get_state()`` / ``set_state()``: copying the 624-word
Mersenne Twister state out to Python and back costs about 140 us, a quarter of an utterance's
whole data path on a CPU (``scripts/bench_data.py``).

:class:`NumpySeed` instead swaps the global ``RandomState``'s bit generator: inside the block it
is a private ``MT19937`` seeded as ``np.random.seed`` seeds (legacy seeding of the same integer
``int(hash((seed, *keys)) % 1e6)`` fairseq computes), so every draw is the one fairseq's context
gives; on exit the caller's bit generator, untouched, is put back (about 2 us in all). One
difference: the global ``RandomState`` forgets a cached second Gaussian of a Box-Muller pair
(``np.random.get_state()[3:]``) when its generator is swapped; the uniform stream is unchanged.
Where numpy lacks ``set_bit_generator`` (before 1.25) fairseq's context is used.
"""
import contextlib

import numpy as np
from fairseq.data import data_utils as fairseq_data_utils

_SWAP = hasattr(np.random, "set_bit_generator") and hasattr(np.random.MT19937, "_legacy_seeding")


class NumpySeed:
    """``with NumpySeed()(seed, *keys):`` seeds the global ``np.random`` as fairseq's
    ``numpy_seed(seed, *keys)`` does, and restores the caller's generator afterwards. Not
    re-entrant (one private generator per instance): one instance per dataset."""

    def __init__(self):
        self._bit_generator = np.random.MT19937(0) if _SWAP else None

    @contextlib.contextmanager
    def __call__(self, seed, *keys):
        if seed is None:  # fairseq's: no seeding at all
            yield
            return
        if self._bit_generator is None:
            with fairseq_data_utils.numpy_seed(seed, *keys):
                yield
            return
        if keys:
            seed = int(hash((seed, *keys)) % 1e6)  # fairseq's numpy_seed
        saved = np.random.get_bit_generator()
        self._bit_generator._legacy_seeding(seed)  # what np.random.seed(seed) does to its generator
        np.random.set_bit_generator(self._bit_generator)
        try:
            yield
        finally:
            np.random.set_bit_generator(saved)
