"""Smoke test of scripts/bench_train.py on the tiny two-view dataset: every figure is there,
and fairseq's s2t_transformer baseline has our FBank-only model's size (no timing checks)."""
import json
import math
import subprocess
import sys
from pathlib import Path

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
