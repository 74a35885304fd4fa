#!/usr/bin/env python
"""Side-by-side learning of several fairseq runs: dev accuracy (and dev BLEU, when logged)
per epoch, and the test scores of ``bleu-tst-COMMON.json``, as a markdown table.

Each run is ``NAME=DIR`` with ``DIR/train.log`` (fairseq JSON log, trained with
``--report-accuracy``) and, optionally, ``DIR/bleu-{split}.json`` from ``gsgn-score``.

    python scripts/learning_table.py --runs ours=exp/toy_baseline/ours s2t=exp/toy_baseline/s2t \
        --out exp/toy_baseline/baseline.md
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List

from plot_training import parse_log


def dev_curves(log: Path) -> Dict[int, dict]:
    """epoch -> the last validation record of that epoch (``valid_accuracy``, ``valid_bleu``, ...)."""
    out = {}
    for r in parse_log(log)["valid"]:
        out[int(r["epoch"])] = r
    if not out:
        raise ValueError(f"{log}: no validation records")
    return out


def table(runs: Dict[str, Path], split: str = "tst-COMMON") -> str:
    curves = {n: dev_curves(d / "train.log") for n, d in runs.items()}
    names = list(runs)
    keys = [k for k in ("valid_accuracy", "valid_bleu") if any(k in r for c in curves.values() for r in c.values())]
    if not keys:
        raise ValueError("the logs have neither dev accuracy (--report-accuracy) nor dev BLEU (--eval-bleu)")
    label = {"valid_accuracy": "dev accuracy", "valid_bleu": "dev BLEU"}
    lines = ["| epoch | " + " | ".join(f"{label[k]} {n}" for k in keys for n in names) + " |",
             "|" + "---|" * (1 + len(keys) * len(names))]
    for e in sorted({e for c in curves.values() for e in c}):
        cells = []
        for k in keys:
            for n in names:
                v = curves[n].get(e, {}).get(k)
                cells.append("-" if v is None else f"{v:.2f}")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += ["", f"| run | {split} BLEU | {split} chrF | best dev accuracy | epochs |", "|---|---|---|---|---|"]
    sigs = set()
    for n, d in runs.items():
        f = d / f"bleu-{split}.json"
        score = json.loads(f.read_text()) if f.is_file() else None
        if score:
            sigs.add(score["signature"])
        best = max((r.get("valid_accuracy", float("nan")) for r in curves[n].values()), default=float("nan"))
        lines.append(f"| {n} | {score['bleu']:.2f} | {score.get('chrf', float('nan')):.2f} | {best:.2f} | "
                     f"{max(curves[n])} |" if score else f"| {n} | - | - | {best:.2f} | {max(curves[n])} |")
    lines += [""] + [f"sacreBLEU signature: `{s}`" for s in sorted(sigs)]
    return "\n".join(lines) + "\n"


def _named(item: str):
    name, sep, path = item.partition("=")
    if not sep or not (Path(path) / "train.log").is_file():
        raise SystemExit(f"expected NAME=DIR with DIR/train.log, got {item!r}")
    return name, Path(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=DIR ...")
    p.add_argument("--split", default="tst-COMMON")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    md = table(dict(_named(r) for r in args.runs), args.split)
    print(md)
    if args.out:
        args.out.write_text(md)


if __name__ == "__main__":
    main()
