#!/usr/bin/env python
"""Collect a recipe's scores into a Table-I-style markdown table.

For each run directory ``EXP/{variant}`` it reads ``bleu-{split}.json`` (from
``score_generate.py``) and ``checkpoint_avg{N}.pt.json`` (from ``average_checkpoints.py``,
whose largest averaged epoch is the paper's "convergence epoch").

    python scripts/results_table.py --exp-dir exp/en-de --variants fbank,unit,gsgn,gsgn_drop \
        --splits tst-COMMON --out exp/en-de/results.md
"""
import argparse
import glob
import json
from pathlib import Path
from typing import List


def collect(exp_dir: Path, variants: List[str], splits: List[str]) -> List[dict]:
    rows = []
    for v in variants:
        run = Path(exp_dir) / v
        row = {"variant": v}
        avg = sorted(glob.glob(str(run / "checkpoint_avg*.pt.json")))
        row["epoch"] = json.loads(Path(avg[-1]).read_text())["convergence_epoch"] if avg else None
        for s in splits:
            f = run / f"bleu-{s}.json"
            row[s] = json.loads(f.read_text()) if f.is_file() else None
        rows.append(row)
    return rows


def to_markdown(rows: List[dict], splits: List[str]) -> str:
    head = "| model | " + " | ".join(f"{s} BLEU" for s in splits) + " | convergence epoch |"
    lines = [head, "|" + "---|" * (len(splits) + 2)]
    for r in rows:
        cells = [f"{r[s]['bleu']:.2f}" if r[s] else "-" for s in splits]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['epoch'] if r['epoch'] is not None else '-'} |")
    sigs = sorted({r[s]["signature"] for r in rows for s in splits if r[s]})
    return "\n".join(lines + [""] + [f"sacreBLEU signature: `{s}`" for s in sigs]) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--variants", required=True)
    p.add_argument("--splits", default="tst-COMMON")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    splits = args.splits.split(",")
    table = to_markdown(collect(args.exp_dir, args.variants.split(","), splits), splits)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
