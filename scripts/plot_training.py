#!/usr/bin/env python
"""Plot fairseq training logs: learning curves, gradient conflicts and gate means.

Reads the files fairseq writes with ``--log-format json --log-file FILE`` (lines such as
``... | INFO | train_inner | {"epoch": 1, "update": 0.5, "loss": "8.1", ...}`` and
``... | INFO | dev_st | {"epoch": 1, "dev_st_loss": "7.2", "dev_st_bleu": "3.1", ...}``) and
writes PNGs:

- ``learning_curves.png``: dev loss (and dev BLEU when logged) against epoch, one line per
  run (the paper's Fig. 1a / 5);
- ``gradient_conflict.png``: ``grad_cos``, ``grad_cos_pos`` (mean over cos > 0),
  ``conflict_pct`` and ``gate_target`` against update (Fig. 3);
- ``gate_means.png``: ``g_fbank_mean``, ``g_fbank_gt1_pct`` (and ``g_unit_mean``) against
  update (Fig. 4);
- with several S-feature views (``--unit-views``): ``gradient_conflict_per_view.png``
  (``grad_cos_<view>``, ``conflict_pct_<view>``) and ``branches_per_view.png`` (the
  multi-stage-dropout branch shares ``branch_fbank_pct``, ``branch_unit_<view>_pct``,
  ``branch_fusion_pct``).

A figure whose metrics no run logged is skipped with a message.

    python scripts/plot_training.py --logs fbank=exp/fbank/train.log gsgn_drop=exp/gsgn_drop/train.log \
        --out-dir docs/figures
"""
import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

LINE = re.compile(r"\|\s*([\w.\-]+)\s*\|\s*(\{.*\})\s*$")


def parse_log(path: Path) -> Dict[str, List[dict]]:
    """Records of one fairseq JSON log, by kind (``train_inner``, ``train``, ``valid``).

    fairseq tags validation records with the subset name and prefixes their keys with it
    (``| dev_st | {"dev_st_loss": ...}``); they are returned under ``valid`` with keys
    renamed to ``valid_*``.
    """
    records: Dict[str, List[dict]] = {"train_inner": [], "train": [], "valid": []}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = LINE.search(line)
            if not m:
                continue
            tag = m.group(1)
            try:
                raw = json.loads(m.group(2))
            except json.JSONDecodeError:  # e.g. the configuration dump
                continue
            kind = tag if tag in ("train_inner", "train") else "valid"
            if kind == "valid" and not all(k == "epoch" or k.startswith(f"{tag}_") for k in raw):
                continue
            rec = {}
            for k, v in raw.items():
                if kind == "valid" and k != "epoch":
                    k = "valid_" + k[len(tag) + 1:]
                try:
                    rec[k] = float(v)
                except (TypeError, ValueError):
                    rec[k] = v
            records[kind].append(rec)
    return records


def series(records: List[dict], x: str, y: str) -> Tuple[List[float], List[float]]:
    pts = [(r[x], r[y]) for r in records if x in r and isinstance(r.get(y), float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot(runs, panels, out: Path, title: str) -> bool:
    """panels: list of (kind, x, y, ylabel). Returns False when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = [p for p in panels if any(series(r[p[0]], p[1], p[2])[0] for r in runs.values())]
    if not used:
        print(f"skip {out.name}: none of {[p[2] for p in panels]} in the logs")
        return False
    fig, axes = plt.subplots(1, len(used), figsize=(5 * len(used), 3.6), squeeze=False)
    for ax, (kind, x, y, ylabel) in zip(axes[0], used):
        for name, recs in runs.items():
            xs, ys = series(recs[kind], x, y)
            if xs:
                ax.plot(xs, ys, marker="o" if kind == "valid" else None, ms=3, label=name)
        ax.set_xlabel("epoch" if x == "epoch" else "update")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")
    return True


def view_names(runs: Dict[str, Dict[str, List[dict]]]) -> List[str]:
    """The S-feature views with their own statistics (``--unit-views`` with several views:
    ``conflict_pct_<name>``, ``grad_cos_<name>``, ``branch_unit_<name>_pct``), in log order."""
    names: List[str] = []
    for recs in runs.values():
        for r in recs.get("train_inner", []):
            for k in r:
                if k.startswith("conflict_pct_") and k[len("conflict_pct_"):] not in names:
                    names.append(k[len("conflict_pct_"):])
    return names


def plot_all(logs: Dict[str, Path], out_dir: Path) -> List[Path]:
    runs = {name: parse_log(path) for name, path in logs.items()}
    out_dir = Path(out_dir)
    written = []
    views = view_names(runs)
    per_view = [("train_inner", "num_updates", f"{stat}_{v}", f"{label} ({v})")
                for v in views for stat, label in (("grad_cos", "cos(dL_fbank/dW, dL_view/dW)"),
                                                   ("conflict_pct", "% conflicting"))]
    branches = [("train_inner", "num_updates", f"branch_{b}_pct", f"% utterances: {b} branch")
                for b in ["fbank"] + [f"unit_{v}" for v in views] + ["fusion"]] if views else []
    figures = [
        ("learning_curves.png", "Learning curves", [
            ("valid", "epoch", "valid_loss", "dev loss"),
            ("valid", "epoch", "valid_bleu", "dev BLEU"),
        ]),
        ("gradient_conflict.png", "Gradient conflict between the views (reference layer; paper Fig. 3)", [
            ("train_inner", "num_updates", "grad_cos", "cos(dL_fbank/dW, dL_unit/dW)"),
            ("train_inner", "num_updates", "grad_cos_pos", "mean cos over cos > 0"),
            ("train_inner", "num_updates", "conflict_pct", "% conflicting (cos < 0)"),
            ("train_inner", "num_updates", "gate_target", "mean gate target"),
        ]),
        # several S-feature views: the conflict with each, and the sampler's branch shares
        ("gradient_conflict_per_view.png", "Gradient conflict with each S-feature view", per_view),
        ("branches_per_view.png", "Multi-stage dropout branches per view", branches),
        ("gate_means.png", "GSGN gates (paper Fig. 4)", [
            ("train_inner", "num_updates", "g_fbank_mean", "mean g_fbank"),
            ("train_inner", "num_updates", "g_fbank_gt1_pct", "% g_fbank > 1"),
            ("train_inner", "num_updates", "g_unit_mean", "mean g_unit"),
        ]),
    ]
    for name, title, panels in figures:
        if panels and _plot(runs, panels, out_dir / name, title):
            written.append(out_dir / name)
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logs", nargs="+", required=True, help="NAME=PATH of fairseq JSON log files")
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args()
    logs = {}
    for item in args.logs:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--logs expects NAME=PATH, got {item!r}")
        if not Path(path).is_file():
            raise SystemExit(f"log file not found: {path}")
        logs[name] = Path(path)
    plot_all(logs, args.out_dir)


if __name__ == "__main__":
    main()
