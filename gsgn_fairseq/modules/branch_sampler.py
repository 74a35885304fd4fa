"""Multi-stage dropout (Eq. 13): which input (fbank, unit or fusion) each utterance takes.

With thresholds ``(delta_fbank, delta_unit)`` and ``p ~ U[0, 1)``::

    p <  delta_fbank                                -> FBANK  (0)
    delta_fbank <= p < delta_fbank + delta_unit     -> UNIT   (1)
    delta_fbank + delta_unit <= p                   -> FUSION (2)

The thresholds change with the training epoch by a schedule, written for the command line as
``"FROM_EPOCH:DELTA_FBANK,DELTA_UNIT;..."``; the paper's schedule is the default::

    1:0.3,0.0;10:0.5,0.3;25:0.3,0.0   # [1, 10): (0.3, 0); [10, 25): (0.5, 0.3); >= 25: (0.3, 0)

``sample_branches`` is a free function so it can be tested alone; ``BranchSampler`` adds the
schedule, the current stage (set from fairseq's epoch, so a resumed run is in the right stage)
and the granularity (one draw per utterance, or one per batch).

Training draws (:meth:`BranchSampler.sample_training`) are hashes, not a random stream:
fairseq reseeds torch's generator with ``seed + update`` on every rank, so draws from it give
every data-parallel rank the same branches at the same batch positions. Instead

* per utterance, ``p`` is a function of ``(--seed, epoch, utterance key)``: each utterance
  gets a fresh draw every epoch, the same whichever rank, batch, position or ``--update-freq``
  micro-batch it lands in, so ranks draw independently and a run is reproducible on any
  number of processes;
* per batch (``--msd-granularity batch``), ``p`` is a function of ``(--seed, update)``: the
  batch of the paper is the global batch of one optimizer update (every rank, every
  micro-batch), so all of it takes one branch.

More than one S-feature view (``--unit-views a,b,...``, N views): the S-feature share
``delta_unit`` is split in N equal parts, in the order of the views, so with
``d_k = delta_unit / N``::

    p <  delta_fbank                                          -> FBANK
    delta_fbank + k d_k <= p < delta_fbank + (k + 1) d_k      -> the k-th view's branch
    delta_fbank + delta_unit <= p                             -> FUSION

A stage may instead give every view its own share, ``FROM:DELTA_FBANK,D_1,...,D_N``. With one
view both forms are Eq. 13 itself: the same draws ``p`` give the same branches. Branch ids keep
the two-view numbering: 0 FBank, 1 the first S-feature view, 2 fusion, and 3, 4, ... the
further views (:func:`unit_branch`).

Evaluation with the paper's protocol (``--inference-branch sample``, Sec. III-B: the third
stage's thresholds) draws each utterance's ``p`` from ``(seed, utterance key)`` alone
(``keyed_random.keyed_uniform``, a SplitMix64 hash; the key is a hash of the utterance
id, ``keyed_random.utterance_key``), so an utterance takes the same branch at any batch size,
in any order, in validation, ``--eval-bleu`` and ``fairseq-generate``, however often ``eval()`` is called.
Training streams are keyed apart from it (``keyed_random.stream_seed``), so a training draw never
repeats the inference draw of the same utterance.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .keyed_random import keyed_uniform, stream_seed

FBANK, UNIT, FUSION = 0, 1, 2
BRANCH_NAMES = ("fbank", "unit", "fusion")
DEFAULT_MSD_SCHEDULE = "1:0.3,0.0;10:0.5,0.3;25:0.3,0.0"
GRANULARITIES = ("utterance", "batch")


UnitDeltas = Union[float, Sequence[float]]  # the S-feature share: one total, or one per view


def unit_branch(view: int) -> int:
    """The branch id of the ``view``-th S-feature view (0-based): 1 for the first (Eq. 13's
    UNIT), then 3, 4, ... after FUSION (2), so the two-view ids never change."""
    if view < 0:
        raise ValueError(f"view index must be >= 0, got {view}")
    return UNIT if view == 0 else FUSION + view


def branch_names(view_names: Sequence[str]) -> Tuple[str, ...]:
    """Branch names by id: ``("fbank", "unit", "fusion")`` for one view (whatever its name),
    ``("fbank", "unit:A", "fusion", "unit:B", ...)`` for several."""
    if len(view_names) <= 1:
        return BRANCH_NAMES
    names = ["fbank", f"unit:{view_names[0]}", "fusion"] + [f"unit:{v}" for v in view_names[1:]]
    return tuple(names)


def _check_deltas(delta_fbank: float, delta_unit: UnitDeltas, where: str) -> None:
    units = [delta_unit] if isinstance(delta_unit, (int, float)) else list(delta_unit)
    for name, d in [("delta_fbank", delta_fbank)] + [("delta_unit", d) for d in units]:
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"{where}: {name} must be in [0, 1], got {d}")
    if delta_fbank + sum(units) > 1.0 + 1e-9:
        raise ValueError(f"{where}: delta_fbank + delta_unit must be <= 1, got "
                         f"{' + '.join(str(d) for d in [delta_fbank] + units)}")


def unit_bounds(delta_fbank: float, delta_unit: UnitDeltas, n_views: int) -> List[float]:
    """The upper thresholds of the ``n_views`` S-feature branches: view k takes
    ``bounds[k-1] <= p < bounds[k]`` (``bounds[-1] = delta_fbank``). A total share is split
    equally; the last bound is ``delta_fbank + delta_unit`` exactly (Eq. 13's for one view)."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if isinstance(delta_unit, (int, float)):
        total = float(delta_unit)
        bounds = [delta_fbank + total * (k + 1) / n_views for k in range(n_views - 1)]
        return bounds + [delta_fbank + total]
    shares = list(delta_unit)
    if len(shares) != n_views:
        raise ValueError(f"{len(shares)} S-feature shares for {n_views} views")
    if n_views == 1:
        return [delta_fbank + shares[0]]
    bounds, acc = [], delta_fbank
    for d in shares:
        acc = acc + d
        bounds.append(acc)
    return bounds


# stream labels mixed into the training seeds (any distinct constants; inference uses the bare seed)
UTTERANCE_STREAM, BATCH_STREAM = 0x6D7364_7574740A, 0x6D7364_6261740A


def branches_from_uniform(p: Tensor, delta_fbank: float, delta_unit: UnitDeltas, n_views: int = 1) -> Tensor:
    """Eq. 13 for given draws ``p`` (n,) in [0, 1): (n,) long FBANK / UNIT / FUSION; with
    ``n_views`` S-feature views, FBANK / :func:`unit_branch` (k) / FUSION (module docstring)."""
    _check_deltas(delta_fbank, delta_unit, "branches_from_uniform")
    branch = torch.full(p.shape, FUSION, dtype=torch.long)
    bounds = unit_bounds(delta_fbank, delta_unit, n_views)
    for k in reversed(range(n_views)):
        branch[p < bounds[k]] = unit_branch(k)
    branch[p < delta_fbank] = FBANK
    return branch


def sample_branches(
    n: int,
    delta_fbank: float,
    delta_unit: UnitDeltas,
    generator: Optional[torch.Generator] = None,
    n_views: int = 1,
) -> Tensor:
    """Draw the branch of ``n`` utterances by Eq. 13.

    Args:
        n: number of draws.
        delta_fbank, delta_unit: thresholds, each in [0, 1], summing to at most 1.
        generator: optional CPU ``torch.Generator`` (default: torch's global one).
        n_views: the number of S-feature views (module docstring).

    Returns:
        (n,) CPU LongTensor of FBANK (0), UNIT (1) or FUSION (2) (or a further view's id).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_deltas(delta_fbank, delta_unit, "sample_branches")
    p = torch.rand(n, generator=generator, dtype=torch.float64)  # (n,) in [0, 1)
    return branches_from_uniform(p, delta_fbank, delta_unit, n_views)


@dataclass(frozen=True)
class MsdStage:
    start_epoch: int  # first epoch (1-based, fairseq's numbering) of this stage
    delta_fbank: float
    delta_unit: float  # the S-feature share, over all views
    view_deltas: Optional[Tuple[float, ...]] = None  # one share per view, when the stage gives them

    @property
    def unit_deltas(self) -> UnitDeltas:
        return self.view_deltas if self.view_deltas is not None else self.delta_unit


def parse_msd_schedule(spec: str, flag: str = "--msd-schedule") -> List[MsdStage]:
    """Parse ``"1:0.3,0.0;10:0.5,0.3;25:0.3,0.0"`` into stages.

    A stage ``FROM:DELTA_FBANK,D_1,...,D_N`` gives each of N S-feature views its own share
    (``delta_unit`` is then their sum); the model checks N against its views.

    Rules: at least one stage; start epochs strictly increasing and the first is 1; each delta
    in [0, 1]; delta_fbank + delta_unit <= 1. Errors name ``flag`` and the offending part.
    """
    if spec is None or not str(spec).strip():
        raise ValueError(f"{flag}: empty schedule; expected e.g. {DEFAULT_MSD_SCHEDULE!r}")
    stages: List[MsdStage] = []
    for part in str(spec).split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            epoch_s, deltas_s = part.split(":")
            df_s, *du_s = deltas_s.split(",")
            if not du_s:
                raise ValueError
            shares = [float(d) for d in du_s]
            if len(shares) == 1:
                stage = MsdStage(int(epoch_s), float(df_s), shares[0])
            else:
                stage = MsdStage(int(epoch_s), float(df_s), sum(shares), tuple(shares))
        except ValueError:
            raise ValueError(
                f"{flag}: cannot parse stage {part!r} in {spec!r}; expected FROM_EPOCH:DELTA_FBANK,DELTA_UNIT "
                "(or FROM_EPOCH:DELTA_FBANK,D_1,...,D_N, one share per S-feature view)"
            ) from None
        _check_deltas(stage.delta_fbank, stage.unit_deltas, f"{flag}: stage {part!r}")
        if stages and stage.start_epoch <= stages[-1].start_epoch:
            raise ValueError(
                f"{flag}: start epochs must increase, got {stage.start_epoch} after {stages[-1].start_epoch} in {spec!r}"
            )
        stages.append(stage)
    if not stages:
        raise ValueError(f"{flag}: no stages in {spec!r}")
    if stages[0].start_epoch != 1:
        raise ValueError(f"{flag}: the first stage must start at epoch 1, got {stages[0].start_epoch} in {spec!r}")
    return stages


def stage_for_epoch(stages: Sequence[MsdStage], epoch: int) -> Tuple[int, MsdStage]:
    """The (0-based index, stage) in force at ``epoch`` (1-based): the last one started."""
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    index = 0
    for i, stage in enumerate(stages):
        if stage.start_epoch <= epoch:
            index = i
    return index, stages[index]


class BranchSampler:
    """Multi-stage dropout sampler with a schedule, a current epoch and a granularity.

    Args:
        schedule: a schedule string (see module docstring) or parsed stages.
        granularity: ``"utterance"`` (one draw per utterance, default) or ``"batch"``.
        n_views: the number of S-feature views (the S-feature share is split among them).
    """

    def __init__(self, schedule=DEFAULT_MSD_SCHEDULE, granularity: str = "utterance", n_views: int = 1):
        self.stages = parse_msd_schedule(schedule) if isinstance(schedule, str) else list(schedule)
        if granularity not in GRANULARITIES:
            raise ValueError(f"--msd-granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        for stage in self.stages:
            if stage.view_deltas is not None and len(stage.view_deltas) != n_views:
                raise ValueError(f"--msd-schedule: the stage from epoch {stage.start_epoch} gives "
                                 f"{len(stage.view_deltas)} S-feature shares for {n_views} views (--unit-views)")
        self.n_views = n_views
        self.granularity = granularity
        self.epoch = 1
        self.stage_index, self.stage = stage_for_epoch(self.stages, 1)

    @property
    def last_stage(self) -> MsdStage:
        return self.stages[-1]

    def set_epoch(self, epoch: int) -> bool:
        """Select the stage of ``epoch``; returns True when the stage changed."""
        index, stage = stage_for_epoch(self.stages, epoch)
        changed = index != self.stage_index
        self.epoch, self.stage_index, self.stage = epoch, index, stage
        return changed

    def sample(
        self,
        n: int,
        device: Optional[torch.device] = None,
        stage: Optional[MsdStage] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """(n,) long branches on ``device`` with the current stage (or ``stage``), from
        ``generator`` (torch's global one by default); the model trains with
        :meth:`sample_training`, whose draws do not repeat across data-parallel ranks."""
        stage = self.stage if stage is None else stage
        draws = 1 if self.granularity == "batch" else n
        branch = sample_branches(draws, stage.delta_fbank, stage.unit_deltas, generator=generator, n_views=self.n_views)
        if self.granularity == "batch":
            branch = branch.expand(n).clone()  # (1,) -> (n,)
        return branch.to(device) if device is not None else branch

    def sample_training(
        self,
        n: int,
        keys: Optional[Tensor],
        seed: int,
        update: int,
        device: Optional[torch.device] = None,
    ) -> Tensor:
        """(n,) long training branches with the current stage (see the module docstring):
        per utterance from ``(seed, epoch, keys)`` (``keys`` (n,) from :func:`utterance_key`),
        per batch one branch from ``(seed, update)`` for all ``n``."""
        stage = self.stage
        if self.granularity == "batch":
            p = keyed_uniform(torch.tensor([update]), stream_seed(BATCH_STREAM, seed))  # (1,)
            branch = branches_from_uniform(p, stage.delta_fbank, stage.unit_deltas, self.n_views).expand(n).clone()
        else:
            if keys is None or keys.numel() != n:
                raise ValueError(
                    "multi-stage dropout draws each training utterance's branch from (--seed, epoch, utterance id): "
                    f"net_input needs utt_keys ({n},), which the multiview dataset's collater adds; got "
                    f"{None if keys is None else tuple(keys.shape)}"
                )
            p = keyed_uniform(keys, stream_seed(UTTERANCE_STREAM, seed, self.epoch))  # (n,)
            branch = branches_from_uniform(p, stage.delta_fbank, stage.unit_deltas, self.n_views)
        return branch.to(device) if device is not None else branch

    def sample_keyed(self, keys: Tensor, seed: int, device: Optional[torch.device] = None) -> Tensor:
        """The paper's inference draw: the last stage's thresholds, ``p`` from ``(seed, key)``
        per utterance (``keys`` (n,) from :func:`utterance_key`), whatever the granularity."""
        stage = self.last_stage
        branch = branches_from_uniform(keyed_uniform(keys, seed), stage.delta_fbank, stage.unit_deltas, self.n_views)
        return branch.to(device) if device is not None else branch

    def describe(self) -> str:
        s = self.stage
        return (
            f"stage {self.stage_index + 1}/{len(self.stages)} (from epoch {s.start_epoch}: "
            f"delta_fbank={s.delta_fbank}, delta_unit={s.delta_unit}"
            + (f" {list(s.view_deltas)}" if s.view_deltas is not None else "")
            + f", granularity={self.granularity})"
        )
