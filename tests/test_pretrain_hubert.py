"""gsgn-pretrain-hubert: fairseq HuBERT pretraining on the tiny corpus, then its checkpoint
through gsgn-learn-kmeans / gsgn-extract-units --feature hubert like a released one."""
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
from tiny_mustc import make_tiny_mustc  # noqa: E402

from gsgn_fairseq.prep import extract_units, learn_kmeans, pretrain_hubert
from gsgn_fairseq.data.manifest import S2T_COLUMNS, read_tsv, write_tsv  # noqa: E402
from gsgn_fairseq.data.mustc import cut_segment, load_segments, read_wav  # noqa: E402
from gsgn_fairseq.prep.units import HubertFeatures, num_frames  # noqa: E402
from gsgn_fairseq.data.zip_store import read_npy_ref  # noqa: E402

LANG = "de"
SPLITS = ("train", "dev")
K = 8
TINY = [  # a 2-layer, d=32 HuBERT with HuBERT-base's conv kernels and strides (50 Hz frames)
    "model.conv_feature_layers='[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2'",
    "model.encoder_layers=2", "model.encoder_embed_dim=32", "model.encoder_ffn_embed_dim=64",
    "model.encoder_attention_heads=2", "model.final_dim=16", "model.conv_pos=16", "model.conv_pos_groups=4",
    "lr_scheduler.warmup_updates=1", "dataset.max_tokens=64000", "common.log_interval=1",
]


def run(root: Path, work: Path, max_update: int, *extra: str) -> dict:
    argv = ["--data-root", str(root), "--tgt-lang", LANG, "--work-dir", str(work), "--n-clusters", str(K),
            "--km-percent", "1.0", "--device", "cpu", *extra]
    for o in TINY + [f"optimization.max_update={max_update}"]:
        argv += ["--set", o]
    return pretrain_hubert.main(argv)


def write_s2t_tsvs(root: Path) -> None:
    """Minimal speech_to_text TSVs (what gsgn-extract-units reads: ids, n_frames) for the corpus."""
    pair = root / f"en-{LANG}"
    for split in SPLITS:
        rows = []
        for segs in load_segments(root, LANG, split).values():
            audio = read_wav(segs[0].wav)
            for seg in segs:
                n = len(cut_segment(audio, seg))
                rows.append({"id": seg.id, "audio": f"fbank80.zip:0:{n}", "n_frames": 1 + (n - 400) // 160,
                             "tgt_text": seg.tgt_text, "speaker": seg.speaker, "src_text": seg.src_text})
        write_tsv(pair / f"{split}_st.tsv", rows, S2T_COLUMNS)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    base = tmp_path_factory.mktemp("hubert")
    root = make_tiny_mustc(base / "root", splits=SPLITS, n_talks=2, segs_per_talk=3)
    write_s2t_tsvs(root)
    work = base / "work"
    summary = run(root, work, max_update=3)
    return root, work, summary


def test_manifests_and_labels(pretrained, caplog):
    from fairseq.data.audio.hubert_dataset import load_audio, verify_label_lengths

    root, work, _ = pretrained
    for split in SPLITS:
        manifest = work / "manifest" / f"{split}.tsv"
        lines = manifest.read_text().splitlines()
        assert Path(lines[0]).is_absolute() and Path(lines[0]) == (work / "wav").resolve()
        segs = [s for t in load_segments(root, LANG, split).values() for s in t]
        assert [l.split("\t")[0] for l in lines[1:]] == [f"{split}/{s.id}.wav" for s in segs]
        labels = (work / "it1" / "labels" / f"{split}.km").read_text().splitlines()
        assert len(labels) == len(segs)
        talk_audio = {}
        for line, seg, lab in zip(lines[1:], segs, labels):
            rel, n = line.split("\t")
            wav = read_wav(Path(lines[0]) / rel)
            talk_audio.setdefault(seg.wav, read_wav(seg.wav))
            np.testing.assert_array_equal(wav, cut_segment(talk_audio[seg.wav], seg))  # the segment, losslessly
            assert len(wav) == int(n)
            units = [int(u) for u in lab.split()]
            assert len(units) == num_frames(int(n))  # = the conv feature extractor's frames
            assert all(0 <= u < K for u in units)
        # fairseq's own check of the label rate (50 Hz) against the audio: no warning
        _, _, inds, tot, sizes = load_audio(str(manifest), None, None)
        with caplog.at_level(logging.WARNING, logger="fairseq.data.audio.hubert_dataset"):
            verify_label_lengths(sizes, 16000, str(work / "it1" / "labels" / f"{split}.km"), 50.0, inds, tot)
        assert "differ too much" not in caplog.text
    assert (work / "it1" / "labels" / "dict.km.txt").read_text().splitlines() == [f"{i} 1" for i in range(K)]


