"""The s2t_gsgn model: every fusion, interfaces (docs/INTERFACES.md), masks, branches, CTC,
pretrained initialisation."""
import argparse
import copy

import pytest
import torch
from fairseq import options, tasks
from fairseq.criterions import build_criterion

import gsgn_fairseq  # noqa: F401  (registers the plugin)
from gsgn_fairseq.models.pretrained import load_pretrained_component
from gsgn_fairseq.models.s2t_gsgn import FUSIONS, TWO_VIEW_FUSIONS, S2TGSGNEncoder
from gsgn_fairseq.modules.branch_sampler import FBANK, FUSION, UNIT
from tiny_s2t_data import make_tiny_multiview_data

K = 20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_multiview_data(tmp_path_factory.mktemp("tiny"), n_train=8, n_valid=2, num_units=K)


def _args(data_dir, *extra, arch="s2t_gsgn_tiny"):
    parser = options.get_training_parser()
    argv = [str(data_dir), "--task", "speech_to_text_multiview", "--arch", arch, "--config-yaml", "config_st.yaml",
            "--num-units", str(K), "--criterion", "label_smoothed_cross_entropy", "--seed", "1", *extra]
    return options.parse_args_and_arch(parser, argv)


NOISE = ("noise-sum", "noise-replace")


def build(data_dir, *extra):
    if any(f in extra for f in NOISE) and not any(str(e).startswith("--noise-range") for e in extra):
        extra = (*extra, "--noise-range=-0.5,0.5")  # "=": the value starts with a minus
    args = _args(data_dir, *extra)
    task = tasks.setup_task(args)
    task.load_dataset("train")
    torch.manual_seed(0)
    model = task.build_model(args)
    return model, task, args


def batch(task, indices=(0, 1, 2, 3)):
    ds = task.datasets["train"]
    return ds.collater([ds[i] for i in indices])


def _encoder_out(model, sample, **kw):
    net_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
    return model.encoder(**net_input, return_views=True, **kw)


MODES = [(f, False) for f in FUSIONS] + [(f, True) for f in TWO_VIEW_FUSIONS]


@pytest.mark.parametrize("fusion,msd", MODES, ids=[f"{f}{'+msd' if m else ''}" for f, m in MODES])
def test_every_fusion_builds_and_trains(data_dir, fusion, msd):
    model, task, _ = build(data_dir, "--fusion", fusion, *(["--multi-stage-dropout"] if msd else []))
    model.train()
    sample = batch(task)
    logits, extra = model(**sample["net_input"])
    assert logits.shape[:2] == sample["net_input"]["prev_output_tokens"].shape
    assert logits.size(-1) == len(task.target_dictionary)
    logits.float().logsumexp(-1).sum().backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trainable and not missing, missing  # every parameter is in the graph (DDP-safe)
    enc = extra["encoder_out"]
    gated = fusion in ("gsgn", "noise-replace")
    assert bool(enc["gsgn_g_fbank"]) == gated and bool(enc["gsgn_g_unit"]) == gated
    assert bool(enc["gsgn_x_fbank"]) == (fusion != "unit")
    assert bool(enc["gsgn_x_unit"]) == (fusion not in ("fbank", "noise-sum"))


def test_units_required_unless_fbank_only(data_dir):
    model, task, _ = build(data_dir, "--fusion", "gsgn")
    net = {k: v for k, v in batch(task)["net_input"].items() if k not in ("src_units", "src_units_lengths")}
    with pytest.raises(ValueError, match="--fusion gsgn needs src_units"):
        model(**net)
    fbank_only, task, _ = build(data_dir, "--fusion", "fbank")
    net = {k: v for k, v in batch(task)["net_input"].items() if k not in ("src_units", "src_units_lengths")}
    assert fbank_only.encoder.frontend.unit_frontend is None
    fbank_only(**net)


