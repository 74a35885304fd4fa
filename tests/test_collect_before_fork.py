"""fairseq_patches/collect_before_fork.py: garbage left by the parent (an old DataLoader
iterator in a reference cycle) is collected in the parent before a fork, never in the child."""
import gc
import os
import sys

import pytest

import gsgn_fairseq  # noqa: F401  (installs the patch)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_cyclic_garbage_is_finalised_in_the_parent_not_in_a_forked_child(tmp_path):
    record = tmp_path / "finalised_in"

    class OldLoaderIter:  # stands in for a _MultiProcessingDataLoaderIter
        def __del__(self):
            with open(record, "a") as f:
                f.write(f"{os.getpid()}\n")

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # keep the cycle as garbage until the fork
    try:
        a = OldLoaderIter()
        a.self = a
        del a
        pid = os.fork()
        if pid == 0:  # the child, as a DataLoader worker would: the collector runs here sooner or later
            gc.collect()
            sys.stdout.flush()
            os._exit(0)
        os.waitpid(pid, 0)
    finally:
        if was_enabled:
            gc.enable()
    gc.collect()
    assert record.read_text().split() == [str(os.getpid())]
