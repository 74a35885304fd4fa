#!/usr/bin/env python
"""The reproduction study's report: tables over seeds, significance, convergence, the
validation protocol, figures, and one line per claim of the paper.

Reads what ``scripts/recipes/toy/run_study.sh`` leaves in ``EXP`` (``seed{S}/{variant}/``
and ``mfcc/seed{S}/{variant}/``: ``train.log``, ``bleu-tst-COMMON*.json``,
``generate-tst-COMMON*.txt``, ``checkpoint_avg{N}.pt.json``) and writes
``EXP/report/study.md`` (+ ``study.json``) and PNGs beside it. Runs that have not finished
are left out (and named), so the report can be made at any time.

    python scripts/study_report.py --exp exp/toy_study --data data/toy_study/en-de --seeds 1,2,3

Test scores: BLEU and chrF on tst-COMMON (multi-stage-dropout models with the paper's
``sample`` protocol), mean ± sample sd over seeds. Convergence epoch: the epoch of the last of
the averaged checkpoints (the paper's). Significance: sacreBLEU's paired bootstrap (1000
resamples) per seed, and over seeds a paired t-test of the per-seed BLEU differences (where
there are at least two seeds).
"""
import argparse
import functools
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional

from convergence import compare as convergence_compare
from plot_training import parse_log as _parse_log
from results_table import collect

from gsgn_fairseq.fileio import write_json_atomic, write_text_atomic
from gsgn_fairseq.scoring import paired_bootstrap, read_checked_output, read_references

SPLIT = "tst-COMMON"
parse_log = functools.lru_cache(maxsize=None)(_parse_log)  # each log is read by several tables and figures
NAMES = {
    "fbank": "FBank-only", "unit": "S-feature-only", "gsgn": "GSGN", "gsgn_drop": "GSGN+Drop",
    "gsgn_drop_nogate": "GSGN+Drop, no gate loss", "gsgn_drop_exact": "GSGN+Drop, exact target",
    "concat": "concat", "noise_sum": "FBank + noise (sum)", "noise_replace": "GSGN, noise for the S-feature",
}
TAGS = {"main": "", "mfcc": " (MFCC units)", "pre": " (pretrained)"}  # how a group's rows are told apart
# paper, MuST-C En-De (BLEU, convergence epoch)
PAPER = {"fbank": (25.08, 40), "unit": (23.33, 27), "gsgn": (24.18, 28), "gsgn_drop": (25.26, 30),
         "concat": (23.8, 32), "noise_sum": (25.37, 38), "noise_replace": (25.19, 37)}
# Table IV: from pretrained ASR and MT models
PAPER_TABLE4 = {"fbank": (27.98, 33), "unit": (25.60, 25), "gsgn": (27.61, 25), "gsgn_drop": (28.19, 27)}


def quote(a: str, b: str, column: int = 0, table: Optional[dict] = None) -> str:
    """The paper's figures of variants ``a`` and ``b`` (column 0: BLEU, 1: convergence epoch), for a claim's text."""
    table = PAPER if table is None else table
    return f"{table[a][column]} vs {table[b][column]}"


DIP = 3.0  # a fall of dev BLEU by more than this from one epoch to the next counts as a dip


def mean_sd(xs: List[float], fmt: str = ".2f") -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return format(xs[0], fmt) + " (1 seed)"
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt)}"


def finished(run: Path) -> bool:
    return (run / f"bleu-{SPLIT}.json").is_file()


class Study:
    def __init__(self, exp: Path, data: Path, seeds: List[int], n_avg: int):
        self.exp, self.data, self.seeds, self.n_avg = exp, data, seeds, n_avg
        self.references = read_references(data / f"{SPLIT}_st.tsv", None)
        self.refs = self.references.texts
        self._rows: Dict[tuple, dict] = {}

    def run_dir(self, seed: int, variant: str, group: str = "main") -> Path:
        base = {"mfcc": self.exp / "mfcc", "pre": self.exp / "pretrained"}.get(group, self.exp)
        return base / f"seed{seed}" / variant

    def row(self, seed: int, variant: str, group: str = "main") -> Optional[dict]:
        """results_table's row of a finished run (BLEU, chrF, convergence epoch), else None."""
        key = (seed, variant, group)
        if key not in self._rows:
            run = self.run_dir(seed, variant, group)
            self._rows[key] = collect(run.parent, [variant], [SPLIT])[0] if finished(run) else None
        return self._rows[key]

    def hyps(self, seed: int, variant: str, suffix: str = "", group: str = "main") -> Optional[List[str]]:
        out = self.run_dir(seed, variant, group) / f"generate-{SPLIT}{suffix}.txt"
        return read_checked_output(out, self.references)[1] if out.is_file() else None

    def log(self, seed: int, variant: str, group: str = "main") -> Optional[Path]:
        p = self.run_dir(seed, variant, group) / "train.log"
        return p if p.is_file() and finished(p.parent) else None


