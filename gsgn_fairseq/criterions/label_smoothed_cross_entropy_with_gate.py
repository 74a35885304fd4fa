"""Label-smoothed cross-entropy (+ CTC) + the GSGN gate loss (paper Eq. 11-12).

``L_final = L + w * N * L_gate`` where ``L`` is fairseq's summed label-smoothed CE (plus
``--ctc-weight`` x CTC over the source transcript), ``N`` the sample size (fairseq divides the
summed loss by it later, so the mean-type gate loss is scaled by it) and::

    L_gate = MSE(g_fbank, target)   over the non-padded frames of the utterances that took the
                                     fusion branch (gsgn_branch == 2)

with the target of :func:`gsgn_fairseq.modules.gate_target.gate_target` (Eq. 8-11) computed
from ``a = dL_fbank/dW`` and ``b = dL_unit/dW`` for a reference parameter set ``W``.

Two ways to get ``a`` and ``b`` (``--gate-target``):

``exact`` (default)
    The single-view gradients themselves. After the training forward pass, the utterances
    that took the fusion branch are run again twice, with ``force_branch="fbank"`` and
    ``force_branch="unit"``; each loss goes through ``torch.autograd.grad`` w.r.t. the
    parameters matching ``--gate-reference-params`` only, so nothing is written to ``.grad``
    and no parameter changes ("frozen parameters", Eq. 7). The two gradients are pooled over
    the utterances of the batch: one scalar target (and one cosine) per batch.
    The probe passes run in **eval mode** (dropout off): ``a`` and ``b`` are compared
    direction against direction, and two independently drawn dropout masks would add a
    decorrelation that has nothing to do with the views (biasing cos towards 0); eval mode
    is also deterministic and matches Eq. 7's frozen network. The probes run inside the
    criterion's forward, so they inherit the trainer's autocast (``--amp``) and dtype.
    Cost, per computed target: two extra forward passes of the whole model on the
    fusion-branch utterances plus two backward passes from the loss down to the reference
    layer (parameter gradients of other layers are pruned by autograd), i.e. roughly 2x a
    training step on that share of the batch; peak memory is the training graph plus one
    probe graph. ``--gate-target-interval N`` computes the target every N updates and
    reuses the last target (and cosine) in between; with ``--update-freq`` each micro-batch
    of a due update computes its own. Updates are counted by ``set_num_updates`` when the
    task calls it, else by training forward passes. Eval-mode probes draw no random
    numbers, so they do not shift the training run's random stream. Gradients that
    overflow (fp16) give no target for that batch (target 1, cosine not counted).

``factorized``
    Eq. 6-7 from the one training pass: for the reference layer ``h_1 = W x + ...`` the
    input-independent factor is ``delta = dL/dh_1`` (the gradient at ``gsgn_ref_out``) and
    the input-dependent factor is each view, ``a = sum_t delta_t ⊗ x_fbank,t``,
    ``b = sum_t delta_t ⊗ x_unit,t`` (valid fusion frames). ``delta`` exists only during
    backward, so everything happens inside the same backward: the model calls the
    criterion's ``gate_injector`` on ``g_fbank`` (an identity autograd Function); a tensor
    hook on ``gsgn_ref_out`` stores ``delta`` (it fires before the backward reaches
    ``g_fbank``, which is upstream of ``h_1``); the Function's backward then computes the
    target and *adds* ``d(w * N * MSE(g_fbank, target)) / d g_fbank`` to the incoming
    gradient. That added gradient must be scaled like the rest of the backward (fp16/AMP
    loss scaling, fairseq's ``loss *= 0`` for dummy batches): a zero-valued probe term
    ``_LossProbe(g_fbank)`` is added to the returned loss; its backward records its
    incoming gradient (= loss scale x 0-or-1) and, because its input is the injector's
    output, autograd must run it before the injector's backward (a data dependency, not an
    execution-order accident, so it holds across devices and engine threads).
    ``--gate-target-granularity batch`` pools over the fusion utterances like ``exact``;
    ``utterance`` gives one target per utterance (inner products through ``T x T`` Gram
    matrices when ``T < D``, never materializing ``D x D`` then).
    Cost: no extra pass; in backward ``O(B T D^2)`` (``batch``) or ``O(B T min(T, D) D)``
    (``utterance``) flops, about one linear layer's weight gradient. The interval does not
    apply (every step gets a fresh target).
    On a purely linear residual network (Eq. 5 without norms) with a loss linear in its
    output, ``delta`` does not depend on the input and both modes give the same target.

The two modes measure different things on a real transformer layer: the exact single-view
gradients share everything both passes feed layer 0 besides the view (positional
embeddings, LayerNorm and bias paths), so the exact cosine runs high (about 0.9 for a fresh
``s2t_gsgn_tiny``, about 0.1 with the positions removed) while the factorized one, built from
the views alone, starts near 0. They co-vary across batches but are not interchangeable:
compare ``grad_cos`` only between runs of the same mode.

Statistics computed during backward (``factorized``) are written in place into tensors of
the logging output that ``forward`` returns; fairseq reads logging outputs only after
``task.train_step`` has run the backward, so they are logged for the same step, without a
lag. (Code that reads the logging output between forward and backward sees zeros.)

The gate loss is a training-time term: in validation (no gradients) only ``g_fbank``,
``g_unit`` and branch statistics are logged, and the validation ``loss`` is CE (+ CTC).
Models without gates (``--fusion fbank|unit|concat``) get no gate loss and no gate logs.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel

from ..modules.gate_target import factorized_inner_products, gate_target_from_inner_products

BRANCH_FBANK, BRANCH_UNIT, BRANCH_FUSION = 0, 1, 2
CTC_BLANK_IDX = 0  # "<s>" of a fairseq Dictionary, F.ctc_loss's default (docs/INTERFACES.md)

GATE_TARGET_CHOICES = ChoiceEnum(["exact", "factorized"])
GATE_GRANULARITY_CHOICES = ChoiceEnum(["batch", "utterance"])

# logging_output keys (sums and counts, so that they add up across micro-batches and workers)
GATE_STAT_KEYS = (
    "gate_sq_err",  # sum of (g_fbank - target)^2 over valid fusion elements
    "gate_elems",  # number of those elements (0 when no gate loss was computed)
    "gate_cos_sum",  # sum of cos over measured targets
    "gate_cos_count",  # number of measured targets (batches or utterances)
    "gate_conflict",  # how many of them had cos < 0
    "gate_target_sum",  # sum of the targets
    "g_fbank_sum",  # sum of g_fbank over valid fusion elements
    "g_fbank_gt1",  # how many of those elements are > 1
    "g_elems",  # number of valid fusion elements
    "g_unit_sum",  # sum of g_unit over valid fusion elements
    "g_unit_elems",  # their number (0 if the model returns no g_unit)
)
BRANCH_KEYS = {BRANCH_FBANK: "branch_fbank", BRANCH_UNIT: "branch_unit", BRANCH_FUSION: "branch_fusion"}


@dataclass
class LabelSmoothedCrossEntropyWithGateCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    ctc_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the CTC loss over the source transcript, computed on the "
            "model's ctc_logits (acoustic encoder); 0 disables it"
        },
    )
    gate_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight w of the gate loss (Eq. 11): the criterion adds "
            "w * sample_size * MSE(g_fbank, target); 0 keeps the statistics, drops the loss"
        },
    )
    gate_target: GATE_TARGET_CHOICES = field(
        default="exact",
        metadata={
            "help": "how the gradients a = dL_fbank/dW, b = dL_unit/dW are obtained: exact "
            "(two extra single-view passes, parameters frozen) or factorized (Eq. 6-7 inside "
            "the one training backward: dL/dh_1 times each view)"
        },
    )
    gate_target_granularity: GATE_GRANULARITY_CHOICES = field(
        default="batch",
        metadata={
            "help": "one target per batch (pooled over its fusion-branch utterances) or per "
            "utterance (factorized only)"
        },
    )
    gate_target_interval: int = field(
        default=1,
        metadata={
            "help": "exact targets are computed every N updates and reused in between "
            "(factorized targets are free and computed every step)"
        },
    )
    gate_reference_params: str = field(
        default=r"^encoder\.acoustic_layers\.0\.",
        metadata={
            "help": "regex (re.search) over model parameter names selecting W for the exact "
            "target (default: the first acoustic-encoder layer)"
        },
    )
    gate_target_max: Optional[float] = field(
        default=None,
        metadata={
            "help": "clamp the gate target to at most this value (Eq. 11 is unbounded when "
            "|a| is small); unset = no clamp"
        },
    )


# --------------------------------------------------------------------------------------------
# helpers


def _encoder_out(net_output) -> Dict[str, List[Tensor]]:
    """The encoder output dict the model puts in ``net_output[1]["encoder_out"]``."""
    extra = net_output[1] if isinstance(net_output, (tuple, list)) and len(net_output) > 1 else None
    enc = extra.get("encoder_out") if isinstance(extra, dict) else None
    return enc if isinstance(enc, dict) else {}


def _first(enc: Dict[str, List[Tensor]], key: str) -> Optional[Tensor]:
    value = enc.get(key)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) > 0 else None
    return value


def _unwrap(model):
    """The plain fairseq model under DDP/ModuleProxy wrappers (probe passes bypass DDP)."""
    while not isinstance(model, BaseFairseqModel) and hasattr(model, "module"):
        model = model.module
    return model


def _select_sample(sample, index: Tensor, batch_size: int):
    """``sample`` restricted to the utterances ``index`` (every tensor whose dim 0 is B)."""
    if isinstance(sample, dict):
        return {k: _select_sample(v, index, batch_size) for k, v in sample.items()}
    if torch.is_tensor(sample) and sample.dim() > 0 and sample.size(0) == batch_size:
        return sample.index_select(0, index)
    return sample


class _GateViews:
    """The gate tensors of one forward pass, read from the encoder output dict."""

    def __init__(self, enc: Dict[str, List[Tensor]]):
        self.g_fbank = _first(enc, "gsgn_g_fbank")  # B x T x D
        self.g_unit = _first(enc, "gsgn_g_unit")  # B x T x D
        self.branch = _first(enc, "gsgn_branch")  # B
        self.x_fbank = _first(enc, "gsgn_x_fbank")  # B x T x D
        self.x_unit = _first(enc, "gsgn_x_unit")  # B x T x D
        self.ref_out = _first(enc, "gsgn_ref_out")  # B x T x D
        padding = _first(enc, "gsgn_padding_mask")  # B x T, True at padding
        if self.g_fbank is None:
            self.mask = None
            return
        B, T, _ = self.g_fbank.shape
        valid = (
            ~padding.bool()
            if padding is not None
            else torch.ones(B, T, dtype=torch.bool, device=self.g_fbank.device)
        )
        if self.branch is not None:
            self.fusion = self.branch.eq(BRANCH_FUSION)  # B
        else:
            self.fusion = torch.ones(B, dtype=torch.bool, device=self.g_fbank.device)
        self.mask = valid & self.fusion.unsqueeze(1)  # B x T: valid frames of fusion utterances

    @property
    def gated(self) -> bool:
        return self.g_fbank is not None


def _masked_sq_err(g: Tensor, target: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(g - target)`` (0 outside ``mask``), its summed square, and the element count.

    ``target`` is a scalar or ``(B,)``; computed in float32 at least.
    """
    g = g.to(torch.promote_types(g.dtype, torch.float32))
    target = target.to(g.dtype)
    if target.dim() == 1:
        target = target.view(-1, 1, 1)
    diff = torch.where(mask.unsqueeze(-1), g - target, torch.zeros_like(g))
    elems = mask.sum() * g.size(-1)
    return diff, diff.pow(2).sum(), elems


