"""How the gate target of Eq. 11 is obtained during training: one small class per reading,
behind one interface, in a registry (``GATE_TARGETS``; a new reading is one class and one
entry).

Let ``a = dL_fbank/dW`` and ``b = dL_unit/dW`` be the gradients the two views alone give a
reference parameter set ``W`` (the first acoustic-encoder layer by default). Each strategy
turns them into targets and returns the gate-loss term ``w * N * MSE(g_fbank, target)`` to
add to the training loss (``N`` the sample size, which fairseq divides by later).

``exact`` (:class:`ExactGateTarget`)
    The single-view gradients themselves (the paper's Fig. 1b analysis): the utterances that
    took the fusion branch run again with ``force_branch="fbank"`` and ``"unit"``, in eval
    mode (no dropout masks between the two; Eq. 7's frozen network), and their losses are
    differentiated w.r.t. ``W`` only, so nothing is written to ``.grad``. ``batch``
    granularity pools over the batch (one target); ``utterance`` gives one target per
    utterance from the same two passes, for the linear maps of the reference layer (its
    attention projections and feed-forward weights and biases; LayerNorm parameters are left
    out): per utterance ``grad W = sum_t dy_t ⊗ x_t`` (the per-sample-gradient trick, from
    each map's input and output gradient). ``--gate-target-interval N`` computes the target
    every N updates: a batch target is reused in between, an utterance target belongs to its
    batch, so the gate loss then applies on the due updates only.

``factorized`` (:class:`FactorizedGateTarget`)
    Eq. 6-7 inside the one training backward: for ``h_1 = W x + ...`` the input-independent
    factor is ``delta = dL/dh_1`` and the input-dependent one each view:
    ``a = sum_t delta_t ⊗ x_fbank,t``, ``b = sum_t delta_t ⊗ x_unit,t``. ``delta`` exists only
    during backward, so the model calls ``gate_injector`` on ``g_fbank`` (an identity autograd
    Function) and a hook on ``gsgn_ref_out`` records ``delta``; the Function's backward then
    computes the target and adds ``d(w N MSE)/d g_fbank`` to the incoming gradient, scaled by
    what the loss received (fp16/AMP loss scale, fairseq's ``loss *= 0``), which a zero-valued
    probe term on the loss records. Its input is the injector's output, so autograd runs it
    first (a data dependency). Per batch or per utterance; every step, no extra pass.

Several S-feature views (``--unit-views``, every ``g_k = 1``): ``b_k`` per view (one probe
pass per view, or ``sum_t delta_t ⊗ x_k,t``), and the target removes each conflicting view's
component, ``1 - sum_{k: cos_k < 0} |b_k| cos_k / |a|``
(``gate_target.views_gate_target_from_inner_products``). The statistics are then kept per view
(``gate_cos_sum_<name>``, ...; the reduced metrics ``grad_cos_<name>``, ``conflict_pct_<name>``);
with one view the keys and the numbers are the two-view ones.

On a purely linear residual network both readings give the same target (a unit test). On a
real transformer layer they differ: the exact single-view gradients share what both passes
feed layer 0 besides the view (positions, LayerNorm and bias paths), the factorized ones are
built from the views alone. Statistics computed in backward are written in place into the
logging output (fairseq reads it only after the backward).

L_gate's gradient reaches the gate parameters and, through ``g_fbank``'s inputs, the two
views' front ends: Eq. 12 adds L_gate to the training loss, and nothing in the paper stops
its gradient at the gate (pinned by ``tests/test_criterion.py``).

Data parallelism (``modules/data_parallel.py``): a pooled (``batch``) target pools over the
global batch, the k-th micro-batch of every rank. ``<a, b>`` has cross terms between ranks,
so the ranks sum the gradients themselves (``exact``: the flattened reference-parameter
gradients, on the due updates; ``factorized``: the ``D x D`` matrices of Eq. 6-7, inside the
backward) and all compute the same target; a rank without fusion utterances adds zeros, and
fairseq's stand-in batch for a rank out of data (``ignore_grad``, loss times 0) adds nothing.
The shared target is counted once in the logged statistics (on rank 0; fairseq sums logging
outputs over ranks). Per-utterance targets are local. Each rank's gate loss keeps its own
normalisation ``w N_r MSE_r`` (as each micro-batch of ``--update-freq`` does), so the summed
loss weights ranks by their sample sizes.
"""
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from fairseq.models import BaseFairseqModel
from torch import Tensor

