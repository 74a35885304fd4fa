"""Discrete units: features, k-means, extraction into units.zip, sharding, .km import, bad input."""
import argparse
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

from make_random_hubert import make_random_hubert  # noqa: E402
from gsgn_fairseq.prep import extract_units, learn_kmeans
from gsgn_fairseq.data.manifest import S2T_COLUMNS, read_tsv, write_tsv  # noqa: E402
from gsgn_fairseq.data.mustc import DataError, cut_segment, load_segments, read_wav  # noqa: E402
from gsgn_fairseq.prep.units import (  # noqa: E402
    HubertFeatures, KMeansAssigner, MfccFeatures, conv_geometry, load_hubert, num_frames,
)
from gsgn_fairseq.data.zip_store import read_npy_ref  # noqa: E402

LANG = "de"
TALKS = {"train": 2, "dev": 1}
K = 8


def make_corpus(root: Path, seed: int = 0) -> Path:
    """Release-layout talks of tones over noise (3 segments each) and their TSVs."""
    rng = np.random.default_rng(seed)
    pair = root / f"en-{LANG}"
    for split, n_talks in TALKS.items():
        base = pair / "data" / split
        (base / "wav").mkdir(parents=True)
        (base / "txt").mkdir(parents=True)
        entries, en, de = [], [], []
        for k in range(n_talks):
            talk = f"{split}_talk{k}"
            audio, t = [0.01 * rng.standard_normal(3000)], 3000
            for i in range(3):
                n = int(rng.integers(6000, 20000))  # 0.375-1.25 s, not a multiple of 160
                tone = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 600) * np.arange(n) / 16000)
                audio += [tone + 0.02 * rng.standard_normal(n), 0.01 * rng.standard_normal(2000)]
                entries.append({"duration": n / 16000, "offset": t / 16000, "speaker_id": f"spk{k}", "wav": f"{talk}.wav"})
                en.append(f"sentence {i} of {talk}")
                de.append(f"satz {i} von {talk}")
                t += n + 2000
            sf.write(base / "wav" / f"{talk}.wav", np.concatenate(audio).astype(np.float32), 16000, subtype="PCM_16")
        (base / "txt" / f"{split}.yaml").write_text(yaml.safe_dump(entries))
        (base / "txt" / f"{split}.en").write_text("\n".join(en) + "\n")
        (base / "txt" / f"{split}.{LANG}").write_text("\n".join(de) + "\n")
        rows = []
        for talk, segs in load_segments(root, LANG, split).items():
            audio = read_wav(segs[0].wav)
            for seg in segs:
                n = len(cut_segment(audio, seg))
                rows.append({"id": seg.id, "audio": f"fbank80.zip:0:{n}", "n_frames": 1 + (n - 400) // 160,
                             "tgt_text": seg.tgt_text, "speaker": seg.speaker, "src_text": seg.src_text})
        write_tsv(pair / f"{split}_st.tsv", rows, S2T_COLUMNS)
    return root


def n_samples_of(root: Path):
    out = {}
    for split in TALKS:
        for segs in load_segments(root, LANG, split).values():
            audio = read_wav(segs[0].wav)
            out.update({s.id: len(cut_segment(audio, s)) for s in segs})
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def fresh(corpus, tmp_path):
    """A private copy of the corpus (the runs rewrite its TSVs)."""
    return Path(shutil.copytree(corpus, tmp_path / "root"))


def common(root):
    return ["--data-root", str(root), "--tgt-lang", LANG]


