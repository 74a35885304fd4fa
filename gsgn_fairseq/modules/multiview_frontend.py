"""The multi-view front end: both views, the fusion (``--fusion``), the branch choice.

::

    fbank (B, T_fbank, 80) --MaskedConv1dSubsampler (2^n x)----------> x_fbank (B, T, D)
    units (B, T_unit)      --UnitFrontend (embedding + 2^(n-1) x)-----> x_unit  (B, T', D) -> trimmed/padded to T
                              or uniform noise for the noise controls (Table II)
    fusion:   x_fusion = FUSIONS[--fusion](x_fbank, x_unit)          (Eq. 3-4 for gsgn)
    branch:   per utterance one of x_fbank, x_unit, x_fusion          (Eq. 13 in training with
              --multi-stage-dropout; --inference-branch at evaluation; force_branch overrides)

Training draws come from ``(--seed, epoch, utterance key)`` per utterance, or ``(--seed,
update)`` per batch (``branch_sampler.BranchSampler.sample_training``): different on every
data-parallel rank, the same for one global batch. The noise controls' noise is keyed the
same way (``noise.keyed_noise``): ``(--seed, epoch, utterance key)`` in training,
``(--inference-seed, utterance key)`` at evaluation. fairseq passes the update number in
``set_num_updates`` (its task's ``train_step`` calls ``model.set_num_updates``).

Several S-feature views (``--unit-views hubert,wavlm``, the paper's future work): one unit
front end per view (each with its own K), every view aligned to the FBank frames, and the
fusions take the list of them. The branches are then FBank-only, each single view
(``unit:NAME``) and fusion (``branch_sampler.unit_branch`` numbers them so that one view keeps
the two-view ids). With one view (the default ``units``) nothing changes: same parameters,
same names, same numbers.

Fusion modes live in a registry: a new one is a :class:`Fusion` subclass decorated with
``@register_fusion("name")`` (the encoder does not change). A fusion declares which views it
reads (``uses_fbank``, ``unit_view``: ``"units"``, ``"noise"`` or None), how many S-feature
views it can fuse (``max_unit_views``), the branch its own input counts as, and whether it
offers every branch (multi-stage dropout).

Every branch's input is computed for every utterance and selected with ``torch.where``, so
all parameters stay in the graph. Padding never changes real frames (masked subsamplers,
masked views).
"""
import contextlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..data.manifest import parse_unit_views
from .branch_sampler import BRANCH_NAMES, FBANK, FUSION, UNIT, BranchSampler, branch_names, unit_branch
from .gated_fusion import GatedFusion
from .keyed_random import stream_seed
from .noise import keyed_noise, parse_noise_range
from .unit_frontend import (
    MaskedConv1dSubsampler,
    UnitFrontend,
    frames_padding_mask,
    parse_kernel_sizes,
    subsampled_length,
    subsampled_lengths,
)

FUSIONS: Dict[str, Type["Fusion"]] = {}
INFERENCE_BRANCHES = ("fusion", "fbank", "unit", "sample")  # and unit:NAME, one per S-feature view
NOISE_STREAM = 0x6E6F6973650A  # keys the noise controls' draws apart from the branch draws


def register_fusion(name: str):
    def deco(cls):
        if name in FUSIONS:
            raise ValueError(f"fusion {name!r} is registered twice")
        cls.name = name
        FUSIONS[name] = cls
        return cls

    return deco


class Fusion(nn.Module):
    """One ``--fusion`` mode. ``forward(x_fbank, x_units, padding_mask, gate_injector)`` gets
    the FBank view (B, T, D) and the list of S-feature views (each (B, T, D), in
    ``--unit-views`` order; the noise controls get ``[noise]``) and returns ``(x (B, T, D),
    g_fbank, g_units)`` (gates None for ungated fusions, ``g_units`` a list); a view it does
    not use comes as None. ``n_views`` is the number of S-feature views."""

    name = ""
    uses_fbank = True
    unit_view: Optional[str] = "units"  # "units", "noise" or None
    max_unit_views: Optional[int] = None  # how many S-feature views it can fuse (None: any)
    natural_branch = FUSION  # the branch its own input counts as
    noise_in_eval = True  # noise views: drawn at evaluation too
    gated = False

    def __init__(self, embed_dim: int, args, n_views: int = 1):
        super().__init__()
        self.n_views = n_views

    @classmethod
    def is_two_view(cls) -> bool:
        """fbank, unit and fusion branches (multi-stage dropout, inference branches)."""
        return cls.uses_fbank and cls.unit_view is not None and cls.natural_branch == FUSION

    @property
    def two_view(self) -> bool:
        return self.is_two_view()

    def forward(self, x_fbank, x_units, padding_mask, gate_injector=None) -> Tuple[Tensor, Optional[Tensor], Optional[List[Tensor]]]:
        raise NotImplementedError


