"""GSGN speech multi-view feature fusion for fairseq (``--user-dir gsgn_fairseq``).

Importing the package registers the task, models and criterion with fairseq. Imports are
relative so the plugin registers once whether it is reached through ``--user-dir`` or an
installed ``import gsgn_fairseq``. It first installs the fixes of ``fairseq_patches/`` into
fairseq 0.12 (the README's table says what each patches and why).
"""
from .fairseq_patches import checkpoint_compat  # noqa: F401  (must run before fairseq loads checkpoints)
# torchrun on CPUs (world size, gloo, DDP device ids); installed first so that it runs inside
# bf16_cuda's call_main wrapper, after that one has cleared the tpu flag --bf16 sets
from .fairseq_patches import distributed_launch  # noqa: F401
from .fairseq_patches import bf16_cuda  # noqa: F401  (fairseq 0.12 takes --bf16 for a TPU)
from .fairseq_patches import resume_task_state  # noqa: F401  (fairseq 0.12 drops the task state on resume)
from .fairseq_patches import collect_before_fork  # noqa: F401  (old loader iterators collected in new workers)
from . import criterions, models, tasks  # noqa: F401