# --------------------------------------------------------------------------------------------
# factorized mode: gradient injection during the training backward


class _FactorizedGateState:
    """What the injector's backward needs; holds no tensor of the autograd graph (no cycles)."""

    def __init__(self):
        self.armed = False
        self.delta: Optional[Tensor] = None  # dL/dh_1, recorded by the tensor hook
        self.coef: Optional[Tensor] = None  # incoming gradient of the probe term

    def arm(self, views: _GateViews, weight: float, sample_size, per_utterance: bool,
            max_target: Optional[float], stats: Dict[str, Tensor], loss_log: Tensor):
        self.x_fbank = views.x_fbank.detach()
        self.x_unit = views.x_unit.detach()
        self.mask = views.mask
        self.fusion = views.fusion
        self.weight = weight
        self.sample_size = sample_size
        self.per_utterance = per_utterance
        self.max_target = max_target
        self.stats = stats
        self.loss_log = loss_log
        self.armed = True

    def capture_delta(self, grad: Tensor) -> None:
        self.delta = grad.detach()

    @torch.no_grad()
    def gate_grad(self, g: Tensor) -> Optional[Tensor]:
        """The gradient to add at ``g_fbank``: ``coef * d(w N MSE(g, target)) / dg``."""
        if not self.armed:
            return None
        if self.coef is None:
            raise RuntimeError(
                "gate injector: the loss probe's backward did not run before the gate's; was "
                "the loss returned by the criterion the one that was backpropagated?"
            )
        if self.delta is None:
            raise RuntimeError(
                "gate injector: gsgn_ref_out received no gradient before the backward reached "
                "g_fbank; the model must return the reference-layer output that the later "
                "layers consume (docs/INTERFACES.md)"
            )
        with torch.autocast(device_type=g.device.type, enabled=False):
            ab, aa, bb = factorized_inner_products(
                self.delta, self.x_fbank, self.x_unit, self.mask, per_utterance=self.per_utterance
            )
            target, cos = gate_target_from_inner_products(ab, aa, bb, max_target=self.max_target)
            finite = torch.isfinite(ab) & torch.isfinite(aa) & torch.isfinite(bb)
            if self.per_utterance:
                counted = finite & self.mask.any(dim=1)
            else:
                counted = finite & self.mask.any()
            target = torch.where(finite, target, torch.ones_like(target))
            diff, sq_err, elems = _masked_sq_err(g, target, self.mask)
            scale = self.weight * self.sample_size / elems.clamp_min(1).to(diff.dtype)
            extra = diff * (2.0 * scale * self.coef.to(diff.dtype))

            st = self.stats
            cos = cos.masked_fill(~counted, 0.0)
            st["gate_sq_err"] += sq_err.to(st["gate_sq_err"].dtype)
            st["gate_elems"] += elems.to(st["gate_elems"].dtype)
            st["gate_cos_sum"] += cos.sum().to(st["gate_cos_sum"].dtype)
            st["gate_cos_count"] += counted.sum().to(st["gate_cos_count"].dtype)
            st["gate_conflict"] += (counted & (cos < 0)).sum().to(st["gate_conflict"].dtype)
            st["gate_target_sum"] += target.masked_fill(~counted, 0.0).sum().to(
                st["gate_target_sum"].dtype
            )
            self.loss_log += (scale * sq_err).to(self.loss_log.dtype)
        return extra


