"""The gate criterion: exact vs factorized targets, the injected gradient, scaling, logging.

A small fake model implements the model side of docs/INTERFACES.md with Eq. 5's residual
layers ``h_{i+1} = W_i h_i + b_i + h_i``; with ``linear=True`` its "log-probs" are a linear
map of the last layer, so the label-smoothed loss is linear in it and ``dL/dh_1`` does not
depend on the input: the setting in which the factorized target (Eq. 6-7) is exact.
"""
import argparse
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fairseq.data import Dictionary
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel

from gsgn_fairseq.criterions.label_smoothed_cross_entropy_with_gate import (
    LabelSmoothedCrossEntropyWithGateCriterion,
    LabelSmoothedCrossEntropyWithGateCriterionConfig,
)
from gsgn_fairseq.modules import gate_targets as gate_module
from gsgn_fairseq.modules.gate_target import (
    factorized_inner_products,
    gate_target_from_inner_products,
)

D, V, B, T = 6, 9, 5, 7
BRANCH_NAMES = {"fbank": 0, "unit": 1, "fusion": 2}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to OpenMP spin-waiting when
    other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeGSGN(BaseFairseqModel):
    """The INTERFACES.md contract on a tiny residual network (views are given, not computed)."""

    def __init__(self, branches, n_layers=3, linear=True, gated=True, ctc=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.branches = torch.as_tensor(branches)
        self.linear = linear
        self.gated = gated
        self.gate_f = nn.Linear(D, D, bias=False)
        self.gate_u = nn.Linear(D, D)
        self.encoder = nn.Module()
        self.encoder.time_first_layers = False  # its layers see (B, T, D)
        self.encoder.acoustic_layers = nn.ModuleList([nn.Linear(D, D) for _ in range(n_layers)])
        for layer in self.encoder.acoustic_layers:
            nn.init.normal_(layer.weight, std=0.3)
        self.out_proj = nn.Linear(D, 2 * V)
        self.ctc_proj = nn.Linear(D, V) if ctc else None
        self.calls = []  # (force_branch, training) per forward

    def forward(self, src_tokens, src_lengths, prev_output_tokens, src_units=None,
                src_units_lengths=None, force_branch=None, gate_injector=None):
        self.calls.append((force_branch, self.training))
        x_f, x_u = src_tokens, src_units  # B x T x D each
        Bn, Tn, _ = x_f.shape
        padding = torch.arange(Tn).unsqueeze(0) >= src_lengths.unsqueeze(1)  # B x T
        if force_branch is not None:
            branch = torch.full((Bn,), BRANCH_NAMES[force_branch], dtype=torch.long)
        else:
            branch = self.branches[:Bn] if self.training else torch.full((Bn,), 2)
        extra = {}
        if self.gated:
            g_f = 2 * torch.sigmoid(self.gate_f(x_f) + self.gate_u(x_u))  # Eq. 3
            if gate_injector is not None:
                g_f = gate_injector(g_f)
            g_u = torch.ones_like(x_u)
            x_fusion = g_f * x_f + g_u * x_u  # Eq. 4
            extra = {"gsgn_g_fbank": [g_f], "gsgn_g_unit": [g_u]}
        else:
            x_fusion = x_f + x_u
        b = branch.view(-1, 1, 1)
        x = torch.where(b == 0, x_f, torch.where(b == 1, x_u, x_fusion))
        x = x.masked_fill(padding.unsqueeze(-1), 0.0)
        h, ref_out = x, None
        for i, layer in enumerate(self.encoder.acoustic_layers):
            y = layer(h)
            h = (y if self.linear else torch.tanh(y)) + h  # Eq. 5
            if i == 0:
                ref_out = h
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        pooled = (h * keep).sum(1)  # B x D
        dec = self.out_proj(pooled).view(Bn, 2, V)  # B x 2 x V: two "target positions"
        enc = {
            "encoder_out": [h.transpose(0, 1)],
            "encoder_padding_mask": [padding],
            "gsgn_branch": [branch],
            "gsgn_x_fbank": [x_f],
            "gsgn_x_unit": [x_u],
            "gsgn_padding_mask": [padding],
            "gsgn_ref_out": [ref_out],
            **extra,
        }
        if self.ctc_proj is not None:
            enc["ctc_logits"] = [self.ctc_proj(h).transpose(0, 1)]  # T x B x V
            enc["ctc_padding_mask"] = [padding]
        return dec, {"encoder_out": enc}

    def get_ctc_output(self, net_output, sample=None):
        enc = net_output[1]["encoder_out"]
        if "ctc_logits" not in enc:
            raise ValueError("the model has no CTC head")
        lengths = (~enc["ctc_padding_mask"][0]).long().sum(-1)
        return F.log_softmax(enc["ctc_logits"][0].float(), dim=-1), lengths

    def get_ctc_target(self, sample):
        if "source_text" not in sample:
            raise ValueError("sample has no 'source_text'")
        return sample["source_text"], sample["source_text_lengths"]

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        if self.linear:
            return net_output[0]  # linear "log-probs": the loss is linear in h
        return F.log_softmax(net_output[0], dim=-1)


def make_task():
    d = Dictionary()
    for i in range(V - 4):
        d.add_symbol(f"w{i}")
    return SimpleNamespace(target_dictionary=d, source_dictionary=d)


def make_sample(seed=0, lengths=(7, 5, 7, 3, 6), conflict=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    Bn = len(lengths)
    x_f = torch.randn(Bn, T, D, generator=g, dtype=dtype)
    x_u = torch.randn(Bn, T, D, generator=g, dtype=dtype)
    x_u = (-0.7 if conflict else 0.7) * x_f + 0.3 * x_u  # conflicting or agreeing views
    target = torch.randint(4, V, (Bn, 2), generator=g)
    return {
        "id": torch.arange(Bn),
        "net_input": {
            "src_tokens": x_f,
            "src_lengths": torch.tensor(lengths),
            "prev_output_tokens": target.clone(),
            "src_units": x_u,
            "src_units_lengths": torch.tensor(lengths),
        },
        "target": target,
        "target_lengths": torch.full((Bn,), 2),
        "ntokens": 2 * Bn,
        "source_text": torch.randint(4, V, (Bn, 2), generator=g),
        "source_text_lengths": torch.tensor([2, 1, 2, 2, 1][:Bn]),
    }


def make_criterion(**overrides):
    kwargs = dict(
        sentence_avg=False,
        label_smoothing=0.1,
        gate_target="exact",  # the tests name the reading and granularity they mean
        gate_target_granularity="batch",
        gate_reference_params=r"^encoder\.acoustic_layers\.0\.weight$",
    )
    kwargs.update(overrides)
    return LabelSmoothedCrossEntropyWithGateCriterion(make_task(), **kwargs)


def param_grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def measured(log):
    """(target, cos) of a batch-granularity logging output."""
    n = log["gate_cos_count"].item()
    assert n == 1
    return log["gate_target_sum"].item(), log["gate_cos_sum"].item()


BRANCHES = [2, 0, 2, 1, 2]


# ----------------------------------------------------------------- exact == factorized (linear)


@pytest.mark.parametrize("seed,conflict", [(0, True), (1, True), (2, False)])
def test_exact_and_factorized_agree_on_linear_residual_network(seed, conflict):
    model = FakeGSGN(BRANCHES, seed=seed).double().train()
    sample = make_sample(seed=seed, conflict=conflict)

    _, _, log_exact = make_criterion(gate_target="exact")(model, sample)
    t_exact, c_exact = measured(log_exact)

    loss, _, log_fact = make_criterion(gate_target="factorized")(model, sample)
    assert log_fact["gate_cos_count"].item() == 0  # filled in by the backward
    loss.backward()
    t_fact, c_fact = measured(log_fact)

    assert c_fact == pytest.approx(c_exact, abs=1e-5)
    assert t_fact == pytest.approx(t_exact, abs=1e-5)
    if conflict:
        assert c_exact < 0 and t_exact > 1
    else:
        assert c_exact >= 0 and t_exact == 1.0


def test_utterance_targets_equal_exact_targets_of_single_utterances(monkeypatch):
    sample = make_sample(seed=3)
    model = FakeGSGN(BRANCHES, seed=3).double().train()
    loss, _, log = make_criterion(gate_target="factorized", gate_target_granularity="utterance")(model, sample)
    # recover the per-utterance targets from the injected gradient's inputs
    state_targets = []
    orig = gate_module.gate_target_from_inner_products

    def spy(*args, **kwargs):
        out = orig(*args, **kwargs)
        state_targets.append(out)
        return out

    monkeypatch.setattr(gate_module, "gate_target_from_inner_products", spy)
    loss.backward()
    (targets, cos), = state_targets
    assert targets.shape == (B,)
    assert log["gate_cos_count"].item() == 3  # the three fusion utterances
    for i in (0, 2, 4):
        only_i = [2 if j == i else 0 for j in range(B)]
        single = FakeGSGN(only_i, seed=3).double().train()
        _, _, log_i = make_criterion(gate_target="exact")(single, sample)
        t_i, c_i = measured(log_i)
        assert targets[i].item() == pytest.approx(t_i, abs=1e-5)
        assert cos[i].item() == pytest.approx(c_i, abs=1e-5)


# ------------------------------------------------------------- the injected gradient (any net)


def explicit_gate_loss_grads(model, sample, weight, per_utterance, scale=1.0):
    """Autograd of L + w N MSE(g, target.detach()), target from the true dL/dh_1."""
    crit = make_criterion(gate_loss_weight=weight, gate_target="exact")
    model.zero_grad()
    net_output = model(**sample["net_input"])
    loss, _ = crit.compute_loss(model, net_output, sample)
    enc = net_output[1]["encoder_out"]
    ref_out, g = enc["gsgn_ref_out"][0], enc["gsgn_g_fbank"][0]
    delta = torch.autograd.grad(loss, ref_out, retain_graph=True)[0]
    mask = (~enc["gsgn_padding_mask"][0]) & (enc["gsgn_branch"][0] == 2).unsqueeze(1)
    ab, aa, bb = factorized_inner_products(
        delta, enc["gsgn_x_fbank"][0], enc["gsgn_x_unit"][0], mask, per_utterance=per_utterance
    )
    target, _ = gate_target_from_inner_products(ab, aa, bb)
    t = target.detach().to(g.dtype)
    t = t.view(-1, 1, 1).expand_as(g) if per_utterance else t.expand_as(g)
    m = mask.unsqueeze(-1).expand_as(g)
    mse = F.mse_loss(g[m], t[m], reduction="mean")
    total = loss + weight * sample["ntokens"] * mse
    (scale * total).backward()
    return param_grads(model), total.item()


@pytest.mark.parametrize("granularity", ["batch", "utterance"])
@pytest.mark.parametrize("linear", [True, False])
def test_injected_gradient_equals_explicit_gate_loss(granularity, linear):
    per_utt = granularity == "utterance"
    sample = make_sample(seed=4)
    model = FakeGSGN(BRANCHES, seed=4, linear=linear).double().train()
    expected, expected_loss = explicit_gate_loss_grads(model, sample, 0.7, per_utt)

    model.zero_grad()
    crit = make_criterion(gate_target="factorized", gate_target_granularity=granularity, gate_loss_weight=0.7)
    loss, sample_size, log = crit(model, sample)
    loss.backward()
    got = param_grads(model)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)
    # the gate parameters did receive a gate-loss gradient
    model.zero_grad()
    crit_plain = make_criterion(gate_target="factorized", gate_loss_weight=0.0)
    loss0, _, _ = crit_plain(model, sample)
    loss0.backward()
    assert not torch.allclose(model.gate_f.weight.grad, got["gate_f.weight"])
    # the logged loss includes the gate term, added during the backward
    assert log["loss"].item() == pytest.approx(expected_loss, rel=1e-9)


def test_injected_gradient_follows_loss_scaling():
    sample = make_sample(seed=5)
    model = FakeGSGN(BRANCHES, seed=5, linear=False).double().train()
    expected, _ = explicit_gate_loss_grads(model, sample, 1.0, False, scale=1024.0)
    model.zero_grad()
    loss, _, _ = make_criterion(gate_target="factorized")(model, sample)
    (loss * 1024.0).backward()  # what FP16Optimizer / AMP's GradScaler do
    got = param_grads(model)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("gate_target", ["exact", "factorized"])
def test_ignore_grad_gives_zero_gate_gradient(gate_target):
    sample = make_sample(seed=6)
    model = FakeGSGN(BRANCHES, seed=6, linear=False).double().train()
    loss, _, _ = make_criterion(gate_target=gate_target)(model, sample)
    loss *= 0  # fairseq's task.train_step(ignore_grad=True), in place
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, name


def test_backward_order_probe_and_delta_before_injection(monkeypatch):
    events = []
    state_cls = gate_module._FactorizedState
    probe_backward = gate_module._LossProbe.backward
    capture, gate_grad = state_cls.capture_delta, state_cls.gate_grad

    def spy_probe(ctx, grad_out):
        events.append("probe")
        return probe_backward(ctx, grad_out)

    def spy_capture(self, grad):
        events.append("delta")
        return capture(self, grad)

    def spy_gate_grad(self, g):
        events.append("inject")
        return gate_grad(self, g)

    monkeypatch.setattr(gate_module._LossProbe, "backward", staticmethod(spy_probe))
    monkeypatch.setattr(state_cls, "capture_delta", spy_capture)
    monkeypatch.setattr(state_cls, "gate_grad", spy_gate_grad)
    model = FakeGSGN(BRANCHES, seed=7).double().train()
    loss, _, _ = make_criterion(gate_target="factorized")(model, make_sample(seed=7))
    loss.backward()
    assert sorted(events) == ["delta", "inject", "probe"]
    assert events.index("inject") > events.index("probe")
    assert events.index("inject") > events.index("delta")


def test_injector_without_probe_is_detected():
    model = FakeGSGN(BRANCHES, seed=8).double().train()
    sample = make_sample(seed=8)
    crit = make_criterion(gate_target="factorized")
    loss, _, _ = crit(model, sample)
    # a loss built from the model output but without the criterion's probe term
    injector = gate_module.GateInjector()
    out = model(**sample["net_input"], gate_injector=injector)
    views = gate_module.GateViews(out[1]["encoder_out"])
    stats = gate_module.init_stats(views, loss.device)
    injector.state.arm(views, 10.0, False, None, stats, loss.detach().clone())
    plain, _ = crit.compute_loss(model, out, sample)
    with pytest.raises(RuntimeError, match="probe"):
        plain.backward()


# ------------------------------------------------------------------------------- exact mode


def test_exact_probes_freeze_parameters_and_run_in_eval_mode():
    model = FakeGSGN(BRANCHES, seed=9).double().train()
    crit = make_criterion(gate_target="exact")
    loss, _, _ = crit(model, make_sample(seed=9))
    assert all(p.grad is None for p in model.parameters())  # no .grad from the probes
    assert model.calls == [(None, True), ("fbank", False), ("unit", False)]
    assert model.training
    loss.backward()
    assert model.gate_f.weight.grad is not None


def test_exact_target_interval_reuses_the_last_target(monkeypatch):
    model = FakeGSGN(BRANCHES, seed=10).double().train()
    crit = make_criterion(gate_target="exact", gate_target_interval=3)
    computed = []
    orig = crit.strategy.batch_target

    def spy(*args, **kwargs):
        computed.append(crit._num_updates)
        return orig(*args, **kwargs)

    monkeypatch.setattr(crit.strategy, "batch_target", spy)
    logs = []
    for update in range(7):
        crit.set_num_updates(update)
        for _ in range(2):  # two micro-batches per update (--update-freq 2)
            logs.append(crit(model, make_sample(seed=update))[2])
    assert computed == [0, 0, 3, 3, 6, 6]
    # reused updates log the reused target and cosine
    assert logs[2]["gate_cos_sum"].item() == logs[1]["gate_cos_sum"].item()
    assert all(log["gate_cos_count"].item() == 1 for log in logs)


def test_exact_target_interval_without_update_numbers_counts_forwards(monkeypatch):
    model = FakeGSGN(BRANCHES, seed=11).double().train()
    crit = make_criterion(gate_target="exact", gate_target_interval=2)
    computed = []
    orig = crit.strategy.batch_target
    monkeypatch.setattr(crit.strategy, "batch_target", lambda *a, **k: computed.append(1) or orig(*a, **k))
    for _ in range(5):
        crit(model, make_sample())
    assert len(computed) == 3


def test_reference_regex_matching_nothing_is_an_error():
    model = FakeGSGN(BRANCHES).double().train()
    crit = make_criterion(gate_target="exact", gate_reference_params=r"^encoder\.nope\.")
    with pytest.raises(ValueError, match=r"encoder\\\\.nope"):
        crit(model, make_sample())


def test_default_reference_regex_selects_the_first_layer():
    crit = make_criterion(gate_reference_params=r"^encoder\.acoustic_layers\.0\.")
    names = [n for n, _ in crit.strategy.reference_parameters(FakeGSGN(BRANCHES))]
    assert names == ["encoder.acoustic_layers.0.weight", "encoder.acoustic_layers.0.bias"]


def test_no_fusion_utterance_gives_no_gate_loss():
    model = FakeGSGN([0, 1, 0, 1, 0]).double().train()
    for mode in ("exact", "factorized"):
        crit = make_criterion(gate_target=mode)
        loss, _, log = crit(model, make_sample())
        loss.backward()
        assert log["gate_elems"].item() == 0 and log["gate_cos_count"].item() == 0
        assert log["g_elems"].item() == 0


def test_bad_configurations_are_errors():
    with pytest.raises(ValueError, match="granularity"):
        make_criterion(gate_target="exact", gate_target_granularity="sentence")
    with pytest.raises(ValueError, match="--gate-target must be one of"):
        make_criterion(gate_target="guess")
    with pytest.raises(ValueError, match="interval"):
        make_criterion(gate_target_interval=0)
    with pytest.raises(ValueError, match="gate-reference-params"):
        make_criterion(gate_reference_params="(")


# ---------------------------------------------------------------- losses, validation, no gates


def test_exact_gate_loss_value_and_sample_size_scaling():
    model = FakeGSGN(BRANCHES, seed=12).double().train()
    sample = make_sample(seed=12)
    crit = make_criterion(gate_target="exact", gate_loss_weight=0.5)
    loss, sample_size, log = crit(model, sample)
    model.calls.clear()
    ce, _ = crit.compute_loss(model, model(**sample["net_input"]), sample)
    target, _ = measured(log)
    mse = log["gate_sq_err"].item() / log["gate_elems"].item()
    assert sample_size == sample["ntokens"]
    assert loss.item() == pytest.approx(ce.item() + 0.5 * sample_size * mse, rel=1e-6)  # float32 stats
    assert log["gate_elems"].item() == D * (7 + 7 + 6)  # valid frames of utterances 0, 2, 4


def test_validation_logs_gates_but_adds_no_gate_loss():
    model = FakeGSGN(BRANCHES, seed=13).double().eval()
    sample = make_sample(seed=13)
    for mode in ("exact", "factorized"):
        crit = make_criterion(gate_target=mode)
        with torch.no_grad():
            loss, _, log = crit(model, sample)
            ce, _ = crit.compute_loss(model, model(**sample["net_input"]), sample)
        assert loss.item() == pytest.approx(ce.item())
        assert log["gate_elems"].item() == 0 and log["gate_cos_count"].item() == 0
        assert log["g_elems"].item() == D * sum(sample["net_input"]["src_lengths"].tolist())
        assert log["branch_fusion"].item() == B


@pytest.mark.parametrize("mode", ["exact", "factorized"])
def test_model_without_gates(mode):
    model = FakeGSGN(BRANCHES, gated=False).double().train()
    sample = make_sample()
    crit = make_criterion(gate_target=mode)
    loss, _, log = crit(model, sample)
    loss.backward()
    ce, _ = crit.compute_loss(model, model(**sample["net_input"]), sample)
    assert loss.item() == pytest.approx(ce.item())
    assert not any(k.startswith(("gate_", "g_")) for k in log)
    with metrics.aggregate() as agg:
        LabelSmoothedCrossEntropyWithGateCriterion.reduce_metrics([log])
    assert "gate_loss" not in agg and "g_fbank_mean" not in agg and "grad_cos" not in agg
    assert agg["branch_fusion_pct"].avg == pytest.approx(60.0)


def test_ctc_loss_over_source_text():
    model = FakeGSGN(BRANCHES, ctc=True, linear=False).double().train()
    sample = make_sample()
    crit = make_criterion(gate_target="factorized", ctc_weight=0.3)
    loss, _, log = crit(model, sample)
    loss.backward()
    out = model(**sample["net_input"])
    enc = out[1]["encoder_out"]
    lprobs = F.log_softmax(enc["ctc_logits"][0].float(), dim=-1)
    lens = sample["source_text_lengths"]
    flat = torch.cat([sample["source_text"][i, : lens[i]] for i in range(B)])
    expected = F.ctc_loss(lprobs, flat, sample["net_input"]["src_lengths"], lens, blank=0,
                          reduction="sum", zero_infinity=True)
    assert log["ctc_loss"].item() == pytest.approx(0.3 * expected.item(), rel=1e-5)
    with metrics.aggregate() as agg:
        LabelSmoothedCrossEntropyWithGateCriterion.reduce_metrics([log])
    assert "ctc_loss" in agg

    no_ctc = FakeGSGN(BRANCHES).double().train()
    with pytest.raises(ValueError, match="no CTC head"):
        crit(no_ctc, sample)
    del sample["source_text"]
    with pytest.raises(ValueError, match="source_text"):
        crit(model, sample)


# --------------------------------------------------------------------------------- logging


def test_logging_aggregates_sums_and_counts_across_workers():
    logs = []
    for seed, mode in ((14, "exact"), (15, "factorized")):
        model = FakeGSGN(BRANCHES, seed=seed).double().train()
        loss, _, log = make_criterion(gate_target=mode)(model, make_sample(seed=seed))
        loss.backward()
        logs.append(log)
    with metrics.aggregate() as agg:
        LabelSmoothedCrossEntropyWithGateCriterion.reduce_metrics(logs)
    tot = lambda k: sum(float(log[k]) for log in logs)  # noqa: E731
    assert agg["gate_loss"].avg == pytest.approx(tot("gate_sq_err") / tot("gate_elems"), abs=1e-4)
    assert agg["grad_cos"].avg == pytest.approx(tot("gate_cos_sum") / 2, abs=1e-4)
    assert agg["conflict_pct"].avg == pytest.approx(100.0 * tot("gate_conflict") / 2)
    assert agg["g_fbank_mean"].avg == pytest.approx(tot("g_fbank_sum") / tot("g_elems"), abs=1e-4)
    assert agg["g_fbank_gt1_pct"].avg == pytest.approx(100.0 * tot("g_fbank_gt1") / tot("g_elems"), abs=1e-2)
    assert agg["g_unit_mean"].avg == pytest.approx(1.0)
    assert agg["branch_fusion_pct"].avg == pytest.approx(60.0)
    assert agg["branch_fbank_pct"].avg == pytest.approx(20.0)
    assert agg["branch_unit_pct"].avg == pytest.approx(20.0)
    assert agg["gate_target"].avg > 1.0  # conflicting views
    # summing the logging outputs first (fairseq's fast stat sync) gives the same numbers
    summed = {k: sum(log[k] for log in logs) for k in logs[0]}
    with metrics.aggregate() as agg2:
        LabelSmoothedCrossEntropyWithGateCriterion.reduce_metrics([summed])
    for key in ("gate_loss", "grad_cos", "conflict_pct", "g_fbank_mean", "g_fbank_gt1_pct", "loss"):
        assert agg2[key].avg == pytest.approx(agg[key].avg), key
    assert LabelSmoothedCrossEntropyWithGateCriterion.logging_outputs_can_be_summed()


def test_g_fbank_statistics_by_hand():
    model = FakeGSGN(BRANCHES, seed=16).double().train()
    sample = make_sample(seed=16)
    _, _, log = make_criterion(gate_target="exact")(model, sample)
    g = model(**sample["net_input"])[1]["encoder_out"]["gsgn_g_fbank"][0]
    vals = torch.cat([g[i, : sample["net_input"]["src_lengths"][i]].flatten() for i in (0, 2, 4)])
    assert log["g_elems"].item() == vals.numel()
    assert log["g_fbank_sum"].item() == pytest.approx(vals.sum().item(), rel=1e-6)
    assert log["g_fbank_gt1"].item() == (vals > 1).sum().item()


def test_config_fields_have_help_and_parse():
    parser = argparse.ArgumentParser()
    gen_parser_from_dataclass(parser, LabelSmoothedCrossEntropyWithGateCriterionConfig())
    args = parser.parse_args(
        ["--gate-target", "factorized", "--gate-target-granularity", "utterance",
         "--gate-target-interval", "4", "--gate-loss-weight", "0.5", "--ctc-weight", "0.3"]
    )
    assert args.gate_target == "factorized" and args.gate_target_interval == 4
    assert args.gate_loss_weight == 0.5 and args.ctc_weight == 0.3
    defaults = parser.parse_args([])
    # the default reading: factorized per utterance (README "Choices")
    assert defaults.gate_target == "factorized" and defaults.gate_target_granularity == "utterance"
    assert defaults.gate_loss_weight == 1.0
    assert defaults.gate_reference_params == r"^encoder\.acoustic_layers\.0\."
    for f in dataclasses.fields(LabelSmoothedCrossEntropyWithGateCriterionConfig):
        if f.name.startswith(("gate_", "ctc_")):
            assert f.metadata.get("help"), f.name


# ------------------------------------------------------------------------ the real s2t_gsgn


@pytest.fixture(scope="module")
def tiny_gsgn(tmp_path_factory):
    """(build, dataset): ``build(*extra_args) -> (task, model)`` for s2t_gsgn_tiny, dropout 0."""
    from pathlib import Path

    from fairseq import options, tasks

    import gsgn_fairseq
    from tiny_s2t_data import make_tiny_multiview_data

    data = make_tiny_multiview_data(tmp_path_factory.mktemp("tiny_s2t"), n_train=24, n_valid=2)
    user_dir = str(Path(gsgn_fairseq.__file__).parent)

    def build(*extra):
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, [
            str(data), "--user-dir", user_dir, "--task", "speech_to_text_multiview",
            "--arch", "s2t_gsgn_tiny", "--config-yaml", "config_st.yaml", "--num-units", "20",
            "--criterion", "label_smoothed_cross_entropy_with_gate", "--label-smoothing", "0.1",
            "--gate-target", "exact", "--gate-target-granularity", "batch",
            "--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0", *extra,
        ])
        task = tasks.setup_task(args)
        task.load_dataset("train")
        return args, task

    args, task = build()
    task.build_model(args)  # sets the views' alignment rule of the dataset
    return build, task.datasets["train"]


