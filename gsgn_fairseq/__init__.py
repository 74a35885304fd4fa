"""GSGN speech multi-view feature fusion for fairseq (``--user-dir gsgn_fairseq``).

Importing the package registers the task, models and criterion with fairseq. Imports are
relative so the plugin registers once whether it is reached through ``--user-dir`` or an
installed ``import gsgn_fairseq``.
"""
from . import checkpoint_compat  # noqa: F401  (must run before fairseq loads checkpoints)
from . import criterions, models, tasks  # noqa: F401