def test_encoder_output_follows_interfaces(data_dir):
    model, task, args = build(data_dir, "--fusion", "gsgn", "--use-ctc")
    sample = batch(task)
    bsz = sample["net_input"]["src_tokens"].size(0)
    enc = _encoder_out(model, sample)
    (x,) = enc["encoder_out"]
    t, b, d = x.shape
    assert (b, d) == (bsz, args.encoder_embed_dim)
    for key in ("gsgn_g_fbank", "gsgn_g_unit", "gsgn_x_fbank", "gsgn_x_unit", "gsgn_ref_out"):
        assert enc[key][0].shape == (bsz, t, d), key
    assert enc["gsgn_padding_mask"][0].shape == (bsz, t) and enc["gsgn_padding_mask"][0].dtype == torch.bool
    assert enc["gsgn_branch"][0].tolist() == [FUSION] * bsz
    assert enc["ctc_logits"][0].shape == (t, bsz, len(task.transcript_dictionary))
    assert enc["ctc_padding_mask"][0].shape == (bsz, t)
    lengths = (~enc["gsgn_padding_mask"][0]).sum(-1)
    expected = sample["net_input"]["src_lengths"]
    for _ in range(3):  # s2t_gsgn_tiny: 3 conv layers, 8x
        expected = (expected - 1) // 2 + 1
    assert lengths.tolist() == expected.tolist()
    # the reference layer is the first acoustic layer and its output is in the graph
    assert model.encoder.acoustic_layers[0] is not None
    seen = []
    enc["gsgn_ref_out"][0].register_hook(lambda g: seen.append(g.shape))
    enc["encoder_out"][0].sum().backward()
    assert seen == [torch.Size([bsz, t, d])]


