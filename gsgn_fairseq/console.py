"""The wrapper that turns a ``main`` into a ``gsgn-*`` console script (used by ``prep/`` and
``cli/`` alike, so it sits below both)."""
import functools


def console_entry(main):
    """``main`` as a console entry point: its return value is dropped, since a console script
    exits with it and anything but None is an error status."""

    @functools.wraps(main)
    def entry() -> None:
        main()

    return entry
