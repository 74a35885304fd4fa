"""Smoke test of scripts/bench_train.py on the tiny two-view dataset: every figure is there,
and fairseq's s2t_transformer baseline has our FBank-only model's size (no timing checks)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_s2t_data import make_tiny_multiview_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train.py"
MODES = ["fbank", "gsgn-factorized", "gsgn-exact-i2", "s2t_transformer"]


def test_bench_train_smoke(tmp_path):
    data = make_tiny_multiview_data(tmp_path / "data", n_train=8, n_valid=2, num_units=20)
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(SCRIPT), "--data", str(data), "--train-subset", "train", "--num-units", "20",
        "--device", "cpu", "--arch", "s2t_gsgn_tiny", "--max-tokens", "300", "--batches", "2",
        "--steps", "2", "--warmup", "2", "--interval", "2", "--modes", ",".join(MODES), "--json", str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["modes"]) == MODES
    assert result["config"]["period"] == 2 and result["config"]["rounds"] == 2
    for name, mode in result["modes"].items():
        assert mode["step_ms"] > 0 and len(mode["steps_wall_ms"]) == len(mode["steps_cpu_ms"]) == 2, name
        assert mode["params"] > 0, name
        assert mode["memory"]["peak_rss_mib"] > 0 and mode["memory"]["growth_mib"] > 0, name
    for key in ("gsgn-factorized/fbank", "gsgn-exact-i2/fbank", "fbank/s2t_transformer"):
        assert math.isfinite(result["ratios"][key]["ratio"]) and result["ratios"][key]["ratio"] > 0, key
    assert result["ratios"]["gsgn-factorized/fbank"]["goal"] == 1.10
    # same size: ours adds only the adapter (Linear D x D + LayerNorm) and the acoustic LayerNorm
    D = 128
    modes = result["modes"]
    # --adapter none: our FBank-only model has s2t_transformer's parameters exactly
    assert modes["fbank"]["params"] == modes["s2t_transformer"]["params"]
    assert "--encoder-layers" in modes["s2t_transformer"]["fairseq_argv"]
    assert "gsgn-factorized/fbank" in proc.stdout and "fbank/s2t_transformer" in proc.stdout


@pytest.mark.parametrize("together", [False, True])
def test_bench_e2e_runs_real_fairseq_train_and_decoding(tmp_path, together):
    """scripts/bench_e2e.py: whole fairseq-train processes per mode (one after another, or
    all of a round's at once), per-update ratios with start-up removed, decoding timed
    in-process, the goals table."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tiny_mustc import make_tiny_mustc

    root = Path(__file__).resolve().parents[1]
    make_tiny_mustc(tmp_path / "data", n_talks=3, segs_per_talk=4)
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    prep = subprocess.run([str(root / "scripts/recipes/must_c/run.sh"), "--data-root", str(tmp_path / "data"),
                           "--tgt-lang", "de", "--exp", str(tmp_path / "exp"), "--vocab-size", "60", "--jobs", "1",
                           "--units", "mfcc", "--n-clusters", "8", "--km-percent", "1", "--stage", "0", "--stop-stage", "1"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert prep.returncode == 0, prep.stderr[-2000:]
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(root / "scripts/bench_e2e.py"), "--data", str(tmp_path / "data/en-de"),
                        "--num-units", "8", "--archs", "s2t_gsgn_tiny:3000", "--modes", "fbank,gsgn_drop,s2t_transformer",
                        "--updates", "1,3", "--rounds", "2", "--threads", "1", "--decode-fixed-len", "7",
                        "--json", str(out), *(["--together"] if together else [])],
                       cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())["archs"]["s2t_gsgn_tiny"]
    assert set(res["ms_per_update"]) == {"fbank", "gsgn_drop", "s2t_transformer"}
    assert all(len(v) == 2 for v in res["runs_ms"].values())  # round 2 trained from scratch again
    assert res["clock"] == "cpu" and all(len(v) == 2 for v in res["runs_wall_ms"].values())
    assert res["wall_ratio_to_fbank"]["fbank"] == 1.0 and set(res["wall_ms_per_update"]) == set(res["ms_per_update"])
    assert res["ratio_to_fbank"]["fbank"] == 1.0 and all(v > 0 for v in res["decode_s"].values())
    assert res["decode_mean_len"] == {"fbank": 7, "gsgn_drop": 7, "s2t_transformer": 7}  # --decode-fixed-len
    assert "s2t_gsgn_tiny: gsgn_drop / fbank per update" in p.stdout and "fbank / s2t_transformer decoding" in p.stdout
    assert json.loads(out.read_text())["together"] is together
    assert all(len(v) == 2 for v in res["decode_runs_s"].values())


def test_bench_data_splits_the_data_path_per_mode(tmp_path):
    """scripts/bench_data.py: every mode timed, the parts it reads present (units only where
    they are read), the table printed (no timing checks)."""
    data = make_tiny_multiview_data(tmp_path / "data", n_train=12, n_valid=2, num_units=20)
    out = tmp_path / "bench_data.json"
    cmd = [sys.executable, str(SCRIPT.parent / "bench_data.py"), "--data", str(data), "--num-units", "20",
           "--subset", "train", "--n", "12", "--batch", "4", "--rounds", "2", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 12 and set(result["median_us"]) == {"fairseq", "fbank_before", "fbank", "gsgn"}
    assert all(len(v) == 2 and min(v) > 0 for v in result["rounds_us"].values())
    parts = result["parts_us"]
    assert "units read + checks" in parts["gsgn"] and "units read + checks" in parts["fbank_before"]
    assert "units read + checks" not in parts["fbank"] and "units read + checks" not in parts["fairseq"]
    assert "finiteness check" in parts["fbank"] and "finiteness check" in parts["fbank_before"]
    assert "FBank read (+ CRC-32) and transforms" in parts["fairseq"] and "collater" in parts["fairseq"]
    assert "| fbank | " in proc.stdout and "collater" in proc.stdout


def test_bench_e2e_three_view_mode_argv(tmp_path):
    """The three-view mode trains with both unit views and one --num-units entry per view;
    it is left out of the default modes (its data needs a second unit set)."""
    import argparse

    sys.path.insert(0, str(SCRIPT.parent))
    import bench_e2e

    args = argparse.Namespace(data=tmp_path, num_units=100, cpu=True)
    argv = bench_e2e.train_argv(args, "s2t_gsgn_tiny", 3000, "gsgn_drop_3view", tmp_path / "save", 5)
    assert argv[argv.index("--unit-views") + 1] == "units,mfcc"
    assert argv[argv.index("--num-units") + 1] == "100,100"
    two = bench_e2e.train_argv(args, "s2t_gsgn_tiny", 3000, "gsgn_drop", tmp_path / "save", 5)
    assert "--unit-views" not in two and two[two.index("--num-units") + 1] == "100"
    assert "gsgn_drop_3view" not in bench_e2e.DEFAULT_MODES and "gsgn_drop" in bench_e2e.DEFAULT_MODES


def test_bench_e2e_ratios_pair_each_round_with_its_own_fbank_run():
    """A round's runs share the machine's load: each mode is divided by FBank-only's run of
    the same round, then the median is taken (not the ratio of the medians)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import bench_e2e

    r = bench_e2e.per_round_ratios({"fbank": [1.0, 2.0, 4.0], "gsgn": [1.1, 2.4, 4.0]})
    assert r["fbank"] == 1.0 and abs(r["gsgn"] - 1.1) < 1e-12  # rounds: 1.1, 1.2, 1.0; medians' ratio: 1.2


def test_bench_e2e_decoding_takes_turns_batch_by_batch():
    """Decoding rounds interleave the modes per batch (order rotating between rounds), so a
    change of load within a round hits every mode alike; each round sums its batches."""
    sys.path.insert(0, str(SCRIPT.parent))
    import bench_e2e

    calls = []

    class Fake:
        def __init__(self, name, n, sec):
            self.name, self.batches, self.sec = name, list(range(n)), sec

        def run(self, i):
            calls.append((self.name, i))
            return self.sec

    secs = bench_e2e.decode_rounds({"fbank": Fake("fbank", 3, 1.0), "gsgn": Fake("gsgn", 2, 2.0)}, rounds=2)
    assert calls[:5] == [("fbank", 0), ("gsgn", 0), ("fbank", 1), ("gsgn", 1), ("fbank", 2)]
    assert calls[5:7] == [("gsgn", 0), ("fbank", 0)]  # round 2 starts with the other mode
    assert secs == {"fbank": [3.0, 3.0], "gsgn": [4.0, 4.0]}