def _real_sample(dataset, indices):
    return dataset.collater([dataset[int(i)] for i in indices])


def test_real_model_injected_gradient_equals_explicit_gate_loss(tiny_gsgn):
    build, dataset = tiny_gsgn
    args, task = build("--gate-target", "factorized")
    torch.manual_seed(0)
    model = task.build_model(args).train()
    criterion = task.build_criterion(args)
    assert isinstance(criterion, LabelSmoothedCrossEntropyWithGateCriterion)
    sample = _real_sample(dataset, range(6))

    model.zero_grad()
    net_output = model(**sample["net_input"])
    loss, _ = criterion.compute_loss(model, net_output, sample)
    enc = net_output[1]["encoder_out"]
    ref_out, g = enc["gsgn_ref_out"][0], enc["gsgn_g_fbank"][0]
    delta = torch.autograd.grad(loss, ref_out, retain_graph=True)[0]
    mask = ~enc["gsgn_padding_mask"][0] & enc["gsgn_branch"][0].eq(2).unsqueeze(1)
    target, cos = gate_target_from_inner_products(
        *factorized_inner_products(delta, enc["gsgn_x_fbank"][0], enc["gsgn_x_unit"][0], mask)
    )
    m = mask.unsqueeze(-1).expand_as(g)
    mse = F.mse_loss(g[m], target.detach().float().expand_as(g)[m])
    (loss + sample["ntokens"] * mse).backward()
    expected = param_grads(model)

    model.zero_grad()
    loss, _, log = criterion(model, sample)
    loss.backward()
    got = param_grads(model)
    assert log["gate_cos_sum"].item() == pytest.approx(cos.item(), abs=1e-5)
    for name in expected:
        scale = expected[name].abs().max().item() + 1e-12
        torch.testing.assert_close(got[name] / scale, expected[name] / scale, rtol=0, atol=1e-4, msg=name)


