#!/usr/bin/env python
"""Gate statistics per epoch from fairseq JSON training logs, as a markdown table.

For each run and epoch, fairseq's epoch-level training means of the gate criterion's logs:
``grad_cos`` (mean cosine of the two views' gradients on the reference layer), ``grad_cos_pos``
(over cos > 0), ``conflict_pct`` (% of measured targets with cos < 0, i.e. target > 1),
``gate_target`` (mean target), ``gate_loss``, ``g_fbank_mean``, ``g_fbank_gt1_pct`` and
``g_unit_mean``; with several S-feature views (``--unit-views``) also ``grad_cos_<view>`` and
``conflict_pct_<view>`` for each.

    python scripts/gate_summary.py --runs exact=exp/m/exact_utt/gsgn/train.log \
        factorized=exp/m/factorized_utt/gsgn/train.log --epochs 1,5,10,15
"""
import argparse
from pathlib import Path
from typing import Dict, List, Optional

from plot_training import parse_log

STATS = ("grad_cos", "grad_cos_pos", "conflict_pct", "gate_target", "gate_loss", "g_fbank_mean",
         "g_fbank_gt1_pct", "g_unit_mean")


PER_VIEW = ("grad_cos", "conflict_pct")  # with several S-feature views, also <stat>_<view>


def _stats_of(records: List[dict]) -> List[str]:
    """STATS, then the per-view statistics the records hold (``train_conflict_pct_<view>``)."""
    views = []
    for r in records:
        for k in r:
            if k.startswith("train_conflict_pct_") and k[len("train_conflict_pct_"):] not in views:
                views.append(k[len("train_conflict_pct_"):])
    return list(STATS) + [f"{stat}_{v}" for v in views for stat in PER_VIEW]


def epoch_stats(log: Path) -> Dict[int, dict]:
    """epoch -> {stat: value} from the epoch-level ``train`` records (keys ``train_<stat>``)."""
    out = {}
    records = parse_log(log)["train"]
    keys = _stats_of(records)
    for r in records:
        if "epoch" in r:
            out[int(r["epoch"])] = {k: r[f"train_{k}"] for k in keys if isinstance(r.get(f"train_{k}"), float)}
    if not out:
        raise ValueError(f"{log}: no epoch-level training records")
    return out


def table(runs: Dict[str, Path], epochs: Optional[List[int]] = None) -> str:
    stats = {n: epoch_stats(p) for n, p in runs.items()}
    keys = list(STATS) + [k for s in stats.values() for e in s.values() for k in e if k not in STATS]
    present = [k for k in dict.fromkeys(keys) if any(k in e for s in stats.values() for e in s.values())]
    lines = ["| run | epoch | " + " | ".join(present) + " |", "|" + "---|" * (2 + len(present))]
    for name, per_epoch in stats.items():
        for e in (epochs or sorted(per_epoch)):
            if e in per_epoch:
                cells = [f"{per_epoch[e][k]:.4g}" if k in per_epoch[e] else "-" for k in present]
                lines.append(f"| {name} | {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=LOG ...")
    p.add_argument("--epochs", help="comma-separated epochs (default: all)")
    args = p.parse_args()
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"expected NAME=LOG of an existing log, got {item!r}")
        runs[name] = Path(path)
    print(table(runs, [int(e) for e in args.epochs.split(",")] if args.epochs else None), end="")


if __name__ == "__main__":
    main()
