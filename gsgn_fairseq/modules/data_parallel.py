"""Sums over the data-parallel ranks, for the gate targets that pool over the batch.

Under data parallelism the paper's batch is the global one: every rank's share of an
optimizer step (one micro-batch each with ``--update-freq``). A pooled target (Eq. 11 with
``a``, ``b`` summed over the batch) needs ``a = sum_r a_r``, ``b = sum_r b_r``: the inner
products ``<a, b>``, ``|a|^2``, ``|b|^2`` do not decompose over ranks (they have cross terms
``<a_r, b_s>``), so the gradient vectors themselves are summed, then every rank computes the
same target from the same sums: ``exact`` sums its two ``(P,)`` reference-parameter
gradients (``P`` = size of ``--gate-reference-params``, 3.1M for the paper's first layer) on the
updates it computes a target, ``factorized`` its two ``(D, D)`` matrices of Eq. 6-7 at every
step; both add the number of fusion utterances or frames, and a scalar per step says whether
a shared target applies anywhere (it is counted once in the logs).

The sums run on a process group of their own, created once over all ranks by
:meth:`GlobalBatch.setup` (a collective: every rank calls it at the same point, in the
criterion's first training forward). The factorized target sums inside the backward pass,
where DDP (``--ddp-backend c10d``) is all-reducing gradient buckets on fairseq's group from
the same backward: collectives on one group must come in the same order on every rank, and
the order of those two is up to autograd's scheduling. On separate groups they cannot
interleave.

Without ``torch.distributed`` (or with one process) every method is the identity.
"""
from typing import Tuple

import torch
import torch.distributed as dist
from fairseq.distributed import utils as distributed_utils
from torch import Tensor


class GlobalBatch:
    """All-reduce (sum) helper for one criterion; ``setup()`` before the first ``sum()``."""

    def __init__(self):
        self._group = None
        self._set_up = False

    def setup(self) -> None:
        if self._set_up:
            return
        self._set_up = True
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        if distributed_utils.get_data_parallel_world_size() != dist.get_world_size():
            raise ValueError(
                "--gate-target-granularity batch pools over the data-parallel ranks, and this run has "
                f"{distributed_utils.get_data_parallel_world_size()} of {dist.get_world_size()} processes "
                "(model parallelism); use --gate-target-granularity utterance"
            )
        self._group = dist.new_group()
        # NCCL creates a group's communicator at its first collective: do that here, in the
        # forward, rather than inside the backward pass of the first factorized target
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(self._group) == "nccl" else "cpu"
        dist.all_reduce(torch.zeros(1, device=device), group=self._group)

    @property
    def active(self) -> bool:
        """True when there are other ranks to sum with."""
        return self._group is not None

    @property
    def is_first(self) -> bool:
        """Rank 0 (or no data parallelism): the rank that counts a shared target in the logs."""
        return self._group is None or dist.get_rank(self._group) == 0

    def sum(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        """The element-wise sums over ranks of ``tensors`` (any shapes), in one collective.

        Computed in float32, or float64 when an input is float64; each result has its
        input's shape and that common dtype. Without other ranks: the inputs, unchanged.
        """
        if self._group is None:
            return tensors
        dtype = torch.float32
        for t in tensors:
            dtype = torch.promote_types(dtype, t.dtype)
        flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self._group)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset: offset + t.numel()].view(t.shape))
            offset += t.numel()
        return tuple(out)