def test_checkpoint_and_summary(pretrained):
    _, work, summary = pretrained
    ckpt = work / "it1" / "checkpoints" / "checkpoint_last.pt"
    assert Path(summary["checkpoint_of"]) == ckpt.resolve()
    assert Path(summary["checkpoint"]) == (work / "hubert.pt").resolve()  # a copy under a fixed name
    assert (work / "hubert.pt").read_bytes() == ckpt.read_bytes()
    state = torch.load(ckpt, map_location="cpu")  # weights_only: the plugin allow-lists fairseq's types
    assert state["cfg"]["model"]["_name"] == "hubert"
    assert state["cfg"]["task"]["_name"] == "hubert_pretraining"
    assert state["cfg"]["criterion"]["_name"] == "hubert"
    assert state["optimizer_history"][-1]["num_updates"] == 3
    it1 = json.loads((work / "it1" / "summary.json").read_text())
    assert it1["num_updates"] == 3 and "valid_loss" in it1["valid"] and "train_loss" in it1["train"]
    assert "valid_correct_m_0" in it1["valid"]


def test_units_through_learn_kmeans_and_extract_units(pretrained, tmp_path):
    root, work, summary = pretrained
    ckpt = Path(summary["checkpoint"])
    km = tmp_path / "km.bin"
    learn_kmeans.main(["--data-root", str(root), "--tgt-lang", LANG, "--feature", "hubert", "--checkpoint",
                       str(ckpt), "--layer", "2", "--n-clusters", "4", "--n-init", "2", "--out", str(km),
                       "--device", "cpu"])
    extract_units.main(["--data-root", str(root), "--tgt-lang", LANG, "--feature", "hubert", "--checkpoint",
                        str(ckpt), "--layer", "2", "--km-model", str(km), "--device", "cpu"])
    pair = root / f"en-{LANG}"
    meta = json.loads((pair / "units.json").read_text())
    assert meta["n_clusters"] == 4
    for split in SPLITS:
        for row in read_tsv(pair / f"{split}_st.tsv"):
            units = read_npy_ref(pair, row["units"])
            n = int(row["audio"].split(":")[-1])
            assert len(units) == num_frames(n) and units.min() >= 0 and units.max() < 4


def test_layer_choice_is_honoured(pretrained):
    root, _, summary = pretrained
    ckpt = Path(summary["checkpoint"])
    segs = next(iter(load_segments(root, LANG, "dev").values()))
    wav = cut_segment(read_wav(segs[0].wav), segs[0])
    f1 = HubertFeatures(ckpt, layer=1)([wav])[0]
    f2 = HubertFeatures(ckpt, layer=2)([wav])[0]
    assert f1.shape == f2.shape == (num_frames(len(wav)), 32)
    assert not torch.allclose(f1, f2, atol=1e-3)
    torch.testing.assert_close(HubertFeatures(ckpt, layer=2)([wav])[0], f2)
    with pytest.raises(ValueError, match="out of range"):
        HubertFeatures(ckpt, layer=3)