from .branch_sampler import FUSION
from .data_parallel import GlobalBatch
from .gate_target import (
    factorized_gradients,
    factorized_inner_products,
    gate_target_from_inner_products,
    inner_products,
    linear_grad_inner_products,
    masked_squared_error,
    views_gate_target_from_inner_products,
)

GRANULARITIES = ("batch", "utterance")
# logging-output sums and counts (they add up across micro-batches and workers)
STAT_KEYS = (
    "gate_sq_err", "gate_elems",  # sum of (g_fbank - target)^2 over valid fusion elements, their number
    "gate_cos_sum", "gate_cos_count",  # cos over measured targets (batches or utterances), their number
    "gate_cos_pos_sum", "gate_cos_pos_count",  # the same over cos > 0 (the paper's Fig. 3)
    "gate_conflict", "gate_target_sum",  # how many had cos < 0 (target > 1); sum of the targets
    "g_fbank_sum", "g_fbank_gt1", "g_elems",  # g_fbank over valid fusion elements: sum, > 1, number
    "g_unit_sum", "g_unit_elems",
)
# the keys kept per S-feature view (suffix _<name> with several views, none with one)
VIEW_STAT_KEYS = ("gate_cos_sum", "gate_cos_count", "gate_cos_pos_sum", "gate_cos_pos_count", "gate_conflict")
# with several views: the measured targets, and how many had a conflict with any view
MULTI_VIEW_STAT_KEYS = ("gate_target_count", "gate_conflict_any")
LossFn = Callable[[nn.Module, object, dict], Tensor]  # (model, net_output, sample) -> summed loss


def stat_suffixes(names) -> List[str]:
    """The per-view key suffixes: none with one S-feature view (the two-view keys), else ``_<name>``."""
    return [""] if len(names) <= 1 else [f"_{n}" for n in names]


def unit_view_names(model) -> Tuple[str, ...]:
    """The S-feature view names of a model with our front end (``("units",)`` otherwise)."""
    frontend = getattr(getattr(unwrap(model), "encoder", None), "frontend", None)
    return tuple(getattr(frontend, "unit_view_names", None) or ("units",))


def probe_branches(names) -> List[str]:
    """The single-view branches of the exact target's probe passes: FBank, then each view."""
    return ["fbank"] + (["unit"] if len(names) == 1 else [f"unit:{n}" for n in names])


def unwrap(model) -> BaseFairseqModel:
    """The plain fairseq model under DDP/ModuleProxy wrappers (probe passes bypass DDP)."""
    while not isinstance(model, BaseFairseqModel) and hasattr(model, "module"):
        model = model.module
    return model


def _first(enc: Dict[str, List[Tensor]], key: str) -> Optional[Tensor]:
    value = enc.get(key)
    return value[0] if isinstance(value, (list, tuple)) and len(value) > 0 else None