@register_fusion("fbank")
class FbankOnly(Fusion):
    """FBank-only baseline."""

    unit_view = None
    natural_branch = FBANK

    def forward(self, x_fbank, x_units, padding_mask, gate_injector=None):
        return x_fbank, None, None


@register_fusion("unit")
class UnitOnly(Fusion):
    """S-feature-only baseline (one S-feature view)."""

    uses_fbank = False
    max_unit_views = 1
    natural_branch = UNIT

    def forward(self, x_fbank, x_units, padding_mask, gate_injector=None):
        return x_units[0], None, None


@register_fusion("gsgn")
class GSGN(Fusion):
    """Eq. 3-4 (``modules/gated_fusion.py``), over every S-feature view."""

    gated = True

    def __init__(self, embed_dim: int, args, n_views: int = 1):
        super().__init__(embed_dim, args, n_views)
        self.gate = GatedFusion(embed_dim, args.gate_activation, args.unit_gate, n_views)

    def forward(self, x_fbank, x_units, padding_mask, gate_injector=None):
        return self.gate(x_fbank, list(x_units), padding_mask, gate_injector)


@register_fusion("concat")
class Concat(Fusion):
    """Table III: ``Linear([x_fbank; x_unit])`` from 2D to D; ``(1 + N) D`` to D with N views."""

    def __init__(self, embed_dim: int, args, n_views: int = 1):
        super().__init__(embed_dim, args, n_views)
        self.proj = nn.Linear((1 + n_views) * embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x_fbank, x_units, padding_mask, gate_injector=None):
        return self.proj(torch.cat([x_fbank, *x_units], dim=-1)), None, None  # (B, T, (1+N)D) -> (B, T, D)


@register_fusion("noise-sum")
class NoiseSum(Fusion):
    """Table II: FBank-only with uniform noise added, in training only."""

    unit_view = "noise"
    max_unit_views = 1
    natural_branch = FBANK
    noise_in_eval = False

    def forward(self, x_fbank, x_units, padding_mask, gate_injector=None):
        return (x_fbank + x_units[0] if x_units is not None else x_fbank), None, None


@register_fusion("noise-replace")
class NoiseReplace(GSGN):
    """Table II: GSGN with the unit view replaced by uniform noise, in training and inference."""

    unit_view = "noise"
    max_unit_views = 1


def align_time(x: Tensor, length: int) -> Tensor:
    """Trim or zero-pad (B, T', D) along time to (B, length, D)."""
    return x[:, :length] if x.size(1) >= length else F.pad(x, (0, 0, 0, length - x.size(1)))