def test_resume_and_skip(pretrained, monkeypatch, caplog):
    root, work, _ = pretrained
    with caplog.at_level(logging.INFO):
        summary = run(root, work, max_update=5)  # continues from checkpoint_last.pt (3 updates)
    log = (work / "it1" / "train.log").read_text()
    assert "Loaded checkpoint" in log and "@ 3 updates" in log
    assert summary["it1"]["num_updates"] == 5

    def no_training(*args, **kwargs):
        raise AssertionError("a finished iteration was trained again")

    monkeypatch.setattr(pretrain_hubert, "train", no_training)
    assert run(root, work, max_update=5)["it1"]["num_updates"] == 5
    with pytest.raises(ValueError, match="other settings"):  # another model in the same work dir
        run(root, work, 5, "--set", "model.encoder_layers=3")



def test_second_iteration_on_layer_features(pretrained):
    root, work, _ = pretrained
    summary = run(root, work, 5, "--iterations", "2", "--it2-layer", "1", "--it2-clusters", "6")
    assert summary["it1"]["num_updates"] == 5 and summary["it2"]["num_updates"] == 5
    assert "layer 1 of" in summary["it2"]["labels"]
    _, rows = pretrain_hubert.read_manifest(work / "manifest" / "train.tsv")
    labels = (work / "it2" / "labels" / "train.km").read_text().splitlines()
    assert [len(l.split()) for l in labels] == [num_frames(n) for _, n in rows]
    assert max(int(u) for l in labels for u in l.split()) < 6
    assert (work / "hubert.pt").read_bytes() == (work / "it2" / "checkpoints" / "checkpoint_last.pt").read_bytes()


def write_unit_set(pair: Path, texts: dict, make_units) -> Path:
    """{split}_st.tsv with src_text and a units column, units.zip with make_units(text, rng)."""
    from gsgn_fairseq.data.manifest import UNITS_COLUMN
    from gsgn_fairseq.data.zip_store import write_npy_zip, zip_manifest

    pair.mkdir(parents=True)
    rng = np.random.default_rng(0)
    items = {f"{split}_{i}": make_units(t, rng) for split, ts in texts.items() for i, t in enumerate(ts)}
    write_npy_zip(pair / "units.zip", items.items())
    refs = zip_manifest(pair / "units.zip")
    for split, ts in texts.items():
        rows = [{"id": f"{split}_{i}", "audio": "x", "n_frames": 2 * len(items[f"{split}_{i}"]), "tgt_text": "x",
                 "speaker": "s", "src_text": t, UNITS_COLUMN: refs[f"{split}_{i}"]} for i, t in enumerate(ts)]
        write_tsv(pair / f"{split}_st.tsv", rows, S2T_COLUMNS + [UNITS_COLUMN])
    return pair


def test_unit_quality_ranks_informative_units_first(tmp_path):
    import unit_quality

    vocab = ["cat", "dog", "bird", "fish", "sees", "likes", "big", "small", "red", "old"]
    rng = np.random.default_rng(1)
    texts = {s: [" ".join(rng.choice(vocab, size=4, replace=False)) + "." for _ in range(n)]
             for s, n in (("train", 300), ("dev", 60))}
    code = {w: np.array([2 * i, 2 * i + 1]) for i, w in enumerate(vocab)}

    def spoken(text, rng):  # each word's two units, held 2-4 frames, plus 10% noise frames
        u = np.concatenate([np.repeat(code[w], rng.integers(2, 5, size=2)) for w in unit_quality.words(text)])
        noise = rng.random(len(u)) < 0.1
        u[noise] = rng.integers(0, 20, size=noise.sum())
        return u.astype(np.int16)

    good = write_unit_set(tmp_path / "good", texts, spoken)
    result = unit_quality.main(["--units", f"good={good}", "--eval-splits", "dev", "--random-baseline",
                                "--min-word-count", "5", "--out-json", str(tmp_path / "q.json")])
    assert result["n_words"] == len(vocab) and result["n_eval"] == 60
    g, r = result["units"]["good"], result["units"]["random"]
    assert g["word_map"] > 0.9 and g["word_auc"] > 0.9
    assert abs(r["word_auc"] - 0.5) < 0.15 and r["word_map"] < g["word_map"] - 0.3
    assert g["retrieval_jaccard@10"] > r["retrieval_jaccard@10"] + 0.2
    assert json.loads((tmp_path / "q.json").read_text())["units"]["good"]["clusters_used"] == 20
