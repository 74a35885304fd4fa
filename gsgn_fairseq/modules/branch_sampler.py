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

Evaluation with the paper's protocol (``--inference-branch sample``, Sec. III-B: the third
stage's thresholds) draws each utterance's ``p`` from ``(seed, utterance key)`` alone
(``keyed_random.keyed_uniform``, a SplitMix64 hash; the key is a hash of the utterance
id, ``keyed_random.utterance_key``), so an utterance takes the same branch at any batch size,
in any order, in validation, ``--eval-bleu`` and ``fairseq-generate``, however often ``eval()`` is called.
Training streams are keyed apart from it (``keyed_random.stream_seed``), so a training draw never
repeats the inference draw of the same utterance.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .keyed_random import keyed_uniform, stream_seed

FBANK, UNIT, FUSION = 0, 1, 2
BRANCH_NAMES = ("fbank", "unit", "fusion")
DEFAULT_MSD_SCHEDULE = "1:0.3,0.0;10:0.5,0.3;25:0.3,0.0"
GRANULARITIES = ("utterance", "batch")


def _check_deltas(delta_fbank: float, delta_unit: float, where: str) -> None:
    for name, d in (("delta_fbank", delta_fbank), ("delta_unit", delta_unit)):
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"{where}: {name} must be in [0, 1], got {d}")
    if delta_fbank + delta_unit > 1.0 + 1e-9:
        raise ValueError(f"{where}: delta_fbank + delta_unit must be <= 1, got {delta_fbank} + {delta_unit}")


# stream labels mixed into the training seeds (any distinct constants; inference uses the bare seed)
UTTERANCE_STREAM, BATCH_STREAM = 0x6D7364_7574740A, 0x6D7364_6261740A


def branches_from_uniform(p: Tensor, delta_fbank: float, delta_unit: float) -> Tensor:
    """Eq. 13 for given draws ``p`` (n,) in [0, 1): (n,) long FBANK / UNIT / FUSION."""
    _check_deltas(delta_fbank, delta_unit, "branches_from_uniform")
    branch = torch.full(p.shape, FUSION, dtype=torch.long)
    branch[p < delta_fbank + delta_unit] = UNIT
    branch[p < delta_fbank] = FBANK
    return branch


def sample_branches(
    n: int,
    delta_fbank: float,
    delta_unit: float,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Draw the branch of ``n`` utterances by Eq. 13.

    Args:
        n: number of draws.
        delta_fbank, delta_unit: thresholds, each in [0, 1], summing to at most 1.
        generator: optional CPU ``torch.Generator`` (default: torch's global one).

    Returns:
        (n,) CPU LongTensor of FBANK (0), UNIT (1) or FUSION (2).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_deltas(delta_fbank, delta_unit, "sample_branches")
    p = torch.rand(n, generator=generator, dtype=torch.float64)  # (n,) in [0, 1)
    return branches_from_uniform(p, delta_fbank, delta_unit)


@dataclass(frozen=True)
class MsdStage:
    start_epoch: int  # first epoch (1-based, fairseq's numbering) of this stage
    delta_fbank: float
    delta_unit: float


def parse_msd_schedule(spec: str, flag: str = "--msd-schedule") -> List[MsdStage]:
    """Parse ``"1:0.3,0.0;10:0.5,0.3;25:0.3,0.0"`` into stages.

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
            df_s, du_s = deltas_s.split(",")
            stage = MsdStage(int(epoch_s), float(df_s), float(du_s))
        except ValueError:
            raise ValueError(
                f"{flag}: cannot parse stage {part!r} in {spec!r}; expected FROM_EPOCH:DELTA_FBANK,DELTA_UNIT"
            ) from None
        _check_deltas(stage.delta_fbank, stage.delta_unit, f"{flag}: stage {part!r}")
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
    """

    def __init__(self, schedule=DEFAULT_MSD_SCHEDULE, granularity: str = "utterance"):
        self.stages = parse_msd_schedule(schedule) if isinstance(schedule, str) else list(schedule)
        if granularity not in GRANULARITIES:
            raise ValueError(f"--msd-granularity must be one of {GRANULARITIES}, got {granularity!r}")
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
        branch = sample_branches(draws, stage.delta_fbank, stage.delta_unit, generator=generator)
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
            branch = branches_from_uniform(p, stage.delta_fbank, stage.delta_unit).expand(n).clone()
        else:
            if keys is None or keys.numel() != n:
                raise ValueError(
                    "multi-stage dropout draws each training utterance's branch from (--seed, epoch, utterance id): "
                    f"net_input needs utt_keys ({n},), which the multiview dataset's collater adds; got "
                    f"{None if keys is None else tuple(keys.shape)}"
                )
            p = keyed_uniform(keys, stream_seed(UTTERANCE_STREAM, seed, self.epoch))  # (n,)
            branch = branches_from_uniform(p, stage.delta_fbank, stage.delta_unit)
        return branch.to(device) if device is not None else branch

    def sample_keyed(self, keys: Tensor, seed: int, device: Optional[torch.device] = None) -> Tensor:
        """The paper's inference draw: the last stage's thresholds, ``p`` from ``(seed, key)``
        per utterance (``keys`` (n,) from :func:`utterance_key`), whatever the granularity."""
        stage = self.last_stage
        branch = branches_from_uniform(keyed_uniform(keys, seed), stage.delta_fbank, stage.delta_unit)
        return branch.to(device) if device is not None else branch

    def describe(self) -> str:
        s = self.stage
        return (
            f"stage {self.stage_index + 1}/{len(self.stages)} (from epoch {s.start_epoch}: "
            f"delta_fbank={s.delta_fbank}, delta_unit={s.delta_unit}, granularity={self.granularity})"
        )
