"""Label-smoothed cross-entropy (+ CTC) + the GSGN gate loss (paper Eq. 11-12).

``L_final = L + w * N * L_gate``: ``L`` is fairseq's summed label-smoothed CE plus
``--ctc-weight`` x CTC over the source transcript (from ``model.get_ctc_output`` /
``get_ctc_target``, as fairseq's ``label_smoothed_cross_entropy_with_ctc``), ``N`` the sample
size (fairseq divides the summed loss by it later) and ``L_gate = MSE(g_fbank, target)`` over
the valid frames of the utterances that took the fusion branch (Eq. 12,
``modules.gate_target.masked_squared_error``). The target (Eq. 8-11) comes from one of the
strategies in ``modules/gate_targets.py`` (``--gate-target exact|factorized``, per batch or
per utterance; the default, factorized per utterance, is the reading whose gate moves at a
step cost within 1.10x of FBank-only: README "Choices", docs/RESULTS.md). With data
parallelism a batch target pools over the global batch, every rank applying the same one.

With several S-feature views (``--unit-views``) the target removes each conflicting view's
component (README, "The paper in the code") and the cosine statistics are logged per view:
``grad_cos_<name>``, ``grad_cos_pos_<name>``, ``conflict_pct_<name>``; ``conflict_pct`` is
then the share of targets with a conflict with any view, and the branch shares are
``branch_fbank_pct``, ``branch_unit_<name>_pct``, ``branch_fusion_pct``. With one view the
metrics are the two-view ones.

The gate loss is a training-time term: in validation only the gate and branch statistics are
logged and the loss is CE (+ CTC). Models without gates (``--fusion fbank|unit|concat``) get
neither gate loss nor gate logs.
"""
import functools
import inspect
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics

from ..modules.branch_sampler import BRANCH_NAMES
from ..modules.gate_targets import GATE_TARGETS, GRANULARITIES, GateViews, init_stats, unit_view_names, unwrap


@functools.lru_cache(maxsize=None)
def _forward_takes_gate_injector(model_type) -> bool:
    return "gate_injector" in inspect.signature(model_type.forward).parameters


def _takes_gate_injector(model) -> bool:
    """Models without gates of ours (e.g. fairseq's s2t_transformer) take no ``gate_injector``
    (looked up once per model class, not on every forward)."""
    return _forward_takes_gate_injector(type(unwrap(model)))


@dataclass
class LabelSmoothedCrossEntropyWithGateCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    ctc_weight: float = field(
        default=0.0, metadata={"help": "weight of CTC over the source transcript on the model's CTC head; 0: off"}
    )
    gate_loss_weight: float = field(
        default=1.0,
        metadata={"help": "weight w of the gate loss: w * sample_size * MSE(g_fbank, target) is added; "
                          "0 keeps the statistics, drops the loss"},
    )
    gate_target: ChoiceEnum(list(GATE_TARGETS)) = field(
        default="factorized",
        metadata={"help": "how a = dL_fbank/dW, b = dL_unit/dW are obtained: exact (two single-view passes, "
                          "parameters frozen) or factorized (Eq. 6-7 inside the training backward)"},
    )
    gate_target_granularity: ChoiceEnum(list(GRANULARITIES)) = field(
        default="utterance",
        metadata={"help": "one target per batch (pooled over its fusion utterances) or one per utterance"},
    )
    gate_target_interval: int = field(
        default=1, metadata={"help": "exact targets are computed every N updates (factorized: every step)"}
    )
    gate_reference_params: str = field(
        default=r"^encoder\.acoustic_layers\.0\.",
        metadata={"help": "regex (re.search) over parameter names selecting W (default: the first acoustic layer)"},
    )
    gate_target_max: Optional[float] = field(
        default=None, metadata={"help": "clamp the target to at most this value (Eq. 11 is unbounded); unset: none"}
    )