def test_real_model_exact_and_factorized_cosines_correlate(tiny_gsgn):
    """Both estimate the same conflict: their cosines co-vary over random batches and inits.

    The correlation is modest at initialization: the exact single-view gradients share the
    positional embeddings (and LayerNorm/bias paths) that both passes feed layer 0, which
    the factorized views leave out.
    """
    build, dataset = tiny_gsgn
    args, task = build()
    exact = make_criterion(gate_target="exact", gate_reference_params=r"^encoder\.acoustic_layers\.0\.")
    factorized = make_criterion(gate_target="factorized")
    exact.task = factorized.task = task
    exact.padding_idx = factorized.padding_idx = task.target_dictionary.pad()
    rng = torch.Generator().manual_seed(0)
    cos_exact, cos_fact = [], []
    for seed in range(12):
        torch.manual_seed(seed)
        model = task.build_model(args).train()
        sample = _real_sample(dataset, torch.randperm(len(dataset), generator=rng)[:4])
        _, _, log = exact(model, sample)
        cos_exact.append(log["gate_cos_sum"].item())
        loss, _, log = factorized(model, sample)
        loss.backward()
        cos_fact.append(log["gate_cos_sum"].item())
    pearson = torch.corrcoef(torch.tensor([cos_exact, cos_fact]))[0, 1].item()
    assert pearson > 0, (cos_exact, cos_fact)


