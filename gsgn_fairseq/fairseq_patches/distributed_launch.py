"""``torchrun ... fairseq-train --user-dir gsgn_fairseq`` on CPUs (gloo) as on GPUs (nccl).

fairseq 0.12 reads torchrun's ``env://`` rendezvous (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``) in ``distributed.utils.infer_init_method``, but only for GPUs. Three things
stop the same command from running with ``--cpu``; importing the plugin (``--user-dir`` is
imported while the arguments are parsed, before ``call_main``) fixes each where it happens:

1. World size. ``--distributed-world-size`` defaults to the number of visible GPUs, at least
   1, and ``infer_init_method`` returns before it looks at the environment when that is 1: on
   a CPU (and on a node with one GPU) every torchrun rank then trains alone and all of them
   write the same checkpoints. Under torchrun a world size left at 1 becomes ``WORLD_SIZE``
   (fairseq itself already replaces any other value with ``WORLD_SIZE``).
2. Rank setup. fairseq's torchrun branch sets ``device_id = rank % torch.cuda.device_count()``
   (``ZeroDivisionError`` without a GPU) and keeps ``--distributed-backend nccl``, which has no
   CPU tensors. On a CPU run the plugin does what that branch does (``env://``, rank and world
   size from the environment, no spawning) with ``device_id = LOCAL_RANK`` and gloo in place
   of nccl. GPU runs keep fairseq's own branch. A CPU run with a world size above 1 but no
   torchrun environment stops with the torchrun command to use (fairseq would spawn one
   process per GPU: "world size is N but have 0 available devices").
3. ``--ddp-backend c10d``/``pytorch_ddp`` (fairseq's default): ``DistributedFairseqModel``
   passes ``device_ids=[device_id]`` to torch's ``DistributedDataParallel`` on every device,
   and DDP refuses device ids for a CPU module. The class it instantiates is replaced by a
   subclass that drops them for CPU modules only.

Ranks launched by hand (``--distributed-init-method tcp://...`` with ``--distributed-rank``)
and TPU runs are left to fairseq.
"""
import logging
import os

import torch
from fairseq.models import distributed_fairseq_model
from torch.nn.parallel import DistributedDataParallel

from . import run_before_call_main

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")  # what fairseq looks for


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in TORCHRUN_ENV)


def runs_on_cpu(cfg) -> bool:
    return bool(getattr(cfg.common, "cpu", False)) or not torch.cuda.is_available()


def configure_torchrun(cfg) -> bool:
    """Complete ``cfg.distributed_training`` for a torchrun rank (fixes 1-2 above); returns
    whether it changed anything. Raises ValueError for a multi-process CPU run without torchrun."""
    dt = cfg.distributed_training
    if dt.distributed_init_method is not None or getattr(cfg.common, "tpu", False):
        return False
    if not launched_by_torchrun():
        if runs_on_cpu(cfg) and dt.distributed_world_size > 1:
            raise ValueError(
                f"--distributed-world-size {dt.distributed_world_size} on CPU: fairseq starts one process per GPU "
                f"itself and there is none; start the ranks with torchrun instead: torchrun --nproc_per_node "
                f"{dt.distributed_world_size} $(which fairseq-train) ... --cpu (without --distributed-world-size)"
            )
        return False
    world_size = int(os.environ["WORLD_SIZE"])
    changed = False
    if dt.distributed_world_size == 1 and world_size > 1:
        dt.distributed_world_size = world_size
        changed = True
    if dt.distributed_world_size > 1 and runs_on_cpu(cfg):
        dt.distributed_init_method = "env://"
        dt.distributed_rank = int(os.environ["RANK"])
        dt.device_id = int(os.environ.get("LOCAL_RANK", 0))
        dt.distributed_no_spawn = True
        if dt.distributed_backend == "nccl":
            dt.distributed_backend = "gloo"
        changed = True
    if changed:
        logger.info(
            f"torchrun rank {os.environ['RANK']} of {dt.distributed_world_size} "
            f"({'CPU, ' + dt.distributed_backend if runs_on_cpu(cfg) else 'GPU'})"
        )
    return changed


class CpuAwareDistributedDataParallel(DistributedDataParallel):
    """torch's DDP without the device ids fairseq passes for a module on the CPU (fix 3)."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


def _install() -> None:
    run_before_call_main(configure_torchrun, "_gsgn_torchrun")
    distributed_fairseq_model.DistributedDataParallel = CpuAwareDistributedDataParallel


_install()