@pytest.fixture(scope="module")
def mfcc_run(corpus, tmp_path_factory):
    """learn_kmeans + extract_units (mfcc) on a copy of the corpus: (root, km model)."""
    root = Path(shutil.copytree(corpus, tmp_path_factory.mktemp("mfcc") / "root"))
    km = root / "km_mfcc.bin"
    learn_kmeans.main(common(root) + ["--feature", "mfcc", "--n-clusters", str(K), "--out", str(km),
                                      "--n-init", "2", "--device", "cpu"])
    extract_units.main(common(root) + ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu"])
    return root, km


def units_of(root):
    """{id: units} read back through each TSV's units column."""
    pair = root / f"en-{LANG}"
    out = {}
    for split in TALKS:
        for row in read_tsv(pair / f"{split}_st.tsv"):
            out[row["id"]] = read_npy_ref(pair, row["units"])
    return out


def tree_bytes(root):
    pair = root / f"en-{LANG}"
    return {name: (pair / name).read_bytes() for name in ["units.zip"] + [f"{s}_st.tsv" for s in TALKS]}


# ---------------------------------------------------------------- k-means and features


def test_kmeans_roundtrip_and_argmin_equal_predict(tmp_path):
    rng = np.random.default_rng(0)
    feats = (rng.standard_normal((3000, 39)) + 4 * rng.standard_normal((12, 39))[rng.integers(12, size=3000)])
    feats = feats.astype(np.float32)
    km = learn_kmeans.fit_kmeans(feats, 12, seed=0, n_init=2)
    path = tmp_path / "km.bin"
    joblib.dump(km, path)
    loaded = joblib.load(path)
    assert type(loaded).__name__ == "MiniBatchKMeans" and loaded.n_init == 2 and loaded.batch_size == 10000
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    assigner = KMeansAssigner.from_file(path)
    assigner.chunk_frames = 1000  # exercise the chunking
    assert (assigner.n_clusters, assigner.dim) == (12, 39)
    labels = assigner(torch.from_numpy(feats)).numpy()
    np.testing.assert_array_equal(labels, loaded.predict(feats))


def test_mfcc_frame_count():
    mfcc = MfccFeatures()
    lengths = [399, 400, 719, 720, 12345, 16000, 48123]
    for n, f in zip(lengths, mfcc([np.random.default_rng(n).uniform(-0.5, 0.5, n) for n in lengths])):
        assert f.shape == (num_frames(n), 39) and f.dtype == torch.float32
        assert num_frames(n) == (0 if n < 400 else 1 + (n - 400) // 320)
    assert num_frames(16000) == 49  # 50 Hz


# ---------------------------------------------------------------- tiny HuBERT


def make_tiny_hubert(d: Path) -> Path:
    """A randomly initialised 2-layer, 32-dim HuBERT with HuBERT-base's conv strides (50 Hz)."""
    return make_random_hubert(d / "tiny_hubert.pt", preset="tiny", n_labels=K, normalize=True)


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    return make_tiny_hubert(tmp_path_factory.mktemp("hubert"))


def test_hubert_frames_layers_and_batching(tiny_hubert):
    hub = HubertFeatures(tiny_hubert, layer=2)
    assert conv_geometry(hub.model) == (400, 320) and hub.normalize and hub.dim == 32
    rng = np.random.default_rng(0)
    lengths = [399, 400, 719, 720, 5003, 12345, 16000]
    wavs = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in lengths]
    batched = hub(wavs)
    for n, wav, f in zip(lengths, wavs, batched):
        assert f.shape == (num_frames(n), 32)
        if n < 400:
            continue
        assert f.shape[0] == (n - 400) // 320 + 1  # the conv formula
        alone = hub([wav])[0]
        x = torch.nn.functional.layer_norm(torch.from_numpy(wav), (n,)).view(1, -1)
        with torch.no_grad():
            ref, _ = hub.model.extract_features(source=x, padding_mask=None, mask=False, output_layer=2)
        torch.testing.assert_close(f, alone, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f, ref[0], atol=1e-4, rtol=1e-4)
    layer1 = HubertFeatures(tiny_hubert, layer=1)([wavs[-1]])[0]
    assert layer1.shape == batched[-1].shape and not torch.allclose(layer1, batched[-1], atol=1e-3)
    chunked = HubertFeatures(tiny_hubert, layer=2, max_chunk=4000)([wavs[-1]])[0]  # 16000 samples, 5 chunks
    assert chunked.shape == batched[-1].shape
    with pytest.raises(ValueError, match="layer 3"):
        HubertFeatures(tiny_hubert, layer=3)


def test_hubert_end_to_end(tiny_hubert, fresh):
    km = fresh / "km_hubert.bin"
    learn_kmeans.main(common(fresh) + ["--feature", "hubert", "--checkpoint", str(tiny_hubert), "--layer", "2",
                                       "--n-clusters", "4", "--n-init", "1", "--out", str(km), "--device", "cpu"])
    assert joblib.load(km).cluster_centers_.shape == (4, 32)
    extract_units.main(common(fresh) + ["--feature", "hubert", "--checkpoint", str(tiny_hubert), "--layer", "2",
                                        "--km-model", str(km), "--device", "cpu", "--batch-seconds", "1.5"])
    lengths = n_samples_of(fresh)
    units = units_of(fresh)
    assert set(units) == set(lengths)
    for uid, u in units.items():
        assert u.dtype == np.int16 and len(u) == num_frames(lengths[uid]) and 0 <= u.min() and u.max() < 4


def test_not_a_hubert_checkpoint(tmp_path):
    from fairseq import checkpoint_utils

    random_file = tmp_path / "random.pt"
    torch.save({"weight": torch.zeros(3)}, random_file)
    text_file = tmp_path / "notes.pt"
    text_file.write_text("not a checkpoint\n")
    history = [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None}, "num_updates": 0}]
    transformer = tmp_path / "transformer.pt"  # a fairseq checkpoint of another model
    checkpoint_utils.torch_persistent_save(
        {"args": None, "cfg": {"model": {"_name": "transformer"}, "task": {"_name": "translation"}},
         "model": {}, "optimizer_history": history, "extra_state": {}}, str(transformer))
    legacy = tmp_path / "legacy_transformer.pt"  # fairseq < 0.10: an argparse.Namespace
    checkpoint_utils.torch_persistent_save(
        {"args": argparse.Namespace(arch="transformer", task="translation"), "model": {},
         "optimizer_history": history, "extra_state": {}}, str(legacy))
    for path, message in [(random_file, "not a fairseq checkpoint"), (text_file, "not a fairseq checkpoint"),
                          (transformer, "model 'transformer', not a HuBERT"),
                          (legacy, "model 'transformer', not a HuBERT")]:
        with pytest.raises(DataError, match=message) as err:
            load_hubert(path)
        assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_hubert(tmp_path / "missing.pt")