class GateViews:
    """The gate tensors of one forward pass (docs/INTERFACES.md), read from the encoder output;
    ``names`` are the S-feature views' (``--unit-views``)."""

    def __init__(self, enc: Dict[str, List[Tensor]], names=None):
        self.g_fbank = _first(enc, "gsgn_g_fbank")  # B x T x D
        self.g_unit = _first(enc, "gsgn_g_unit")  # B x T x D
        self.branch = _first(enc, "gsgn_branch")  # B
        self.x_fbank = _first(enc, "gsgn_x_fbank")  # B x T x D
        self.x_unit = _first(enc, "gsgn_x_unit")  # B x T x D
        # every S-feature view and its gate, B x T x D each (the first is x_unit / g_unit)
        self.x_units = list(enc.get("gsgn_x_units") or ([self.x_unit] if self.x_unit is not None else []))
        self.g_units = list(enc.get("gsgn_g_units") or ([self.g_unit] if self.g_unit is not None else []))
        n = max(len(self.x_units), 1)
        self.names = tuple(names) if names is not None and len(names) == n else (
            ("units",) if n == 1 else tuple(f"view{k}" for k in range(n)))
        self.ref_out = _first(enc, "gsgn_ref_out")  # B x T x D
        padding = _first(enc, "gsgn_padding_mask")  # B x T, True at padding
        if self.g_fbank is None:
            self.mask = self.fusion = None
            return
        B, T, _ = self.g_fbank.shape
        device = self.g_fbank.device
        valid = ~padding.bool() if padding is not None else torch.ones(B, T, dtype=torch.bool, device=device)
        self.fusion = self.branch.eq(FUSION) if self.branch is not None else torch.ones(B, dtype=torch.bool, device=device)
        self.mask = valid & self.fusion.unsqueeze(1)  # B x T: valid frames of fusion utterances

    @property
    def gated(self) -> bool:
        return self.g_fbank is not None


def init_stats(views: GateViews, device) -> Dict[str, Tensor]:
    """Gate statistics of the forward pass; the target statistics start at zero."""
    suffixes = stat_suffixes(views.names)
    keys = list(STAT_KEYS) + [k + sfx for sfx in suffixes if sfx for k in VIEW_STAT_KEYS]
    if len(suffixes) > 1:
        keys = [k for k in keys if k not in VIEW_STAT_KEYS] + list(MULTI_VIEW_STAT_KEYS)
    stats = {k: torch.zeros((), dtype=torch.float32, device=device) for k in keys}
    with torch.no_grad():
        mask = views.mask.unsqueeze(-1)  # B x T x 1
        n = views.mask.sum().float()
        gates = [(views.g_fbank, "g_fbank_sum", "g_elems")] + [(g, "g_unit_sum", "g_unit_elems") for g in views.g_units]
        for g, s, e in gates:
            if g is not None:
                g = g.detach().float()
                stats[s] += torch.where(mask, g, torch.zeros_like(g)).sum()
                stats[e] += n * g.size(-1)
        stats["g_fbank_gt1"] += (mask & (views.g_fbank.detach() > 1.0)).sum().float()
    return stats


def add_target_stats(stats, target: Tensor, cos: Tensor, counted: Tensor, sq_err: Tensor, elems: Tensor,
                     suffixes=("",)) -> None:
    """Accumulate measured targets (scalar or ``(B,)``; ``counted`` marks the real ones); with
    several views (``suffixes``, :func:`stat_suffixes`) ``cos`` is ``(N, ...)``, one row per view."""
    with torch.no_grad():
        c = counted.bool()
        per_view = [cos] if len(suffixes) == 1 else list(cos)
        for key, value in (("gate_sq_err", sq_err), ("gate_elems", elems)):
            stats[key] += value.detach().to(stats[key].dtype)
        for sfx, cos_k in zip(suffixes, per_view):
            for key, value in (
                ("gate_cos_count", c.sum()),
                ("gate_cos_sum", torch.where(c, cos_k, torch.zeros_like(cos_k)).sum()),
                ("gate_cos_pos_sum", torch.where(c & (cos_k > 0), cos_k, torch.zeros_like(cos_k)).sum()),
                ("gate_cos_pos_count", (c & (cos_k > 0)).sum()), ("gate_conflict", (c & (cos_k < 0)).sum()),
            ):
                stats[key + sfx] += value.detach().to(stats[key + sfx].dtype)
        stats["gate_target_sum"] += torch.where(c, target, torch.zeros_like(target)).sum().detach().to(torch.float32)
        if len(suffixes) > 1:
            stats["gate_target_count"] += c.sum().to(torch.float32)
            stats["gate_conflict_any"] += (c & (cos < 0).any(0)).sum().to(torch.float32)


