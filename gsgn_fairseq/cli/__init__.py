"""Command-line tools over trained models: averaging, scoring, translating, measuring (``gsgn-*`` entry points; not imported at plugin registration)."""
import functools


def console_entry(main):
    """``main`` as a console entry point: its return value is dropped, since a console script
    exits with it and anything but None is an error status."""

    @functools.wraps(main)
    def entry() -> None:
        main()

    return entry
