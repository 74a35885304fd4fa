#!/usr/bin/env python
"""Decoding speed of several checkpoints on one subset, measured as ratios in one run.

Each ``NAME=CHECKPOINT`` is decoded with ``fairseq-generate`` (beam 5 by default, the task
stored in the checkpoint, ``--user-dir gsgn_fairseq``), the runs alternating for
``--rounds`` rounds so that a change of machine load hits every run alike; the figure is
fairseq's own "Translated N sentences ... in X s" (model time, data loading included, start-up
excluded). Prints the seconds per round, the median, and each run's median over the first's.

    python scripts/bench_decode.py --data data/toy/en-de --subset tst-COMMON_st \
        --runs ours=exp/toy_baseline/ours_noadapter/checkpoint_avg5.pt s2t=exp/toy_baseline/s2t/checkpoint_avg5.pt
"""
import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s")
ROOT = Path(__file__).resolve().parents[1]


def decode_seconds(data: Path, ckpt: Path, subset: str, beam: int, max_tokens: int) -> tuple:
    """(seconds, sentences, tokens) of one fairseq-generate run."""
    import torch

    import gsgn_fairseq.fairseq_patches.checkpoint_compat  # noqa: F401  (fairseq checkpoints under weights_only)

    cfg = torch.load(ckpt, map_location="cpu", mmap=True)["cfg"]["task"]
    task = cfg["_name"] if isinstance(cfg, dict) else getattr(cfg, "_name", None) or cfg.task
    cmd = [str(Path(sys.executable).parent / "fairseq-generate"), str(data), "--user-dir", str(ROOT / "gsgn_fairseq"),
           "--task", task, "--config-yaml", "config_st.yaml", "--gen-subset", subset, "--path", str(ckpt),
           "--beam", str(beam), "--lenpen", "1.0", "--max-tokens", str(max_tokens),
           "--required-batch-size-multiple", "1", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    m = TRANSLATED.search(p.stdout + p.stderr)
    if p.returncode != 0 or not m:
        raise SystemExit(f"{ckpt}: fairseq-generate failed (exit {p.returncode}):\n{(p.stdout + p.stderr)[-2000:]}")
    return float(m.group(3)), int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--subset", default="tst-COMMON_st")
    p.add_argument("--runs", nargs="+", required=True, help="NAME=CHECKPOINT ...")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=50000)
    args = p.parse_args()
    runs = dict(item.partition("=")[::2] for item in args.runs)
    secs = {n: [] for n in runs}
    for r in range(args.rounds):
        for name, ckpt in runs.items():
            s, n_sent, n_tok = decode_seconds(args.data, Path(ckpt), args.subset, args.beam, args.max_tokens)
            secs[name].append(s)
            print(f"round {r + 1}: {name}: {s:.2f} s ({n_sent} sentences, {n_tok} tokens)", flush=True)
    first = statistics.median(secs[next(iter(runs))])
    print(f"\n| run | {' | '.join(f'round {i + 1} (s)' for i in range(args.rounds))} | median (s) | ratio |")
    print("|---|" + "---|" * (args.rounds + 2))
    for name, xs in secs.items():
        med = statistics.median(xs)
        print(f"| {name} | {' | '.join(f'{x:.2f}' for x in xs)} | {med:.2f} | {med / first:.3f} |")


if __name__ == "__main__":
    main()