# ------------------------------------------------------------------ tables
def scores_table(st: Study, variants: List[str], seeds: List[int], group: str = "main",
                 paper_scores: Optional[dict] = None, paper_name: str = "paper En-De") -> (str, dict):
    """One row per variant with finished runs; the last column is ``paper_scores`` (default: Table I)."""
    paper_scores = PAPER if paper_scores is None else paper_scores
    lines = [f"| model | seeds | tst-COMMON BLEU | chrF | convergence epoch | BLEU, fusion input | per seed (BLEU / epoch) | {paper_name} |",
             "|---|---|---|---|---|---|---|---|"]
    data = {}
    for v in variants:
        rows = {s: st.row(s, v, group) for s in seeds}
        done = {s: r for s, r in rows.items() if r}
        if not done:
            continue
        bleu = [r[SPLIT]["bleu"] for r in done.values()]
        chrf = [r[SPLIT]["chrf"] for r in done.values()]
        epoch = [r["epoch"] for r in done.values()]
        fusion = [r[f"{SPLIT}.fusion"]["bleu"] for r in done.values() if r.get(f"{SPLIT}.fusion")]
        per_seed = ", ".join(f"s{s}: {r[SPLIT]['bleu']:.2f} / {r['epoch']}" for s, r in done.items())
        paper = paper_scores.get(v)
        lines.append(f"| {NAMES.get(v, v)} | {len(done)} | {mean_sd(bleu)} | {mean_sd(chrf)} | {mean_sd(epoch, '.1f')} | "
                     f"{mean_sd(fusion) if fusion else '-'} | {per_seed} | {f'{paper[0]} / {paper[1]}' if paper else '-'} |")
        data[v] = {"seeds": sorted(done), "bleu": bleu, "chrf": chrf, "epoch": epoch, "fusion_bleu": fusion}
    return "\n".join(lines) + "\n", data


def significance(st: Study, pairs: List[tuple], seeds: List[int], group: str = "main") -> (str, dict):
    """Paired bootstrap per seed for (system, baseline) pairs, and a paired t-test over seeds."""
    from scipy import stats as sps

    lines = ["| comparison | seed | system BLEU | baseline BLEU | Δ BLEU | p (bootstrap) | Δ chrF | p chrF |",
             "|---|---|---|---|---|---|---|---|"]
    out = {}
    for system, baseline in pairs:
        deltas = []
        for s in seeds:
            h, b = st.hyps(s, system, group=group), st.hyps(s, baseline, group=group)
            if h is None or b is None or not (finished(st.run_dir(s, system, group)) and finished(st.run_dir(s, baseline, group))):
                continue
            bs = paired_bootstrap(h, b, st.refs)
            d, dc = bs["bleu"]["system"] - bs["bleu"]["baseline"], bs["chrf"]["system"] - bs["chrf"]["baseline"]
            deltas.append(d)
            out.setdefault(f"{system} vs {baseline}", {})[s] = bs
            lines.append(f"| {NAMES[system]} vs {NAMES[baseline]}{TAGS[group]} | {s} | {bs['bleu']['system']:.2f} | "
                         f"{bs['bleu']['baseline']:.2f} | {d:+.2f} | {bs['bleu']['p_value']:.4f} | {dc:+.2f} | "
                         f"{bs['chrf']['p_value']:.4f} |")
        if len(deltas) >= 2:
            t = sps.ttest_1samp(deltas, 0.0)
            out[f"{system} vs {baseline}"]["t_test"] = {"deltas": deltas, "p_value": float(t.pvalue)}
            lines.append(f"| {NAMES[system]} vs {NAMES[baseline]} | over {len(deltas)} seeds | | | "
                         f"{statistics.mean(deltas):+.2f} ± {statistics.stdev(deltas):.2f} | t-test {t.pvalue:.3f} | | |")
    return "\n".join(lines) + "\n", out


