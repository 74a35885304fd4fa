"""The reproduction study: run_study.sh's job order, dependencies and scaled multi-stage-dropout
schedule (with a stand-in recipe), and study_report.py's tables, significance, convergence,
dips and claims on synthetic runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import study_report  # scripts/ (pytest.ini: pythonpath)

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = """#!/usr/bin/env bash
# records its call; fakes what the study reads from a finished training
exp=""; variants=""; stage=""; seed=""; sched=""; units=""; root=""; init=""
while [ $# -gt 0 ]; do
  case $1 in --exp) exp=$2;; --variants) variants=$2;; --stage) stage=$2;; --seed) seed=$2;;
    --msd-schedule) sched=$2;; --units) units=$2;; --data-root) root=$2;; --init-asr) init=$2;; esac; shift 2
done
echo "$exp|$variants|$stage|$seed|$sched|$units|$root|$init" >> "$CALLS"
[ "$stage" = 1 ] && sleep "${UNITS_SLEEP:-0}" && echo "$exp|units done|1" >> "$CALLS"
[ "$stage" = 2 ] || exit 0
[ "$variants" = unit ] && [ -n "${FAIL_UNIT:-}" ] && exit 3
mkdir -p "$exp/$variants" "$exp/.done"
echo '{"convergence_epoch": 24}' > "$exp/$variants/checkpoint_avg5.pt.json"
touch "$exp/.done/average.$variants"
"""


PRETRAIN_STAND_IN = """#!/usr/bin/env bash
out=""; arch=""
while [ $# -gt 0 ]; do case $1 in --out) out=$2;; --arch) arch=$2;; esac; shift 2; done
echo "$out|pretrain|$arch" >> "$CALLS"
sleep 1
mkdir -p "$out/.done" && touch "$out/.done/asr" "$out/.done/mt"
"""


def _study(tmp_path, *args, **env):
    stand_in = tmp_path / "run.sh"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    pretrain = tmp_path / "pretrain.sh"
    pretrain.write_text(PRETRAIN_STAND_IN)
    pretrain.chmod(0o755)
    env = {"PRETRAIN_SH": str(pretrain), **env}
    (tmp_path / "corpus/en-de/data").mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "calls"
    e = {**os.environ, "RUN_SH": str(stand_in), "CALLS": str(calls), "PY": sys.executable, **env}
    p = subprocess.run([str(ROOT / "scripts/recipes/toy/run_study.sh"), "--data-root", str(tmp_path / "corpus"),
                        "--exp", str(tmp_path / "exp"), *args], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=900)
    rows = [line.split("|") for line in calls.read_text().splitlines()] if calls.is_file() else []
    return p, rows


def test_study_schedule_scaled_to_fbank_convergence_and_job_order(tmp_path):
    p, rows = _study(tmp_path, "--seeds", "1,2", "--parts", "table1,ablations,table4,table3,mfcc", "--parallel", "2",
                     UNITS_SLEEP="3")
    assert "report" in p.stdout  # training finished (the report itself has no data here)
    exp = tmp_path / "exp"
    schedule = json.loads((exp / "msd_schedule.json").read_text())
    # the paper's stage epochs 10 and 25 for FBank-only's 40, scaled to the stand-in's 24
    assert schedule == {"fbank_convergence_epoch": 24, "msd_schedule": "1:0.3,0.0;6:0.5,0.3;15:0.3,0.0",
                        "how": schedule["how"]}
    trains = [r for r in rows if len(r) > 2 and r[2] == "2" and "pretrained" not in r[0]]
    runs = {(r[3], r[1]): r for r in trains}
    assert set(runs) == {(s, v) for s in "12" for v in ("fbank", "unit", "gsgn", "gsgn_drop", "gsgn_drop_nogate",
                                                          "gsgn_drop_exact")} | {("1", "concat")}
    assert all(r[7] == "" for r in trains)  # from scratch
    # Table IV: pretraining once, shaped for the study's arch, then the four variants from it
    i_pre = next(i for i, r in enumerate(rows) if r[1] == "pretrain")
    assert rows[i_pre] == [str(exp / "pretrain"), "pretrain", "s2t_gsgn_tiny"]
    pre = [(i, r) for i, r in enumerate(rows) if len(r) > 2 and "pretrained" in r[0]]
    assert {r[1] for _, r in pre} == {"fbank", "unit", "gsgn", "gsgn_drop"} and all(i > i_pre for i, _ in pre)
    assert all(r[0] == str(exp / "pretrained/seed1") and r[7] == str(exp / "pretrain/asr/checkpoint_avg5.pt") for _, r in pre)
    # the pretraining needs no units: it starts after the prep stage, beside the units stage
    i_prep = next(i for i, r in enumerate(rows) if r[2] == "0")
    i_units_done = next(i for i, r in enumerate(rows) if r[1] == "units done" and r[0] == str(exp))
    assert i_prep < i_pre < i_units_done, rows
    # the claim's pair first
    assert {r[1] for _, r in pre[:2]} == {"fbank", "gsgn_drop"}
    # every multi-stage-dropout run, of every seed, trains with the scaled schedule, after fbank of seed 1
    order = [(r[3], r[1]) for r in trains]
    for key, r in runs.items():
        if key[1].startswith("gsgn_drop"):
            assert r[4] == "1:0.3,0.0;6:0.5,0.3;15:0.3,0.0", r
            assert order.index(key) > order.index(("1", "fbank"))
    assert runs[("2", "gsgn")][0] == str(exp / "seed2")
    # Table I over every seed before the ablations
    assert max(order.index((s, v)) for s in "12" for v in ("fbank", "unit", "gsgn")) < \
        min(order.index((s, v)) for s in "12" for v in ("gsgn_drop_nogate", "gsgn_drop_exact"))
    # units: the study's for its own runs, MFCC in a copy of the corpus for the mfcc part
    prep = [r for r in rows if r[2] in ("0", "1") and r[1] != "units done"]
    assert prep[0][5] == "hubert-toy" and prep[0][6] == str(tmp_path / "corpus")
    assert any(r[5] == "mfcc" and r[6] == str(exp / "data_mfcc") for r in prep)
    # a rerun starts no training that finished (the stand-in leaves no .done/train markers, run.sh's job)


def test_study_failed_dependency_is_named_and_others_go_on(tmp_path):
    p, rows = _study(tmp_path, "--seeds", "1", "--parts", "table1", "--parallel", "1", FAIL_UNIT="1")
    assert "FAILED main:1:unit" in (tmp_path / "exp/study_worker0.log").read_text()
    assert "1 trainings failed: main:1:unit" in p.stdout
    assert {r[1] for r in rows if r[2] == "2"} == {"fbank", "unit", "gsgn", "gsgn_drop"}


def test_study_refuses_unknown_part_and_missing_corpus(tmp_path):
    p, _ = _study(tmp_path, "--parts", "table1,tabel2")
    assert p.returncode != 0 and "unknown part 'tabel2'" in p.stderr
    stand_in = tmp_path / "run.sh"
    p = subprocess.run([str(ROOT / "scripts/recipes/toy/run_study.sh"), "--data-root", str(tmp_path / "nowhere"),
                        "--exp", str(tmp_path / "exp2")], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "RUN_SH": str(stand_in), "PY": sys.executable})
    assert p.returncode != 0 and "the MuST-C release layout" in p.stderr


# ---------------------------------------------------------------- the report
REFS = [f"der hund {w} im garten heute" for w in ("schläft", "läuft", "bellt", "spielt", "wartet", "frisst")] * 5


def _log(path, bleus, wall=10.0, sample=None, gates=False):
    lines = []
    for e, b in enumerate(bleus, 1):
        inner = {"epoch": e, "num_updates": str(e * 10), "loss": "3.0"}
        rec = {"epoch": e, "train_loss": "3.0", "train_wall": str(wall * e)}
        if gates:  # True, or a factor on the conflicts and the share of g_fbank above 1
            k = float(gates)
            g = {"grad_cos": str(0.5 - 0.05 * e), "conflict_pct": str(2.0 * e * k), "g_fbank_mean": str(0.9 + 0.01 * e),
                 "g_fbank_gt1_pct": str(1.0 * e * k)}
            inner.update(g)
            rec.update({f"train_{k}": v for k, v in g.items()})
        lines.append(f"2026-01-01 00:00:00 | INFO | train_inner | {json.dumps(inner)}")
        valid = {"epoch": e, "dev_st_loss": str(5 - 0.1 * e), "dev_st_bleu": str(b)}
        if sample:
            valid["dev_st_bleu_sample"] = str(sample[e - 1])
        lines.append(f"2026-01-01 00:00:00 | INFO | dev_st | {json.dumps(valid)}")
        lines.append(f"2026-01-01 00:00:00 | INFO | train | {json.dumps(rec)}")
    path.write_text("\n".join(lines) + "\n")


def _run(exp, seed, variant, hyps, epoch, bleus, **log):
    from gsgn_fairseq.scoring import corpus_scores

    run = exp / f"seed{seed}" / variant
    run.mkdir(parents=True)
    (run / "generate-tst-COMMON.txt").write_text("".join(f"D-{i}\t-0.1\t{h}\n" for i, h in enumerate(hyps)))
    (run / "bleu-tst-COMMON.json").write_text(json.dumps(corpus_scores(hyps, REFS)))
    (run / "checkpoint_avg5.pt.json").write_text(json.dumps({"convergence_epoch": epoch}))
    _log(run / "train.log", bleus, **log)


def test_report_tables_significance_convergence_and_claims(tmp_path):
    data = tmp_path / "en-de"
    data.mkdir()
    (data / "tst-COMMON_st.tsv").write_text("id\taudio\tn_frames\ttgt_text\n" + "".join(
        f"u{i}\tfbank80.zip:1:2\t10\t{r}\n" for i, r in enumerate(REFS)))
    exp = tmp_path / "exp"
    good = list(REFS)
    weak = [" ".join(r.split()[:3]) for r in REFS]
    for seed in (1, 2):
        _run(exp, seed, "fbank", weak, 20 + seed, [10, 20, 30, 40, 50, 50 + seed])
        _run(exp, seed, "unit", weak[:-1] + ["x"], 12, [15, 30, 45, 46, 46, 46])
        _run(exp, seed, "gsgn", good[:-6] + weak[-6:], 14, [20, 40, 50, 55, 56, 56], gates=True)
        _run(exp, seed, "gsgn_drop", good, 15, [20, 45, 30, 56, 57, 58], sample=[20, 44, 43, 56, 57, 58], gates=True)
    # Table IV, one seed (the second): from pretrained models, with more conflicts and g_fbank > 1
    # than from scratch, and GSGN nearer FBank-only than from scratch
    _run(exp / "pretrained", 2, "fbank", weak, 12, [30, 40, 50, 51, 51, 51])
    _run(exp / "pretrained", 2, "gsgn_drop", good, 9, [40, 50, 55, 56, 56, 56], gates=4)
    _run(exp / "pretrained", 2, "gsgn", good[:-3] + weak[-3:], 10, [40, 45, 50, 52, 52, 52], gates=True)
    for m in ("asr", "mt"):  # Table IV's finished pretraining; an unfinished one is not archived
        (exp / "pretrain" / m).mkdir(parents=True)
        for f in ("train.log", "checkpoint_avg5.pt", "checkpoint_avg5.pt.json", "checkpoint_last.pt"):
            (exp / "pretrain" / m / f).write_text(m)
    (exp / "pretrain/.done").mkdir()
    (exp / "pretrain/.done/asr").touch()
    study_report.main(["--exp", str(exp), "--data", str(data), "--seeds", "1,2", "--side-seeds", "2", "--archive", str(tmp_path / "archive")])
    md = (exp / "report/study.md").read_text()
    rec = json.loads((exp / "report/study.json").read_text())
    assert rec["table1"]["fbank"]["epoch"] == [21, 22]
    assert "| FBank-only | 2 | " in md and " ± " in md
    sig = rec["significance"]["gsgn_drop vs fbank"]
    assert sig["1"]["bleu"]["p_value"] < 0.05 and sig["1"]["bleu"]["system"] == pytest.approx(100.0)
    assert len(sig["t_test"]["deltas"]) == 2
    # GSGN+Drop reaches FBank-only's best (51 / 52) at epoch 4 both times; FBank-only at 6
    conv = rec["convergence"]["summary"]["gsgn_drop"]
    assert conv["epochs"] == [4, 4] and conv["fbank_epochs"] == [6, 6] and conv["epoch_speedup"] == [1.5, 1.5]
    assert rec["convergence"]["summary"]["unit"]["never"] == [1, 2]
    # the fusion curve's fall at epoch 3 is a dip; the sample curve has none
    assert rec["dips"]["gsgn_drop:1:fusion"]["dips"] == ["e3: -15.0"]
    assert rec["dips"]["gsgn_drop:1:sample"]["dips"] == []
    claims = md[md.index("### Claims"):]
    assert "| S-feature-only converges in fewer epochs than FBank-only" in claims
    line = next(x for x in claims.splitlines() if x.startswith("| GSGN+Drop converges in fewer epochs"))
    assert line.endswith("| holds |")
    line = next(x for x in claims.splitlines() if x.startswith("| GSGN+Drop is at least on par"))
    assert line.endswith("| holds |")
    line = next(x for x in claims.splitlines() if x.startswith("| GSGN beats concatenation"))
    assert line.endswith("| not measured yet |") and "(Table III: 24.18 vs 23.8)" in line
    # Table IV's rows quote the paper's Table IV (pretrained), not its Table I
    t4 = md[md.index("### Table IV"):md.index("### Significance")]
    assert "| paper En-De (Table IV) |" in t4 and "| 28.19 / 27 |" in t4 and "| 27.98 / 33 |" in t4
    assert "25.26 / 30" not in t4
    assert "seed1/gsgn_drop_nogate" in rec["missing"]
    assert (exp / "report/study_learning_curves.png").stat().st_size > 1000
    assert (exp / "report/study_mechanism.png").stat().st_size > 1000
    assert rec["table4"]["gsgn_drop"]["epoch"] == [9]
    line = next(x for x in claims.splitlines() if x.startswith("| Pretrained: GSGN+Drop converges in fewer epochs"))
    assert line.endswith("| holds (one seed) |")
    line = next(x for x in claims.splitlines() if x.startswith("| GSGN+Drop reaches FBank-only's best dev BLEU sooner"))
    assert line.endswith("| holds |")
    line = next(x for x in claims.splitlines() if x.startswith("| Pretrained: GSGN+Drop reaches pretrained FBank-only's best"))
    assert line.endswith("| holds (one seed) |")
    # pretrained GSGN+Drop reaches pretrained FBank-only's best (51, epoch 4) at epoch 3
    assert rec["convergence_table4"]["summary"]["gsgn_drop"]["epoch_speedup"] == [pytest.approx(4 / 3, abs=0.01)]
    assert "| GSGN+Drop (pretrained) | 1 | 3.0 (1 seed) | 4.0 (1 seed) |" in md
    # the gates, pretrained against from scratch, seed 2: first-epoch conflicts 8 vs 2, last-epoch g_fbank > 1 24% vs 6%
    assert [r["conflict_pct"] for r in rec["gates"]["pre:gsgn_drop:2"]] == [8.0, 32.0, 48.0]
    line = next(x for x in claims.splitlines() if x.startswith("| Pretrained: gradient conflicts are common"))
    assert "[6.0] (s2: 8.0 vs 2.0)" in line and line.endswith("| holds (one seed) |")
    line = next(x for x in claims.splitlines() if x.startswith("| Pretrained: g_fbank exceeds 1"))
    assert "[18.0] (s2: 24.0% vs 6.0%)" in line and line.endswith("| holds (one seed) |")
    # GSGN − FBank-only: 3 of 30 hypotheses short when pretrained, 6 from scratch: the gap shrinks
    line = next(x for x in claims.splitlines() if x.startswith("| GSGN is more effective from pretrained models"))
    assert "Table IV -0.37, Table I -0.90" in line and line.endswith("| holds (one seed) |")
    gap = (rec["table4"]["gsgn"]["bleu"][0] - rec["table4"]["fbank"]["bleu"][0]) - (
        rec["table1"]["gsgn"]["bleu"][1] - rec["table1"]["fbank"]["bleu"][1])
    assert gap > 0 and f"[{round(gap, 2)}]" in line
    # the mechanism figure sets the pretrained run beside the from-scratch run of the same seed
    st = study_report.Study(exp, data, [1, 2], 5)
    assert study_report.mechanism_seed(st, [1, 2], [2]) == [2]
    assert study_report.mechanism_seed(st, [1, 2], [3]) == [1]
    # the archive holds what a report (and a later study) needs, no checkpoints
    archived = {str(f.relative_to(tmp_path / "archive")) for f in (tmp_path / "archive").rglob("*") if f.is_file()}
    assert {"seed1/fbank/train.log", "seed2/gsgn_drop/bleu-tst-COMMON.json", "pretrained/seed2/gsgn_drop/generate-tst-COMMON.txt",
            "seed1/unit/checkpoint_avg5.pt.json", "report.md"} <= archived
    assert not any(a.endswith(".pt") for a in archived)
    assert {"pretrain/asr/train.log", "pretrain/asr/checkpoint_avg5.pt.json"} <= archived
    assert not any(a.startswith("pretrain/mt") for a in archived)
    # on request, the pretrained models' averaged checkpoints too (and nothing else of theirs)
    study_report.main(["--exp", str(exp), "--data", str(data), "--seeds", "1,2", "--archive", str(tmp_path / "archive2"),
                       "--archive-pretrained"])
    archived = {str(f.relative_to(tmp_path / "archive2")) for f in (tmp_path / "archive2").rglob("*.pt")}
    assert archived == {"pretrain/asr/checkpoint_avg5.pt"}


def test_speedup_verdict():
    assert study_report.speedup_verdict({"never": [], "epoch_speedup": [1.25, 1.1]}) == "holds"
    assert study_report.speedup_verdict({"never": [], "epoch_speedup": [0.8, 0.9]}) == "does not hold"
    assert study_report.speedup_verdict({"never": [2], "epoch_speedup": [1.25]}) == "does not hold for [2]"


def test_paper_figures_are_the_papers_tables():
    """The figures the report sets beside ours and quotes in its claims (paper, Tables I-IV)."""
    assert study_report.PAPER == {"fbank": (25.08, 40), "unit": (23.33, 27), "gsgn": (24.18, 28),
                                  "gsgn_drop": (25.26, 30), "concat": (23.8, 32), "noise_sum": (25.37, 38),
                                  "noise_replace": (25.19, 37)}
    assert study_report.PAPER_TABLE4 == {"fbank": (27.98, 33), "unit": (25.60, 25), "gsgn": (27.61, 25),
                                         "gsgn_drop": (28.19, 27)}
    assert study_report.quote("gsgn", "concat", 1) == "28 vs 32"
    assert study_report.quote("gsgn_drop", "fbank", 0, study_report.PAPER_TABLE4) == "28.19 vs 27.98"


@pytest.mark.parametrize("deltas, ps, direction, expected", [
    ([1.0, 2.0], [0.01, 0.02], 1, "holds"),
    ([1.0, 2.0], [0.01, 0.2], 1, "cannot tell: inside the spread"),
    ([-1.0, -2.0], [0.01, 0.02], 1, "does not hold"),
    ([1.0, -2.0], None, 1, "cannot tell: inside the spread"),
    ([-3.0], None, -1, "holds (one seed)"),
    ([], None, 1, "not measured yet"),
])
def test_verdict(deltas, ps, direction, expected):
    assert study_report.verdict(deltas, ps, direction) == expected


def test_study_end_to_end_on_another_corpus(tmp_path):
    """run_study.sh with the real recipe on a corpus in the MuST-C release layout given by
    --data-root (not the toy one): Table I for one seed, to early stopping, then the report."""
    from tiny_mustc import make_tiny_mustc

    make_tiny_mustc(tmp_path / "corpus", n_talks=3, segs_per_talk=4)
    exp = tmp_path / "exp"
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = [str(ROOT / "scripts/recipes/toy/run_study.sh"), "--data-root", str(tmp_path / "corpus"), "--tgt-lang", "de",
           "--exp", str(exp), "--units", "mfcc", "--seeds", "1", "--parts", "table1", "--parallel", "2",
           "--max-epoch", "3", "--patience", "1", "--n-avg", "2",
           "--extra", "--vocab-size 60 --n-clusters 8 --km-percent 1 --max-tokens 3000 --warmup 10 --beam 2 --jobs 1"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    logs = "".join(f.read_text() for f in exp.glob("study_worker*.log"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:] + logs[-3000:]
    assert "FAILED" not in logs, logs[-3000:]
    for v in ("fbank", "unit", "gsgn", "gsgn_drop"):
        assert (exp / f"seed1/{v}/bleu-tst-COMMON.json").is_file(), v
    schedule = json.loads((exp / "msd_schedule.json").read_text())
    e = schedule["fbank_convergence_epoch"]
    assert 1 <= e <= 3 and schedule["msd_schedule"].startswith("1:0.3,0.0;")
    # the multi-stage-dropout run logged dev BLEU with the test protocol beside the fusion input
    assert '"dev_st_bleu_sample"' in (exp / "seed1/gsgn_drop/train.log").read_text()
    md = (exp / "report/study.md").read_text()
    assert "| GSGN+Drop | 1 |" in md and "(one seed)" in md


def test_study_from_archive_skips_archived_runs(tmp_path):
    archive = tmp_path / "archive"
    (archive / "seed1/fbank").mkdir(parents=True)
    (archive / "seed1/fbank/bleu-tst-COMMON.json").write_text('{"bleu": 50.0}')
    (archive / "seed1/fbank/checkpoint_avg5.pt.json").write_text('{"convergence_epoch": 32}')
    (archive / "pretrained/seed1/unit").mkdir(parents=True)
    (archive / "pretrained/seed1/unit/bleu-tst-COMMON.json").write_text('{"bleu": 40.0}')
    for m in ("asr", "mt"):
        (archive / "pretrain" / m).mkdir(parents=True)
        (archive / "pretrain" / m / "checkpoint_avg5.pt").write_text(m)
    (archive / "msd_schedule.json").write_text(json.dumps(
        {"fbank_convergence_epoch": 32, "msd_schedule": "1:0.3,0.0;8:0.5,0.3;20:0.3,0.0", "how": "archived"}))
    p, rows = _study(tmp_path, "--seeds", "1", "--parts", "table1,table4", "--parallel", "1", "--from-archive", str(archive))
    assert "from the archive: seed1/fbank (not trained again)" in p.stdout
    assert "from the archive: pretrained/seed1/unit (not trained again)" in p.stdout
    assert not [r for r in rows if r[2] == "2" and r[0].endswith("pretrained/seed1") and r[1] == "unit"]
    # the pretraining itself came from the archive too: not run, its models feed the variants
    assert not [r for r in rows if r[1] == "pretrain"]
    assert "from the archive: pretrain/asr (not pretrained again)" in p.stdout
    pre = [r for r in rows if r[2] == "2" and r[0].endswith("pretrained/seed1")]
    assert {r[1] for r in pre} == {"fbank", "gsgn", "gsgn_drop"}
    assert all(r[7] == str(tmp_path / "exp/pretrain/asr/checkpoint_avg5.pt") for r in pre)
    assert (tmp_path / "exp/pretrain/asr/checkpoint_avg5.pt").read_text() == "asr"
    trained = {r[1]: r for r in rows if r[2] == "2" and r[0].endswith("exp/seed1")}
    assert "fbank" not in trained and {"unit", "gsgn", "gsgn_drop"} <= set(trained)
    assert trained["gsgn_drop"][4] == "1:0.3,0.0;8:0.5,0.3;20:0.3,0.0"
    assert (tmp_path / "exp/seed1/fbank/bleu-tst-COMMON.json").is_file()
