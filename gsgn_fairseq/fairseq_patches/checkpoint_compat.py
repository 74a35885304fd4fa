"""Let fairseq 0.12 load its own checkpoints under torch's ``weights_only=True`` default.

torch >= 2.6 unpickles checkpoints with ``weights_only=True`` unless told otherwise, and
fairseq 0.12 checkpoints store their training arguments as an ``argparse.Namespace``, so
``checkpoint_utils.load_checkpoint_to_cpu`` fails with ``Unsupported global:
argparse.Namespace`` in ``fairseq-generate``, ``--restore-file`` and pretrained loading.
Rather than turning the safe loader off, we allow-list exactly the plain types fairseq
checkpoints contain.

A data-parallel resume has a second reader: rank 0 loads the checkpoint (with the allow
list) and sends the loaded state, whose config is an omegaconf ``DictConfig``, to the other
ranks with ``distributed_utils.broadcast_object``; its receiving side ``torch.load``s the
bytes with the same default and refuses the ``DictConfig``, so every rank but 0 stopped. The
non-tensor part of a broadcast object now travels with torch's ``broadcast_object_list``
(pickle, as fairseq's own ``torch.load`` was before torch 2.6: the bytes come from rank 0 of
the same job, not from a file).
"""
import argparse
import collections
import functools

import torch
from fairseq.data.dictionary import Dictionary
from fairseq.distributed import utils as distributed_utils

# Types found in fairseq 0.12 checkpoints (s2t, transformer and HuBERT models alike).
# HuBERT pre-training checkpoints keep their label dictionaries in ``task_state``.
SAFE_GLOBALS = [argparse.Namespace, collections.OrderedDict, Dictionary]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


def _install_broadcast() -> None:
    original = distributed_utils._broadcast_object_slow
    if getattr(original, "_gsgn_pickle", False):
        return

    @functools.wraps(original)
    def broadcast_object_slow(obj, src_rank, group, dist_device):
        if distributed_utils.use_xla():  # TPU groups are fairseq's own
            return original(obj, src_rank, group, dist_device)
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=src_rank, group=group, device=dist_device)
        return box[0]

    broadcast_object_slow._gsgn_pickle = True
    distributed_utils._broadcast_object_slow = broadcast_object_slow


allow_fairseq_checkpoints()
_install_broadcast()