def convergence_table(st: Study, variants: List[str], seeds: List[int], group: str = "main") -> (str, dict):
    """Per seed, epochs and wall-clock for each variant to reach that seed's FBank-only best dev
    BLEU (of the same group: Table IV's pretrained runs against pretrained FBank-only)."""
    per = {}
    for s in seeds:
        base = st.log(s, "fbank", group)
        runs = {v: st.log(s, v, group) for v in variants if v != "fbank" and st.log(s, v, group)}
        if base and runs:
            per[s] = convergence_compare(base, runs)
    lines = ["| model | seeds | epochs to FBank-only's best dev BLEU | FBank-only's epochs | epoch speed-up | wall-clock speed-up | never reached |",
             "|---|---|---|---|---|---|---|"]
    summary = {}
    for v in variants:
        if v == "fbank":
            continue
        got = [(s, r["runs"][v], r) for s, r in per.items() if v in r["runs"]]
        if not got:
            continue
        reached = [(s, x, r) for s, x, r in got if x["epoch"]]
        ep = [x["epoch"] for _, x, _ in reached]
        base_ep = [r["baseline_epoch"] for _, _, r in reached]
        sp = [x["epoch_ratio"] for _, x, _ in reached]
        wsp = [x["wall_ratio"] for _, x, _ in reached if x["wall_ratio"]]
        never = [s for s, x, _ in got if not x["epoch"]]
        lines.append(f"| {NAMES.get(v, v)}{TAGS[group]} | {len(got)} | {mean_sd(ep, '.1f')} | {mean_sd(base_ep, '.1f')} | "
                     f"{mean_sd(sp)} | {mean_sd(wsp)} | {', '.join(f's{s}' for s in never) or '-'} |")
        summary[v] = {"epochs": ep, "fbank_epochs": base_ep, "epoch_speedup": sp, "wall_speedup": wsp, "never": never}
    return "\n".join(lines) + "\n", {"per_seed": per, "summary": summary}


def dev_dips(st: Study, seeds: List[int]) -> (str, dict):
    """Dev BLEU falls of more than DIP points, fusion input vs the test protocol (sample)."""
    lines = ["| run | seed | dev BLEU series | epochs | dips > 3 BLEU | largest fall | best | last |", "|---|---|---|---|---|---|---|---|"]
    out = {}
    for v in ("fbank", "gsgn", "gsgn_drop", "gsgn_drop_nogate", "gsgn_drop_exact"):
        for s in seeds:
            log = st.log(s, v)
            if not log:
                continue
            valid = parse_log(log)["valid"]
            for key, label in (("valid_bleu", "fusion" if v.startswith("gsgn") else "own input"), ("valid_bleu_sample", "sample")):
                ys = [(int(r["epoch"]), r[key]) for r in valid if isinstance(r.get(key), float)]
                if not ys:
                    continue
                falls = [(e1, a - b) for (e0, a), (e1, b) in zip(ys, ys[1:]) if a - b > 0]
                dips = [f"e{e}: -{f:.1f}" for e, f in falls if f > DIP]
                worst = max((f for _, f in falls), default=0.0)
                lines.append(f"| {NAMES[v]} | {s} | {label} | {len(ys)} | {len(dips)} {('(' + ', '.join(dips[:4]) + ')') if dips else ''} | "
                             f"{worst:.1f} | {max(y for _, y in ys):.1f} | {ys[-1][1]:.1f} |")
                out[f"{v}:{s}:{label}"] = {"dips": dips, "largest_fall": worst}
    return "\n".join(lines) + "\n", out


