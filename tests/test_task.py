"""Task speech_to_text_multiview: loading, collating and checking the two views."""
import argparse
import json

import numpy as np
import pytest
import torch
import yaml
from fairseq import options, tasks

import gsgn_fairseq  # noqa: F401
from gsgn_fairseq.data.manifest import S2T_COLUMNS, UNITS_COLUMN, read_tsv, write_tsv
from gsgn_fairseq.data.multiview_dataset import ViewAlignment
from gsgn_fairseq.data.provenance import write_units_meta
from gsgn_fairseq.data.zip_store import read_npy_ref, write_npy_zip, zip_manifest
from tiny_s2t_data import make_tiny_multiview_data

K = 20


def setup(data_dir, *extra, arch="s2t_gsgn_tiny", build_model=True):
    """The task (with a model built, which sets the views' alignment rule) and its args."""
    parser = options.get_training_parser()
    argv = [str(data_dir), "--task", "speech_to_text_multiview", "--arch", arch, "--config-yaml", "config_st.yaml",
            "--num-units", str(K), "--criterion", "label_smoothed_cross_entropy", *extra]
    args = options.parse_args_and_arch(parser, argv)
    task = tasks.setup_task(args)
    if build_model:
        task.build_model(args)
    return task, args


@pytest.fixture
def data_dir(tmp_path):
    return make_tiny_multiview_data(tmp_path / "tiny", n_train=6, n_valid=2, num_units=K)


def _replace_units(data_dir, split, new_units):
    """Point ``split``'s rows at new unit arrays {id: array} (others unchanged)."""
    rows = read_tsv(data_dir / f"{split}.tsv")
    items = [(r["id"], new_units.get(r["id"], read_npy_ref(data_dir, r["units"]))) for r in rows]
    write_npy_zip(data_dir / "units2.zip", items)
    refs = zip_manifest(data_dir / "units2.zip")
    for r in rows:
        r["units"] = refs[r["id"]]
    write_tsv(data_dir / f"{split}.tsv", rows, S2T_COLUMNS + [UNITS_COLUMN])