def _finite_target(ab, aa, bb, max_target) -> Tuple[Tensor, Tensor, Tensor]:
    """Eq. 11 from inner products; non-finite ones (fp16 overflow) give target 1, not counted."""
    target, cos = gate_target_from_inner_products(ab, aa, bb, max_target=max_target)
    finite = torch.isfinite(ab) & torch.isfinite(aa) & torch.isfinite(bb)
    return torch.where(finite, target, torch.ones_like(target)), torch.where(finite, cos, torch.zeros_like(cos)), finite


def _finite_views_target(abs_: List[Tensor], aa: Tensor, bbs: List[Tensor], max_target) -> Tuple[Tensor, Tensor, Tensor]:
    """The target from ``<a, b_k>``, ``|a|^2``, ``|b_k|^2`` of every S-feature view: Eq. 11 itself
    (:func:`_finite_target`) with one view; with several, ``cos`` is ``(N, ...)``. Non-finite
    products give target 1, not counted."""
    if len(abs_) == 1:
        return _finite_target(abs_[0], aa, bbs[0], max_target)
    ab, bb = torch.stack(abs_), torch.stack(bbs)  # (N, ...)
    target, cos = views_gate_target_from_inner_products(ab, aa, bb, max_target=max_target)
    finite = torch.isfinite(ab).all(0) & torch.isfinite(aa) & torch.isfinite(bb).all(0)
    return torch.where(finite, target, torch.ones_like(target)), torch.where(finite, cos, torch.zeros_like(cos)), finite


class GateTargetStrategy:
    """One reading of Eq. 11's target. ``forward_kwargs()`` are extra model-forward arguments
    for a training forward; ``gate_loss(model, sample, views, loss_fn, scale, stats, update,
    loss_log)`` returns the term to add to the loss (``scale * MSE``, ``scale = w * N``) and
    accumulates ``stats``; a strategy whose term is computed during backward
    (``adds_in_backward``) returns a zero-valued term and adds its value to ``loss_log`` then."""

    adds_in_backward = False

    def __init__(self, reference_params: str, granularity: str, interval: int, max_target: Optional[float]):
        if granularity not in GRANULARITIES:
            raise ValueError(f"--gate-target-granularity must be one of {GRANULARITIES}, not {granularity!r}")
        if interval < 1:
            raise ValueError(f"--gate-target-interval must be >= 1, not {interval}")
        try:
            self.reference_regex = re.compile(reference_params)
        except re.error as e:
            raise ValueError(f"--gate-reference-params {reference_params!r}: {e}") from e
        self.per_utterance = granularity == "utterance"
        self.interval = interval
        self.max_target = max_target
        self.global_batch = GlobalBatch()  # pooled targets: sums over data-parallel ranks
        self.ignore_grad = False  # fairseq's stand-in batch (loss times 0) is in progress

    def forward_kwargs(self) -> dict:
        return {}

    def gate_loss(self, model, sample, views: GateViews, loss_fn: LossFn, scale: float, stats, update: int,
                  loss_log: Tensor) -> Tensor:
        raise NotImplementedError