# ------------------------------------------------------------------ figures
def _save(fig, title: str, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_curves(st: Study, variants: List[str], seeds: List[int], out: Path) -> Optional[Path]:
    """Dev BLEU and dev loss against epoch: the mean over seeds with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for v in variants:
        curves = [parse_log(st.log(s, v))["valid"] for s in seeds if st.log(s, v)]
        if not curves:
            continue
        for ax, key in zip(axes, ("valid_bleu", "valid_loss")):
            by_epoch: Dict[int, List[float]] = {}
            for c in curves:
                for r in c:
                    if isinstance(r.get(key), float):
                        by_epoch.setdefault(int(r["epoch"]), []).append(r[key])
            es = sorted(by_epoch)
            mean = [statistics.mean(by_epoch[e]) for e in es]
            line, = ax.plot(es, mean, label=f"{NAMES[v]} ({len(curves)} seeds)")
            ax.fill_between(es, [min(by_epoch[e]) for e in es], [max(by_epoch[e]) for e in es],
                            color=line.get_color(), alpha=0.2)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, label in zip(axes, ("dev BLEU (greedy)", "dev loss")):
        ax.set_xlabel("epoch"); ax.set_ylabel(label); ax.grid(alpha=0.3); ax.legend(fontsize=8)
    return _save(fig, "Learning curves: mean over seeds, band = min..max", out)


def plot_mechanism(runs: Dict[str, Path], out: Path) -> Optional[Path]:
    """The paper's Fig. 3 (cos, % conflicting) and Fig. 4 (g_fbank) side by side per run
    (e.g. from scratch and pretrained), against the training epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("grad_cos", "mean cos of the views' gradients"), ("conflict_pct", "% conflicting (cos < 0)"),
              ("g_fbank_mean", "mean g_fbank"), ("g_fbank_gt1_pct", "% g_fbank > 1")]
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), len(panels), figsize=(4.2 * len(panels), 3.2 * len(runs)), squeeze=False)
    for row, (name, log) in zip(axes, runs.items()):
        recs = parse_log(log)["train_inner"]
        for ax, (key, label) in zip(row, panels):
            pts = [(r["num_updates"], r[key]) for r in recs
                   if isinstance(r.get(key), float) and isinstance(r.get("num_updates"), float)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.set_xlabel("update"); ax.grid(alpha=0.3)
    return _save(fig, "Gradient conflict (paper Fig. 3) and the FBank gate (Fig. 4), GSGN+Drop", out)


# ------------------------------------------------------------------ claims
def verdict(deltas: List[float], ps: Optional[List[float]], direction: int, alpha: float = 0.05) -> str:
    """holds: every seed in the claimed direction (and, with p-values, each significant);
    does not hold: every seed against it (significant where tested); else cannot tell."""
    if not deltas:
        return "not measured yet"
    tag = " (one seed)" if len(deltas) == 1 else ""
    signs = [d * direction > 0 for d in deltas]
    sig = [p < alpha for p in ps] if ps else [True] * len(deltas)
    if all(signs) and all(sig):
        return "holds" + tag
    if not any(signs) and all(sig) and all(d != 0 for d in deltas):
        return "does not hold" + tag
    return "cannot tell: inside the spread" + tag


def on_par(deltas: List[float], ps: List[float], alpha: float = 0.05) -> str:
    """"At least on par": no seed significantly worse (holds); every seed significantly worse
    (does not hold); else cannot tell."""
    if not deltas:
        return "not measured yet"
    tag = " (one seed)" if len(deltas) == 1 else ""
    worse = [d < 0 and p < alpha for d, p in zip(deltas, ps)]
    if not any(worse):
        return "holds" + tag
    if all(worse):
        return "does not hold" + tag
    return "cannot tell: seeds disagree" + tag


def speedup_verdict(summary: dict) -> str:
    """"Reaches FBank-only's best dev BLEU sooner": every seed reached it, in fewer epochs."""
    if summary["never"]:
        return f"does not hold for {summary['never']}"
    return verdict([x - 1 for x in summary["epoch_speedup"]], None, 1)


def claims(tables: dict, sig: dict, conv: dict) -> str:
    t1 = tables
    lines = ["| claim (paper) | our numbers | verdict |", "|---|---|---|"]

    def per_seed(v, key):
        d = t1.get(v)
        return dict(zip(d["seeds"], d[key])) if d else {}

    def paired(a, b, key):
        x, y = per_seed(a, key), per_seed(b, key)
        return [x[s] - y[s] for s in sorted(set(x) & set(y))]

    def boot(a, b):
        d = sig.get(f"{a} vs {b}", {})
        per_seed = [d[s] for s in sorted(k for k in d if k != "t_test")]
        return [v["bleu"]["system"] - v["bleu"]["baseline"] for v in per_seed], [v["bleu"]["p_value"] for v in per_seed]

    def add(claim, numbers, v):
        lines.append(f"| {claim} | {numbers} | {v} |")

    d = paired("unit", "fbank", "epoch")
    add(f"S-feature-only converges in fewer epochs than FBank-only (Fig. 1a, Table I: {quote('unit', 'fbank', 1)})",
        f"convergence epoch S-feature − FBank per seed: {d}", verdict(d, None, -1))
    d, p = boot("unit", "fbank")
    add(f"S-feature-only scores below FBank-only (Table I: {quote('unit', 'fbank')})",
        f"Δ BLEU per seed {[round(x, 2) for x in d]}, bootstrap p {[round(x, 4) for x in p]}", verdict(d, p, -1))
    d, p = boot("gsgn_drop", "fbank")
    add(f"GSGN+Drop is at least on par with FBank-only (Table I: {quote('gsgn_drop', 'fbank')})",
        f"Δ BLEU per seed {[round(x, 2) for x in d]}, bootstrap p {[round(x, 4) for x in p]}", on_par(d, p))
    d = paired("gsgn_drop", "fbank", "epoch")
    add(f"GSGN+Drop converges in fewer epochs than FBank-only (Table I: {quote('gsgn_drop', 'fbank', 1)}; 1.24x on average)",
        f"convergence epoch GSGN+Drop − FBank per seed: {d}", verdict(d, None, -1))
    s = conv.get("summary", {}).get("gsgn_drop")
    if s:
        add("GSGN+Drop reaches FBank-only's best dev BLEU sooner (the speed-up, in epochs and wall-clock)",
            f"epoch speed-up {s['epoch_speedup']}, wall-clock speed-up {s['wall_speedup']}, never reached: {s['never'] or 'none'}",
            speedup_verdict(s))
    d = paired("gsgn", "fbank", "epoch")
    add(f"GSGN converges in fewer epochs than FBank-only (Table I: {quote('gsgn', 'fbank', 1)})", f"Δ epoch per seed: {d}", verdict(d, None, -1))
    d, p = boot("gsgn", "fbank")
    add(f"GSGN scores below FBank-only (Table I: {quote('gsgn', 'fbank')})", f"Δ BLEU {[round(x, 2) for x in d]}, p {[round(x, 4) for x in p]}",
        verdict(d, p, -1))
    d, p = boot("gsgn_drop", "gsgn")
    add(f"Multi-stage dropout improves GSGN (Table I: {quote('gsgn_drop', 'gsgn')})", f"Δ BLEU {[round(x, 2) for x in d]}, p {[round(x, 4) for x in p]}",
        verdict(d, p, 1))
    d, p = boot("gsgn", "concat")
    add(f"GSGN beats concatenation (Table III: {quote('gsgn', 'concat')})", f"Δ BLEU {[round(x, 2) for x in d]}, p {[round(x, 4) for x in p]}",
        verdict(d, p, 1))
    d = paired("gsgn", "concat", "epoch")
    add(f"GSGN converges faster than concatenation (Table III: {quote('gsgn', 'concat', 1)})", f"Δ epoch per seed: {d}", verdict(d, None, -1))
    d, p = boot("gsgn_drop", "gsgn_drop_nogate")
    add("The gate loss matters (not in the paper: GSGN+Drop vs the same without L_gate)",
        f"Δ BLEU {[round(x, 2) for x in d]}, p {[round(x, 4) for x in p]}", verdict(d, p, 1))
    d = paired("gsgn_drop", "gsgn_drop_nogate", "epoch")
    add("The gate loss speeds convergence (not in the paper)", f"Δ epoch per seed: {d}", verdict(d, None, -1))
    d = paired("noise_sum", "fbank", "bleu")
    add(f"FBank + noise scores above FBank-only (Table II: {quote('noise_sum', 'fbank')})", f"Δ BLEU: {[round(x, 2) for x in d]}",
        verdict(d, None, 1))
    d = paired("noise_replace", "gsgn", "epoch")
    add(f"Noise in place of the S-feature converges slower than GSGN (Table II: {quote('noise_replace', 'gsgn', 1)})", f"Δ epoch: {d}", verdict(d, None, 1))
    return "\n".join(lines) + "\n"


def claims_table4(t4: dict, sig: dict, conv: Optional[dict] = None, gates: Optional[dict] = None,
                  t1: Optional[dict] = None) -> str:
    """Table IV's claims: from pretrained models, GSGN+Drop on par with FBank-only and sooner; the
    text's mechanism (Fig. 3 right, Fig. 4): conflicts common early in pretrained training, and
    g_fbank above 1 in most elements (89.53%, against 8.63% from scratch); GSGN closer to
    FBank-only when pretrained."""
    def per_seed(table, v, key):
        d = (table or {}).get(v)
        return dict(zip(d["seeds"], d[key])) if d else {}

    x, y = per_seed(t4, "gsgn_drop", "epoch"), per_seed(t4, "fbank", "epoch")
    d_ep = [x[s] - y[s] for s in sorted(set(x) & set(y))]
    runs = sig.get("gsgn_drop vs fbank", {})
    per = [runs[s] for s in sorted(k for k in runs if k != "t_test")]
    d_bleu = [r["bleu"]["system"] - r["bleu"]["baseline"] for r in per]
    ps = [r["bleu"]["p_value"] for r in per]
    lines = [
        f"| Pretrained: GSGN+Drop at least on par with FBank-only (Table IV: {quote('gsgn_drop', 'fbank', 0, PAPER_TABLE4)}) | Δ BLEU {[round(v, 2) for v in d_bleu]}, "
        f"p {[round(v, 4) for v in ps]} | {on_par(d_bleu, ps)} |",
        f"| Pretrained: GSGN+Drop converges in fewer epochs than FBank-only (Table IV: {quote('gsgn_drop', 'fbank', 1, PAPER_TABLE4)}) | Δ epoch per seed: {d_ep} | "
        f"{verdict(d_ep, None, -1)} |",
    ]
    sp = ((conv or {}).get("summary") or {}).get("gsgn_drop")
    if sp:
        lines.append("| Pretrained: GSGN+Drop reaches pretrained FBank-only's best dev BLEU sooner | "
                     f"epoch speed-up {sp['epoch_speedup']}, never reached: {sp['never'] or 'none'} | {speedup_verdict(sp)} |")
    # the gate's statistics, pretrained against from scratch, seed by seed (first and last epoch)
    gates = gates or {}
    pairs = []  # (seed, pretrained rows, from-scratch rows) where both logged the statistics
    for key, g in gates.items():
        if key.startswith("pre:gsgn_drop:"):
            h = gates.get(key[len("pre:"):])
            if h and all(r.get(k) is not None for r in (g[0], g[-1], h[0], h[-1]) for k in ("conflict_pct", "g_fbank_gt1_pct")):
                pairs.append((key.split(":")[-1], g, h))
    if pairs:
        first = [round(g[0]["conflict_pct"] - h[0]["conflict_pct"], 2) for _, g, h in pairs]
        last = [round(g[-1]["g_fbank_gt1_pct"] - h[-1]["g_fbank_gt1_pct"], 2) for _, g, h in pairs]
        seen_first = ", ".join("s%s: %s vs %s" % (s, g[0]["conflict_pct"], h[0]["conflict_pct"]) for s, g, h in pairs)
        seen_last = ", ".join("s%s: %s%% vs %s%%" % (s, g[-1]["g_fbank_gt1_pct"], h[-1]["g_fbank_gt1_pct"]) for s, g, h in pairs)
        lines.append("| Pretrained: gradient conflicts are common at the start of training (Fig. 3 right, text) | "
                     "GSGN+Drop's first-epoch conflicting utterances, pretrained − from scratch, % per seed: "
                     f"{first} ({seen_first}) | {verdict(first, None, 1)} |")
        lines.append("| Pretrained: g_fbank exceeds 1 in most elements (text: 89.53% pretrained, 8.63% from scratch) | "
                     "GSGN+Drop's last-epoch share of g_fbank > 1, pretrained − from scratch, points per seed: "
                     f"{last} ({seen_last}) | {verdict(last, None, 1)} |")
    g4, f4 = per_seed(t4, "gsgn", "bleu"), per_seed(t4, "fbank", "bleu")
    g1, f1 = per_seed(t1, "gsgn", "bleu"), per_seed(t1, "fbank", "bleu")
    common = sorted(set(g4) & set(f4) & set(g1) & set(f1))
    if common:
        gap = [round((g4[s] - f4[s]) - (g1[s] - f1[s]), 2) for s in common]
        lines.append(f"| GSGN is more effective from pretrained models (GSGN − FBank-only: Table IV {PAPER_TABLE4['gsgn'][0] - PAPER_TABLE4['fbank'][0]:+.2f}, "
                     f"Table I {PAPER['gsgn'][0] - PAPER['fbank'][0]:+.2f}) | (GSGN − FBank-only) pretrained minus from scratch, BLEU per seed: {gap} | "
                     f"{verdict(gap, None, 1)} |")
    return "\n".join(lines) + "\n"


def mechanism_seed(st: Study, seeds: List[int], side: List[int]) -> List[int]:
    """The from-scratch GSGN+Drop seed drawn beside the pretrained one: the pretrained run's seed
    where both exist, else the first seed with a finished run."""
    if side and st.log(side[0], "gsgn_drop", "pre") and st.log(side[0], "gsgn_drop"):
        return side[:1]
    return [s for s in seeds if st.log(s, "gsgn_drop")][:1]


def gate_stats(st: Study, seeds: List[int], group: str = "main", header: bool = True) -> (str, dict):
    """Fig. 3/4 numbers of the gated runs: first, middle and last epoch's gradient cosine,
    conflict share and g_fbank (``group`` "pre": Table IV's pretrained runs)."""
    lines = ["| run | seed | epoch | grad_cos | conflict % | g_fbank mean | g_fbank > 1 % |", "|---|---|---|---|---|---|---|"] if header else []
    out = {}
    for v in ("gsgn", "gsgn_drop", "gsgn_drop_exact", "gsgn_drop_nogate"):
        for s in seeds:
            log = st.log(s, v, group)
            if not log:
                continue
            train = [r for r in parse_log(log)["train"] if "epoch" in r]
            pick = [train[0], train[len(train) // 2], train[-1]] if len(train) >= 3 else train
            for r in pick:
                cells = [r.get(f"train_{k}") for k in ("grad_cos", "conflict_pct", "g_fbank_mean", "g_fbank_gt1_pct")]
                lines.append(f"| {NAMES[v]}{TAGS[group]} | {s} | {int(r['epoch'])} | " + " | ".join(
                    f"{c:.4g}" if isinstance(c, float) else "-" for c in cells) + " |")
            out[f"{v}:{s}" if group == "main" else f"{group}:{v}:{s}"] = [{k: r.get(f"train_{k}") for k in ("epoch", "grad_cos", "conflict_pct", "g_fbank_mean", "g_fbank_gt1_pct")} for r in pick]
    return "\n".join(lines) + "\n", out


ARCHIVED = ("train.log", "bleu-*.json", "generate-*.txt", "checkpoint_avg*.pt.json")


def archive(exp: Path, out: Path, pretrained_checkpoints: bool = False) -> List[Path]:
    """Copy the small files of every finished run (logs, scores, hypotheses, averaging records)
    and the study's records (schedule, noise range, Table IV's pretraining logs) to ``out`` in
    the same layout, so that a report can be made from ``out`` and a later study can start from
    it (run_study.sh ``--from-archive``). Checkpoints are not copied, except with
    ``pretrained_checkpoints`` Table IV's averaged ASR and MT models (a later study then
    trains its Table IV variants without pretraining again)."""
    import shutil

    copied = []
    for f in ("msd_schedule.json",):
        if (exp / f).is_file():
            copied.append(exp / f)
    for model in ("asr", "mt"):
        run = exp / "pretrain" / model
        if not (exp / "pretrain/.done" / model).is_file():
            continue  # unfinished: a later study resumes it from its own checkpoints, not from here
        copied += [p for p in (run / "train.log",) if p.is_file()] + sorted(run.glob("checkpoint_avg*.pt.json"))
        if pretrained_checkpoints:
            copied += sorted(run.glob("checkpoint_avg*.pt"))
    for bleu in sorted(exp.glob(f"**/bleu-{SPLIT}.json")):
        run = bleu.parent
        if "report" in run.parts:
            continue
        for pattern in ARCHIVED:
            copied += sorted(run.glob(pattern))
        if (run.parent / "noise_range.json").is_file():
            copied.append(run.parent / "noise_range.json")
    for f in sorted(set(copied)):
        dst = out / f.relative_to(exp)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    return sorted(set(copied))


def main(argv=None):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import turns the root logger to DEBUG
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the corpus pair directory (its tst-COMMON_st.tsv)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--side-seeds", default=None, help="seeds of Table II/III and the MFCC column (default: the first)")
    p.add_argument("--n-avg", type=int, default=5)
    p.add_argument("--units", default="hubert-toy")
    p.add_argument("--results", type=Path, help="also put the report into this markdown file (update_results.py sections)")
    p.add_argument("--command", default="", help="the study's command line, for the record")
    p.add_argument("--archive", type=Path, help="also copy the finished runs' small files here (see archive())")
    p.add_argument("--archive-pretrained", action="store_true",
                   help="with --archive: also Table IV's averaged ASR and MT checkpoints")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    side = [int(s) for s in (args.side_seeds or str(seeds[0])).split(",")]
    st = Study(args.exp, args.data, seeds, args.n_avg)
    rep = args.exp / "report"
    sections, record = [], {}

    t1, d1 = scores_table(st, ["fbank", "unit", "gsgn", "gsgn_drop"], seeds)
    sections.append(("Table I", f"S-feature: {args.units} units.\n\n" + t1))
    ab, dab = scores_table(st, ["gsgn_drop", "gsgn_drop_nogate", "gsgn_drop_exact"], seeds)
    sections.append(("Gate-loss ablations", ab))
    t23, d23 = scores_table(st, ["fbank", "noise_sum", "gsgn", "noise_replace", "concat"], side)
    sections.append(("Tables II and III", t23))
    tm, dm = scores_table(st, ["unit", "gsgn", "gsgn_drop"], side, group="mfcc")
    sections.append(("MFCC k-means units", tm))
    t4, d4 = scores_table(st, ["fbank", "unit", "gsgn", "gsgn_drop"], side, group="pre",
                          paper_scores=PAPER_TABLE4, paper_name="paper En-De (Table IV)")
    sections.append(("Table IV: from pretrained ASR and MT models", t4))
    s4, ds4 = significance(st, [("gsgn_drop", "fbank"), ("gsgn", "fbank")], side, group="pre")
    all_variants = ["fbank", "unit", "gsgn", "gsgn_drop", "gsgn_drop_nogate", "gsgn_drop_exact", "concat", "noise_sum", "noise_replace"]
    tables = {**d23, **dab, **d1}
    sg, dsg = significance(st, [("unit", "fbank"), ("gsgn_drop", "fbank"), ("gsgn", "fbank"), ("gsgn_drop", "gsgn"),
                                ("gsgn", "concat"), ("gsgn_drop", "gsgn_drop_nogate")], seeds)
    sections.append(("Significance", sg + "\n" + s4))
    cv, dcv = convergence_table(st, all_variants, seeds)
    cv4, dcv4 = convergence_table(st, ["unit", "gsgn", "gsgn_drop"], side, group="pre")
    sections.append(("Convergence to FBank-only's best dev BLEU", cv + ("\n" + cv4 if dcv4["summary"] else "")))
    dd, ddd = dev_dips(st, seeds)
    sections.append(("Dev BLEU falls: fusion input vs the test protocol", dd))
    gs, dgs = gate_stats(st, seeds)
    gs4, dgs4 = gate_stats(st, side, group="pre", header=False)
    gs, dgs = gs + gs4, {**dgs, **dgs4}
    sections.append(("Gates and conflicts (first, middle, last epoch)", gs))
    sections.append(("Claims", claims(tables, dsg, dcv) + claims_table4(d4, ds4, dcv4, dgs, d1)))
    figs = [plot_curves(st, ["fbank", "unit", "gsgn", "gsgn_drop"], seeds, rep / "study_learning_curves.png"),
            plot_curves(st, ["gsgn_drop", "gsgn_drop_nogate", "gsgn_drop_exact"], seeds, rep / "study_ablation_curves.png"),
            # the paper's Fig. 3/4 put from-scratch and pretrained training side by side: the
            # same seed for both where the pretrained run exists
            plot_mechanism({**{f"from scratch, seed {s}": st.log(s, "gsgn_drop") for s in mechanism_seed(st, seeds, side)},
                            **{f"pretrained, seed {s}": st.log(s, "gsgn_drop", "pre") for s in side[:1]
                               if st.log(s, "gsgn_drop", "pre")}},
                           rep / "study_mechanism.png")]
    missing = [f"seed{s}/{v}" for s in seeds for v in ["fbank", "unit", "gsgn", "gsgn_drop", "gsgn_drop_nogate", "gsgn_drop_exact"]
               if not finished(st.run_dir(s, v))]
    text = [f"Study directory `{args.exp}`; command: `{args.command}`." if args.command else f"Study directory `{args.exp}`.",
            f"Not finished (left out): {', '.join(missing) or 'none'}.", ""]
    for title, body in sections:
        text += [f"### {title}", "", body]
    text += ["Figures: " + ", ".join(f"`{f.name}`" for f in figs if f)]
    md = "\n".join(text) + "\n"
    rep.mkdir(parents=True, exist_ok=True)
    write_text_atomic(rep / "study.md", md)
    record.update(table1=d1, ablations=dab, side=d23, mfcc=dm, table4=d4, significance_table4=ds4, significance=dsg, convergence=dcv,
                  convergence_table4=dcv4, dips=ddd, gates=dgs,
                  missing=missing)
    write_json_atomic(rep / "study.json", record)
    print(md)
    if args.archive:
        import shutil

        files = archive(args.exp, args.archive, pretrained_checkpoints=args.archive_pretrained)
        write_text_atomic(args.archive / "report.md", md)
        for fig in figs:
            if fig:
                shutil.copy2(fig, args.archive / fig.name)
        print(f"archived {len(files)} files of the finished runs in {args.archive}")
    if args.results:
        sys.path.insert(0, str(Path(__file__).parent))
        from update_results import machine, update

        update(args.results, "Toy study", f"Machine: {machine()}.\n\n" + md)


if __name__ == "__main__":
    main()
