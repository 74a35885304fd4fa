"""Fixes the plugin installs into fairseq 0.12 when it is imported (``gsgn_fairseq/__init__.py``
imports each, in order). Each module patches one fairseq function or class where fairseq
itself falls short; the README's table lists what each patches, why, and the upstream change
that would make it unnecessary. Importing this package alone installs nothing.
"""
import functools
from typing import Callable


def run_before_call_main(fix: Callable, marker: str) -> None:
    """Wrap ``fairseq.distributed.utils.call_main`` (how fairseq-train and fairseq-validate
    start) so that ``fix(cfg)`` runs first; ``marker`` keeps a second import from wrapping twice."""
    from fairseq.distributed import utils as distributed_utils

    original = distributed_utils.call_main
    if getattr(original, marker, False):
        return

    @functools.wraps(original)
    def call_main(cfg, main, **kwargs):
        fix(cfg)
        return original(cfg, main, **kwargs)

    setattr(call_main, marker, True)
    distributed_utils.call_main = call_main
