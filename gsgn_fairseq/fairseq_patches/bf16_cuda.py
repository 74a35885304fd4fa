"""``--bf16`` on CUDA GPUs with fairseq 0.12's command-line tools.

fairseq 0.12 reads ``--bf16`` as "bf16 on a TPU": ``options.parse_args_and_arch`` sets
``--tpu`` with it, and the Trainer then asks torch_xla for its device, which fails on a GPU
machine (``'NoneType' object has no attribute 'xla_device'``). The Trainer itself supports
bf16 on CUDA (bf16 model, ``FP16Optimizer`` with fp32 master weights). When the plugin is
loaded (``--user-dir`` is imported while the arguments are parsed, before training starts)
this module wraps ``fairseq.distributed.utils.call_main``, through which ``fairseq-train``
and ``fairseq-validate`` start (``fairseq-generate`` never looks at ``tpu``), and clears
``tpu`` when all of these hold: ``--bf16`` is set, CUDA is available, ``--cpu`` is not set and torch_xla is not
installed (a real TPU setup keeps fairseq's behaviour).
"""
import importlib.util
import logging

import torch

from . import run_before_call_main

logger = logging.getLogger(__name__)


def bf16_means_cuda(cfg) -> bool:
    """True when ``cfg`` asks for bf16 and the run belongs on this machine's CUDA GPU."""
    common = cfg.common
    return bool(
        getattr(common, "bf16", False)
        and getattr(common, "tpu", False)
        and not getattr(common, "cpu", False)
        and torch.cuda.is_available()
        and importlib.util.find_spec("torch_xla") is None
    )


def clear_tpu_for_cuda_bf16(cfg) -> bool:
    """Clear the ``tpu`` flags fairseq derived from ``--bf16``; returns whether it did."""
    if not bf16_means_cuda(cfg):
        return False
    cfg.common.tpu = False
    if getattr(cfg, "distributed_training", None) is not None and "tpu" in cfg.distributed_training:
        cfg.distributed_training.tpu = False
    logger.info("--bf16 on CUDA (no torch_xla): training in bf16 on the GPU, not on a TPU")
    return True


def _install() -> None:
    run_before_call_main(clear_tpu_for_cuda_bf16, "_gsgn_bf16_cuda")


_install()
