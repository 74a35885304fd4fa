"""Let fairseq 0.12 load its own checkpoints under torch's ``weights_only=True`` default.

torch >= 2.6 unpickles checkpoints with ``weights_only=True`` unless told otherwise, and
fairseq 0.12 checkpoints store their training arguments as an ``argparse.Namespace``, so
``checkpoint_utils.load_checkpoint_to_cpu`` fails with ``Unsupported global:
argparse.Namespace`` in ``fairseq-generate``, ``--restore-file`` and pretrained loading.
Rather than turning the safe loader off, we allow-list exactly the plain types fairseq
checkpoints contain.
"""
import argparse
import collections

import torch
from fairseq.data.dictionary import Dictionary

# Types found in fairseq 0.12 checkpoints (s2t, transformer and HuBERT models alike).
# HuBERT pre-training checkpoints keep their label dictionaries in ``task_state``.
SAFE_GLOBALS = [argparse.Namespace, collections.OrderedDict, Dictionary]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


allow_fairseq_checkpoints()
