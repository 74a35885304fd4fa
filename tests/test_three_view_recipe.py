"""scripts/recipes/toy/run_three_view.sh with a stand-in run.sh: it links the study's corpus
(never rewriting the study's files), takes the study's MFCC k-means and schedule, and asks
run.sh for the three views from the MFCC view's stage on."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "recipes" / "toy" / "run_three_view.sh"


def _study(tmp_path):
    data = tmp_path / "study_data" / "en-de"
    data.mkdir(parents=True)
    (data / "units.zip").write_bytes(b"zip")
    (data / "train_st.tsv").write_text("id\tunits\n")
    exp = tmp_path / "study_exp"
    (exp / "mfcc").mkdir(parents=True)
    (exp / "mfcc" / "km_mfcc_100.bin").write_bytes(b"km")
    (exp / "msd_schedule.json").write_text(json.dumps({"msd_schedule": "1:0.3,0.0;11:0.5,0.3;28:0.3,0.0"}))
    return data.parent, exp


def _run(tmp_path, study_data, study_exp):
    calls = tmp_path / "calls"
    stand_in = tmp_path / "run.sh"
    stand_in.write_text('#!/usr/bin/env bash\necho "$*" >> "$CALLS"\n')
    stand_in.chmod(0o755)
    env = {**os.environ, "RUN_SH": str(stand_in), "CALLS": str(calls), "PY": sys.executable}
    return calls, subprocess.run(
        ["bash", str(SCRIPT), "--study-data", str(study_data), "--study-exp", str(study_exp),
         "--data-root", str(tmp_path / "three"), "--exp", str(tmp_path / "exp3"), "--seed", "2"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_links_the_corpus_and_asks_for_three_views(tmp_path):
    study_data, study_exp = _study(tmp_path)
    calls, proc = _run(tmp_path, study_data, study_exp)
    assert proc.returncode == 0, proc.stderr
    linked = tmp_path / "three" / "en-de" / "units.zip"
    assert linked.stat().st_ino == (study_data / "en-de" / "units.zip").stat().st_ino  # a hard link
    assert (tmp_path / "exp3" / "km_mfcc_mfcc_100.bin").read_bytes() == b"km"
    assert {p.name for p in (tmp_path / "exp3" / ".done").iterdir()} == {"link", "prep", "units"}
    (call,) = calls.read_text().splitlines()
    args = call.split()
    last = {}
    for k, v in zip(args, args[1:]):
        if k.startswith("--"):
            last[k] = v  # run.sh keeps the last value of a repeated flag
    assert last["--units"] == "hubert-toy,mfcc" and last["--variants"] == "gsgn,gsgn_drop"
    assert last["--msd-schedule"] == "1:0.3,0.0;11:0.5,0.3;28:0.3,0.0" and last["--seed"] == "2"
    assert last["--stage"] == "1" and last["--stop-stage"] == "4"
    assert last["--data-root"] == str(tmp_path / "three") and last["--patience"] == "5"


def test_without_the_study_it_names_what_is_missing(tmp_path):
    study_data, study_exp = _study(tmp_path)
    (study_exp / "mfcc" / "km_mfcc_100.bin").unlink()
    calls, proc = _run(tmp_path, study_data, study_exp)
    assert proc.returncode != 0 and not calls.exists()
    assert f"{study_exp}/mfcc/km_mfcc_100.bin is missing" in proc.stderr