def test_tiny_data_helper(data_dir):
    rows = read_tsv(data_dir / "train.tsv")
    assert list(rows[0]) == ["id", "audio", "n_frames", "tgt_text", "speaker", "src_text", "units"]
    fbank = read_npy_ref(data_dir, rows[0]["audio"])
    units = read_npy_ref(data_dir, rows[0]["units"])
    assert fbank.dtype == np.float32 and fbank.shape == (int(rows[0]["n_frames"]), 80)
    assert units.dtype == np.int16 and units.shape == (fbank.shape[0] // 2,) and 0 <= units.min() <= units.max() < K
    config = yaml.safe_load(open(data_dir / "config_st.yaml"))
    assert config["audio_root"] == str(data_dir.resolve())
    again = make_tiny_multiview_data(data_dir.parent / "again", n_train=6, n_valid=2, num_units=K)
    assert (again / "units.zip").read_bytes() == (data_dir / "units.zip").read_bytes()


def test_collater_pads_units_in_fbank_order(data_dir):
    task, _ = setup(data_dir)
    task.load_dataset("train")
    ds = task.datasets["train"]
    sample = ds.collater([ds[i] for i in range(6)])
    net = sample["net_input"]
    assert net["src_lengths"].tolist() == sorted(net["src_lengths"].tolist(), reverse=True)  # batched by FBank length
    assert net["src_units"].dtype == torch.long and net["src_units"].size(0) == 6
    for row, index in enumerate(sample["id"].tolist()):
        item = ds[index]
        n = item.units.size(0)
        assert net["src_units_lengths"][row].item() == n
        assert torch.equal(net["src_units"][row, :n], item.units)
        assert task.unit_pad == K and torch.all(net["src_units"][row, n:] == K)
        assert net["src_lengths"][row].item() == item.source.size(0)
        # transcript for CTC: source dictionary ids, no EOS
        m = sample["source_text_lengths"][row].item()
        words = task.transcript_dictionary.string(sample["source_text"][row, :m])
        assert words == ds.src_texts[index]
    assert ds.num_tokens(0) == ds.n_frames[0] and ds.size(0)[0] == ds.n_frames[0]


def test_view_length_mismatch_names_the_utterance(data_dir):
    _replace_units(data_dir, "train", {"train_2": np.zeros(3, dtype=np.int16)})
    task, _ = setup(data_dir)
    task.load_dataset("train")
    ds = task.datasets["train"]
    ds[0]
    with pytest.raises(ValueError, match=r"utterance train_2: .* \d+ FBank frames -> \d+ .* 3 units -> 1 "):
        ds[2]


def test_alignment_tolerance():
    check = ViewAlignment(fbank_conv_layers=2, tolerance=2)
    check.check("ok", 100, 50)  # 25 vs 25
    check.check("ok", 100, 46)  # 25 vs 23: two frames apart is allowed
    with pytest.raises(ValueError, match="utterance far: .*100 FBank frames -> 25 .* 40 units -> 20"):
        check.check("far", 100, 40)
    with pytest.raises(ValueError, match="at least one conv layer"):
        ViewAlignment(0).check("x", 10, 5)


def test_unit_id_out_of_range_names_the_utterance(data_dir):
    rows = read_tsv(data_dir / "train.tsv")
    bad = read_npy_ref(data_dir, rows[1]["units"]).copy()
    bad[3] = K  # K is the padding id, not a unit
    neg = read_npy_ref(data_dir, rows[4]["units"]).copy()
    neg[0] = -1
    _replace_units(data_dir, "train", {"train_1": bad, "train_4": neg})
    task, _ = setup(data_dir)
    task.load_dataset("train")
    ds = task.datasets["train"]
    with pytest.raises(ValueError, match=rf"utterance train_1: unit ids must be in \[0, {K - 1}\].*max {K}"):
        ds[1]
    with pytest.raises(ValueError, match="utterance train_4: .*min -1"):
        ds[4]


def test_alignment_follows_the_built_model(data_dir):
    task, args = setup(data_dir, build_model=False)
    task.load_dataset("train")
    with pytest.raises(RuntimeError, match="utterance train_0: the views' alignment rule is not known yet"):
        task.datasets["train"][0]
    task, args = setup(data_dir, arch="s2t_gsgn")  # 2 conv layers
    assert task.alignment.fbank_conv_layers == 2
    task, args = setup(data_dir)  # tiny: 3
    assert task.alignment.fbank_conv_layers == 3
    args.conv_kernel_sizes = "5,5,5,5"
    model = task.build_model(args)
    assert task.alignment.fbank_conv_layers == 4 and model.encoder.frontend.n_fbank_conv == 4


def test_checkpoint_num_units_wins(data_dir):
    task, args = setup(data_dir)
    saved = argparse.Namespace(**vars(args))
    saved.num_units = 30
    task.build_model(saved, from_checkpoint=True)
    assert task.num_units == task.unit_pad == 30


def test_audio_root_falls_back_to_data_dir(data_dir, tmp_path, monkeypatch):
    config = yaml.safe_load(open(data_dir / "config_st.yaml"))
    config["audio_root"] = ""
    yaml.safe_dump(config, open(data_dir / "config_st.yaml", "w"))
    monkeypatch.chdir(tmp_path)  # relative zip paths must not depend on the working directory
    task, _ = setup(data_dir)
    task.load_dataset("valid")
    item = task.datasets["valid"][0]
    assert item.units.numel() > 0 and item.source.size(1) == 80


def test_missing_units_column_and_source_dict(data_dir):
    rows = read_tsv(data_dir / "valid.tsv")
    write_tsv(data_dir / "valid.tsv", rows, S2T_COLUMNS)
    task, _ = setup(data_dir)
    with pytest.raises(ValueError, match="no 'units' column"):
        task.load_dataset("valid")
    (data_dir / "src_dict.txt").unlink()
    with pytest.raises(FileNotFoundError, match="src_dict.txt"):
        setup(data_dir)


def test_no_source_dict_no_transcript(data_dir):
    config = yaml.safe_load(open(data_dir / "config_st.yaml"))
    del config["src_vocab_filename"]
    yaml.safe_dump(config, open(data_dir / "config_st.yaml", "w"))
    task, args = setup(data_dir)
    assert task.transcript_dictionary is None
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    assert "source_text" not in ds.collater([ds[0], ds[1]])
    args.use_ctc = True
    with pytest.raises(ValueError, match="--use-ctc needs a source dictionary"):
        task.build_model(args)


def test_begin_epoch_sets_the_encoder_epoch(data_dir):
    task, _ = setup(data_dir)
    seen = []
    model = argparse.Namespace(encoder=argparse.Namespace(set_epoch=seen.append))
    task.begin_epoch(7, model)
    assert seen == [7]


def test_train_step_tells_the_criterion_the_update(data_dir, monkeypatch):
    from fairseq.tasks.speech_to_text import SpeechToTextTask

    task, _ = setup(data_dir)
    monkeypatch.setattr(SpeechToTextTask, "train_step", lambda self, *a, **k: ("done",))
    seen = []
    assert task.train_step({}, None, argparse.Namespace(set_num_updates=seen.append), None, 41) == ("done",)
    assert seen == [41]
    assert task.train_step({}, None, argparse.Namespace(), None, 42) == ("done",)  # criteria without it


def test_source_dictionary_stays_none_for_fairseq_generate(data_dir):
    task, _ = setup(data_dir)
    assert task.source_dictionary is None and len(task.transcript_dictionary) > 4


def test_units_come_from_the_data_dir_not_an_old_audio_root(data_dir, tmp_path):
    """A copied data dir whose audio_root still names the original reads its own units."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    rows = read_tsv(copy / "valid.tsv")
    new = {r["id"]: np.full_like(read_npy_ref(copy, r["units"]), 7) for r in rows}
    items = [(r["id"], new.get(r["id"], read_npy_ref(copy, r["units"]))) for r in read_tsv(copy / "train.tsv") + rows]
    write_npy_zip(copy / "units.zip", items)  # same member layout: refs unchanged
    write_units_meta(copy / "units.zip", json.loads((copy / "units.json").read_text()))  # as extract_units does
    refs = zip_manifest(copy / "units.zip")
    assert all(refs[r["id"]] == r["units"] for r in rows)
    config = yaml.safe_load(open(copy / "config_st.yaml"))
    assert config["audio_root"] == str(data_dir.resolve())  # still the original's
    task, _ = setup(copy)
    task.load_dataset("valid")
    item = task.datasets["valid"][0]
    assert torch.equal(item.units, torch.full_like(item.units, 7))
    # FBank still comes from audio_root, as fairseq reads it
    assert task.datasets["valid"].audio_paths[0].startswith(str(data_dir.resolve()))


class _CountingBPE:
    """A BPE that returns the text as it is and counts its calls; ``sampling`` says whether it
    claims to sample (as SentencePiece with sentencepiece_enable_sampling does)."""

    calls = 0

    def __init__(self, args):
        self.enable_sampling = bool(getattr(args, "sampling", False))

    def encode(self, x: str) -> str:
        type(self).calls += 1
        return x

    def decode(self, x: str) -> str:
        return x


def _register_counting_bpe():
    from fairseq.data.encoders import BPE_REGISTRY, register_bpe

    if "gsgn_test_counting" not in BPE_REGISTRY:
        register_bpe("gsgn_test_counting")(_CountingBPE)


@pytest.mark.parametrize("sampling", [False, True])
def test_texts_are_tokenized_once_unless_the_tokenizer_samples(data_dir, sampling):
    _register_counting_bpe()
    config = yaml.safe_load(open(data_dir / "config_st.yaml"))
    config["bpe_tokenizer"] = {"bpe": "gsgn_test_counting", "sampling": sampling}
    config["src_bpe_tokenizer"] = {"bpe": "gsgn_test_counting", "sampling": sampling}
    yaml.safe_dump(config, open(data_dir / "config_st.yaml", "w"))
    task, _ = setup(data_dir)
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    first = ds[0]
    _CountingBPE.calls = 0
    again = ds[0]
    # the target and the transcript: tokenized again only by a sampling tokenizer
    assert _CountingBPE.calls == (2 if sampling else 0)
    assert torch.equal(first.target, again.target) and torch.equal(first.transcript, again.transcript)
