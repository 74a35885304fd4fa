"""GSGN over FBank and several S-feature views (``--unit-views``): the N-view gate target
(``1 - sum_{k: cos_k < 0} |b_k| cos_k / |a|``) against a by-hand computation, the N-view
multi-stage dropout draw, and the model with two unit sets on tiny data."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from fairseq import options, tasks
from fairseq.data import Dictionary
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel

import gsgn_fairseq  # noqa: F401  (registers the plugin)
from gsgn_fairseq.criterions.label_smoothed_cross_entropy_with_gate import LabelSmoothedCrossEntropyWithGateCriterion
from gsgn_fairseq.modules.branch_sampler import (
    FBANK,
    FUSION,
    UNIT,
    BranchSampler,
    branches_from_uniform,
    parse_msd_schedule,
    sample_branches,
    unit_branch,
)
from gsgn_fairseq.modules.gate_target import (
    factorized_gradients,
    gate_target,
    views_gate_target_from_inner_products,
)
from tiny_s2t_data import make_tiny_multiview_data

D, V, T = 6, 9, 7
NAMES = ("hubert", "wavlm")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ the target, free function


def deconflict(a, b):
    """Eq. 8: ``b`` without its component that conflicts with ``a``."""
    cos = torch.dot(a, b) / (a.norm() * b.norm())
    return b - (b.norm() * cos / a.norm()) * a


def by_hand(a, bs):
    """The g_fbank target with every g_k = 1, by the derivation: 1 - sum over conflicting k."""
    target = 1.0
    for b in bs:
        cos = float(torch.dot(a, b) / (a.norm() * b.norm()))
        if cos < 0:
            target -= float(b.norm()) * cos / float(a.norm())
    return target


def test_n_view_target_by_hand_numbers():
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b1 = torch.tensor([-1.0, 1.0], dtype=torch.float64)  # cos -1/sqrt(2), |b1| sqrt(2): removes 1
    b2 = torch.tensor([-2.0, 0.0], dtype=torch.float64)  # cos -1, |b2| 2: removes 2
    b3 = torch.tensor([0.5, 1.0], dtype=torch.float64)  # no conflict: nothing
    ab = torch.stack([torch.dot(a, b) for b in (b1, b2, b3)])
    bb = torch.stack([torch.dot(b, b) for b in (b1, b2, b3)])
    target, cos = views_gate_target_from_inner_products(ab, torch.dot(a, a), bb)
    assert target.item() == pytest.approx(4.0)
    assert cos.tolist() == pytest.approx([-1 / math.sqrt(2), -1.0, 0.5 / math.sqrt(1.25)])
    # one view: Eq. 11 itself
    for b in (b1, b2, b3):
        one, _ = views_gate_target_from_inner_products(torch.dot(a, b)[None], torch.dot(a, a), torch.dot(b, b)[None])
        assert one.item() == pytest.approx(gate_target(a, b)[0].item())


def test_n_view_target_realises_every_views_deconflict():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = torch.randn(5, generator=g, dtype=torch.float64)
        bs = [torch.randn(5, generator=g, dtype=torch.float64) for _ in range(3)]
        ab = torch.stack([torch.dot(a, b) for b in bs])
        bb = torch.stack([torch.dot(b, b) for b in bs])
        target, cos = views_gate_target_from_inner_products(ab, torch.dot(a, a), bb)
        corrected = a + sum(deconflict(a, b) if torch.dot(a, b) < 0 else b for b in bs)
        torch.testing.assert_close(target * a + sum(bs), corrected)
        assert target.item() == pytest.approx(by_hand(a, bs))


def test_a_conflicting_view_raises_the_target_an_agreeing_one_leaves_it():
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    agree = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    conflict = torch.tensor([-0.5, 0.0, 1.0], dtype=torch.float64)

    def target(*bs):
        ab = torch.stack([torch.dot(a, b) for b in bs])
        bb = torch.stack([torch.dot(b, b) for b in bs])
        return views_gate_target_from_inner_products(ab, torch.dot(a, a), bb)[0].item()

    assert target(agree) == 1.0
    assert target(agree, agree) == 1.0
    assert target(agree, conflict) == pytest.approx(1.5) == pytest.approx(target(conflict))
    assert target(conflict, agree) == pytest.approx(1.5)
    assert target(conflict, conflict) == pytest.approx(2.0)


def test_factorized_gradients_of_several_views():
    g = torch.Generator().manual_seed(1)
    delta, x_f, x_1, x_2 = (torch.randn(2, 4, 3, generator=g, dtype=torch.float64) for _ in range(4))
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    a, b1, b2 = factorized_gradients(delta, x_f, [x_1, x_2], mask)
    m = mask.unsqueeze(-1).double()
    torch.testing.assert_close(a, torch.einsum("bto,bti->oi", delta * m, x_f * m))
    torch.testing.assert_close(b2, torch.einsum("bto,bti->oi", delta * m, x_2 * m))
    assert torch.equal(factorized_gradients(delta, x_f, x_1, mask)[1], b1)


# ------------------------------------------------------------- the criterion on a linear network


class FakeViews(BaseFairseqModel):
    """docs/INTERFACES.md on a linear residual network (Eq. 5) with FBank and two S-feature
    views given as inputs; the loss is linear in the last layer, so the factorized target is
    exact and both equal the by-hand one."""

    def __init__(self, branches, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.branches = torch.as_tensor(branches)
        self.gate = nn.ModuleList([nn.Linear(D, D, bias=False) for _ in range(3)])
        self.encoder = nn.Module()
        self.encoder.time_first_layers = False
        self.encoder.frontend = SimpleNamespace(
            unit_view_names=NAMES, branch_names=("fbank", "unit:hubert", "fusion", "unit:wavlm"))
        self.encoder.acoustic_layers = nn.ModuleList([nn.Linear(D, D) for _ in range(3)])
        for layer in self.encoder.acoustic_layers:
            nn.init.normal_(layer.weight, std=0.3)
        self.out_proj = nn.Linear(D, 2 * V)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, src_units=None, src_units_lengths=None,
                force_branch=None, gate_injector=None, src_units_more=None, src_units_more_lengths=None):
        x_f, xs = src_tokens, [src_units, src_units_more["wavlm"]]
        Bn, Tn, _ = x_f.shape
        padding = torch.arange(Tn).unsqueeze(0) >= src_lengths.unsqueeze(1)
        ids = {"fbank": FBANK, "unit:hubert": unit_branch(0), "fusion": FUSION, "unit:wavlm": unit_branch(1)}
        if force_branch is not None:
            branch = torch.full((Bn,), ids[force_branch], dtype=torch.long)
        else:
            branch = self.branches[:Bn]
        g_f = 2 * torch.sigmoid(self.gate[0](x_f) + self.gate[1](xs[0]) + self.gate[2](xs[1]))
        if gate_injector is not None:
            g_f = gate_injector(g_f)
        g_units = [torch.ones_like(x) for x in xs]
        x_fusion = g_f * x_f + g_units[0] * xs[0] + g_units[1] * xs[1]
        b = branch.view(-1, 1, 1)
        x = torch.where(b == FBANK, x_f, torch.where(b == unit_branch(0), xs[0],
                                                     torch.where(b == unit_branch(1), xs[1], x_fusion)))
        h = x.masked_fill(padding.unsqueeze(-1), 0.0)
        ref_out = None
        for i, layer in enumerate(self.encoder.acoustic_layers):
            h = layer(h) + h
            if i == 0:
                ref_out = h
        pooled = (h * (~padding).unsqueeze(-1).to(h.dtype)).sum(1)
        enc = {
            "encoder_out": [h.transpose(0, 1)], "encoder_padding_mask": [padding], "gsgn_branch": [branch],
            "gsgn_x_fbank": [x_f], "gsgn_x_unit": [xs[0]], "gsgn_x_units": xs, "gsgn_g_fbank": [g_f],
            "gsgn_g_unit": [g_units[0]], "gsgn_g_units": g_units, "gsgn_padding_mask": [padding],
            "gsgn_ref_out": [ref_out],
        }
        return self.out_proj(pooled).view(Bn, 2, V), {"encoder_out": enc}

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return net_output[0]  # linear "log-probs"


def make_sample(coefs, seed=0, lengths=(7, 5, 7, 3, 6)):
    """FBank view x_f; view k = coefs[k] * x_f + 0.3 noise (negative: a conflicting view)."""
    g = torch.Generator().manual_seed(seed)
    Bn = len(lengths)
    x_f = torch.randn(Bn, T, D, generator=g, dtype=torch.float64)
    xs = [c * x_f + 0.3 * torch.randn(Bn, T, D, generator=g, dtype=torch.float64) for c in coefs]
    target = torch.randint(4, V, (Bn, 2), generator=g)
    return {
        "id": torch.arange(Bn),
        "net_input": {
            "src_tokens": x_f, "src_lengths": torch.tensor(lengths), "prev_output_tokens": target.clone(),
            "src_units": xs[0], "src_units_lengths": torch.tensor(lengths),
            "src_units_more": {"wavlm": xs[1]}, "src_units_more_lengths": {"wavlm": torch.tensor(lengths)},
        },
        "target": target, "target_lengths": torch.full((Bn,), 2), "ntokens": 2 * Bn,
    }


def make_criterion(**kw):
    d = Dictionary()
    for i in range(V - 4):
        d.add_symbol(f"w{i}")
    kwargs = dict(sentence_avg=False, label_smoothing=0.1, gate_target="exact", gate_target_granularity="batch",
                  gate_reference_params=r"^encoder\.acoustic_layers\.0\.weight$")
    kwargs.update(kw)
    return LabelSmoothedCrossEntropyWithGateCriterion(SimpleNamespace(target_dictionary=d, source_dictionary=d), **kwargs)


def hand_gradients(model, sample, index):
    """a and every b_k of the utterances ``index``: autograd of each single-view loss w.r.t. W_0."""
    crit = make_criterion()
    sub = {**sample, "net_input": {k: (v[index] if torch.is_tensor(v) else {n: t[index] for n, t in v.items()})
                                   for k, v in sample["net_input"].items()},
           "target": sample["target"][index]}
    w = model.encoder.acoustic_layers[0].weight
    grads = []
    for branch in ("fbank", "unit:hubert", "unit:wavlm"):
        out = model(**sub["net_input"], force_branch=branch)
        loss, _ = crit.compute_loss(model, out, sub)
        grads.append(torch.autograd.grad(loss, w)[0].flatten())
    return grads[0], grads[1:]


BRANCHES = [2, 0, 2, 1, 2]
FUSION_UTTS = [0, 2, 4]


def run(criterion, model, sample):
    loss, _, log = criterion(model, sample)
    loss.backward()  # the factorized target is computed in the backward
    return log


@pytest.mark.parametrize("reading", ["exact", "factorized"])
@pytest.mark.parametrize("coefs", [(-0.8, 0.6), (0.6, -0.8), (-0.8, -0.5), (0.7, 0.5)])
def test_batch_target_equals_the_by_hand_one_on_a_linear_network(reading, coefs):
    model = FakeViews(BRANCHES, seed=1).double().train()
    sample = make_sample(coefs, seed=1)
    a, bs = hand_gradients(model, sample, torch.tensor(FUSION_UTTS))
    log = run(make_criterion(gate_target=reading), model, sample)
    assert log["gate_target_count"].item() == 1
    assert log["gate_target_sum"].item() == pytest.approx(by_hand(a, bs), rel=1e-6)
    for name, b, coef in zip(NAMES, bs, coefs):
        cos = float(torch.dot(a, b) / (a.norm() * b.norm()))
        assert log[f"gate_cos_sum_{name}"].item() == pytest.approx(cos, abs=1e-6)
        assert log[f"gate_conflict_{name}"].item() == (cos < 0) == (coef < 0)
    assert log["gate_conflict_any"].item() == any(c < 0 for c in coefs)
    assert "gate_cos_sum" not in log  # the two-view keys belong to one view
    if all(c > 0 for c in coefs):
        assert log["gate_target_sum"].item() == 1.0


@pytest.mark.parametrize("reading", ["exact", "factorized"])
@pytest.mark.parametrize("coefs", [(-0.6, 0.4), (0.4, -0.6), (-0.6, -0.5)])
def test_utterance_targets_equal_the_by_hand_ones(reading, coefs):
    model = FakeViews(BRANCHES, seed=2).double().train()
    sample = make_sample(coefs, seed=2)
    log = run(make_criterion(gate_target=reading, gate_target_granularity="utterance"), model, sample)
    expected = [by_hand(*hand_gradients(model, sample, torch.tensor([i]))) for i in FUSION_UTTS]
    assert log["gate_target_count"].item() == len(FUSION_UTTS)
    assert log["gate_target_sum"].item() == pytest.approx(sum(expected), rel=1e-6)
    for name, coef in zip(NAMES, coefs):
        assert log[f"gate_conflict_{name}"].item() == (3 if coef < 0 else 0)
    assert sum(expected) > len(expected)  # the conflicting view raised them


def test_per_view_metrics_and_branch_shares_are_reduced_by_name():
    model = FakeViews(BRANCHES, seed=3).double().train()
    log = run(make_criterion(), model, make_sample((-0.8, 0.6), seed=3))
    with metrics.aggregate() as agg:
        LabelSmoothedCrossEntropyWithGateCriterion.reduce_metrics([log])
    values = agg.get_smoothed_values()
    assert values["conflict_pct_hubert"] == 100 and values["conflict_pct_wavlm"] == 0
    assert values["conflict_pct"] == 100
    assert values["grad_cos_hubert"] < 0 < values["grad_cos_wavlm"]
    assert "grad_cos" not in values and "branch_unit_pct" not in values
    assert values["branch_unit_hubert_pct"] == 20 and values["branch_unit_wavlm_pct"] == 0
    assert values["branch_fusion_pct"] == 60 and values["branch_fbank_pct"] == 20


# ------------------------------------------------------------------------- multi-stage dropout


def test_one_view_is_eq13_draw_for_draw():
    p = torch.rand(10_000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for df, du in ((0.3, 0.0), (0.5, 0.3), (0.2, 0.45), (0.0, 1.0)):
        eq13 = torch.where(p < df, FBANK, torch.where(p < df + du, UNIT, FUSION))
        assert torch.equal(branches_from_uniform(p, df, du), eq13)
        assert torch.equal(branches_from_uniform(p, df, du, n_views=1), eq13)
        assert torch.equal(branches_from_uniform(p, df, [du], n_views=1), eq13)


def test_n_views_split_the_s_feature_share():
    p = torch.tensor([0.0, 0.29, 0.3, 0.39, 0.4, 0.49, 0.5, 0.99], dtype=torch.float64)
    got = branches_from_uniform(p, 0.3, 0.2, n_views=2).tolist()
    assert got == [FBANK, FBANK, unit_branch(0), unit_branch(0), unit_branch(1), unit_branch(1), FUSION, FUSION]
    assert unit_branch(0) == UNIT and unit_branch(1) == 3 and unit_branch(2) == 4
    # shares per view
    got = branches_from_uniform(p, 0.3, [0.05, 0.15], n_views=2).tolist()
    assert got == [FBANK, FBANK, unit_branch(0), unit_branch(1), unit_branch(1), unit_branch(1), FUSION, FUSION]
    counts = torch.bincount(sample_branches(60_000, 0.2, 0.6, torch.Generator().manual_seed(5), n_views=3),
                            minlength=5).double() / 60_000
    assert counts.tolist() == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.2], abs=0.01)


def test_schedule_with_a_share_per_view():
    stages = parse_msd_schedule("1:0.3,0.1,0.2;5:0.2,0.0,0.0")
    assert stages[0].delta_unit == pytest.approx(0.3) and stages[0].view_deltas == (0.1, 0.2)
    BranchSampler("1:0.3,0.1,0.2", n_views=2)
    with pytest.raises(ValueError, match="2 S-feature shares for 3 views"):
        BranchSampler("1:0.3,0.1,0.2", n_views=3)
    with pytest.raises(ValueError, match="must be <= 1"):
        parse_msd_schedule("1:0.5,0.3,0.3")


# ------------------------------------------------------------------- the model, two unit sets

K, K2 = 20, 12


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_multiview_data(tmp_path_factory.mktemp("tiny"), n_train=8, n_valid=2, num_units=K,
                                    unit_sets={"wavlm": K2})


def build(data_dir, *extra, views="units,wavlm", num_units=f"{K},{K2}"):
    parser = options.get_training_parser()
    argv = [str(data_dir), "--task", "speech_to_text_multiview", "--arch", "s2t_gsgn_tiny", "--config-yaml",
            "config_st.yaml", "--num-units", num_units, "--unit-views", views, "--criterion",
            "label_smoothed_cross_entropy", "--seed", "1", *extra]
    args = options.parse_args_and_arch(parser, argv)
    task = tasks.setup_task(args)
    task.load_dataset("train")
    torch.manual_seed(0)
    return task.build_model(args), task


def batch(task, indices=(0, 1, 2, 3)):
    ds = task.datasets["train"]
    return ds.collater([ds[i] for i in indices])


def encoder_out(model, sample, **kw):
    net = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
    return model.encoder(**net, return_views=True, **kw)


def test_two_unit_sets_are_read_and_fused(data_dir):
    model, task = build(data_dir, "--fusion", "gsgn")
    sample = batch(task)
    net = sample["net_input"]
    assert set(net["src_units_more"]) == {"wavlm"} and int(net["src_units_more"]["wavlm"].max()) <= K2  # K2 pads
    frontend = model.encoder.frontend
    assert frontend.unit_view_names == ("units", "wavlm")
    assert frontend.unit_frontend.embed_units.num_embeddings == K + 1
    assert frontend.more_unit_frontends["wavlm"].embed_units.num_embeddings == K2 + 1
    assert frontend.fusion.gate.fbank_gate.weight_views[0].shape == (128, 128)
    model.eval()
    with torch.no_grad():
        enc = encoder_out(model, sample)
        x_units = enc["gsgn_x_units"]
        assert len(x_units) == 2 and torch.equal(x_units[0], enc["gsgn_x_unit"][0])
        g, pad = enc["gsgn_g_fbank"][0], enc["gsgn_padding_mask"][0].unsqueeze(-1)
        fused = (g * enc["gsgn_x_fbank"][0] + x_units[0] + x_units[1]).masked_fill(pad, 0.0)
        by_branch = {b: encoder_out(model, sample, force_branch=b)["encoder_out"][0]
                     for b in ("fbank", "unit:units", "unit:wavlm", "fusion")}
        # the wavlm branch reads the wavlm units only
        other = dict(net, src_units=(net["src_units"] + 3) % K, src_tokens=torch.randn_like(net["src_tokens"]))
        alone = encoder_out(model, {"net_input": other}, force_branch="unit:wavlm")["encoder_out"][0]
    torch.testing.assert_close(frontend.fusion(enc["gsgn_x_fbank"][0], x_units, pad.squeeze(-1))[0], fused)
    assert not torch.allclose(by_branch["unit:units"], by_branch["unit:wavlm"])
    torch.testing.assert_close(alone, by_branch["unit:wavlm"])
    with pytest.raises(ValueError, match=r"one of \['fusion', 'fbank', 'unit:units', 'unit:wavlm'\], got 'unit'"):
        encoder_out(model, sample, force_branch="unit")


def test_inference_branches_and_dropout_over_two_sets(data_dir):
    model, task = build(data_dir, "--fusion", "gsgn", "--inference-branch", "unit:wavlm")
    model.eval()
    assert encoder_out(model, batch(task))["gsgn_branch"][0].tolist() == [unit_branch(1)] * 4
    with pytest.raises(ValueError, match=r"unit:units"):
        build(data_dir, "--fusion", "gsgn", "--inference-branch", "unit")
    model, task = build(data_dir, "--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "1:0.25,0.5")
    model.train()
    seen = set(encoder_out(model, batch(task, range(8)))["gsgn_branch"][0].tolist())
    for epoch in range(2, 6):
        task.begin_epoch(epoch, model)
        seen |= set(encoder_out(model, batch(task, range(8)))["gsgn_branch"][0].tolist())
    assert seen == {FBANK, unit_branch(0), FUSION, unit_branch(1)}
    with pytest.raises(ValueError, match="reads 1 S-feature view"):
        build(data_dir, "--fusion", "unit")


def test_one_named_set_alone_and_single_set_naming(data_dir):
    model, task = build(data_dir, "--fusion", "gsgn", "--inference-branch", "unit", views="wavlm", num_units=str(K2))
    model.eval()
    assert "src_units_more" not in batch(task)["net_input"]
    assert encoder_out(model, batch(task))["gsgn_branch"][0].tolist() == [UNIT] * 4
    assert model.encoder.frontend.branch_names == ("fbank", "unit", "fusion")


# ---------------------------------------------------------------------- data of two unit sets


def _rewrite_column(data_dir, column, fn):
    from gsgn_fairseq.data.manifest import read_tsv, write_tsv

    for split in ("train", "valid"):
        path = data_dir / f"{split}.tsv"
        with open(path, encoding="utf-8") as f:
            columns = f.readline().rstrip("\n").split("\t")
        rows = read_tsv(path)
        for r in rows:
            fn(r)
        write_tsv(path, rows, [c for c in columns if c in rows[0]])


@pytest.fixture
def own_data(tmp_path):
    return make_tiny_multiview_data(tmp_path / "tiny", n_train=8, n_valid=2, num_units=K, unit_sets={"wavlm": K2})


def test_a_missing_second_set_names_it(own_data):
    _rewrite_column(own_data, "units_wavlm", lambda r: r.pop("units_wavlm"))
    with pytest.raises(Exception, match="no 'units_wavlm' column"):
        build(own_data, "--fusion", "gsgn")
    build(own_data, "--fusion", "gsgn", views="units", num_units=str(K))  # the first set alone still loads


def test_swapped_sets_are_refused_naming_them(own_data):
    from gsgn_fairseq.data.mustc import DataError

    rows_before = (own_data / "train.tsv").read_text()
    _rewrite_column(own_data, "units", lambda r: r.update(units=r["units_wavlm"], units_wavlm=r["units"]))
    with pytest.raises(DataError, match=r"column units \(unit set units\) reads .*units_wavlm.zip, whose record names "
                                        r"the unit set wavlm"):
        build(own_data, "--fusion", "gsgn")
    (own_data / "train.tsv").write_text(rows_before)
    _rewrite_column(own_data, "units_wavlm", lambda r: r.update(units_wavlm=r["units"]))
    with pytest.raises(DataError, match="columns units and units_wavlm both read"):
        build(own_data, "--fusion", "gsgn")


def test_the_k_of_each_set_is_checked(own_data):
    from gsgn_fairseq.data.mustc import DataError

    with pytest.raises(DataError, match=rf"units of unit set wavlm have K = {K2} clusters but --num-units is {K}; "
                                        rf"pass --num-units {K},{K2}"):
        build(own_data, "--fusion", "gsgn", num_units=str(K))
    with pytest.raises(ValueError, match="3 values for the 2 unit views"):
        build(own_data, "--fusion", "gsgn", num_units=f"{K},{K2},{K}")


@pytest.mark.parametrize("reading", ["exact", "factorized"])
def test_three_sets_train_a_step_of_the_real_model(tmp_path, reading):
    data = make_tiny_multiview_data(tmp_path / "tiny", n_train=8, n_valid=2, num_units=K,
                                    unit_sets={"wavlm": K2, "w2v": 16})
    model, task = build(data, "--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "1:0.1,0.1,0.1,0.3",
                        views="units,wavlm,w2v", num_units=f"{K},{K2},16")
    assert model.encoder.frontend.available_branches == (FBANK, UNIT, FUSION, 3, 4)
    criterion = LabelSmoothedCrossEntropyWithGateCriterion(
        task, sentence_avg=False, label_smoothing=0.1, gate_target=reading, gate_target_granularity="utterance")
    model.train()
    sample = batch(task, range(8))
    loss, _, log = criterion(model, sample)
    loss.backward()
    assert {f"gate_cos_count_{n}" for n in ("units", "wavlm", "w2v")} <= set(log)
    assert {f"branch_unit_{n}" for n in ("units", "wavlm", "w2v")} <= set(log)
    n_fusion = int(log["branch_fusion"])
    assert n_fusion > 0 and log["gate_target_count"].item() == n_fusion
    for n in ("units", "wavlm", "w2v"):
        assert log[f"gate_cos_count_{n}"].item() == n_fusion
    grads = model.encoder.frontend.fusion.gate.fbank_gate.weight_views
    assert len(grads) == 2 and all(w.grad is not None and w.grad.abs().sum() > 0 for w in grads)
    assert model.encoder.frontend.more_unit_frontends["w2v"].embed_units.weight.grad is not None