@pytest.mark.parametrize("fusion", ["gsgn", "concat", "unit", "fbank", "noise-sum", "noise-replace"])
def test_padding_never_changes_outputs(data_dir, fusion):
    model, task, _ = build(data_dir, "--fusion", fusion, "--use-ctc")
    model.eval()
    ds = task.datasets["train"]
    lengths = [ds[i].source.size(0) for i in range(len(ds))]
    short = min(range(len(ds)), key=lambda i: lengths[i])
    long_ = max(range(len(ds)), key=lambda i: lengths[i])
    assert lengths[long_] > lengths[short] + 16
    alone = ds.collater([ds[short]])
    together = ds.collater([ds[short], ds[long_]])
    row = together["id"].tolist().index(short)
    # extra padding beyond every utterance, on top of the batch padding
    net = dict(together["net_input"])
    net["src_tokens"] = torch.cat([net["src_tokens"], torch.zeros(2, 40, 80)], dim=1)
    if fusion in ("gsgn", "concat", "unit"):  # the others read no units, and get none
        net["src_units"] = torch.cat([net["src_units"], torch.full((2, 20), K)], dim=1)
    else:
        assert "src_units" not in net
    with torch.no_grad():
        out_alone, extra_alone = model(**alone["net_input"])
        out_batch, extra_batch = model(**net)
    n_tgt = alone["net_input"]["prev_output_tokens"].size(1)
    torch.testing.assert_close(out_batch[row, :n_tgt], out_alone[0], atol=1e-5, rtol=1e-5)
    enc_a, enc_b = extra_alone["encoder_out"], extra_batch["encoder_out"]
    t = enc_a["encoder_out"][0].size(0)
    torch.testing.assert_close(enc_b["encoder_out"][0][:t, row], enc_a["encoder_out"][0][:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc_b["ctc_logits"][0][:t, row], enc_a["ctc_logits"][0][:, 0], atol=1e-5, rtol=1e-5)
    assert torch.all(enc_b["gsgn_padding_mask"][0][row, t:])


def test_reorder_encoder_out_reindexes_everything(data_dir):
    model, task, _ = build(data_dir, "--fusion", "gsgn", "--use-ctc")
    model.eval()
    sample = batch(task)
    net_input = {k: v for k, v in sample["net_input"].items() if k != "prev_output_tokens"}
    enc = model.encoder(**net_input, return_all_hiddens=True)  # as beam search calls it
    assert not any(k.startswith(("gsgn_", "ctc_")) for k in enc)  # no view tensors carried through the beam
    order = torch.tensor([2, 0, 3, 3, 1])
    new = model.encoder.reorder_encoder_out(enc, order)
    assert set(new) == set(enc)
    checked = 0
    for key, tensors in enc.items():
        assert len(new[key]) == len(tensors), key
        for old_t, new_t in zip(tensors, new[key]):
            dim = 1 if key in ("encoder_out", "encoder_states") else 0
            assert torch.equal(new_t, old_t.index_select(dim, order)), key
            checked += 1
    assert checked >= 5  # encoder_out, the padding mask, 4 layer states


def test_force_branch(data_dir):
    model, task, _ = build(data_dir, "--fusion", "gsgn")
    model.eval()
    sample = batch(task)
    net = sample["net_input"]
    shuffled_units = dict(net, src_units=torch.where(net["src_units"] < K, (net["src_units"] + 7) % K, net["src_units"]))
    other_fbank = dict(net, src_tokens=torch.randn_like(net["src_tokens"]) * (net["src_tokens"] != 0))
    with torch.no_grad():
        outs = {b: _encoder_out(model, sample, force_branch=b) for b in ("fbank", "unit", "fusion")}
        fbank_other_units = _encoder_out(model, {"net_input": shuffled_units}, force_branch="fbank")
        unit_other_fbank = _encoder_out(model, {"net_input": other_fbank}, force_branch="unit")
    for name, index in (("fbank", FBANK), ("unit", UNIT), ("fusion", FUSION)):
        assert outs[name]["gsgn_branch"][0].tolist() == [index] * 4
    assert not torch.allclose(outs["fbank"]["encoder_out"][0], outs["unit"]["encoder_out"][0])
    assert not torch.allclose(outs["fbank"]["encoder_out"][0], outs["fusion"]["encoder_out"][0])
    # the fbank branch ignores the units, the unit branch ignores the FBank values
    torch.testing.assert_close(fbank_other_units["encoder_out"][0], outs["fbank"]["encoder_out"][0])
    torch.testing.assert_close(unit_other_fbank["encoder_out"][0], outs["unit"]["encoder_out"][0])
    with pytest.raises(ValueError, match="force_branch"):
        _encoder_out(model, sample, force_branch="both")
    fbank_only, task2, _ = build(data_dir, "--fusion", "fbank")
    with pytest.raises(ValueError, match="not available with --fusion fbank"):
        _encoder_out(fbank_only, batch(task2), force_branch="unit")


def test_gate_injector_is_called_before_eq4(data_dir):
    model, task, _ = build(data_dir, "--fusion", "gsgn")
    model.eval()
    sample = batch(task)
    calls = []

    def injector(g):
        calls.append(g.shape)
        return torch.zeros_like(g)

    with torch.no_grad():
        logits, extra = model(**sample["net_input"], gate_injector=injector)
        plain, _ = model(**sample["net_input"])
    enc = extra["encoder_out"]
    assert calls == [enc["gsgn_x_fbank"][0].shape]
    assert torch.all(enc["gsgn_g_fbank"][0] == 0)
    assert not torch.allclose(logits, plain)
    # with --unit-gate one and g_fbank = 0, Eq. 4 gives x_unit: the unit branch's input
    one, task_one, _ = build(data_dir, "--fusion", "gsgn", "--unit-gate", "one")
    one.eval()
    sample_one = batch(task_one)
    with torch.no_grad():
        zero_gate = _encoder_out(one, sample_one, gate_injector=torch.zeros_like)
        unit_branch = _encoder_out(one, sample_one, force_branch="unit")
    torch.testing.assert_close(zero_gate["encoder_out"][0], unit_branch["encoder_out"][0])
    assert torch.all(zero_gate["gsgn_g_unit"][0] == 1)
    # fusions without gates ignore the injector (the criterion passes one to every fusion)
    calls.clear()
    for fusion in ("concat", "fbank", "unit", "noise-sum"):
        other, task2, _ = build(data_dir, "--fusion", fusion)
        other(**batch(task2)["net_input"], gate_injector=injector)
    assert calls == []


def test_multi_stage_dropout_follows_the_epoch(data_dir):
    model, task, _ = build(data_dir, "--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "1:1.0,0.0;2:0.0,1.0")
    sample = batch(task)
    model.train()
    assert _encoder_out(model, sample)["gsgn_branch"][0].tolist() == [FBANK] * 4
    task.begin_epoch(2, model)  # what fairseq calls at each epoch start, resumed runs included
    assert model.encoder.frontend.branch_sampler.stage_index == 1
    assert _encoder_out(model, sample)["gsgn_branch"][0].tolist() == [UNIT] * 4
    model.eval()  # evaluation: the fusion branch by default
    assert _encoder_out(model, sample)["gsgn_branch"][0].tolist() == [FUSION] * 4


def test_multi_stage_dropout_needs_two_views(data_dir):
    with pytest.raises(ValueError, match="--multi-stage-dropout"):
        build(data_dir, "--fusion", "fbank", "--multi-stage-dropout")
    with pytest.raises(ValueError, match="--msd-schedule"):
        build(data_dir, "--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "2:0.3,0.0")
    with pytest.raises(ValueError, match="--inference-branch unit"):
        build(data_dir, "--fusion", "fbank", "--inference-branch", "unit")


def test_inference_branch(data_dir):
    model, task, _ = build(data_dir, "--fusion", "gsgn", "--inference-branch", "sample",
                           "--msd-schedule", "1:0.0,0.0;5:0.3,0.3")
    model.eval()
    full = _encoder_out(model, batch(task, range(8)))
    ids = full_ids = batch(task, range(8))["id"].tolist()
    by_id = dict(zip(full_ids, full["gsgn_branch"][0].tolist()))
    assert set(by_id.values()) == {FBANK, UNIT, FUSION}  # the last stage (0.3, 0.3), not the first
    # the paper's protocol: each utterance's branch depends on (seed, utterance id) only --
    # the same one by itself, in another batch, in another order, after eval() again
    for indices in ([3], [7, 0], [5, 4, 3, 2, 1, 0]):
        sample = batch(task, indices)
        for _ in range(2):
            model.train()
            model.eval()
            got = dict(zip(sample["id"].tolist(), _encoder_out(model, sample)["gsgn_branch"][0].tolist()))
            assert got == {i: by_id[i] for i in got}
    # the seed changes the draw
    other, _, _ = build(data_dir, "--fusion", "gsgn", "--inference-branch", "sample", "--inference-seed", "7",
                        "--msd-schedule", "1:0.0,0.0;5:0.3,0.3")
    other.eval()
    assert _encoder_out(other, batch(task, range(8)))["gsgn_branch"][0].tolist() != full["gsgn_branch"][0].tolist()
    sample = batch(task, range(8))
    del sample["net_input"]["utt_keys"]
    with pytest.raises(ValueError, match="needs utt_keys"):
        _encoder_out(model, sample)
    for name, index in (("fbank", FBANK), ("unit", UNIT), ("fusion", FUSION)):
        m, t, _ = build(data_dir, "--fusion", "gsgn", "--inference-branch", name)
        m.eval()
        assert _encoder_out(m, batch(t))["gsgn_branch"][0].tolist() == [index] * 4
    assert ids == full_ids


def test_noise_modes(data_dir):
    sum_model, task, _ = build(data_dir, "--fusion", "noise-sum", "--dropout", "0", "--attention-dropout", "0",
                               "--activation-dropout", "0")
    sample = batch(task)
    low, high = sum_model.encoder.frontend.noise_range.tolist()
    assert (low, high) == (-0.5, 0.5)  # --noise-range, as given
    with pytest.raises(ValueError, match="needs --noise-range MIN,MAX"):
        S2TGSGNEncoder(_args(data_dir, "--fusion", "noise-sum"), K)
    with pytest.raises(ValueError, match="finite MIN < MAX"):
        S2TGSGNEncoder(_args(data_dir, "--fusion", "noise-sum", "--noise-range=1,-1"), K)
    sum_model.eval()
    a = _encoder_out(sum_model, sample)["encoder_out"][0]
    torch.testing.assert_close(_encoder_out(sum_model, sample)["encoder_out"][0], a)
    sum_model.train()  # noise in training only
    assert not torch.allclose(_encoder_out(sum_model, sample)["encoder_out"][0], a)

    rep_model, task, _ = build(data_dir, "--fusion", "noise-replace")
    assert rep_model.encoder.frontend.unit_frontend is None
    rep_model.eval()
    enc = _encoder_out(rep_model, sample)
    x_unit, mask = enc["gsgn_x_unit"][0], enc["gsgn_padding_mask"][0]
    real = x_unit[~mask]
    low, high = rep_model.encoder.frontend.noise_range.tolist()
    assert real.min() >= low and real.max() <= high and real.std() > 0
    assert torch.all(x_unit[mask] == 0)
    rep_model.train()
    rep_model.eval()
    torch.testing.assert_close(_encoder_out(rep_model, sample)["gsgn_x_unit"][0], x_unit)
    # no units needed
    net = {k: v for k, v in sample["net_input"].items() if k not in ("prev_output_tokens", "src_units", "src_units_lengths")}
    assert rep_model.encoder(**net)["encoder_out"][0].shape == enc["encoder_out"][0].shape


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_noise_is_keyed_on_the_utterance(data_dir, training):
    """The noise controls' noise of an utterance is the same in any batch, at any position and
    padding (evaluation: decoding does not depend on batching; training: reproducible), and
    differs between utterances at the same batch position under the same torch seed (fairseq
    reseeds every data-parallel rank alike: the ranks must not add the same noise)."""
    model, task, _ = build(data_dir, "--fusion", "noise-replace")
    model.train(training)

    def noise(indices):
        torch.manual_seed(1)  # as fairseq seeds every rank's update
        sample = batch(task, indices)
        with torch.no_grad():
            enc = _encoder_out(model, sample)
        x, mask = enc["gsgn_x_unit"][0], enc["gsgn_padding_mask"][0]  # (B, T, D), (B, T)
        return [(i, x[r][~mask[r]]) for r, i in enumerate(sample["id"].tolist())]

    alone = dict(noise([2]))
    mixed = dict(noise([5, 2, 7, 0]))  # another batch size, order and padding
    assert mixed[2].shape == alone[2].shape and torch.equal(mixed[2], alone[2])
    (_, rank0), (_, rank1) = noise([0, 1])[0], noise([3, 4])[0]  # the first row of two ranks' batches
    n = min(len(rank0), len(rank1))
    assert not torch.equal(rank0[:n], rank1[:n])
    if training:  # a fresh draw every epoch
        model.encoder.set_epoch(2)
        assert not torch.equal(dict(noise([2]))[2], alone[2])
    net = {k: v for k, v in batch(task, [2])["net_input"].items() if k not in ("prev_output_tokens", "utt_keys")}
    with pytest.raises(ValueError, match="needs utt_keys"):
        model.encoder(**net)


def test_ctc_head_and_fairseq_ctc_criterion(data_dir):
    model, task, args = build(data_dir, "--fusion", "gsgn", "--use-ctc")
    assert model.encoder.ctc_proj.out_features == len(task.transcript_dictionary)
    sample = batch(task)
    net_output = model(**sample["net_input"])
    lprobs, lengths = model.get_ctc_output(net_output, sample)
    assert lprobs.shape[1] == 4 and lprobs.dtype == torch.float32
    assert lengths.tolist() == (~net_output[1]["encoder_out"]["gsgn_padding_mask"][0]).sum(-1).tolist()
    tokens, tgt_lengths = model.get_ctc_target(sample)
    assert tokens.shape[0] == 4 and torch.all(tgt_lengths > 0)
    assert tokens.ne(task.transcript_dictionary.eos()).all()  # no EOS in CTC targets
    ctc_args = copy.deepcopy(args)
    ctc_args.criterion, ctc_args.ctc_weight = "label_smoothed_cross_entropy_with_ctc", 1.0
    ctc_args.label_smoothing, ctc_args.ignore_prefix_size, ctc_args.report_accuracy = 0.1, 0, False
    ctc_args.sentence_avg = False
    # fairseq's stock CTC criterion uses get_ctc_output/get_ctc_target
    criterion = build_criterion(ctc_args, task)
    loss, _, log = criterion(model, sample)
    assert torch.isfinite(loss) and log["ctc_loss"] > 0
    no_src = copy.deepcopy(args)
    with pytest.raises(ValueError, match="src_vocab_filename"):
        S2TGSGNEncoder(no_src, K, src_dict=None)


# ---------------------------------------------------------------- pretrained initialisation
def _save_fairseq_checkpoint(path, model, cfg=None):
    torch.save(
        {
            "model": model.state_dict(),
            "args": None,
            "cfg": cfg,
            "optimizer_history": [{"criterion_name": "x", "optimizer_name": "x", "lr_scheduler_state": {}, "num_updates": 0}],
            "extra_state": {"train_iterator": None},
        },
        path,
    )


def _asr_model(args, task, dim=128):
    from fairseq.models.speech_to_text.s2t_transformer import S2TTransformerModel, base_architecture

    asr_args = argparse.Namespace(
        input_feat_per_channel=80, input_channels=1, conv_kernel_sizes="5,5,5", conv_channels=256,
        encoder_embed_dim=dim, encoder_ffn_embed_dim=512, encoder_layers=3, encoder_attention_heads=4,
        decoder_layers=1, decoder_attention_heads=4, max_source_positions=6000, max_target_positions=1024,
        encoder_freezing_updates=0, dropout=0.1,
    )
    base_architecture(asr_args)
    return S2TTransformerModel.build_model(asr_args, task)


def _mt_model(task, dim=128, layers=2):
    from fairseq.models.transformer import TransformerModel, base_architecture

    mt_args = argparse.Namespace(
        encoder_embed_dim=dim, encoder_ffn_embed_dim=512, encoder_layers=layers, encoder_attention_heads=4,
        decoder_embed_dim=dim, decoder_ffn_embed_dim=512, decoder_layers=2, decoder_attention_heads=4,
        encoder_normalize_before=True, decoder_normalize_before=True, max_source_positions=1024,
        max_target_positions=1024,
    )
    base_architecture(mt_args)
    mt_task = argparse.Namespace(source_dictionary=task.transcript_dictionary, target_dictionary=task.target_dictionary)
    return TransformerModel.build_model(mt_args, mt_task)


def test_pretrained_initialisation(data_dir, tmp_path, caplog):
    _, task, _ = build(data_dir)
    torch.manual_seed(1)
    asr, mt = _asr_model(None, task), _mt_model(task)
    _save_fairseq_checkpoint(tmp_path / "asr.pt", asr)
    _save_fairseq_checkpoint(tmp_path / "mt.pt", mt)
    caplog.set_level("INFO")
    model, _, _ = build(
        data_dir, "--fusion", "gsgn", "--adapter", "linear-ln",  # an acoustic LayerNorm to load into
        "--load-pretrained-acoustic-encoder-from", str(tmp_path / "asr.pt"),
        "--load-pretrained-text-encoder-from", str(tmp_path / "mt.pt"),
        "--load-pretrained-decoder-from", str(tmp_path / "mt.pt"),
    )
    ours = model.state_dict()
    asr_sd, mt_sd = asr.state_dict(), mt.state_dict()
    assert torch.equal(ours["encoder.frontend.subsample.conv_layers.0.weight"], asr_sd["encoder.subsample.conv_layers.0.weight"])
    assert torch.equal(ours["encoder.acoustic_layers.2.fc1.weight"], asr_sd["encoder.transformer_layers.2.fc1.weight"])
    assert torch.equal(ours["encoder.acoustic_layer_norm.weight"], asr_sd["encoder.layer_norm.weight"])
    # textual encoder has 1 layer in s2t_gsgn_tiny: MT layer 0 loads, MT layer 1 is reported unused
    assert torch.equal(ours["encoder.textual_layers.0.self_attn.k_proj.weight"], mt_sd["encoder.layers.0.self_attn.k_proj.weight"])
    assert torch.equal(ours["encoder.layer_norm.bias"], mt_sd["encoder.layer_norm.bias"])
    assert torch.equal(ours["decoder.layers.1.fc2.weight"], mt_sd["decoder.layers.1.fc2.weight"])
    assert torch.equal(ours["decoder.embed_tokens.weight"], mt_sd["decoder.embed_tokens.weight"])
    log = caplog.text
    assert "pretrained acoustic encoder" in log and "encoder.acoustic_layers.0.fc1.weight" in log
    assert "without a counterpart" in log and "encoder.layers.1." in log

    report = load_pretrained_component(model, str(tmp_path / "asr.pt"),
                                       (("encoder.subsample.", "encoder.frontend.subsample."),), "subsampler")
    assert report.loaded and not report.not_loaded


def test_pretrained_shape_mismatch_names_the_key(data_dir, tmp_path):
    _, task, _ = build(data_dir)
    _save_fairseq_checkpoint(tmp_path / "mt64.pt", _mt_model(task, dim=64))
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\..*shape.*encoder\.textual_layers\.0\."):
        build(data_dir, "--load-pretrained-text-encoder-from", str(tmp_path / "mt64.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build(data_dir, "--load-pretrained-decoder-from", str(tmp_path / "missing.pt"))


def test_pretrained_decoder_vocabulary_must_be_ours(data_dir, tmp_path, caplog):
    """The MT checkpoint's target dictionary (its task data's dict.{lang}.txt) must equal the ST
    target dictionary symbol for symbol: same size but two symbols swapped is refused."""
    _, task, _ = build(data_dir)
    mt = _mt_model(task)
    symbols = list(task.target_dictionary.symbols)
    mt_data = tmp_path / "mt_bin"
    mt_data.mkdir()
    cfg = {"task": {"_name": "translation", "data": str(mt_data), "source_lang": "en", "target_lang": "de"}}
    _save_fairseq_checkpoint(tmp_path / "mt.pt", mt, cfg)
    task.target_dictionary.save(str(mt_data / "dict.de.txt"))
    model, _, _ = build(data_dir, "--load-pretrained-decoder-from", str(tmp_path / "mt.pt"))
    assert torch.equal(model.state_dict()["decoder.embed_tokens.weight"], mt.state_dict()["decoder.embed_tokens.weight"])
    # the same pieces in another order: every shape fits, the rows mean other words
    swapped = task.target_dictionary.__class__()
    order = symbols[4:]
    order[0], order[1] = order[1], order[0]
    for sym in order:
        swapped.add_symbol(sym)
    swapped.save(str(mt_data / "dict.de.txt"))
    with pytest.raises(ValueError, match=rf"decoder\.embed_tokens\.weight row 4 is {order[0]!r} there and {symbols[4]!r} here"):
        build(data_dir, "--load-pretrained-decoder-from", str(tmp_path / "mt.pt"))
    # without its dictionary file only the shapes can be checked: said in the log
    (mt_data / "dict.de.txt").unlink()
    caplog.set_level("WARNING")
    build(data_dir, "--load-pretrained-decoder-from", str(tmp_path / "mt.pt"))
    assert "only the parameter shapes are checked" in caplog.text


@pytest.mark.parametrize("fusion", ["gsgn", "noise-replace", "concat", "unit"])
def test_low_precision_forward(data_dir, fusion):
    """What --bf16/--fp16 (model cast) and --amp (autocast) do, on CPU with bfloat16."""
    model, task, _ = build(data_dir, "--fusion", fusion, "--multi-stage-dropout" if fusion != "unit" else "--use-ctc")
    sample = batch(task)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, extra = model(**sample["net_input"])
    assert torch.isfinite(logits.float()).all()
    logits.float().logsumexp(-1).sum().backward()
    cast = copy.deepcopy(model).to(torch.bfloat16).eval()
    net = dict(sample["net_input"], src_tokens=sample["net_input"]["src_tokens"].to(torch.bfloat16))
    with torch.no_grad():
        logits, extra = cast(**net)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert extra["encoder_out"]["encoder_out"][0].dtype == torch.bfloat16


@pytest.mark.parametrize("arch", ["s2t_gsgn", "s2t_gsgn_s", "s2t_gsgn_tiny"])
def test_default_unit_gate_is_one(data_dir, arch):
    # Eq. 10-11 are derived with g_unit = 1: every arch's default, learned only when asked for
    args = _args(data_dir, "--fusion", "gsgn", arch=arch)
    assert args.unit_gate == "one"
    encoder = S2TGSGNEncoder(args, num_units=K)
    assert encoder.frontend.fusion.gate.unit_gate is None  # no unit-gate parameters at all
    assert not any(".unit_gate." in n for n, _ in encoder.named_parameters())
    learned = S2TGSGNEncoder(_args(data_dir, "--fusion", "gsgn", "--unit-gate", "learned", arch="s2t_gsgn_tiny"), K)
    assert learned.frontend.fusion.gate.unit_gate is not None


def test_a_fusion_registered_in_a_test_runs_without_encoder_edits(data_dir):
    from gsgn_fairseq.modules.multiview_frontend import FUSIONS as REGISTRY
    from gsgn_fairseq.modules.multiview_frontend import Fusion, register_fusion

    @register_fusion("mean-test")
    class Mean(Fusion):
        """The views averaged: one class and one registry entry."""

        def forward(self, x_fbank, x_units, padding_mask, gate_injector=None):
            return (x_fbank + sum(x_units)) / (1 + len(x_units)), None, None

    try:
        model, task, _ = build(data_dir, "--fusion", "mean-test", "--multi-stage-dropout")
        model.train()
        sample = batch(task)
        logits, extra = model(**sample["net_input"])
        logits.float().logsumexp(-1).sum().backward()
        enc = extra["encoder_out"]
        assert enc["gsgn_x_fbank"] and enc["gsgn_x_unit"] and not enc["gsgn_g_fbank"]
        assert model.encoder.frontend.available_branches == (FBANK, UNIT, FUSION)  # two views: three branches
        model.eval()
        fused = _encoder_out(model, sample, force_branch="fusion")
        both = [_encoder_out(model, sample, force_branch=b)["gsgn_x_fbank"][0] for b in ("fbank",)]
        assert torch.isfinite(fused["encoder_out"][0]).all() and both
    finally:
        del REGISTRY["mean-test"]
    with pytest.raises(ValueError, match="--fusion must be one of"):  # unregistered again
        build(data_dir, "--fusion", "mean-test")