class MultiviewFrontend(nn.Module):
    """Views, fusion and branch choice (see the module docstring).

    Args (model args): ``fusion``, ``conv_kernel_sizes``, ``unit_conv_kernel_sizes``,
    ``conv_channels``, ``input_feat_per_channel * input_channels``, ``encoder_embed_dim``,
    ``gate_activation``, ``unit_gate``, ``multi_stage_dropout``, ``msd_schedule``,
    ``msd_granularity``, ``inference_branch``, ``inference_seed``, ``noise_range``,
    ``unit_views`` (default: the one view ``units``);
    ``num_units`` K, one for every view or one per view.
    """

    def __init__(self, args, num_units: Union[int, Sequence[int]]):
        super().__init__()
        if args.fusion not in FUSIONS:
            raise ValueError(f"--fusion must be one of {sorted(FUSIONS)}, got {args.fusion!r}")
        views = parse_unit_views(getattr(args, "unit_views", None))
        ks = [num_units] * len(views) if isinstance(num_units, int) else list(num_units)
        if len(ks) != len(views):
            raise ValueError(f"{len(ks)} unit counts (--num-units) for the unit views {','.join(views)}")
        cls = FUSIONS[args.fusion]
        if cls.unit_view is not None and cls.max_unit_views is not None and len(views) > cls.max_unit_views:
            raise ValueError(f"--fusion {args.fusion} reads {cls.max_unit_views} S-feature view(s); --unit-views "
                             f"{','.join(views)} names {len(views)}")
        self.unit_view_names: Tuple[str, ...] = views if cls.unit_view == "units" else views[:1]
        D = args.encoder_embed_dim
        self.fusion = cls(D, args, len(self.unit_view_names) if cls.unit_view is not None else 1)
        fbank_kernels = parse_kernel_sizes(args.conv_kernel_sizes, "--conv-kernel-sizes")
        if len(fbank_kernels) < 1:
            raise ValueError(f"--conv-kernel-sizes needs at least one layer, got {args.conv_kernel_sizes!r}")
        self.n_fbank_conv = len(fbank_kernels)
        unit_spec = getattr(args, "unit_conv_kernel_sizes", None)
        unit_kernels = parse_kernel_sizes(unit_spec, "--unit-conv-kernel-sizes") if unit_spec else fbank_kernels[1:]
        if len(unit_kernels) != self.n_fbank_conv - 1:
            raise ValueError(
                f"--unit-conv-kernel-sizes {unit_spec!r} has {len(unit_kernels)} layers; units (20 ms) need one fewer "
                f"than the {self.n_fbank_conv} FBank layers of --conv-kernel-sizes {args.conv_kernel_sizes!r}"
            )
        self.subsample = None
        if self.fusion.uses_fbank:
            self.subsample = MaskedConv1dSubsampler(
                args.input_feat_per_channel * args.input_channels, args.conv_channels, D, fbank_kernels
            )
        reads_units = self.fusion.unit_view == "units"
        # the first view's front end keeps the two-view model's name; the others follow by view name
        self.unit_frontend = UnitFrontend(ks[0], D, args.conv_channels, unit_kernels) if reads_units else None
        self.more_unit_frontends = nn.ModuleDict(
            {name: UnitFrontend(k, D, args.conv_channels, unit_kernels) for name, k in zip(views[1:], ks[1:])}
            if reads_units else {})
        self.noise_range: Optional[Tensor] = None
        if self.fusion.unit_view == "noise":
            del self.noise_range
            spec = getattr(args, "noise_range", None)
            if not spec:
                raise ValueError(f"--fusion {args.fusion} needs --noise-range MIN,MAX: the range of the S-feature over "
                                 "the training set (gsgn-measure-unit-range measures it from a trained model)")
            self.register_buffer("noise_range", torch.tensor(parse_noise_range(spec)))

        n_views = len(self.unit_view_names)
        self.msd_enabled = bool(args.multi_stage_dropout)
        if self.msd_enabled and not self.fusion.two_view:
            raise ValueError(f"--multi-stage-dropout needs a fusion with both views "
                             f"{[n for n, c in FUSIONS.items() if c.is_two_view()]}, got --fusion {args.fusion}")
        self.branch_sampler = BranchSampler(args.msd_schedule, args.msd_granularity, n_views if self.fusion.two_view else 1)
        self.branch_names = branch_names(self.unit_view_names if self.fusion.two_view else ())
        self.available_branches = (  # (FBANK, UNIT, FUSION) with one view
            tuple(sorted((FBANK, FUSION) + tuple(unit_branch(k) for k in range(n_views)))) if self.fusion.two_view
            else (self.fusion.natural_branch,))
        self.check_inference_branch(args.inference_branch)
        self.inference_branch = args.inference_branch
        self.inference_seed = args.inference_seed
        self.train_seed = int(getattr(args, "seed", 1))  # fairseq's --seed (model args hold every flag)
        self.num_updates = 0

    @property
    def unit_frontends(self) -> Dict[str, nn.Module]:
        """The unit front end of every S-feature view, by view name (empty without units)."""
        if self.unit_frontend is None:
            return {}
        return {self.unit_view_names[0]: self.unit_frontend, **dict(self.more_unit_frontends.items())}

    def branch_id(self, branch: str) -> Optional[int]:
        """The id of a branch name (``fbank``, ``fusion``, ``unit`` with one view, ``unit:NAME``),
        or None for an unknown name."""
        if branch in ("fbank", "fusion"):
            return BRANCH_NAMES.index(branch)
        views = self.unit_view_names
        if branch == "unit":
            return UNIT if len(views) == 1 else None
        if branch.startswith("unit:") and branch[len("unit:"):] in views:
            return unit_branch(views.index(branch[len("unit:"):]))
        return None

    def branch_choices(self) -> List[str]:
        names = [f"unit:{v}" for v in self.unit_view_names]
        return ["fusion", "fbank"] + (["unit"] if len(names) == 1 else []) + names + ["sample"]

    def check_inference_branch(self, branch: str, flag: str = "--inference-branch") -> None:
        """``branch`` must be an inference branch this fusion has (``flag`` names it in the error)."""
        if branch != "sample" and self.branch_id(branch) is None:
            hint = (f" (with several unit views, unit:NAME names one)" if branch == "unit" else "")
            raise ValueError(f"{flag} must be one of {self.branch_choices()}, got {branch!r}{hint}")
        if branch != "fusion" and not self.fusion.two_view and self.branch_id(branch) not in self.available_branches:
            raise ValueError(f"{flag} {branch} needs both views; --fusion {self.fusion.name} has "
                             f"only {[BRANCH_NAMES[b] for b in self.available_branches]}")

    @contextlib.contextmanager
    def inference_branch_as(self, branch: str):
        """Evaluates with ``branch`` as the inference branch inside the block (validation BLEU per
        branch), then restores the model's own."""
        self.check_inference_branch(branch)
        saved, self.inference_branch = self.inference_branch, branch
        try:
            yield
        finally:
            self.inference_branch = saved

    @property
    def fbank_subsampling_layers(self) -> int:
        """n: FBank frames are subsampled 2^n x and units 2^(n-1) x (the task's view-alignment rule)."""
        return self.n_fbank_conv

    def set_num_updates(self, num_updates: int) -> None:
        """The optimizer update in progress (keys ``--msd-granularity batch`` draws)."""
        self.num_updates = int(num_updates)

    def select_branches(self, bsz: int, device, force_branch: Optional[str] = None, utt_keys: Optional[Tensor] = None) -> Tensor:
        """(B,) long branch per utterance (0 fbank, 1 unit, 2 fusion; 3, 4, ... further unit views)."""
        if force_branch is not None:
            branch = self.branch_id(force_branch)
            if branch is None:
                raise ValueError(f"force_branch must be None or one of {self.branch_choices()[:-1]}, got {force_branch!r}")
            if branch not in self.available_branches:
                raise ValueError(f"force_branch={force_branch!r} is not available with --fusion {self.fusion.name}")
            return torch.full((bsz,), branch, dtype=torch.long, device=device)
        if not self.fusion.two_view:
            return torch.full((bsz,), self.fusion.natural_branch, dtype=torch.long, device=device)
        if self.training:
            if self.msd_enabled:
                return self.branch_sampler.sample_training(bsz, utt_keys, self.train_seed, self.num_updates, device)
            return torch.full((bsz,), FUSION, dtype=torch.long, device=device)
        if self.inference_branch == "sample":
            if utt_keys is None:
                raise ValueError(
                    "--inference-branch sample draws each utterance's branch from (--inference-seed, utterance id): "
                    "net_input needs utt_keys (B,), which the multiview dataset's collater adds"
                )
            return self.branch_sampler.sample_keyed(utt_keys, self.inference_seed, device)
        return torch.full((bsz,), self.branch_id(self.inference_branch), dtype=torch.long, device=device)

    def _noise_like(self, x: Tensor, utt_keys: Optional[Tensor]) -> Tensor:
        """(B, T, D) noise for the unit view: each utterance's from ``(--seed, epoch, key)`` in
        training, ``(--inference-seed, key)`` at evaluation (keyed streams: any batch, any rank)."""
        if utt_keys is None or utt_keys.numel() != x.size(0):
            raise ValueError(
                f"--fusion {self.fusion.name} draws each utterance's noise from its utterance id: net_input needs "
                f"utt_keys ({x.size(0)},), which the multiview dataset's collater adds; got "
                f"{None if utt_keys is None else tuple(utt_keys.shape)}"
            )
        if self.training:
            seed = stream_seed(NOISE_STREAM, self.train_seed, self.branch_sampler.epoch)
        else:
            seed = stream_seed(NOISE_STREAM, self.inference_seed)
        return keyed_noise(x, utt_keys, seed, self.noise_range)

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor,
        src_units: Optional[Tensor] = None,
        src_units_lengths: Optional[Tensor] = None,
        force_branch: Optional[str] = None,
        utt_keys: Optional[Tensor] = None,
        gate_injector: Optional[Callable[[Tensor], Tensor]] = None,
        src_units_more: Optional[Dict[str, Tensor]] = None,
        src_units_more_lengths: Optional[Dict[str, Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Dict[str, Optional[Tensor]]]:
        """
        Args:
            src_tokens: (B, T_fbank, C) FBank, zero-padded; src_lengths: (B,).
            src_units: (B, T_unit) unit ids of the first view padded with its K; src_units_lengths: (B,).
            src_units_more, src_units_more_lengths: the further views' ids and lengths, by view name.
            force_branch, utt_keys, gate_injector: see ``S2TGSGNEncoder.forward``.

        Returns:
            ``(x, padding_mask, views)``: x (B, T, D) the encoder input (zero at padding),
            padding_mask (B, T) True at padding, views ``{"g_fbank", "g_unit", "branch",
            "x_fbank", "x_unit", "g_units", "x_units"}`` (None where the fusion has none;
            ``x_unit``/``g_unit`` the first S-feature view's, ``x_units``/``g_units`` lists of all).
        """
        bsz = src_tokens.size(0)
        frontends = self.unit_frontends
        if frontends and (src_units is None or src_units_lengths is None):
            raise ValueError(f"--fusion {self.fusion.name} needs src_units and src_units_lengths in net_input")
        missing = [n for n in self.unit_view_names[1:] if frontends and n not in (src_units_more or {})]
        if missing:
            raise ValueError(f"--unit-views {','.join(self.unit_view_names)}: net_input has no units of the view(s) "
                             f"{', '.join(missing)} (src_units_more)")
        if self.subsample is not None:
            x_fbank, lengths = self.subsample(src_tokens, src_lengths)  # (B, T_fbank, C) -> (B, T, D)
            max_len = x_fbank.size(1)
        else:
            x_fbank = None
            lengths = subsampled_lengths(src_lengths, self.n_fbank_conv)  # (B,): no FBank conv needed
            max_len = subsampled_length(src_tokens.size(1), self.n_fbank_conv)
        padding_mask = frames_padding_mask(lengths, max_len)  # (B, T)
        pad3 = padding_mask.unsqueeze(-1)  # (B, T, 1)

        x_units: Optional[List[Tensor]] = None
        if frontends:
            x_units = []
            for name, frontend in frontends.items():
                ids, ids_lengths = ((src_units, src_units_lengths) if name == self.unit_view_names[0]
                                    else (src_units_more[name], src_units_more_lengths[name]))
                x, _ = frontend(ids, ids_lengths)  # (B, T_unit) -> (B, T', D)
                x = align_time(x, max_len).masked_fill(pad3, 0.0)  # (B, T', D) -> (B, T, D)
                x_units.append(x.to(x_fbank.dtype) if x_fbank is not None else x)
        elif self.noise_range is not None and (self.training or self.fusion.noise_in_eval):
            x_units = [self._noise_like(x_fbank, utt_keys).masked_fill(pad3, 0.0)]  # (B, T, D): the unit view is noise

        branch = self.select_branches(bsz, src_tokens.device, force_branch, utt_keys)  # (B,)
        x_fusion, g_fbank, g_units = self.fusion(x_fbank, x_units, padding_mask, gate_injector)  # (B, T, D)
        if self.fusion.two_view:
            b = branch.view(bsz, 1, 1)
            x = x_fusion
            for k in reversed(range(len(x_units))):
                x = torch.where(b == unit_branch(k), x_units[k], x)  # (B, T, D)
            x = torch.where(b == FBANK, x_fbank, x)
        else:
            x = x_fusion
        if not (self.fusion.two_view or self.fusion.unit_view == "units"):
            x_units = None  # noise-sum's noise is no view
        views = {
            "g_fbank": g_fbank, "g_unit": g_units[0] if g_units else None, "branch": branch, "x_fbank": x_fbank,
            "x_unit": x_units[0] if x_units else None, "g_units": g_units, "x_units": x_units,
        }
        return x.masked_fill(pad3, 0.0), padding_mask, views
