"""Fixes the plugin installs into fairseq 0.12 when it is imported (``gsgn_fairseq/__init__.py``
imports each, in order). Each module patches one fairseq function or class where fairseq
itself falls short; the README's table lists what each patches, why, and the upstream change
that would make it unnecessary. Importing this package alone installs nothing.
"""