class _InjectGateGrad(torch.autograd.Function):
    """Identity on ``g_fbank``; its backward adds the gate-loss gradient."""

    @staticmethod
    def forward(ctx, g: Tensor, state: _FactorizedGateState) -> Tensor:
        ctx.state = state
        ctx.save_for_backward(g)
        return g.view_as(g)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (g,) = ctx.saved_tensors
        extra = ctx.state.gate_grad(g)
        if extra is not None:
            grad = grad + extra.to(grad.dtype)
        return grad, None


class _LossProbe(torch.autograd.Function):
    """A zero added to the loss; its backward records the gradient the loss receives.

    Its input is the injector's output, so the injector's backward waits for this one.
    """

    @staticmethod
    def forward(ctx, g: Tensor, state: _FactorizedGateState) -> Tensor:
        ctx.state = state
        ctx.shape, ctx.dtype = g.shape, g.dtype
        return torch.zeros((), dtype=torch.float32, device=g.device)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        ctx.state.coef = grad_out.detach()
        zero = torch.zeros((), dtype=ctx.dtype, device=grad_out.device)
        return zero.expand(ctx.shape), None


class GateInjector:
    """The ``gate_injector`` callable handed to the model (one per forward pass)."""

    def __init__(self):
        self.state = _FactorizedGateState()
        self.output: Optional[Tensor] = None

    def __call__(self, g_fbank: Tensor) -> Tensor:
        if self.output is not None:
            raise RuntimeError("gate_injector was called twice in one forward pass")
        if not g_fbank.requires_grad:
            return g_fbank
        self.output = _InjectGateGrad.apply(g_fbank, self.state)
        return self.output

    def pop_output(self) -> Optional[Tensor]:
        out, self.output = self.output, None
        return out