# ---------------------------------------------------------------- extraction (mfcc)


def test_mfcc_end_to_end(mfcc_run):
    root, km = mfcc_run
    pair = root / f"en-{LANG}"
    lengths = n_samples_of(root)
    units = units_of(root)
    assert set(units) == set(lengths)
    for split in TALKS:
        rows = read_tsv(pair / f"{split}_st.tsv")
        assert list(rows[0]) == S2T_COLUMNS + ["units"]
        assert all(r["units"].startswith("units.zip:") for r in rows)
    for uid, u in units.items():
        assert u.dtype == np.int16 and u.ndim == 1 and len(u) == num_frames(lengths[uid])
        assert 0 <= u.min() and u.max() < K
    assert len(np.unique(np.concatenate(list(units.values())))) > 1
    assert not (pair / "units_shards").exists() and not (pair / "units.zip.lock").exists()
    # how they were made, as training reads it back (gsgn_fairseq.data.provenance)
    from gsgn_fairseq.data.provenance import read_units_provenance
    from gsgn_fairseq.data.zip_store import zip_fingerprint

    assert read_units_provenance(pair / "units.zip") == {
        "feature": "mfcc", "checkpoint_sha1": None, "layer": None, "n_clusters": K,
        "km_model_sha1": extract_units.sha1_file(km), "checkpoint": None, "km_model": str(km.resolve()),
        "units_zip": "units.zip", "units_fingerprint": zip_fingerprint(pair / "units.zip"),  # ties it to the zip
        "unit_set": "units"}
    # the same units from the assigner directly
    uid = next(iter(units))
    split = "train" if uid.startswith("train") else "dev"
    talk = next(s for segs in load_segments(root, LANG, split).values() for s in segs if s.id == uid)
    feats = MfccFeatures()([cut_segment(read_wav(talk.wav), talk)])[0]
    np.testing.assert_array_equal(KMeansAssigner.from_file(km)(feats).numpy(), units[uid])


