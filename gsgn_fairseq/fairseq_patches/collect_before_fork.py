"""Collect garbage in the parent before a DataLoader forks its workers.

fairseq 0.12 makes a new ``DataLoader`` iterator for every epoch and every validation, and
an old one can outlive its use as cyclic garbage. Left to the garbage collector, it may be
collected inside a freshly forked worker of the next loader: its ``__del__`` then shuts the
parent's workers and queues down from the child ("can only test a child process", "Bad file
descriptor" in a ``QueueFeederThread``), which can kill the run (seen with ``--num-workers``
above 0 on 2 cores). A ``gc.collect()`` before every ``fork`` frees such garbage where it
belongs, in the parent, at the cost of one collection per worker started.
"""
import gc
import os

_installed = False


def _install() -> None:
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(before=gc.collect)
    _installed = True


_install()
