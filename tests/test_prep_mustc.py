"""gsgn-prep-mustc on the tiny synthetic corpus: outputs, fbank parity, resuming, --jobs,
filters, bad input, and fairseq's own loader."""
import re
import shutil
import subprocess
import sys
import zipfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import yaml

REPO = Path(__file__).resolve().parents[1]
from gsgn_fairseq.data.manifest import S2T_COLUMNS, read_tsv
from gsgn_fairseq.data.mustc import DataError
from gsgn_fairseq.data.zip_store import read_npy_ref
from gsgn_fairseq.prep import prep_mustc
from tiny_mustc import make_tiny_mustc

SPLITS = ("train", "dev", "tst-COMMON")


def outputs(pdir: Path) -> dict:
    """Bytes of the TSVs and the zip."""
    return {p.name: p.read_bytes() for p in sorted(pdir.glob("*_st.tsv")) + [pdir / "fbank80.zip"]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny corpus prepared once through the command line (jobs=1)."""
    root = make_tiny_mustc(tmp_path_factory.mktemp("prepared"))
    cmd = [str(Path(sys.executable).parent / "gsgn-prep-mustc"), "--data-root", str(root),
           "--tgt-lang", "de", "--vocab-size", "8000", "--jobs", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "vocabulary capped" in run.stdout
    return root / "en-de"


def test_tiny_corpus_is_deterministic(tmp_path):
    a, b = make_tiny_mustc(tmp_path / "a"), make_tiny_mustc(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 * (2 + 3)  # per split: 2 wavs, yaml, en, de
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_outputs(prepared):
    pdir = prepared
    assert not (pdir / prep_mustc.CACHE_DIR).exists()
    with zipfile.ZipFile(pdir / "fbank80.zip") as z:
        infos = z.infolist()
    assert len(infos) == 18 and all(i.compress_type == zipfile.ZIP_STORED for i in infos)

    from fairseq.data.audio.audio_utils import get_features_or_waveform

    for split in SPLITS:
        rows = read_tsv(pdir / f"{split}_st.tsv")
        assert list(rows[0]) == S2T_COLUMNS and len(rows) == 6
        segs = {s.id: s for t in prep_mustc.load_segments(pdir.parent, "de", split).values() for s in t}
        for row in rows:
            feats = read_npy_ref(pdir, row["audio"])
            assert row["audio"].startswith("fbank80.zip:")
            assert feats.dtype == np.float32 and feats.shape == (int(row["n_frames"]), 80)
            np.testing.assert_array_equal(feats, get_features_or_waveform((pdir / row["audio"]).as_posix()))
            seg = segs[row["id"]]
            assert (row["tgt_text"], row["src_text"], row["speaker"]) == (seg.tgt_text, seg.src_text, seg.speaker)
        # features equal fbank of the cut recomputed from the wav
        seg = segs[rows[-1]["id"]]
        audio, sr = sf.read(seg.wav, dtype="float32")
        start = round(seg.offset * sr)
        expected = prep_mustc.extract_fbank(audio[start : start + round(seg.duration * sr)])
        np.testing.assert_array_equal(read_npy_ref(pdir, rows[-1]["audio"]), expected)

    cfg = yaml.safe_load((pdir / "config_st.yaml").read_text())
    assert cfg["audio_root"] == str(pdir.resolve())
    assert cfg["bpe_tokenizer"] == {"bpe": "sentencepiece", "sentencepiece_model": str(pdir / "spm_unigram8000_st.model")}
    assert cfg["src_bpe_tokenizer"]["sentencepiece_model"] == str(pdir / "spm_unigram8000_src.model")
    assert (cfg["vocab_filename"], cfg["src_vocab_filename"]) == ("spm_unigram8000_st.txt", "spm_unigram8000_src.txt")
    assert (cfg["input_channels"], cfg["input_feat_per_channel"]) == (1, 80)
    assert cfg["feature_transforms"] == {"_train": ["utterance_cmvn", "specaugment"], "*": ["utterance_cmvn"]}
    assert cfg["specaugment"] == {"freq_mask_F": 27, "freq_mask_N": 1, "time_mask_N": 1, "time_mask_T": 100,
                                  "time_mask_p": 1.0, "time_wrap_W": 0}

    import sentencepiece as spm

    for kind in ("st", "src"):
        sp = spm.SentencePieceProcessor(model_file=str(pdir / f"spm_unigram8000_{kind}.model"))
        assert [sp.id_to_piece(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
        words = (pdir / f"spm_unigram8000_{kind}.txt").read_text().splitlines()
        assert words == [f"{sp.id_to_piece(i)} 1" for i in range(4, sp.get_piece_size())]
        assert sp.get_piece_size() < 8000  # capped: the tiny corpus supports far fewer pieces


def test_rerun_is_up_to_date_and_vocab_change_skips_features(prepared, monkeypatch):
    pdir = prepared
    before = outputs(pdir)
    stats = prep_mustc.prep_pair(pdir.parent, "de", vocab_size=8000)
    assert stats["up_to_date"] and stats["splits"]["train"]["kept"] == 6
    assert outputs(pdir) == before

    def no_extraction(job):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(prep_mustc, "_process_talk", no_extraction)
    stats = prep_mustc.prep_pair(pdir.parent, "de", vocab_size=26)
    assert not stats["up_to_date"] and stats["vocab_size"] == {"st": 26, "src": 25}  # src capped
    assert (pdir / "spm_unigram26_st.txt").read_text().count("\n") == 22
    assert yaml.safe_load((pdir / "config_st.yaml").read_text())["vocab_filename"] == "spm_unigram26_st.txt"
    assert outputs(pdir) == before
    prep_mustc.prep_pair(pdir.parent, "de", vocab_size=8000)  # restore the fixture's config


def test_fbank_parity():
    wav = 0.1 * torch.randn(16000 + 123, generator=torch.Generator().manual_seed(0))
    ours = prep_mustc.extract_fbank(wav.numpy())
    direct = kaldi.fbank(wav.unsqueeze(0) * 2**15, num_mel_bins=80, sample_frequency=16000).numpy()
    assert ours.shape == (1 + (len(wav) - 400) // 160, 80) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, direct)

    from fairseq.data.audio.audio_utils import _get_torchaudio_fbank  # what fairseq's recipe calls

    np.testing.assert_array_equal(ours, _get_torchaudio_fbank(wav.numpy()[None] * 2**15, 16000, 80))
    assert prep_mustc.extract_fbank(np.zeros(399, np.float32)).shape == (0, 80)


def test_resume_after_kill(tmp_path, monkeypatch):
    ref = make_tiny_mustc(tmp_path / "ref", n_talks=3)
    prep_mustc.prep_pair(ref, "de", vocab_size=50, jobs=1)
    root = make_tiny_mustc(tmp_path / "killed", n_talks=3)
    pdir = root / "en-de"

    calls = []
    process_talk = prep_mustc._process_talk

    def killed_after_four(job):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(job.talk)
        return process_talk(job)

    monkeypatch.setattr(prep_mustc, "_process_talk", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        prep_mustc.prep_pair(root, "de", vocab_size=50, jobs=1)
    cache = pdir / prep_mustc.CACHE_DIR
    assert len(list(cache.rglob("*.npz"))) == 4
    assert not (pdir / "train_st.tsv").exists() and not (pdir / prep_mustc.DONE_FILE).exists()
    # a write cut short, and a cache file broken on disk
    (cache / "dev" / "ted_2001.npz.tmp").write_bytes(b"partial")
    (cache / "train" / "ted_1000.npz").write_bytes(b"broken")

    calls.clear()
    monkeypatch.setattr(prep_mustc, "_process_talk", lambda job: calls.append(job.talk) or process_talk(job))
    prep_mustc.prep_pair(root, "de", vocab_size=50, jobs=1)
    assert sorted(calls) == ["ted_1000", "ted_2001", "ted_2002", "ted_3000", "ted_3001", "ted_3002"]
    assert outputs(pdir) == outputs(ref / "en-de")
    assert not cache.exists()


def test_jobs_do_not_change_outputs(prepared, tmp_path):
    root = make_tiny_mustc(tmp_path)
    prep_mustc.prep_pair(root, "de", vocab_size=8000, jobs=2)
    assert outputs(root / "en-de") == outputs(prepared)


def test_filters(tmp_path, monkeypatch):
    root = make_tiny_mustc(tmp_path)
    txt = root / "en-de" / "data"
    de = (txt / "train" / "txt" / "train.de").read_text().splitlines()
    de[0] = ""
    (txt / "train" / "txt" / "train.de").write_text("\n".join(de) + "\n")
    en = (txt / "dev" / "txt" / "dev.en").read_text().splitlines()
    en[4] = "  "
    (txt / "dev" / "txt" / "dev.en").write_text("\n".join(en) + "\n")
    segs = (txt / "train" / "txt" / "train.yaml").read_text().splitlines()
    segs[1] = re.sub(r"duration: [0-9.]+", "duration: 0.050000", segs[1])  # 3 frames
    (txt / "train" / "txt" / "train.yaml").write_text("\n".join(segs) + "\n")
    monkeypatch.setattr(prep_mustc, "MAX_FRAMES", 80)  # "long" in train only

    with pytest.raises(DataError, match=r"train\.de: utterance ted_1000_0: empty text"):
        prep_mustc.prep_pair(root, "de", vocab_size=50, strict=True)
    with pytest.warns(UserWarning) as warned:
        stats = prep_mustc.prep_pair(root, "de", vocab_size=50)
    messages = [str(w.message) for w in warned]
    assert any("train.de: utterance ted_1000_0: empty text" in m for m in messages)
    assert any("dev.en: utterance ted_2001_1: empty text" in m for m in messages)
    train, dev = stats["splits"]["train"], stats["splits"]["dev"]
    assert train["filtered"] == {"empty target text": 1, "short speech (<5 frames)": 1, "long speech (>80 frames)": 2}
    assert (train["segments"], train["kept"]) == (6, 2)
    assert dev["filtered"] == {"empty source text": 1} and dev["kept"] == 5
    ids = [r["id"] for r in read_tsv(root / "en-de" / "train_st.tsv")]
    assert ids == ["ted_1001_1", "ted_1001_2"]
    dev_rows = read_tsv(root / "en-de" / "dev_st.tsv")
    assert "ted_2001_1" not in [r["id"] for r in dev_rows] and max(int(r["n_frames"]) for r in dev_rows) > 80


def small_corpus(tmp_path, **kwargs) -> Path:
    return make_tiny_mustc(tmp_path, splits=("train", "dev"), n_talks=1, segs_per_talk=2, **kwargs)


def test_missing_wav(tmp_path):
    root = small_corpus(tmp_path)
    (root / "en-de/data/train/wav/ted_1000.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"ted_1000\.wav.*train\.yaml, utterances ted_1000_0"):
        prep_mustc.prep_pair(root, "de", vocab_size=50)


def test_corrupt_wav(tmp_path):
    root = small_corpus(tmp_path)
    (root / "en-de/data/dev/wav/ted_2000.wav").write_bytes(b"RIFF, but not a wav file")
    with pytest.raises(DataError, match=r"ted_2000\.wav: cannot read audio.*utterances ted_2000_0"):
        prep_mustc.prep_pair(root, "de", vocab_size=50)


@pytest.mark.parametrize("how", ["yaml", "truncated wav"])
def test_segment_past_end(tmp_path, how):
    root = small_corpus(tmp_path)
    if how == "yaml":
        path = root / "en-de/data/train/txt/train.yaml"
        lines = path.read_text().splitlines()
        lines[1] = re.sub(r"duration: [0-9.]+", "duration: 9.000000", lines[1])
        path.write_text("\n".join(lines) + "\n")
    else:
        path = root / "en-de/data/train/wav/ted_1000.wav"
        path.write_bytes(path.read_bytes()[:-2000])  # the last segment ends with the audio
    with pytest.raises(DataError, match=r"ted_1000\.wav: utterance ted_1000_1 runs past the end"):
        prep_mustc.prep_pair(root, "de", vocab_size=50)


def test_line_counts_differ(tmp_path):
    root = small_corpus(tmp_path)
    with open(root / "en-de/data/dev/txt/dev.de", "a") as f:
        f.write("ein Satz zu viel\n")
    with pytest.raises(DataError, match=r"dev\.de has 3 lines but .*dev\.yaml has 2 segments"):
        prep_mustc.prep_pair(root, "de", vocab_size=50)


def test_sample_rate(tmp_path):
    root = small_corpus(tmp_path / "8k", sample_rate=8000)
    with pytest.raises(DataError, match=r"ted_1000\.wav: sample rate 8000 Hz"):
        prep_mustc.prep_pair(root, "de", vocab_size=50, strict=True)
    with pytest.warns(UserWarning, match=r"ted_\d+\.wav: sample rate 8000 Hz, resampling"):
        prep_mustc.prep_pair(root, "de", vocab_size=50)
    ref = small_corpus(tmp_path / "16k")
    prep_mustc.prep_pair(ref, "de", vocab_size=50)
    n_frames = lambda r: [row["n_frames"] for row in read_tsv(r / "en-de/train_st.tsv")]  # noqa: E731
    assert n_frames(root) == n_frames(ref)


def test_duplicate_ids(tmp_path):
    root = small_corpus(tmp_path)
    data = root / "en-de" / "data"
    shutil.copy(data / "train/wav/ted_1000.wav", data / "dev/wav/ted_1000.wav")
    for ext in ("yaml", "en", "de"):
        (data / f"dev/txt/dev.{ext}").write_text((data / f"train/txt/train.{ext}").read_text())
    with pytest.raises(DataError, match=r"dev\.yaml: utterance id ted_1000_0 also in split train"):
        prep_mustc.prep_pair(root, "de", vocab_size=50)


def test_fairseq_loads_the_output(prepared):
    from fairseq.data import Dictionary, encoders
    from fairseq.data.audio.data_cfg import S2TDataConfig
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator

    pdir = prepared
    cfg = S2TDataConfig(pdir / "config_st.yaml")
    tgt_dict = Dictionary.load((pdir / cfg.vocab_filename).as_posix())
    bpe = encoders.build_bpe(Namespace(**cfg.bpe_tokenizer))
    datasets = {}
    for split, is_train in (("train", True), ("dev", False)):
        datasets[split] = SpeechToTextDatasetCreator.from_tsv(
            pdir.as_posix(), cfg, f"{split}_st", tgt_dict, None, bpe, is_train_split=is_train, epoch=1, seed=1
        )
    rows = read_tsv(pdir / "dev_st.tsv")
    for split, ds in datasets.items():
        item = ds[0]
        row = read_tsv(pdir / f"{split}_st.tsv")[0]
        assert ds.audio_paths[0] == (pdir.resolve() / row["audio"]).as_posix()  # audio_root is honoured
        assert item.source.shape == (int(row["n_frames"]), 80)
        assert item.target[-1] == tgt_dict.eos()
        assert bpe.decode(tgt_dict.string(item.target[:-1])) == row["tgt_text"]
        assert tgt_dict.unk() not in item.target.tolist()
    # dev: utterance CMVN only, so the source is the stored fbank normalized per utterance
    from fairseq.data.audio.feature_transforms.utterance_cmvn import UtteranceCMVN

    feats = read_npy_ref(pdir, rows[0]["audio"])
    source = datasets["dev"][0].source.numpy()
    np.testing.assert_array_equal(source, UtteranceCMVN()(feats))
    f64 = feats.astype(np.float64)
    np.testing.assert_allclose(source, (f64 - f64.mean(0)) / f64.std(0), atol=1e-2)  # fairseq computes in float32
    batch = datasets["train"].collater([datasets["train"][i] for i in range(3)])
    assert batch["net_input"]["src_tokens"].shape[0] == 3


def test_split_subset(tmp_path):
    root = small_corpus(tmp_path)
    with pytest.raises(ValueError, match="train split is needed"):
        prep_mustc.prep_pair(root, "de", vocab_size=50, splits=["dev"])
    prep_mustc.prep_pair(root, "de", vocab_size=50)
    prep_mustc.prep_pair(root, "de", vocab_size=50, splits=["train"])
    assert not (root / "en-de/dev_st.tsv").exists()  # it would point into the old zip
    assert [r["id"] for r in read_tsv(root / "en-de/train_st.tsv")] == ["ted_1000_0", "ted_1000_1"]


def test_fast_segment_yaml_equals_pyyaml():
    import yaml

    from gsgn_fairseq.data.mustc import fast_segment_entries

    text = ("- {duration: 3.500000, offset: 16.730000, rw: 1.000000, speaker_id: spk.1, wav: ted_1.wav}\n"
            "- {duration: 1.32, offset: 0.67, speaker_id: spk_08, wav: talk_train_0000.wav}\n"
            "- {duration: 2, offset: 10, speaker_id: 7, wav: ted_1.wav}\n")
    fast, slow = fast_segment_entries(text), yaml.safe_load(text)
    assert len(fast) == len(slow) == 3
    for f, s in zip(fast, slow):
        assert (float(f["offset"]), float(f["duration"]), f["wav"], f["speaker_id"]) == (
            float(s["offset"]), float(s["duration"]), s["wav"], str(s["speaker_id"]))


@pytest.mark.parametrize("line", [
    "- {duration: 1.0, offset: 0.5, speaker_id: 'spk 1', wav: a.wav}",   # quoted
    "- {duration: 1.0, offset: 0.5, speaker_id: yes, wav: a.wav}",       # YAML boolean
    "- {duration: 1.0, offset: 0.5, speaker_id: 01, wav: a.wav}",        # YAML int 1
    "- {duration: -1.0, offset: 0.5, speaker_id: s, wav: a.wav}",        # sign
    "- {duration: 1e3, offset: 0.5, speaker_id: s, wav: a.wav}",         # exponent
    "- {duration: 1.0, offset: 0.5, speaker_id: 1.50, wav: a.wav}",      # YAML float 1.5
    "- duration: 1.0",                                                   # block style
    "- {duration: 1.0, duration: 2.0, wav: a.wav}",                      # repeated key
])
def test_fast_segment_yaml_leaves_other_forms_to_pyyaml(line):
    from gsgn_fairseq.data.mustc import fast_segment_entries

    assert fast_segment_entries(line + "\n") is None