def test_a_named_unit_set_is_written_beside_the_default_one(mfcc_run, tmp_path):
    root, km = mfcc_run
    root = Path(shutil.copytree(root, tmp_path / "root"))
    pair = root / f"en-{LANG}"
    before = tree_bytes(root)
    assert extract_units.main(common(root) + ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu",
                                              "--name", "second", "--nshard", "2", "--rank", "0"]) is None
    assert (pair / "units_second_shards").is_dir() and not (pair / "units_shards").exists()
    out = extract_units.main(common(root) + ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu",
                                             "--name", "second", "--nshard", "2", "--rank", "1"])
    assert out == pair / "units_second.zip" and not (pair / "units_second_shards").exists()
    from gsgn_fairseq.data.provenance import read_units_provenance

    prov = read_units_provenance(pair / "units_second.zip")
    assert prov["unit_set"] == "second" and prov["units_zip"] == "units_second.zip" and prov["n_clusters"] == K
    assert read_units_provenance(pair / "units.zip")["unit_set"] == "units"  # the default record is its own
    assert (pair / "units.zip").read_bytes() == before["units.zip"]
    for split in TALKS:
        rows = read_tsv(pair / f"{split}_st.tsv")
        assert list(rows[0])[-2:] == ["units", "units_second"]
        for row in rows:  # the same k-means model: the same units, in their own zip
            np.testing.assert_array_equal(read_npy_ref(pair, row["units_second"]), read_npy_ref(pair, row["units"]))
    with pytest.raises(ValueError, match="--name"):
        extract_units.main(common(root) + ["--feature", "mfcc", "--km-model", str(km), "--name", "a/b"])


def test_sharded_run_merges_to_the_same_bytes(mfcc_run, fresh):
    root, km = mfcc_run
    args = common(fresh) + ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu", "--nshard", "2"]
    pair = fresh / f"en-{LANG}"
    assert extract_units.main(args + ["--rank", "1"]) is None  # rank 0 missing: no merge yet
    shard = pair / "units_shards" / "train.1of2.zip"
    stamp = shard.stat().st_mtime_ns
    assert extract_units.main(args + ["--rank", "1"]) is None
    assert shard.stat().st_mtime_ns == stamp  # resumed, not recomputed
    assert not (pair / "units.zip").exists()
    with pytest.raises(FileNotFoundError, match=r"shards missing: .*train\.0of2\.json"):
        extract_units.main(common(fresh) + ["--merge", "--nshard", "2"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    (pair / "units.zip.lock").write_text(f"{socket.gethostname()} {dead.pid}")  # left by a crash
    assert extract_units.main(args + ["--rank", "0"]) == pair / "units.zip"
    assert tree_bytes(fresh) == tree_bytes(root)
    assert not (pair / "units_shards").exists() and not (pair / "units.zip.lock").exists()


def test_rerun_one_split_keeps_the_others(mfcc_run, fresh):
    root, km = mfcc_run
    extract_units.main(common(fresh) + ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu"])
    extract_units.main(common(fresh) + ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu",
                                        "--splits", "dev"])
    assert tree_bytes(fresh) == tree_bytes(root)


def write_km_files(root, units, km_dir):
    """train as two fairseq shards, dev as one file, lines in TSV order."""
    km_dir.mkdir()
    pair = root / f"en-{LANG}"
    train = [r["id"] for r in read_tsv(pair / "train_st.tsv")]
    for rank in range(2):
        start, end = extract_units.shard_range(len(train), 2, rank)
        (km_dir / f"train_{rank}_2.km").write_text(
            "".join(" ".join(map(str, units[u].tolist())) + "\n" for u in train[start:end]))
    dev = [r["id"] for r in read_tsv(pair / "dev_st.tsv")]
    (km_dir / "dev.km").write_text("".join(" ".join(map(str, units[u].tolist())) + "\n" for u in dev))
    return dev


def test_from_km_import(mfcc_run, fresh, tmp_path):
    root, km = mfcc_run
    write_km_files(fresh, units_of(root), tmp_path / "km")
    extract_units.main(common(fresh) + ["--from-km", str(tmp_path / "km"), "--km-model", str(km)])
    assert tree_bytes(fresh) == tree_bytes(root)


# ---------------------------------------------------------------- bad input


def test_km_model_of_other_dimension(fresh, tmp_path):
    km = learn_kmeans.fit_kmeans(np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32), 4, n_init=1)
    path = tmp_path / "km5.bin"
    joblib.dump(km, path)
    with pytest.raises(DataError, match=r"km5\.bin: k-means centroids have 5 dims but the mfcc features have 39"):
        extract_units.main(common(fresh) + ["--feature", "mfcc", "--km-model", str(path), "--device", "cpu"])


@pytest.mark.parametrize("bad", [K, -1])
def test_from_km_unit_out_of_range(mfcc_run, fresh, tmp_path, bad):
    root, _ = mfcc_run
    units = units_of(root)
    dev = write_km_files(fresh, units, tmp_path / "km")
    lines = (tmp_path / "km" / "dev.km").read_text().splitlines()
    lines[1] = lines[1] + f" {bad}"
    (tmp_path / "km" / "dev.km").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"dev\.km:2: utterance {dev[1]}: unit id {bad} out of range \[0, {K}\)"):
        extract_units.main(common(fresh) + ["--from-km", str(tmp_path / "km"), "--n-clusters", str(K)])
    assert not (fresh / f"en-{LANG}" / "units.zip").exists()


