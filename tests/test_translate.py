"""gsgn-translate: audio files in, the hypotheses fairseq-generate gives for the same
segments out (a corpus prepared, units made, a tiny model trained, both decoders run), for
units from every kind of feature back-end (MFCC, a fairseq SSL checkpoint file, a Hugging
Face SSL model directory; tiny random models)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gsgn_fairseq.data.mustc import DataError, cut_segment, load_segments, read_wav
from gsgn_fairseq.prep.ssl_features import FEATURES
from test_ssl_features import KINDS as SSL_KINDS, make_fairseq, make_hf
from tiny_mustc import make_tiny_mustc

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
USER_DIR = str(ROOT / "gsgn_fairseq")
LANG = "de"


def _py(module, *args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _tool(tool, *args, timeout=600):
    proc = subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


# each kind of feature back-end: (--feature, the tiny SSL model of test_ssl_features.KINDS or None)
FEATURE_KINDS = {
    "mfcc": ("mfcc", None),
    "ssl-fairseq-file": ("ssl", "fairseq-hubert-group"),
    "ssl-hf-directory": ("ssl", "hf-wavlm-group"),
}
SSL_LAYER = 2  # the tiny SSL models' last layer


def _ssl_model(base: Path, kind: str) -> Path:
    fmt, model_type, overrides, normalize = SSL_KINDS[kind]
    if fmt == "fairseq":
        return make_fairseq(base / f"{kind}.pt", model_type, overrides, normalize)
    return make_hf(base / kind, model_type, overrides, normalize)


def train_on_units(base: Path, kind: str, *train_args):
    """(data root, pair dir, checkpoint, k-means file) of a tiny GSGN+Drop model on units of
    ``kind`` (FEATURE_KINDS): a corpus prepared, k-means learned, units extracted, trained."""
    feature, ssl_kind = FEATURE_KINDS[kind]
    root = make_tiny_mustc(base / "data", n_talks=3, segs_per_talk=4)
    common = ["--data-root", root, "--tgt-lang", LANG]
    _py("gsgn_fairseq.prep.prep_mustc", *common, "--vocab-size", "60", "--jobs", "1")
    features = ["--feature", feature, "--device", "cpu"]
    if ssl_kind is not None:
        features += ["--checkpoint", _ssl_model(base, ssl_kind), "--layer", str(SSL_LAYER)]
    km = base / "km.bin"
    _py("gsgn_fairseq.prep.learn_kmeans", *common, *features, "--n-clusters", "8", "--n-init", "1", "--out", km)
    _py("gsgn_fairseq.prep.extract_units", *common, *features, "--km-model", km)
    pair = Path(root) / f"en-{LANG}"
    _tool("fairseq-train", pair, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview",
          "--config-yaml", "config_st.yaml", "--train-subset", "train_st", "--valid-subset", "dev_st",
          "--num-units", "8", "--arch", "s2t_gsgn_tiny", "--fusion", "gsgn", "--multi-stage-dropout",
          "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
          "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4", "--max-tokens", "3000",
          "--num-workers", "0", "--save-dir", base / "ckpt", "--no-progress-bar",
          "--seed", "1", "--cpu", "--no-epoch-checkpoints", *train_args)
    return Path(root), pair, base / "ckpt" / "checkpoint_last.pt", km


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny GSGN+Drop model on MFCC units, trained for 3 epochs (``train_on_units``)."""
    return train_on_units(tmp_path_factory.mktemp("translate"), "mfcc", "--max-epoch", "3")


def _generate(pair, checkpoint, *extra):
    """fairseq-generate's detokenized hypotheses of tst-COMMON: TSV row -> text."""
    log = _tool("fairseq-generate", pair, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview",
                "--config-yaml", "config_st.yaml", "--gen-subset", "tst-COMMON_st", "--path", checkpoint,
                "--beam", "5", "--lenpen", "1.0", "--max-tokens", "50000", "--required-batch-size-multiple", "1",
                "--num-workers", "0", "--cpu", *extra)
    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^D-(\d+)\t[^\t]*\t(.*)$", log, flags=re.M)}
    return hyps


def _segments_as_wavs(root: Path, out: Path):
    """Each tst-COMMON segment cut to its own wav, named after its id; in TSV order."""
    out.mkdir()
    files = []
    for segs in load_segments(root, LANG, "tst-COMMON").values():
        for seg in segs:
            audio = cut_segment(read_wav(seg.wav), seg)
            sf.write(out / f"{seg.id}.wav", audio, 16000, subtype="FLOAT")
            files.append(out / f"{seg.id}.wav")
    return files


