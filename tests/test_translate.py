"""gsgn-translate: audio files in, the hypotheses fairseq-generate gives for the same
segments out (a corpus prepared, units made, a tiny model trained, both decoders run)."""
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, pair dir, checkpoint, k-means file) of a tiny GSGN+Drop model on MFCC units."""
    base = tmp_path_factory.mktemp("translate")
    root = make_tiny_mustc(base / "data", n_talks=3, segs_per_talk=4)
    common = ["--data-root", root, "--tgt-lang", LANG]
    _py("gsgn_fairseq.prep.prep_mustc", *common, "--vocab-size", "60", "--jobs", "1")
    km = base / "km.bin"
    _py("gsgn_fairseq.prep.learn_kmeans", *common, "--feature", "mfcc", "--n-clusters", "8", "--n-init", "1",
        "--out", km, "--device", "cpu")
    _py("gsgn_fairseq.prep.extract_units", *common, "--feature", "mfcc", "--km-model", km, "--device", "cpu")
    pair = Path(root) / f"en-{LANG}"
    _tool("fairseq-train", pair, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview",
          "--config-yaml", "config_st.yaml", "--train-subset", "train_st", "--valid-subset", "dev_st",
          "--num-units", "8", "--arch", "s2t_gsgn_tiny", "--fusion", "gsgn", "--multi-stage-dropout",
          "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
          "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4", "--max-tokens", "3000",
          "--max-epoch", "3", "--num-workers", "0", "--save-dir", base / "ckpt", "--no-progress-bar",
          "--seed", "1", "--cpu", "--no-epoch-checkpoints")
    return Path(root), pair, base / "ckpt" / "checkpoint_last.pt", km


def _generate(pair, checkpoint, *extra):
    log = _tool("fairseq-generate", pair, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview",
                "--config-yaml", "config_st.yaml", "--gen-subset", "tst-COMMON_st", "--path", checkpoint,
                "--beam", "5", "--lenpen", "1.0", "--max-tokens", "50000", "--required-batch-size-multiple", "1",
                "--num-workers", "0", "--cpu", *extra)
    ids = [line.split("\t")[1] for line in log.splitlines() if line.startswith("S-")]  # not printed: use D- order
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
