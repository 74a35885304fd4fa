"""Command-line tools over trained models: averaging, scoring, translating, measuring (``gsgn-*`` entry points; not imported at plugin registration)."""
