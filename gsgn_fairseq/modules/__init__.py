"""Plain PyTorch building blocks of the GSGN model (no fairseq registration here)."""
from .branch_sampler import (  # noqa: F401
    BRANCH_NAMES,
    DEFAULT_MSD_SCHEDULE,
    FBANK,
    FUSION,
    UNIT,
    BranchSampler,
    MsdStage,
    parse_msd_schedule,
    sample_branches,
    stage_for_epoch,
)
from .gated_fusion import GatedFusion, gate_activation  # noqa: F401
from .noise import keyed_noise, parse_noise_range  # noqa: F401
from .unit_frontend import (  # noqa: F401
    MaskedConv1dSubsampler,
    UnitFrontend,
    frames_padding_mask,
    subsampled_length,
    subsampled_lengths,
)
