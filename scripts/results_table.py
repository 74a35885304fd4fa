#!/usr/bin/env python
"""Collect a recipe's scores into a Table-I-style markdown table.

For each run directory ``EXP/{variant}`` it reads ``bleu-{split}.json`` (BLEU and chrF
with their signatures, from ``gsgn-score``) and ``checkpoint_avg{N}.pt.json`` (from ``gsgn-average-checkpoints``,
whose largest averaged epoch is the paper's "convergence epoch").

    python scripts/results_table.py --exp-dir exp/en-de --variants fbank,unit,gsgn,gsgn_drop \
        --splits tst-COMMON --out exp/en-de/results.md

With several ``--exp-dir`` (the same variants trained with different seeds) the table has one
BLEU and one convergence-epoch column per directory and their mean and sample standard
deviation (a variant missing from a directory is left out of its mean and marked ``-``).
"""
import argparse
import glob
import json
import statistics
from pathlib import Path
from typing import List


def _chrf(score) -> str:
    return f"{score['chrf']:.2f}" if score and "chrf" in score else "-"


def collect(exp_dir: Path, variants: List[str], splits: List[str]) -> List[dict]:
    rows = []
    for v in variants:
        run = Path(exp_dir) / v
        row = {"variant": v}
        avg = sorted(glob.glob(str(run / "checkpoint_avg*.pt.json")))
        row["epoch"] = json.loads(Path(avg[-1]).read_text())["convergence_epoch"] if avg else None
        for s in splits:
            for key, name in ((s, f"bleu-{s}.json"), (f"{s}.fusion", f"bleu-{s}.fusion.json")):
                f = run / name
                row[key] = json.loads(f.read_text()) if f.is_file() else None
        rows.append(row)
    return rows


def to_markdown(rows: List[dict], splits: List[str]) -> str:
    """BLEU and chrF per split, the convergence epoch, and, where a model was also decoded
    with the fusion input (the multi-stage-dropout ones), that BLEU in its own column."""
    fusion = [s for s in splits if any(r.get(f"{s}.fusion") for r in rows)]
    head = "| model | " + " | ".join(f"{s} BLEU | {s} chrF" for s in splits)
    head += "".join(f" | {s} BLEU, fusion input" for s in fusion) + " | convergence epoch |"
    lines = [head, "|" + "---|" * (2 * len(splits) + len(fusion) + 2)]
    for r in rows:
        cells = [f"{r[s]['bleu']:.2f} | {_chrf(r[s])}" if r[s] else "- | -" for s in splits]
        cells += [f"{r[f'{s}.fusion']['bleu']:.2f}" if r.get(f"{s}.fusion") else "-" for s in fusion]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['epoch'] if r['epoch'] is not None else '-'} |")
    if fusion:
        lines += ["", "BLEU and chrF: multi-stage-dropout models decoded with the paper's protocol "
                  "(`--inference-branch sample`: each utterance's branch drawn with the last stage's "
                  "thresholds from the inference seed and its id), the others with their own input; "
                  "\"fusion input\": the same checkpoint with every utterance through the fusion branch."]
    return _with_signatures(lines, rows, splits)


def _with_signatures(lines: List[str], rows: List[dict], splits: List[str]) -> str:
    """The table's lines, then one line per distinct sacreBLEU (and chrF) signature among ``rows``."""
    sigs = sorted({r[s]["signature"] for r in rows for s in splits if r[s]})
    chrf_sigs = sorted({r[s]["chrf_signature"] for r in rows for s in splits if r[s] and "chrf_signature" in r[s]})
    return "\n".join(lines + [""] + [f"sacreBLEU signature: `{s}`" for s in sigs]
                     + [f"chrF signature: `{s}`" for s in chrf_sigs]) + "\n"


def _mean_sd(xs: List[float], fmt: str) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt)}"


def to_markdown_seeds(runs: List[List[dict]], names: List[str], split: str) -> str:
    """One row per variant: BLEU on ``split`` and convergence epoch per run, mean ± sd (and chrF's)."""
    head = ("| model | " + " | ".join(f"BLEU {n}" for n in names) + " | BLEU mean ± sd | "
            + "chrF mean ± sd | " + " | ".join(f"epoch {n}" for n in names) + " | epoch mean ± sd |")
    lines = [head, "|" + "---|" * (2 * len(names) + 4)]
    for i, r0 in enumerate(runs[0]):
        bleus = [r[i][split]["bleu"] if r[i][split] else None for r in runs]
        chrfs = [r[i][split]["chrf"] for r in runs if r[i][split] and "chrf" in r[i][split]]
        epochs = [r[i]["epoch"] for r in runs]
        lines.append(f"| {r0['variant']} | " + " | ".join(f"{b:.2f}" if b is not None else "-" for b in bleus)
                     + f" | {_mean_sd([b for b in bleus if b is not None], '.2f')} | {_mean_sd(chrfs, '.2f')} | "
                     + " | ".join(str(e) if e is not None else "-" for e in epochs)
                     + f" | {_mean_sd([e for e in epochs if e is not None], '.1f')} |")
    return _with_signatures(lines, [row for r in runs for row in r], [split])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path, required=True, nargs="+",
                   help="one recipe experiment directory, or several (seeds) for mean ± sd")
    p.add_argument("--names", help="comma-separated column names of the --exp-dir's (default: their names)")
    p.add_argument("--variants", required=True)
    p.add_argument("--splits", default="tst-COMMON")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    splits = args.splits.split(",")
    variants = args.variants.split(",")
    if len(args.exp_dir) == 1:
        table = to_markdown(collect(args.exp_dir[0], variants, splits), splits)
    else:
        names = args.names.split(",") if args.names else [d.name for d in args.exp_dir]
        if len(names) != len(args.exp_dir) or len(splits) != 1:
            p.error(f"several --exp-dir need one name each (got {len(names)} for {len(args.exp_dir)}) "
                    f"and a single --splits (got {args.splits})")
        table = to_markdown_seeds([collect(d, variants, splits) for d in args.exp_dir], names, splits[0])
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
