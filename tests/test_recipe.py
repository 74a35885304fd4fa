"""scripts/recipes/must_c/run.sh end to end on a tiny corpus: every stage, markers, rerun."""
import os
import subprocess
import sys
from pathlib import Path

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
    log_size = (exp / "fbank" / "train.log").stat().st_size

    again = _recipe(tmp_path)  # every stage is marked done: nothing is redone
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stage 2" not in again.stdout and "stage 0" not in again.stdout
    assert (exp / "fbank" / "train.log").stat().st_size == log_size


def test_recipe_rejects_unknown_precision(tmp_path):
    p = _recipe(tmp_path, "--precision", "fp8", "--stage", "2")
    assert p.returncode != 0 and "--precision must be auto, bf16, fp16 or fp32, got 'fp8'" in p.stderr
