"""Give the task its saved state back when ``fairseq-train`` resumes from a checkpoint.

fairseq 0.12 saves ``task.state_dict()`` in every checkpoint (``task_state``) and hands it
back to the task when a model is loaded for ``fairseq-generate``/``-validate``
(``load_model_ensemble_and_task``), but ``Trainer.load_checkpoint`` (resuming training, or
``--restore-file``) never does. Our task keeps the units' provenance there, so that a resumed
run checks its data against the model's. Imported with the plugin, this wraps
``Trainer.load_checkpoint``: while it runs, the task state of the checkpoint the trainer
obtains is kept, and afterwards passed to ``task.load_state_dict`` for tasks that ask for it
(``restore_task_state_on_resume = True``); other tasks keep fairseq's behaviour.

In data-parallel training rank 0 reads the checkpoint (``checkpoint_utils.load_checkpoint_to_cpu``)
and the other ranks receive it from rank 0 (``distributed_utils.broadcast_object``); the state
is taken from whichever of the two the rank goes through, so every rank's task gets it and
checks the data that rank reads.
"""
import functools
from typing import Callable, List

from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.trainer import Trainer


def _keeping_task_state(function: Callable, seen: List) -> Callable:
    """``function`` (which returns a checkpoint state, or anything else) noting the
    ``task_state`` of every checkpoint state it returns in ``seen``."""

    @functools.wraps(function)
    def keep(*args, **kwargs):
        state = function(*args, **kwargs)
        if isinstance(state, dict) and "model" in state:
            seen.append(state.get("task_state"))
        return state

    return keep


def _install() -> None:
    original = Trainer.load_checkpoint
    if getattr(original, "_gsgn_task_state", False):
        return

    @functools.wraps(original)
    def load_checkpoint(self, filename, *args, **kwargs):
        if not getattr(self.task, "restore_task_state_on_resume", False):
            return original(self, filename, *args, **kwargs)
        read, receive = checkpoint_utils.load_checkpoint_to_cpu, distributed_utils.broadcast_object
        seen: List = []
        checkpoint_utils.load_checkpoint_to_cpu = _keeping_task_state(read, seen)
        distributed_utils.broadcast_object = _keeping_task_state(receive, seen)
        try:
            extra_state = original(self, filename, *args, **kwargs)
        finally:
            checkpoint_utils.load_checkpoint_to_cpu, distributed_utils.broadcast_object = read, receive
        if seen and seen[-1] is not None:
            self.task.load_state_dict(seen[-1])
        return extra_state

    load_checkpoint._gsgn_task_state = True
    Trainer.load_checkpoint = load_checkpoint


_install()