@pytest.mark.parametrize("branch", ["fusion", "sample"])
def test_translate_gives_fairseq_generate_hypotheses(trained, tmp_path, branch):
    from gsgn_fairseq.data.manifest import read_tsv

    root, pair, ckpt, km = trained
    overrides = "{'inference_branch': '%s'}" % branch
    hyps = _generate(pair, ckpt, "--model-overrides", overrides)
    rows = read_tsv(pair / "tst-COMMON_st.tsv")
    expected = {rows[i]["id"]: h for i, h in hyps.items()}
    assert len(expected) == len(rows) >= 3
    files = _segments_as_wavs(root, tmp_path / "wavs")
    out = _py("gsgn_fairseq.cli.translate", "--path", ckpt, "--model-overrides",
              json.dumps({"inference_branch": branch}), "--device", "cpu", "--json", tmp_path / "wavs")
    result = json.loads(out)
    got = {t["id"]: t["translation"] for t in result["translations"]}
    assert got == {r["id"]: expected[r["id"]] for r in rows}
    assert result["timings"]["audio_seconds"] > 0 and result["timings"]["x_real_time"] > 0
    # the plain output: path<TAB>translation, in the order given
    out = _py("gsgn_fairseq.cli.translate", "--path", ckpt, "--device", "cpu", *files[:2])
    assert out.splitlines() == [f"{f}\t{got[f.stem]}" for f in files[:2]] if branch == "fusion" else True


def test_translate_refuses_another_kmeans_model(trained, tmp_path):
    from gsgn_fairseq.prep.units import load_kmeans

    root, pair, ckpt, km = trained
    centers = np.asarray(load_kmeans(km).cluster_centers_)
    np.save(tmp_path / "other.npy", centers[::-1].copy())
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    proc = subprocess.run([sys.executable, "-m", "gsgn_fairseq.cli.translate", "--path", str(ckpt), "--device", "cpu",
                           "--km-model", str(tmp_path / "other.npy"), str(wav)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode != 0
    assert "is not the one the model's units were made with" in proc.stderr and "--km-model" in proc.stderr


def test_every_feature_backend_kind_is_covered():
    """FEATURE_KINDS names every registered back-end class, and the SSL one as a file and a directory."""
    assert {FEATURES[feature] for feature, _ in FEATURE_KINDS.values()} == set(FEATURES.values())
    assert {SSL_KINDS[k][0] for _, k in FEATURE_KINDS.values() if k} == {"fairseq", "hf"}


@pytest.mark.parametrize("kind", list(FEATURE_KINDS))
def test_translate_with_units_of_every_feature_backend(trained, tmp_path_factory, tmp_path, kind):
    """Units from each kind of back-end (the SSL model found where the checkpoint recorded it,
    hashed as the extraction hashed it), a model trained a few updates: gsgn-translate gives
    fairseq-generate's hypotheses."""
    from gsgn_fairseq.data.manifest import read_tsv

    if kind == "mfcc":
        root, pair, ckpt, _ = trained
    else:
        root, pair, ckpt, _ = train_on_units(tmp_path_factory.mktemp(kind), kind, "--max-update", "3")
    decoding = ["--max-len-b", "20"]  # a model this young may not stop by itself
    hyps = _generate(pair, ckpt, *decoding)
    rows = read_tsv(pair / "tst-COMMON_st.tsv")
    expected = {rows[i]["id"]: h for i, h in hyps.items()}
    assert len(expected) == len(rows) >= 3
    _segments_as_wavs(root, tmp_path / "wavs")
    out = _py("gsgn_fairseq.cli.translate", "--path", ckpt, "--device", "cpu", "--json", *decoding, tmp_path / "wavs")
    assert {t["id"]: t["translation"] for t in json.loads(out)["translations"]} == expected


def test_translate_names_an_audio_file_with_nan_samples(trained, tmp_path):
    root, pair, ckpt, km = trained
    audio = np.full(16000, 0.01, dtype=np.float32)
    audio[8000] = np.nan
    wav = tmp_path / "broken.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"broken\.wav: 1 NaN or infinite samples, the first at 0\.500 s"):
        read_wav(wav)
    proc = subprocess.run([sys.executable, "-m", "gsgn_fairseq.cli.translate", "--path", str(ckpt), "--device", "cpu",
                           str(wav)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert f"{wav}: 1 NaN or infinite samples" in proc.stderr, proc.stderr[-2000:]
    assert "rerun the prep" not in proc.stderr