# --------------------------------------------------------------------------------------------


@register_criterion(
    "label_smoothed_cross_entropy_with_gate",
    dataclass=LabelSmoothedCrossEntropyWithGateCriterionConfig,
)
class LabelSmoothedCrossEntropyWithGateCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ignore_prefix_size=0,
        report_accuracy=False,
        ctc_weight=0.0,
        gate_loss_weight=1.0,
        gate_target="exact",
        gate_target_granularity="batch",
        gate_target_interval=1,
        gate_reference_params=r"^encoder\.acoustic_layers\.0\.",
        gate_target_max=None,
    ):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.ctc_weight = ctc_weight
        self.gate_loss_weight = gate_loss_weight
        self.gate_target = str(gate_target)
        self.gate_target_granularity = str(gate_target_granularity)
        self.gate_target_interval = int(gate_target_interval)
        self.gate_target_max = gate_target_max
        if self.gate_target not in ("exact", "factorized"):
            raise ValueError(f"--gate-target must be exact or factorized, not {self.gate_target!r}")
        if self.gate_target_granularity not in ("batch", "utterance"):
            raise ValueError(
                "--gate-target-granularity must be batch or utterance, not "
                f"{self.gate_target_granularity!r}"
            )
        if self.gate_target == "exact" and self.gate_target_granularity == "utterance":
            raise ValueError(
                "--gate-target-granularity utterance needs --gate-target factorized (exact "
                "targets pool the batch: one extra backward per utterance would be needed)"
            )
        if self.gate_target_interval < 1:
            raise ValueError(f"--gate-target-interval must be >= 1, not {gate_target_interval}")
        try:
            self.gate_reference_regex = re.compile(gate_reference_params)
        except re.error as e:
            raise ValueError(f"--gate-reference-params {gate_reference_params!r}: {e}") from e
        self._num_updates: Optional[int] = None  # set by set_num_updates when the task calls it
        self._num_train_forwards = 0  # fallback update counter
        self._cached_target: Optional[Tuple[Tensor, Tensor, Tensor]] = None  # target, cos, counted
        self._cached_at: Optional[int] = None

    def set_num_updates(self, num_updates: int) -> None:
        """Called by the task's ``train_step`` (see docs/INTERFACES.md); drives the interval."""
        self._num_updates = num_updates

    # ---------------------------------------------------------------------------------- forward

    def forward(self, model, sample, reduce=True):
        training = model.training and torch.is_grad_enabled()
        if training:
            self._num_train_forwards += 1
        injector = GateInjector() if training and reduce and self.gate_target == "factorized" else None
        if injector is not None:
            net_output = model(**sample["net_input"], gate_injector=injector)
        else:
            net_output = model(**sample["net_input"])
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        ctc_loss = None
        if self.ctc_weight > 0:
            ctc_loss = self.compute_ctc_loss(net_output, sample, reduce=reduce)
            loss = loss + ctc_loss
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]

        enc = _encoder_out(net_output)
        views = _GateViews(enc)
        stats = self._gate_stats_init(views, loss) if views.gated else None
        loss_log = loss.detach().clone()
        if views.gated and training and reduce:
            if self.gate_target == "exact":
                loss = loss + self._exact_gate_loss(model, sample, views, sample_size, stats)
            else:
                g_out = injector.pop_output()
                if g_out is None and views.g_fbank.requires_grad:
                    raise RuntimeError(
                        "--gate-target factorized: the model returned gates but did not call "
                        "gate_injector on g_fbank (docs/INTERFACES.md)"
                    )
                if g_out is not None:
                    loss = loss + self._arm_injector(injector, g_out, views, sample_size, stats, loss_log)

        logging_output = {
            "loss": loss_log if injector is not None else loss.data,
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
            branch = views.branch.long()
            for index, key in BRANCH_KEYS.items():
                logging_output[key] = branch.eq(index).sum()
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def compute_ctc_loss(self, net_output, sample, reduce=True) -> Tensor:
        """``ctc_weight`` x CTC of the model's ``ctc_logits`` against ``sample["source_text"]``."""
        enc = _encoder_out(net_output)
        logits = _first(enc, "ctc_logits")  # T x B x V_src
        if logits is None:
            raise ValueError(
                "--ctc-weight > 0 but the model returned no ctc_logits: build it with its CTC "
                "head enabled, or set --ctc-weight 0"
            )
        if "source_text" not in sample or "source_text_lengths" not in sample:
            raise KeyError(
                "--ctc-weight > 0 needs sample['source_text'] and sample['source_text_lengths'] "
                "(source transcript ids; the task adds them when the data config names a "
                "src_vocab_filename, docs/INTERFACES.md)"
            )
        lprobs = utils.log_softmax(logits.float(), dim=-1)  # T x B x V_src
        T, B = lprobs.shape[:2]
        in_lens = torch.full((B,), T, dtype=torch.long, device=lprobs.device)
        padding = _first(enc, "ctc_padding_mask")  # B x T
        if padding is not None:
            in_lens = in_lens - padding.long().sum(-1)
        tgt, tgt_lens = sample["source_text"], sample["source_text_lengths"]  # B x S, B
        tgt_mask = torch.arange(tgt.size(1), device=tgt.device).unsqueeze(0) < tgt_lens.unsqueeze(1)
        loss = F.ctc_loss(
            lprobs,
            tgt.masked_select(tgt_mask),
            in_lens,
            tgt_lens,
            blank=CTC_BLANK_IDX,
            reduction="sum" if reduce else "none",
            zero_infinity=True,
        )
        return loss * self.ctc_weight

    # ------------------------------------------------------------------------------ gate stats

    @staticmethod
    def _gate_stats_init(views: _GateViews, like: Tensor) -> Dict[str, Tensor]:
        """Gate statistics of the forward pass; the target-related ones start at zero."""
        zero = torch.zeros((), dtype=torch.float32, device=like.device)
        stats = {k: zero.clone() for k in GATE_STAT_KEYS}
        with torch.no_grad():
            mask = views.mask.unsqueeze(-1)  # B x T x 1
            g = views.g_fbank.detach().float()
            stats["g_fbank_sum"] += torch.where(mask, g, torch.zeros_like(g)).sum()
            stats["g_fbank_gt1"] += (mask & (g > 1.0)).sum().float()
            stats["g_elems"] += views.mask.sum().float() * g.size(-1)
            if views.g_unit is not None:
                gu = views.g_unit.detach().float()
                stats["g_unit_sum"] += torch.where(mask, gu, torch.zeros_like(gu)).sum()
                stats["g_unit_elems"] += views.mask.sum().float() * gu.size(-1)
        return stats

    # ------------------------------------------------------------------------------ exact mode

    def _update_counter(self) -> int:
        return self._num_updates if self._num_updates is not None else self._num_train_forwards

    def reference_parameters(self, model) -> List[Tuple[str, Tensor]]:
        """The parameters matching ``--gate-reference-params`` (an error if there are none)."""
        params = [
            (n, p)
            for n, p in _unwrap(model).named_parameters()
            if p.requires_grad and self.gate_reference_regex.search(n)
        ]
        if not params:
            names = [n for n, _ in _unwrap(model).named_parameters()]
            raise ValueError(
                f"--gate-reference-params {self.gate_reference_regex.pattern!r} matches no "
                f"trainable parameter of {type(_unwrap(model)).__name__} (parameters: "
                f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
            )
        return params

    def exact_target(self, model, sample, fusion_index: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Eq. 11 target from the two single-view gradients over the utterances ``fusion_index``.

        Runs the model (unwrapped, eval mode) with ``force_branch="fbank"`` and ``"unit"``;
        ``torch.autograd.grad`` w.r.t. the reference parameters only (no ``.grad`` writes).
        Returns ``(target, cos, counted)`` scalars; ``counted`` is 0 when a gradient was not
        finite (target then 1).
        """
        inner = _unwrap(model)
        params = [p for _, p in self.reference_parameters(inner)]
        batch_size = sample["net_input"]["src_tokens"].size(0)
        sub = _select_sample(sample, fusion_index, batch_size)
        grads = []
        was_training = inner.training
        inner.eval()
        try:
            with torch.enable_grad():
                for branch in ("fbank", "unit"):
                    out = inner(**sub["net_input"], force_branch=branch)
                    loss, _ = self.compute_loss(inner, out, sub, reduce=True)
                    if self.ctc_weight > 0:
                        loss = loss + self.compute_ctc_loss(out, sub)
                    grads.append(torch.autograd.grad(loss, params, allow_unused=True))
                    del out, loss
        finally:
            inner.train(was_training)
        ab = aa = bb = torch.zeros((), dtype=torch.float64, device=params[0].device)
        for ga, gb in zip(*grads):
            if ga is None and gb is None:
                continue
            dt = torch.promote_types((ga if ga is not None else gb).dtype, torch.float32)
            ga = ga.to(dt).flatten() if ga is not None else None
            gb = gb.to(dt).flatten() if gb is not None else None
            if ga is not None:
                aa = aa + torch.dot(ga, ga).double()
            if gb is not None:
                bb = bb + torch.dot(gb, gb).double()
            if ga is not None and gb is not None:
                ab = ab + torch.dot(ga, gb).double()
        target, cos = gate_target_from_inner_products(ab, aa, bb, max_target=self.gate_target_max)
        finite = torch.isfinite(ab) & torch.isfinite(aa) & torch.isfinite(bb)
        target = torch.where(finite, target, torch.ones_like(target))
        cos = torch.where(finite, cos, torch.zeros_like(cos))
        return target.detach(), cos.detach(), finite.double()

    def _exact_gate_loss(self, model, sample, views, sample_size, stats) -> Tensor:
        update = self._update_counter()
        due = (
            self._cached_target is None
            or update == self._cached_at
            or update - self._cached_at >= self.gate_target_interval
        )
        if due:
            fusion_index = views.fusion.nonzero(as_tuple=False).squeeze(1)
            if fusion_index.numel() > 0:
                self._cached_target = self.exact_target(model, sample, fusion_index)
                self._cached_at = update
        if self._cached_target is None:  # no fusion utterance seen yet: nothing to regularize
            return views.g_fbank.new_zeros(()).float()
        target, cos, counted = self._cached_target
        _, sq_err, elems = _masked_sq_err(views.g_fbank, target, views.mask)
        present = (elems > 0).double() * counted
        with torch.no_grad():
            stats["gate_sq_err"] += sq_err.detach().float()
            stats["gate_elems"] += elems.float()
            stats["gate_cos_sum"] += (cos * present).float()
            stats["gate_cos_count"] += present.float()
            stats["gate_conflict"] += ((cos < 0).double() * present).float()
            stats["gate_target_sum"] += (target * present).float()
        return self.gate_loss_weight * sample_size * sq_err / elems.clamp_min(1).to(sq_err.dtype)

    # ------------------------------------------------------------------------- factorized mode

    def _arm_injector(self, injector, g_out, views, sample_size, stats, loss_log) -> Tensor:
        """Arm the injector's backward; returns the zero probe term to add to the loss."""
        missing = [
            k
            for k, v in (("gsgn_x_fbank", views.x_fbank), ("gsgn_x_unit", views.x_unit),
                         ("gsgn_ref_out", views.ref_out))
            if v is None
        ]
        if missing:
            raise KeyError(f"--gate-target factorized needs encoder outputs {missing}")
        if not views.ref_out.requires_grad:
            raise RuntimeError("gsgn_ref_out is not part of the autograd graph")
        state = injector.state
        state.arm(
            views,
            weight=self.gate_loss_weight,
            sample_size=sample_size,
            per_utterance=self.gate_target_granularity == "utterance",
            max_target=self.gate_target_max,
            stats=stats,
            loss_log=loss_log,
        )
        views.ref_out.register_hook(state.capture_delta)
        return _LossProbe.apply(g_out, state)

    # ------------------------------------------------------------------------------- logging

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)

        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        sample_size = total("sample_size")
        if any("ctc_loss" in log for log in logging_outputs):
            metrics.log_scalar(
                "ctc_loss", total("ctc_loss") / (sample_size or 1) / math.log(2), sample_size, round=3
            )
        gate_elems = total("gate_elems")
        if gate_elems > 0:
            metrics.log_scalar("gate_loss", total("gate_sq_err") / gate_elems, gate_elems, round=4)
        n_cos = total("gate_cos_count")
        if n_cos > 0:
            metrics.log_scalar("grad_cos", total("gate_cos_sum") / n_cos, n_cos, round=4)
            metrics.log_scalar("conflict_pct", 100.0 * total("gate_conflict") / n_cos, n_cos, round=2)
            metrics.log_scalar("gate_target", total("gate_target_sum") / n_cos, n_cos, round=4)
        g_elems = total("g_elems")
        if g_elems > 0:
            metrics.log_scalar("g_fbank_mean", total("g_fbank_sum") / g_elems, g_elems, round=4)
            metrics.log_scalar("g_fbank_gt1_pct", 100.0 * total("g_fbank_gt1") / g_elems, g_elems, round=2)
        g_unit_elems = total("g_unit_elems")
        if g_unit_elems > 0:
            metrics.log_scalar("g_unit_mean", total("g_unit_sum") / g_unit_elems, g_unit_elems, round=4)
        counts = {key: total(key) for key in BRANCH_KEYS.values()}
        n_utt = sum(counts.values())
        if n_utt > 0:
            for key, count in counts.items():
                metrics.log_scalar(f"{key}_pct", 100.0 * count / n_utt, n_utt, round=2)
