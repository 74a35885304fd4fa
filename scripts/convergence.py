#!/usr/bin/env python
"""How much sooner does a model reach the baseline's best dev BLEU? (the paper's speed-up)

From fairseq JSON training logs written with ``--eval-bleu``: the baseline's best dev BLEU
and the epoch (and elapsed wall-clock) it first reached it; the first epoch at which each
other run reaches that same BLEU; and the ratios baseline/run of epochs and of wall-clock
(> 1 means the run converges faster). A run that never reaches it gets "-".

    python scripts/convergence.py --baseline fbank=exp/toy/fbank/train.log \
        --runs gsgn_drop=exp/toy/gsgn_drop/train.log --out exp/toy/convergence.md
"""
import argparse
import json
from pathlib import Path
from typing import Dict, Optional

from plot_training import parse_log


def curve(log: Path) -> Dict[int, dict]:
    """epoch -> {"bleu": dev BLEU, "wall": seconds since training started, at epoch end}."""
    recs = parse_log(log)
    wall = {int(r["epoch"]): r["train_wall"] for r in recs["train"] if "train_wall" in r}
    out = {}
    for r in recs["valid"]:
        if "valid_bleu" in r:
            e = int(r["epoch"])
            out[e] = {"bleu": r["valid_bleu"], "wall": wall.get(e)}
    if not out:
        raise ValueError(f"{log}: no dev BLEU in the log (train with --eval-bleu)")
    return out


def first_reaching(c: Dict[int, dict], bleu: float) -> Optional[int]:
    return next((e for e in sorted(c) if c[e]["bleu"] >= bleu), None)


def compare(baseline: Path, runs: Dict[str, Path]) -> dict:
    base = curve(baseline)
    best = max(v["bleu"] for v in base.values())
    base_epoch = first_reaching(base, best)
    result = {"baseline_best_bleu": best, "baseline_epoch": base_epoch,
              "baseline_wall": base[base_epoch]["wall"], "runs": {}}
    for name, log in runs.items():
        c = curve(log)
        e = first_reaching(c, best)
        r = {"best_bleu": max(v["bleu"] for v in c.values()), "epoch": e,
             "wall": c[e]["wall"] if e else None}
        r["epoch_ratio"] = round(base_epoch / e, 2) if e else None
        r["wall_ratio"] = round(result["baseline_wall"] / r["wall"], 2) if e and r["wall"] and result["baseline_wall"] else None
        result["runs"][name] = r
    return result


def to_markdown(res: dict, baseline_name: str) -> str:
    lines = [
        f"Baseline `{baseline_name}`: best dev BLEU {res['baseline_best_bleu']:.2f}, first reached at epoch "
        f"{res['baseline_epoch']} ({res['baseline_wall']:.0f} s).",
        "",
        "| run | best dev BLEU | epoch reaching baseline best | wall-clock (s) | epochs speed-up | wall-clock speed-up |",
        "|---|---|---|---|---|---|",
    ]
    fmt = lambda v, f="{}": "-" if v is None else f.format(v)  # noqa: E731
    for name, r in res["runs"].items():
        lines.append(f"| {name} | {r['best_bleu']:.2f} | {fmt(r['epoch'])} | {fmt(r['wall'], '{:.0f}')} | "
                     f"{fmt(r['epoch_ratio'], '{:.2f}x')} | {fmt(r['wall_ratio'], '{:.2f}x')} |")
    return "\n".join(lines) + "\n"


def _named(item: str):
    name, sep, path = item.partition("=")
    if not sep or not Path(path).is_file():
        raise SystemExit(f"expected NAME=PATH of an existing log, got {item!r}")
    return name, Path(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="NAME=LOG")
    p.add_argument("--runs", nargs="+", required=True, help="NAME=LOG ...")
    p.add_argument("--out", type=Path, help="markdown output (a .json is written beside it)")
    args = p.parse_args()
    bname, blog = _named(args.baseline)
    res = compare(blog, dict(_named(r) for r in args.runs))
    md = to_markdown(res, bname)
    print(md)
    if args.out:
        args.out.write_text(md)
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