@pytest.mark.parametrize("fusion", ["fbank", "concat"])
def test_real_model_without_gates(tiny_gsgn, fusion):
    build, dataset = tiny_gsgn
    args, task = build("--fusion", fusion, "--gate-target", "factorized")
    model = task.build_model(args).train()
    criterion = task.build_criterion(args)
    sample = _real_sample(dataset, range(4))
    loss, _, log = criterion(model, sample)
    loss.backward()
    assert not any(k.startswith(("gate_", "g_")) for k in log)


@pytest.mark.parametrize("mode", ["exact", "factorized"])
@pytest.mark.parametrize("precision", ["fp16", "bf16", "autocast"])
def test_real_model_low_precision(tiny_gsgn, mode, precision):
    """--fp16/--bf16 (half model, scaled loss) and --amp (autocast): same target, finite grads."""
    build, dataset = tiny_gsgn
    args, task = build("--gate-target", mode)
    sample = _real_sample(dataset, range(4))

    def run(dtype, autocast):
        torch.manual_seed(0)
        model = task.build_model(args).train().to(dtype)
        criterion = task.build_criterion(args)
        net_input = dict(sample["net_input"], src_tokens=sample["net_input"]["src_tokens"].to(dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _, log = criterion(model, dict(sample, net_input=net_input))
        (loss * 128.0).backward()  # a loss scale
        return model, log

    _, ref = run(torch.float32, False)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "autocast": torch.float32}[precision]
    model, log = run(dtype, precision == "autocast")
    assert log["gate_cos_sum"].item() == pytest.approx(ref["gate_cos_sum"].item(), abs=0.02)
    assert log["gate_target_sum"].item() == pytest.approx(ref["gate_target_sum"].item(), abs=0.02)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ------------------------------------------------------------ per-utterance exact targets


@pytest.mark.parametrize("linear", [True, False])
def test_utterance_exact_targets_equal_exact_targets_of_single_utterances(linear):
    sample = make_sample(seed=17)
    model = FakeGSGN(BRANCHES, seed=17, linear=linear).double().train()
    crit = make_criterion(gate_target="exact", gate_target_granularity="utterance",
                          gate_reference_params=r"^encoder\.acoustic_layers\.0\.")
    loss, _, log = crit(model, sample)
    assert log["gate_cos_count"].item() == 3  # the three fusion utterances
    target, cos, counted = crit.strategy._cached
    assert counted.tolist() == [True, False, True, False, True]
    assert target[1].item() == target[3].item() == 1.0
    for i in (0, 2, 4):  # the same target as a batch of that utterance alone
        only_i = [2 if j == i else 0 for j in range(B)]
        single = FakeGSGN(only_i, seed=17, linear=linear).double().train()
        _, _, log_i = make_criterion(gate_target="exact", gate_reference_params=r"^encoder\.acoustic_layers\.0\.")(
            single, sample)
        t_i, c_i = measured(log_i)
        assert target[i].item() == pytest.approx(t_i, abs=1e-6)  # logged stats are float32
        assert cos[i].item() == pytest.approx(c_i, abs=1e-6)
    loss.backward()


def test_utterance_exact_equals_utterance_factorized_on_linear_residual_network():
    sample = make_sample(seed=18)
    model = FakeGSGN(BRANCHES, seed=18).double().train()
    ref = r"^encoder\.acoustic_layers\.0\.weight$"
    _, _, log_exact = make_criterion(gate_target="exact", gate_target_granularity="utterance",
                                     gate_reference_params=ref)(model, sample)
    loss, _, log_fact = make_criterion(gate_target="factorized", gate_target_granularity="utterance",
                                       gate_reference_params=ref)(model, sample)
    loss.backward()
    for key in ("gate_cos_sum", "gate_target_sum", "gate_conflict", "gate_cos_count"):
        assert log_exact[key].item() == pytest.approx(log_fact[key].item(), abs=1e-6), key
    assert log_exact["gate_conflict"].item() > 0


def test_utterance_exact_target_interval_applies_on_due_updates_only():
    model = FakeGSGN(BRANCHES, seed=19).double().train()
    crit = make_criterion(gate_target="exact", gate_target_granularity="utterance", gate_target_interval=2)
    counts = []
    for update in range(4):
        crit.set_num_updates(update)
        loss, _, log = crit(model, make_sample(seed=update))
        counts.append((log["gate_cos_count"].item(), log["gate_elems"].item() > 0))
    assert counts == [(3, True), (0, False), (3, True), (0, False)]


# ---------------------------------------------- the gate loss trains, and what it reaches


def _grads(model, crit, sample):
    model.zero_grad()
    loss, _, _ = crit(model, sample)
    loss.backward()
    return param_grads(model)


@pytest.mark.parametrize("mode,granularity", [("exact", "batch"), ("exact", "utterance"),
                                              ("factorized", "batch"), ("factorized", "utterance")])
def test_gate_loss_moves_the_gate_parameters(mode, granularity):
    """The gate parameters' gradient is CE's plus exactly d(w N MSE(g, target))/dW: a gate
    loss that was detached (or dropped) fails this."""
    sample = make_sample(seed=20)
    model = FakeGSGN(BRANCHES, seed=20, linear=False).double().train()
    kw = dict(gate_target=mode, gate_target_granularity=granularity, gate_reference_params=r"^encoder\.acoustic_layers\.0\.")
    with_gate = _grads(model, make_criterion(gate_loss_weight=1.0, **kw), sample)
    crit = make_criterion(gate_loss_weight=0.0, **kw)
    without = _grads(model, crit, sample)
    # the explicit gradient of the gate term, with the target the criterion used
    crit1 = make_criterion(gate_loss_weight=1.0, **kw)
    loss, _, log = crit1(model, sample)
    loss.backward()
    n = log["gate_cos_count"].item()
    assert n > 0 and log["gate_sq_err"].item() > 0
    delta = {k: with_gate[k] - without[k] for k in with_gate}
    for name in ("gate_f.weight", "gate_u.weight", "gate_u.bias"):
        assert delta[name].abs().max().item() > 1e-8, name


def test_gate_loss_gradient_reaches_the_views_of_the_real_model(tiny_gsgn):
    """Eq. 12 adds L_gate to the loss: its gradient reaches the gate and, through g_fbank's
    inputs, both front ends (FBank subsampler, unit embedding), not the decoder."""
    build, dataset = tiny_gsgn
    sample = _real_sample(dataset, range(6))
    grads = {}
    for weight in (0.0, 1.0):
        args, task = build("--gate-target", "exact", "--gate-loss-weight", str(weight))
        torch.manual_seed(0)
        model = task.build_model(args).train()
        grads[weight] = _grads(model, task.build_criterion(args), sample)
    diff = {k: (grads[1.0][k] - grads[0.0][k]).abs().max().item() for k in grads[1.0]}
    for prefix in ("encoder.frontend.fusion.gate.fbank_gate.", "encoder.frontend.subsample.", "encoder.frontend.unit_frontend."):
        assert max(v for k, v in diff.items() if k.startswith(prefix)) > 1e-7, prefix
    assert max(v for k, v in diff.items() if k.startswith("decoder.")) == 0.0


def test_real_model_utterance_exact_targets(tiny_gsgn):
    """Per-utterance targets from the reference layer's linear maps (fairseq attention made to
    run its projection modules) equal batch targets of each utterance alone over the same
    parameters."""
    build, dataset = tiny_gsgn
    ref = r"^encoder\.acoustic_layers\.0\.(self_attn\.(q|k|v|out)_proj|fc1|fc2)\."
    args, task = build("--gate-target", "exact", "--gate-target-granularity", "utterance",
                       "--gate-reference-params", ref)
    torch.manual_seed(0)
    model = task.build_model(args).train()
    crit = task.build_criterion(args)
    sample = _real_sample(dataset, range(5))
    loss, _, log = crit(model, sample)
    loss.backward()
    target, cos, counted = crit.strategy._cached
    assert counted.all() and log["gate_cos_count"].item() == 5
    batch_args, _ = build("--gate-target", "exact", "--gate-reference-params", ref)
    single = task.build_criterion(batch_args)
    for i in range(5):
        _, _, log_i = single(model, _real_sample(dataset, [int(sample["id"][i])]))
        assert cos[i].item() == pytest.approx(log_i["gate_cos_sum"].item(), abs=1e-4)
        assert target[i].item() == pytest.approx(log_i["gate_target_sum"].item(), abs=1e-4)
