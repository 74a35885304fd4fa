"""scripts/recipes/must_c/run.sh end to end on a tiny corpus: every stage, markers, rerun, and
test scoring checked against an independent decoding of fairseq-generate's pieces."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import sacrebleu
import sentencepiece as spm

from tiny_mustc import make_tiny_mustc

ROOT = Path(__file__).resolve().parents[1]


def _recipe(tmp_path, *extra):
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = [str(ROOT / "scripts/recipes/must_c/run.sh"), "--data-root", str(tmp_path / "data"), "--tgt-lang", "de",
           "--exp", str(tmp_path / "exp"), "--vocab-size", "60", "--jobs", "1", "--units", "mfcc",
           "--n-clusters", "8", "--km-percent", "1", "--arch", "s2t_gsgn_tiny", "--max-tokens", "3000",
           "--lr", "1e-3", "--warmup", "10", "--max-epoch", "2", "--n-avg", "2", "--num-workers", "0",
           "--variants", "fbank,gsgn_drop", "--msd-schedule", "1:0.3,0.0;2:0.5,0.3", "--precision", "auto",
           "--beam", "2", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_recipe_all_stages_then_rerun_skips(tmp_path):
    make_tiny_mustc(tmp_path / "data", n_talks=3, segs_per_talk=4)
    p = _recipe(tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    exp = tmp_path / "exp"
    done = {f.name for f in (exp / ".done").iterdir()}
    assert done == {"prep", "units", "train.fbank", "train.gsgn_drop", "average.fbank", "average.gsgn_drop",
                    "decode.fbank", "decode.gsgn_drop"}
    assert "(s2t_gsgn_tiny, fp32)" in p.stdout  # --precision auto on a CPU
    table = (exp / "results.md").read_text()
    assert "| fbank |" in table and "| gsgn_drop |" in table and "sacreBLEU signature" in table
    for v in ("fbank", "gsgn_drop"):
        assert (exp / v / "checkpoint_avg2.pt").is_file()
        assert (exp / v / "bleu-tst-COMMON.json").is_file()
        # the table's convergence epoch is the latest averaged one: 2 epochs, 2 averaged
        assert f"| {v} |" in table and table.split(f"| {v} |")[1].split("\n")[0].strip().endswith("| 2 |")
        check_scoring(tmp_path / "data" / "en-de", exp / v, "tst-COMMON")
    # the multi-stage-dropout model: the paper's protocol, and the fusion input beside it
    assert "decode gsgn_drop on tst-COMMON (beam 2, lenpen 1.0, inference branch sample)" in p.stdout
    assert "decode gsgn_drop on tst-COMMON (beam 2, lenpen 1.0, inference branch fusion)" in p.stdout
    assert "decode fbank on tst-COMMON (beam 2, lenpen 1.0, inference branch fusion)" in p.stdout
    check_scoring(tmp_path / "data" / "en-de", exp / "gsgn_drop", "tst-COMMON", suffix=".fusion")
    assert not (exp / "fbank" / "bleu-tst-COMMON.fusion.json").exists()
    assert "BLEU, fusion input" in table and "paper's protocol" in table
    log_size = (exp / "fbank" / "train.log").stat().st_size

    again = _recipe(tmp_path)  # every stage is marked done: nothing is redone
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stage 2" not in again.stdout and "stage 0" not in again.stdout
    assert (exp / "fbank" / "train.log").stat().st_size == log_size


def test_recipe_rejects_unknown_precision(tmp_path):
    p = _recipe(tmp_path, "--precision", "fp8", "--stage", "2")
    assert p.returncode != 0 and "--precision must be auto, bf16, fp16 or fp32, got 'fp8'" in p.stderr


def check_scoring(data, run, split, suffix=""):
    """Stage 4's score is sacreBLEU of the hypotheses against the TSV's original references.

    The hypotheses are rebuilt here from the H- lines (SentencePiece pieces), checked against
    the data's SentencePiece model, not taken from the D- lines the scorer reads, so a decode path that mangles
    the text (e.g. SentencePiece decoding twice, which deletes the spaces) fails this check.
    """
    gen = (run / f"generate-{split}{suffix}.txt").read_text(encoding="utf-8")
    sp = spm.SentencePieceProcessor(model_file=str(next(data.glob("spm_unigram*_st.model"))))
    pieces = {int(i): h for i, h in re.findall(r"^H-(\d+)\t[^\t]*\t(.*)$", gen, flags=re.M)}
    with open(data / f"{split}_st.tsv", encoding="utf-8", newline="") as f:
        refs = [row["tgt_text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert sorted(pieces) == list(range(len(refs)))  # every utterance decoded, once
    # SentencePiece detokenization: join the pieces, the word marker becomes a space; an <unk>
    # stays "<unk>" as fairseq prints it (sp.decode would render it " ⁇ ")
    hyps = ["".join(pieces[i].split()).replace("\u2581", " ").strip() for i in range(len(refs))]
    for i in range(len(refs)):
        if "<unk>" not in pieces[i]:
            assert hyps[i] == sp.decode(pieces[i].split()).strip()
    expected = sacrebleu.corpus_bleu(hyps, [refs])
    scored = json.loads((run / f"bleu-{split}{suffix}.json").read_text())
    assert scored["bleu"] == round(expected.score, 2), (scored, str(expected))
    assert scored["n_sentences"] == len(refs)
    # decoded once: the H- lines are SentencePiece pieces, and each D- line is exactly their
    # decoding (decoded twice, H- holds words and D- is H- without its spaces)
    dlines = {int(i): d for i, d in re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", gen, flags=re.M)}
    assert dlines == dict(enumerate(hyps))
    unk = sp.unk_id()
    assert all(sp.piece_to_id(t) != unk or t == "<unk>" for h in pieces.values() for t in h.split()), pieces
    assert all(" " in r for r in refs)
    # fairseq's own --scoring sacrebleu line (against its re-encoded T- lines) agrees
    fairseq_bleu = float(re.search(rf"^Generate {split}_st with beam=\d+: BLEU = ([\d.]+)", gen, flags=re.M).group(1))
    assert abs(fairseq_bleu - scored["bleu"]) <= 0.01, (fairseq_bleu, scored["bleu"])
    assert scored["fairseq_agrees"] is True


def test_recipe_with_two_unit_sets_then_translate(tmp_path):
    """--units as a list: two unit sets (their own K), every stage once with one epoch, and
    gsgn-translate making both sets' units from the recorded provenance."""
    make_tiny_mustc(tmp_path / "data", n_talks=3, segs_per_talk=4)
    p = _recipe(tmp_path, "--units", "mfcc,second=mfcc", "--n-clusters", "8,6", "--variants", "gsgn_drop,unit",
                "--max-epoch", "1", "--n-avg", "1", "--inference-branch", "unit:second")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    exp, pair = tmp_path / "exp", tmp_path / "data" / "en-de"
    assert {"units", "units.second"} <= {f.name for f in (exp / ".done").iterdir()}
    assert (pair / "units.zip").is_file() and (pair / "units_second.zip").is_file()
    assert json.loads((pair / "units_second.json").read_text())["n_clusters"] == 6
    import torch

    state = torch.load(exp / "gsgn_drop" / "checkpoint_avg1.pt", weights_only=False)
    assert state["cfg"]["model"].unit_views == "units,second" and state["cfg"]["model"].num_units == "8,6"
    unit_only = torch.load(exp / "unit" / "checkpoint_avg1.pt", weights_only=False)
    assert unit_only["cfg"]["model"].unit_views == "units"  # S-feature-only reads the first set
    assert "inference branch unit:second" in p.stdout and (exp / "gsgn_drop" / "bleu-tst-COMMON.json").is_file()
    # gsgn-translate: both sets' units made from the model's records
    from gsgn_fairseq.data.mustc import cut_segment, load_segments, read_wav
    import soundfile as sf

    seg = next(iter(load_segments(tmp_path / "data", "de", "tst-COMMON").values()))[0]
    wav = tmp_path / f"{seg.id}.wav"
    sf.write(wav, cut_segment(read_wav(seg.wav), seg), 16000, subtype="FLOAT")
    proc = subprocess.run([str(Path(sys.executable).parent / "gsgn-translate"), "--path",
                           str(exp / "gsgn_drop" / "checkpoint_avg1.pt"), "--json", "--device", "cpu", "--beam", "2",
                           "--model-overrides", '{"inference_branch": "unit:second"}', str(wav)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    gen = (exp / "gsgn_drop" / "generate-tst-COMMON.txt").read_text(encoding="utf-8")
    rows = [r["id"] for r in csv.DictReader(open(pair / "tst-COMMON_st.tsv", encoding="utf-8"), delimiter="\t",
                                            quoting=csv.QUOTE_NONE)]
    hyp = dict(re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", gen, flags=re.M))[str(rows.index(seg.id))]
    assert out["translations"][0]["translation"] == hyp  # the same as fairseq-generate with both sets


def test_recipe_refuses_an_unknown_units_back_end(tmp_path):
    p = _recipe(tmp_path, "--units", "wavlm")  # not a registered name: refused before any stage
    assert p.returncode != 0
    assert "--units must be one of: hubert mfcc ssl hubert-toy; got 'wavlm'" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "exp" / ".done").exists() or not any((tmp_path / "exp" / ".done").iterdir())


def test_pretrain_recipe_then_training_from_the_pretrained_models(tmp_path):
    """Table IV end to end: pretrain.sh trains a fairseq s2t_transformer (ASR) and transformer
    (MT) shaped for the arch, and run.sh --init-asr/--init-mt starts an ST model from them."""
    make_tiny_mustc(tmp_path / "data", n_talks=3, segs_per_talk=4)
    p = _recipe(tmp_path, "--stage", "0", "--stop-stage", "1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "pretrain"
    cmd = [str(ROOT / "scripts/recipes/must_c/pretrain.sh"), "--data-root", str(tmp_path / "data"), "--tgt-lang", "de",
           "--out", str(out), "--arch", "s2t_gsgn_tiny", "--max-tokens", "3000", "--mt-max-tokens", "500",
           "--warmup", "10", "--max-epoch", "2", "--n-avg", "2", "--num-workers", "0"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    pair = tmp_path / "data/en-de"
    asr_rows = list(csv.DictReader(open(pair / "train_asr.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert asr_rows and all(r["tgt_text"] == r["src_text"] for r in asr_rows) and "units" not in asr_rows[0]
    # the MT decoder's dictionary is the ST target dictionary, line for line
    st_dict = (pair / "spm_unigram60_st.txt").read_text().splitlines()
    assert (out / "mt_bin/dict.de.txt").read_text().splitlines() == st_dict
    asr, mt = out / "asr/checkpoint_avg2.pt", out / "mt/checkpoint_avg2.pt"
    assert asr.is_file() and mt.is_file() and {f.name for f in (out / ".done").iterdir()} == {"data", "asr", "mt"}
    p = _recipe(tmp_path, "--stage", "2", "--stop-stage", "2", "--variants", "gsgn", "--max-epoch", "1",
                "--init-asr", str(asr), "--init-mt", str(mt))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = (tmp_path / "exp/gsgn/train.log").read_text()
    for what in ("acoustic encoder", "text encoder", "decoder"):
        assert re.search(rf"pretrained {what} from {re.escape(str(asr if what == 'acoustic encoder' else mt))}: loaded \d+ tensors", log), what
    assert "only the parameter shapes are checked" not in log  # the vocabulary was verified