class ExactGateTarget(GateTargetStrategy):
    """Single-view probe passes (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cached: Optional[Tuple[Tensor, Tensor, Tensor]] = None  # batch target, cos, counted
        self._cached_at: Optional[int] = None

    def reference_parameters(self, model) -> List[Tuple[str, Tensor]]:
        params = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad and self.reference_regex.search(n)]
        if not params:
            names = [n for n, _ in unwrap(model).named_parameters()]
            raise ValueError(
                f"--gate-reference-params {self.reference_regex.pattern!r} matches no trainable parameter of "
                f"{type(unwrap(model)).__name__} (parameters: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
            )
        return params

    def reference_linears(self, model) -> List[Tuple[nn.Linear, bool, bool]]:
        """(module, weight matched, bias matched) for every ``nn.Linear`` with a matched parameter."""
        out = []
        for name, m in unwrap(model).named_modules():
            if isinstance(m, nn.Linear):
                w = self.reference_regex.search(f"{name}.weight") is not None
                b = m.bias is not None and self.reference_regex.search(f"{name}.bias") is not None
                if w or b:
                    out.append((m, w, b))
        if not out:
            self.reference_parameters(model)  # the error names the parameters
            raise ValueError(f"--gate-target-granularity utterance: --gate-reference-params "
                             f"{self.reference_regex.pattern!r} selects no linear map (weights or biases of nn.Linear)")
        return out

    def _probe(self, inner, sub, branch: str, loss_fn: LossFn) -> Tuple[Tensor, Tensor]:
        """The single-view loss of ``sub`` and its (B', T') padding mask (True at padding)."""
        out = inner(**sub["net_input"], force_branch=branch)
        return loss_fn(inner, out, sub), out[1]["encoder_out"]["gsgn_padding_mask"][0]

    def batch_gradients(self, model, sub, loss_fn) -> Tuple[Tensor, ...]:
        """``a`` and each view's ``b_k`` of the utterances of ``sub`` (zeros for ``sub=None``),
        flattened over the reference parameters: (P,) each, float32 (float64 parameters stay
        float64)."""
        inner = unwrap(model)
        params = [p for _, p in self.reference_parameters(inner)]
        branches = probe_branches(unit_view_names(inner))

        def flat(grads):
            return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                              .to(torch.promote_types(p.dtype, torch.float32)) for g, p in zip(grads, params)])

        if sub is None:
            zeros = flat([None] * len(params))
            return tuple(zeros.clone() if i else zeros for i in range(len(branches)))
        return tuple(flat(torch.autograd.grad(self._probe(inner, sub, branch, loss_fn)[0], params, allow_unused=True))
                     for branch in branches)

    def batch_target(self, model, sub, loss_fn) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
        """Pooled over the utterances of ``sub`` and, with data parallelism, of the other ranks
        (``sub=None``: this rank has none; it takes part in the sums): scalar (target, cos,
        counted) (cos ``(N,)`` with N views), or None when no rank had a fusion utterance."""
        a, *bs = self.batch_gradients(model, sub, loss_fn)
        n = sub["net_input"]["src_tokens"].size(0) if sub is not None else 0
        a, *bs, n = self.global_batch.sum(a, *bs, torch.tensor(float(n), dtype=a.dtype, device=a.device))
        if n.item() == 0:
            return None
        products = [inner_products(a.double(), b.double()) for b in bs]
        return _finite_views_target([p[0] for p in products], products[0][1], [p[2] for p in products],
                                    self.max_target)

    def utterance_targets(self, model, sub, loss_fn) -> Tuple[Tensor, Tensor, Tensor]:
        """One (target, cos, counted) per utterance of ``sub`` ((B',) each), from the inputs and
        output gradients of the reference layer's linear maps in the same two probe passes."""
        inner = unwrap(model)
        linears = self.reference_linears(inner)
        time_first = getattr(inner.encoder, "time_first_layers", True)
        captured = {}
        # fairseq attention's fused path bypasses its projection modules: run the plain one
        wanted = {id(m) for m, _, _ in linears}
        fast_path = [(o, o.skip_embed_dim_check) for o in inner.modules()
                     if hasattr(o, "skip_embed_dim_check") and any(id(c) in wanted for c in o.children())]
        for owner, _ in fast_path:
            owner.skip_embed_dim_check = True
        def keep(mod, inp, out):
            captured[mod] = (inp[0].detach(), out)
            return out.clone()  # the layer may scale its output in place (fairseq: q *= scaling)

        hooks = [m.register_forward_hook(keep) for m, _, _ in linears]
        per_view = []
        try:
            for branch in probe_branches(unit_view_names(inner)):
                captured.clear()
                loss, padding = self._probe(inner, sub, branch, loss_fn)
                missing = [m for m, _, _ in linears if m not in captured]
                if missing:
                    raise RuntimeError(f"per-utterance exact target: {len(missing)} reference linear map(s) did not run")
                dys = torch.autograd.grad(loss, [captured[m][1] for m, _, _ in linears], allow_unused=True)
                per_view.append([(captured[m][0], dy if dy is not None else torch.zeros_like(captured[m][1]))
                                 for (m, _, _), dy in zip(linears, dys)])
        finally:
            for h in hooks:
                h.remove()
            for owner, flag in fast_path:
                owner.skip_embed_dim_check = flag
        mask = ~padding  # B' x T
        zeros = torch.zeros(mask.size(0), dtype=torch.float64, device=mask.device)
        fbank, views = per_view[0], per_view[1:]
        abs_, bbs, aa = [], [], zeros
        for k, view in enumerate(views):  # <a, b_k>, |b_k|^2 (and |a|^2 from the first view's pass)
            ab = bb = zeros
            for (m, w, b), (x_f, dy_f), (x_u, dy_u) in zip(linears, fbank, view):
                if time_first:  # T x B x C -> B x T x C
                    x_f, dy_f, x_u, dy_u = (t.transpose(0, 1) for t in (x_f, dy_f, x_u, dy_u))
                if w:
                    r = linear_grad_inner_products(dy_f, x_f, dy_u, x_u, mask, per_utterance=True, bias=b)
                else:  # a bias alone: x = 1
                    ones = x_f.new_ones(x_f.shape[:2] + (1,))
                    r = linear_grad_inner_products(dy_f, ones, dy_u, ones, mask, per_utterance=True)
                ab, bb = ab + r[0].double(), bb + r[2].double()
                if k == 0:
                    aa = aa + r[1].double()
            abs_.append(ab)
            bbs.append(bb)
        return _finite_views_target(abs_, aa, bbs, self.max_target)

    def gate_loss(self, model, sample, views, loss_fn, scale, stats, update, loss_log) -> Tensor:
        due = self._cached_at is None or update == self._cached_at or update - self._cached_at >= self.interval
        fusion_index = views.fusion.nonzero(as_tuple=False).squeeze(1)
        if self.ignore_grad:  # fairseq's stand-in batch repeats a real one: no probes, nothing pooled
            fusion_index = fusion_index[:0]
        zero = views.g_fbank.new_zeros(()).float()
        pooled = not self.per_utterance
        if pooled:
            self.global_batch.setup()
        # with other ranks a pooled target is summed by all of them, fusion utterances or not
        if due and (fusion_index.numel() > 0 or (pooled and self.global_batch.active)):
            inner = unwrap(model)
            B = sample["net_input"]["src_tokens"].size(0)
            sub = _select_sample(sample, fusion_index, B) if fusion_index.numel() > 0 else None
            was_training = inner.training
            inner.eval()
            try:
                with torch.enable_grad():
                    if self.per_utterance:
                        t, c, n = self.utterance_targets(inner, sub, loss_fn)
                        ones = torch.ones(B, dtype=t.dtype, device=t.device)
                        cos = (torch.zeros_like(ones).index_copy(0, fusion_index, c) if c.dim() == 1 else
                               torch.zeros(c.size(0), B, dtype=c.dtype, device=c.device).index_copy(1, fusion_index, c))
                        self._cached = (ones.index_copy(0, fusion_index, t), cos,
                                        torch.zeros(B, dtype=torch.bool, device=t.device).index_copy(0, fusion_index, n))
                        self._cached_at = update
                    else:
                        computed = self.batch_target(inner, sub, loss_fn)
                        if computed is not None:  # else no rank had a fusion utterance: still due
                            self._cached, self._cached_at = computed, update
            finally:
                inner.train(was_training)
        elif self.per_utterance:
            return zero  # an utterance target belongs to its batch: no gate loss off the due updates
        if self._cached is None:  # no fusion utterance seen yet (the same on every rank)
            return zero
        target, cos, counted = self._cached
        _, sq_err, elems = masked_squared_error(views.g_fbank, target.detach(), views.mask)
        if self.per_utterance:
            counted = counted & views.fusion
        else:  # counted once if it applies anywhere in the global batch
            applied = elems.float() * (not self.ignore_grad)
            (applied,) = self.global_batch.sum(applied)
            counted = counted & (applied > 0) & self.global_batch.is_first
        add_target_stats(stats, target, cos, counted, sq_err, elems, stat_suffixes(views.names))
        return scale * sq_err / elems.clamp_min(1).to(sq_err.dtype)


def _select_sample(sample, index: Tensor, batch_size: int):
    """``sample`` restricted to the utterances ``index`` (every tensor whose dim 0 is B)."""
    if isinstance(sample, dict):
        return {k: _select_sample(v, index, batch_size) for k, v in sample.items()}
    if torch.is_tensor(sample) and sample.dim() > 0 and sample.size(0) == batch_size:
        return sample.index_select(0, index)
    if isinstance(sample, list) and len(sample) == batch_size:
        return [sample[i] for i in index.tolist()]
    return sample


# ---------------------------------------------------------------------------- factorized


class _FactorizedState:
    """What the injector's backward needs; holds no tensor of the autograd graph (no cycles)."""

    def __init__(self):
        self.armed = False
        self.delta: Optional[Tensor] = None  # dL/dh_1, recorded by the tensor hook
        self.coef: Optional[Tensor] = None  # incoming gradient of the probe term

    def arm(self, views: GateViews, scale, per_utterance: bool, max_target, stats, loss_log: Tensor,
            global_batch: Optional[GlobalBatch] = None):
        self.x_fbank, self.x_units = views.x_fbank.detach(), [x.detach() for x in views.x_units]
        self.suffixes = stat_suffixes(views.names)
        self.mask, self.fusion = views.mask, views.fusion
        self.scale, self.per_utterance, self.max_target = scale, per_utterance, max_target
        self.stats, self.loss_log = stats, loss_log
        self.global_batch = global_batch if global_batch is not None else GlobalBatch()
        self.armed = True

    def capture_delta(self, grad: Tensor) -> None:
        self.delta = grad.detach()

    @torch.no_grad()
    def gate_grad(self, g: Tensor) -> Optional[Tensor]:
        """The gradient to add at ``g_fbank``: ``coef * d(w N MSE(g, target)) / dg``."""
        if not self.armed:
            return None
        if self.coef is None:
            raise RuntimeError("gate injector: the loss probe's backward did not run before the gate's; was the "
                               "loss returned by the criterion the one that was backpropagated?")
        if self.delta is None:
            raise RuntimeError("gate injector: gsgn_ref_out received no gradient before the backward reached g_fbank; "
                               "the model must return the reference-layer output that the later layers consume "
                               "(docs/INTERFACES.md)")
        with torch.autocast(device_type=g.device.type, enabled=False):
            if self.per_utterance:
                products = [factorized_inner_products(self.delta, self.x_fbank, x_k, self.mask, per_utterance=True)
                            for x_k in self.x_units]  # (<a, b_k>, |a|^2, |b_k|^2) per view
                target, cos, finite = _finite_views_target([p[0] for p in products], products[0][1],
                                                           [p[2] for p in products], self.max_target)
                counted = finite & self.mask.any(dim=1)
            else:  # D x D sums over the global batch (a stand-in batch, loss times 0, has delta = 0)
                a, *bs = factorized_gradients(self.delta, self.x_fbank, self.x_units, self.mask)
                frames = self.mask.sum().to(a.dtype) * (self.coef != 0).to(a.dtype)
                a, *bs, frames = self.global_batch.sum(a, *bs, frames)
                products = [inner_products(a, b) for b in bs]
                target, cos, finite = _finite_views_target([p[0] for p in products], products[0][1],
                                                           [p[2] for p in products], self.max_target)
                counted = finite & (frames > 0) & self.global_batch.is_first
            diff, sq_err, elems = masked_squared_error(g, target, self.mask)
            scale = self.scale / elems.clamp_min(1).to(diff.dtype)
            add_target_stats(self.stats, target, cos, counted, sq_err, elems, self.suffixes)
            self.loss_log += (scale * sq_err).to(self.loss_log.dtype)
            return diff * (2.0 * scale * self.coef.to(diff.dtype))


class _InjectGateGrad(torch.autograd.Function):
    """Identity on ``g_fbank``; its backward adds the gate-loss gradient."""

    @staticmethod
    def forward(ctx, g: Tensor, state: _FactorizedState) -> Tensor:
        ctx.state = state
        ctx.save_for_backward(g)
        return g.view_as(g)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (g,) = ctx.saved_tensors
        extra = ctx.state.gate_grad(g)
        return (grad + extra.to(grad.dtype) if extra is not None else grad), None


class _LossProbe(torch.autograd.Function):
    """A zero added to the loss; its backward records the gradient the loss receives. Its
    input is the injector's output, so the injector's backward waits for this one."""

    @staticmethod
    def forward(ctx, g: Tensor, state: _FactorizedState) -> Tensor:
        ctx.state, ctx.shape, ctx.dtype = state, g.shape, g.dtype
        return torch.zeros((), dtype=torch.float32, device=g.device)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        ctx.state.coef = grad_out.detach()
        return torch.zeros((), dtype=ctx.dtype, device=grad_out.device).expand(ctx.shape), None


class GateInjector:
    """The ``gate_injector`` callable handed to the model (one per forward pass)."""

    def __init__(self):
        self.state = _FactorizedState()
        self.output: Optional[Tensor] = None

    def __call__(self, g_fbank: Tensor) -> Tensor:
        if self.output is not None:
            raise RuntimeError("gate_injector was called twice in one forward pass")
        if not g_fbank.requires_grad:
            return g_fbank
        self.output = _InjectGateGrad.apply(g_fbank, self.state)
        return self.output


class FactorizedGateTarget(GateTargetStrategy):
    """Eq. 6-7 inside the training backward (see the module docstring)."""

    adds_in_backward = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.injector: Optional[GateInjector] = None

    def forward_kwargs(self) -> dict:
        self.injector = GateInjector()  # a fresh one per training forward
        return {"gate_injector": self.injector}

    def gate_loss(self, model, sample, views, loss_fn, scale, stats, update, loss_log) -> Tensor:
        if not self.per_utterance:
            self.global_batch.setup()  # in the forward: its collective must not start inside a backward
        injector, self.injector = self.injector, None
        g_out = injector.output if injector is not None else None
        if g_out is None:
            if views.g_fbank.requires_grad:
                raise RuntimeError("--gate-target factorized: the model returned gates but did not call gate_injector "
                                   "on g_fbank (docs/INTERFACES.md)")
            return views.g_fbank.new_zeros(()).float()
        missing = [k for k, v in (("gsgn_x_fbank", views.x_fbank), ("gsgn_x_unit", views.x_unit),
                                  ("gsgn_ref_out", views.ref_out)) if v is None]
        if not missing and len(views.x_units) != len(views.names):
            missing = ["gsgn_x_units"]
        if missing:
            raise KeyError(f"--gate-target factorized needs encoder outputs {missing}")
        if not views.ref_out.requires_grad:
            raise RuntimeError("gsgn_ref_out is not part of the autograd graph")
        injector.state.arm(views, scale, self.per_utterance, self.max_target, stats, loss_log, self.global_batch)
        views.ref_out.register_hook(injector.state.capture_delta)
        return _LossProbe.apply(g_out, injector.state)


GATE_TARGETS = {"exact": ExactGateTarget, "factorized": FactorizedGateTarget}