@register_criterion("label_smoothed_cross_entropy_with_gate", dataclass=LabelSmoothedCrossEntropyWithGateCriterionConfig)
class LabelSmoothedCrossEntropyWithGateCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 ctc_weight=0.0, gate_loss_weight=1.0, gate_target="factorized", gate_target_granularity="utterance",
                 gate_target_interval=1, gate_reference_params=r"^encoder\.acoustic_layers\.0\.", gate_target_max=None):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.ctc_weight = ctc_weight
        self.gate_loss_weight = gate_loss_weight
        if str(gate_target) not in GATE_TARGETS:
            raise ValueError(f"--gate-target must be one of {list(GATE_TARGETS)}, not {gate_target!r}")
        self.gate_target = str(gate_target)
        self.strategy = GATE_TARGETS[self.gate_target](
            gate_reference_params, str(gate_target_granularity), int(gate_target_interval), gate_target_max
        )
        self._num_updates: Optional[int] = None  # set by set_num_updates when the task calls it
        self._num_train_forwards = 0  # fallback update counter

    def set_num_updates(self, num_updates: int) -> None:
        """Called by the task's ``train_step`` (docs/INTERFACES.md); drives the target interval."""
        self._num_updates = num_updates

    def set_ignore_grad(self, ignore_grad: bool) -> None:
        """Called by the task's ``train_step`` with fairseq's ``ignore_grad``: True for the
        stand-in batch of a rank that ran out of data (its loss is multiplied by 0), which must
        not enter a target pooled over the ranks (docs/INTERFACES.md)."""
        self.strategy.ignore_grad = bool(ignore_grad)

    def task_loss(self, model, net_output, sample, reduce=True):
        """Label-smoothed CE (+ weighted CTC): (loss, nll_loss, ctc_loss or None). The exact
        target's probe passes differentiate this same loss."""
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        ctc_loss = self.compute_ctc_loss(model, net_output, sample, reduce=reduce) if self.ctc_weight > 0 else None
        return (loss + ctc_loss if ctc_loss is not None else loss), nll_loss, ctc_loss

    def compute_ctc_loss(self, model, net_output, sample, reduce=True):
        """``ctc_weight`` x CTC of the model's CTC head against the source transcript (blank 0)."""
        if not hasattr(model, "get_ctc_output"):
            raise ValueError(f"--ctc-weight > 0 but {type(model).__name__} has no CTC head (get_ctc_output)")
        lprobs, in_lens = model.get_ctc_output(net_output, sample)  # T x B x V, B
        tgt, tgt_lens = model.get_ctc_target(sample)  # B x S, B
        tgt_mask = torch.arange(tgt.size(1), device=tgt.device).unsqueeze(0) < tgt_lens.unsqueeze(1)
        with torch.backends.cudnn.flags(enabled=False):
            loss = F.ctc_loss(lprobs, tgt.masked_select(tgt_mask), in_lens, tgt_lens, blank=0,
                              reduction="sum" if reduce else "none", zero_infinity=True)
        return loss * self.ctc_weight

    def forward(self, model, sample, reduce=True):
        training = model.training and torch.is_grad_enabled() and reduce
        if model.training:
            self._num_train_forwards += 1
        extra = self.strategy.forward_kwargs() if training and _takes_gate_injector(model) else {}
        net_output = model(**sample["net_input"], **extra)
        loss, nll_loss, ctc_loss = self.task_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]

        views = GateViews(net_output[1]["encoder_out"], unit_view_names(model))
        stats = init_stats(views, loss.device) if views.gated else None
        loss_log = loss.detach().clone()  # the factorized term is added to it during backward
        if views.gated and training:
            update = self._num_updates if self._num_updates is not None else self._num_train_forwards
            scale = self.gate_loss_weight * sample_size
            loss_fn = lambda m, out, s: self.task_loss(m, out, s)[0]  # noqa: E731
            loss = loss + self.strategy.gate_loss(model, sample, views, loss_fn, scale, stats, update, loss_log)
            if not self.strategy.adds_in_backward:
                loss_log = loss.detach().clone()

        logging_output = {
            "loss": loss_log,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if ctc_loss is not None:
            logging_output["ctc_loss"] = ctc_loss.data
        if stats is not None:
            logging_output.update(stats)
        if views.branch is not None:
            frontend = getattr(getattr(unwrap(model), "encoder", None), "frontend", None)
            names = getattr(frontend, "branch_names", None) or BRANCH_NAMES
            for index, name in enumerate(names):  # unit:NAME is logged as branch_unit_NAME
                logging_output[f"branch_{name.replace(':', '_')}"] = views.branch.long().eq(index).sum()
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)

        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        def ratio(name, num, den, scale=1.0, round=4):
            n = total(den)
            if n > 0:
                metrics.log_scalar(name, scale * total(num) / n, n, round=round)

        if any("ctc_loss" in log for log in logging_outputs):
            n = total("sample_size")
            metrics.log_scalar("ctc_loss", total("ctc_loss") / (n or 1) / math.log(2), n, round=3)
        ratio("gate_loss", "gate_sq_err", "gate_elems")
        # several S-feature views: the cosine statistics per view (keys ending in _<name>)
        views = [k[len("gate_cos_count_"):] for k in (logging_outputs[0] if logging_outputs else {})
                 if k.startswith("gate_cos_count_")]
        for sfx in [f"_{v}" for v in views] or [""]:
            ratio(f"grad_cos{sfx}", f"gate_cos_sum{sfx}", f"gate_cos_count{sfx}")
            ratio(f"grad_cos_pos{sfx}", f"gate_cos_pos_sum{sfx}", f"gate_cos_pos_count{sfx}")
            ratio(f"conflict_pct{sfx}", f"gate_conflict{sfx}", f"gate_cos_count{sfx}", 100.0, round=2)
        if views:  # a conflict with any view (target > 1)
            ratio("conflict_pct", "gate_conflict_any", "gate_target_count", 100.0, round=2)
        ratio("gate_target", "gate_target_sum", "gate_target_count" if views else "gate_cos_count")
        ratio("g_fbank_mean", "g_fbank_sum", "g_elems")
        ratio("g_fbank_gt1_pct", "g_fbank_gt1", "g_elems", 100.0, round=2)
        ratio("g_unit_mean", "g_unit_sum", "g_unit_elems")
        names = list(BRANCH_NAMES)
        more = [k[len("branch_"):] for log in logging_outputs[:1] for k in log if k.startswith("branch_unit_")]
        if more:  # several S-feature views: one branch each
            names = [n for n in names if n != "unit"] + more
        counts = {name: total(f"branch_{name}") for name in names}
        n_utt = sum(counts.values())
        if n_utt > 0:
            for name, count in counts.items():
                metrics.log_scalar(f"branch_{name}_pct", 100.0 * count / n_utt, n_utt, round=2)