def test_units_that_do_not_match_their_utterance(mfcc_run, fresh, tmp_path):
    root, _ = mfcc_run
    units = units_of(root)
    dev = write_km_files(fresh, units, tmp_path / "km")
    lines = (tmp_path / "km" / "dev.km").read_text().splitlines()
    lines[0] = " ".join(lines[0].split()[:-5])  # 5 units short
    (tmp_path / "km" / "dev.km").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"dev_st\.tsv: 1 utterance\(s\) .*{dev[0]} \("):
        extract_units.main(common(fresh) + ["--from-km", str(tmp_path / "km"), "--n-clusters", str(K)])
    (tmp_path / "km" / "dev.km").write_text("\n".join(lines[:-1]) + "\n")  # a line missing
    with pytest.raises(DataError, match=r"dev\.km: 2 lines for the 3 utterances"):
        extract_units.main(common(fresh) + ["--from-km", str(tmp_path / "km"), "--n-clusters", str(K)])
    assert not (fresh / f"en-{LANG}" / "units.zip").exists()
    assert "units" not in read_tsv(fresh / f"en-{LANG}" / "dev_st.tsv")[0]


def test_missing_tsv(mfcc_run, fresh, tmp_path):
    _, km = mfcc_run
    args = ["--feature", "mfcc", "--km-model", str(km), "--device", "cpu"]
    with pytest.raises(FileNotFoundError, match=r"en-de/tst-HE_st\.tsv"):
        extract_units.main(common(fresh) + args + ["--splits", "tst-HE"])
    with pytest.raises(FileNotFoundError, match=r"en-de/\{split\}_st\.tsv"):
        extract_units.main(["--data-root", str(tmp_path / "empty"), "--tgt-lang", LANG] + args)
    with pytest.raises(FileNotFoundError, match=r"en-de/train_st\.tsv"):
        learn_kmeans.main(["--data-root", str(tmp_path / "empty"), "--tgt-lang", LANG, "--feature", "mfcc",
                           "--n-clusters", "2", "--out", str(tmp_path / "km.bin")])


def test_audio_read_in_worker_processes_is_the_same_in_order(corpus):
    from gsgn_fairseq.prep.units import iter_split_audio

    ids = [r["id"] for r in read_tsv(corpus / f"en-{LANG}" / "train_st.tsv")]
    here = list(iter_split_audio(corpus, LANG, "train", ids))
    workers = list(iter_split_audio(corpus, LANG, "train", ids, num_workers=2))
    assert [u for u, _ in workers] == ids == [u for u, _ in here]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(here, workers))
    with pytest.raises(DataError, match="utterance nope is not a segment of train"):
        list(iter_split_audio(corpus, LANG, "train", ids[:1] + ["nope"], num_workers=2))
