#!/usr/bin/env python3
"""How much of the spoken words do discrete units carry? Utterance-level probes, no alignment.

    python scripts/unit_quality.py --units mfcc=data/toy/en-de hubert-toy=/tmp/hubert_units/en-de \\
        --random-baseline --out-json unit_quality.json --out-md unit_quality.md

Each ``NAME=DIR`` is a prepared pair directory whose ``{split}_st.tsv`` files have a ``units``
column (``units.zip:offset:length``, as gsgn-extract-units writes them) and a ``src_text``
column. All unit sets must cover the same utterances. An utterance's units (one per 20 ms)
are collapsed to runs (consecutive repeats merged) and turned into a TF-IDF bag of unit
n-grams (1-3 by default, n-grams seen in at least 2 training utterances, sublinear tf, l2
norm), fitted on the training split. Two measures, both on the evaluation splits:

- word probe: for every English word in at least ``--min-word-count`` training sentences and
  at most half of them, a logistic regression (liblinear, C=1) on the bag predicts whether the
  word occurs in the utterance's transcript; the scores are the mean average precision over
  those words (chance: the mean word frequency) and the mean ROC AUC (chance: 0.5).
- retrieval: the 10 training utterances nearest to each evaluation utterance (cosine of the
  bags); the score is the mean Jaccard overlap of their word sets with the query's (chance:
  the mean overlap with all training utterances).

``--random-baseline`` adds uniformly random units of the same lengths (the floor of both
measures). Everything is deterministic.
"""
import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gsgn_fairseq.data.manifest import UNITS_COLUMN, read_tsv
from gsgn_fairseq.data.mustc import DataError
from gsgn_fairseq.data.zip_store import read_npy_ref

logger = logging.getLogger("unit_quality")

WORD = re.compile(r"[a-z']+")


def words(text: str) -> List[str]:
    return WORD.findall(text.lower())


def load_split(pair_dir: Path, split: str) -> Tuple[List[str], List[str], List[np.ndarray]]:
    """(ids, source texts, unit arrays) of ``{split}_st.tsv`` in ``pair_dir``."""
    tsv = Path(pair_dir) / f"{split}_st.tsv"
    rows = read_tsv(tsv)
    if rows and UNITS_COLUMN not in rows[0]:
        raise DataError(f"{tsv}: no {UNITS_COLUMN!r} column (run gsgn-extract-units first)")
    ids = [r["id"] for r in rows]
    texts = [r["src_text"] for r in rows]
    units = [read_npy_ref(pair_dir, r[UNITS_COLUMN]).astype(np.int64) for r in rows]
    return ids, texts, units


def runs(units: np.ndarray) -> np.ndarray:
    """Consecutive repeats merged: [3 3 5 5 5 3] -> [3 5 3]."""
    if len(units) == 0:
        return units
    keep = np.ones(len(units), dtype=bool)
    keep[1:] = units[1:] != units[:-1]
    return units[keep]


def as_documents(unit_lists: Sequence[np.ndarray]) -> List[str]:
    return [" ".join(f"u{u}" for u in runs(u)) for u in unit_lists]


def unit_stats(unit_lists: Sequence[np.ndarray]) -> Dict[str, float]:
    """Clusters used, frames per run (20 ms each), entropy of the unit distribution (bits)."""
    allu = np.concatenate(unit_lists)
    counts = np.bincount(allu)
    p = counts[counts > 0] / counts.sum()
    n_runs = sum(len(runs(u)) for u in unit_lists)
    return {"clusters_used": int((counts > 0).sum()), "frames_per_run": float(len(allu) / max(n_runs, 1)),
            "entropy_bits": float(-(p * np.log2(p)).sum())}


def word_targets(train_texts: Sequence[str], eval_texts: Sequence[str], min_count: int):
    """Binary word-presence matrices (train, eval) over the probed vocabulary, and that vocabulary."""
    train_sets = [set(words(t)) for t in train_texts]
    df: Dict[str, int] = {}
    for s in train_sets:
        for w in s:
            df[w] = df.get(w, 0) + 1
    vocab = sorted(w for w, c in df.items() if min_count <= c <= len(train_sets) / 2)
    index = {w: i for i, w in enumerate(vocab)}

    def matrix(texts):
        y = np.zeros((len(texts), len(vocab)), dtype=np.int8)
        for r, t in enumerate(texts):
            for w in set(words(t)):
                if w in index:
                    y[r, index[w]] = 1
        return y

    return matrix(train_texts), matrix(eval_texts), vocab


def all_word_matrix(train_texts: Sequence[str], eval_texts: Sequence[str]):
    """Binary bag-of-words (all words) for the retrieval overlap."""
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(analyzer=lambda t: sorted(set(words(t))), binary=True)
    return cv.fit_transform(train_texts), cv.transform(eval_texts)


def jaccard(a, b) -> np.ndarray:
    """Pairwise Jaccard overlap of the rows of binary sparse matrices a (n x V), b (m x V)."""
    inter = (a @ b.T).toarray().astype(np.float64)
    na = np.asarray(a.sum(1)).ravel()[:, None]
    nb = np.asarray(b.sum(1)).ravel()[None, :]
    union = na + nb - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def evaluate_units(train_units, eval_units, y_train, y_eval, w_train, w_eval, ngram: int = 3,
                   k: int = 10, C: float = 1.0) -> Dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    start = time.time()
    vec = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, ngram), min_df=2,
                          sublinear_tf=True, dtype=np.float32)
    x_train = vec.fit_transform(as_documents(train_units))
    x_eval = vec.transform(as_documents(eval_units))
    scores = np.zeros(y_eval.shape, dtype=np.float64)
    for j in range(y_train.shape[1]):
        clf = LogisticRegression(C=C, solver="liblinear", max_iter=1000)
        clf.fit(x_train, y_train[:, j])
        scores[:, j] = clf.predict_proba(x_eval)[:, 1]
    scored = np.flatnonzero((y_eval.sum(0) > 0) & (y_eval.sum(0) < len(y_eval)))  # both classes present
    ap = [average_precision_score(y_eval[:, j], scores[:, j]) for j in scored]
    auc = [roc_auc_score(y_eval[:, j], scores[:, j]) for j in scored]
    sim = (x_eval @ x_train.T).toarray()
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    overlap = jaccard(w_eval, w_train)
    retrieval = float(np.take_along_axis(overlap, top, axis=1).mean())
    return {"word_map": float(np.mean(ap)), "word_auc": float(np.mean(auc)),
            f"retrieval_jaccard@{k}": retrieval, "n_features": int(x_train.shape[1]),
            "seconds": round(time.time() - start, 1)}


def random_units(reference: Sequence[np.ndarray], n_clusters: int, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_clusters, size=len(u)) for u in reference]


def evaluate(unit_sets: Dict[str, Path], train_split: str = "train", eval_splits: Sequence[str] = ("dev", "tst-COMMON"),
             min_word_count: int = 20, random_baseline: bool = False, ngram: int = 3, k: int = 10,
             seed: int = 0) -> Dict:
    """Scores of every unit set (plus chance levels and, optionally, random units)."""
    data: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]] = {}
    ref_ids = ref_texts = None
    for name, pair_dir in unit_sets.items():
        ids, texts, train_units = load_split(pair_dir, train_split)
        eval_ids, eval_texts, eval_units = [], [], []
        for split in eval_splits:
            i, t, u = load_split(pair_dir, split)
            eval_ids += i
            eval_texts += t
            eval_units += u
        if ref_ids is None:
            ref_ids, ref_texts = (ids, eval_ids), (texts, eval_texts)
        elif (ids, eval_ids) != ref_ids:
            raise DataError(f"{name} ({pair_dir}): not the same utterances as {next(iter(unit_sets))}")
        data[name] = (train_units, eval_units)
    if random_baseline:
        n_clusters = max(int(np.concatenate(tr).max()) + 1 for tr, _ in data.values())
        data["random"] = (random_units(next(iter(data.values()))[0], n_clusters, seed),
                          random_units(next(iter(data.values()))[1], n_clusters, seed + 1))
    train_texts, eval_texts = ref_texts
    y_train, y_eval, vocab = word_targets(train_texts, eval_texts, min_word_count)
    w_train, w_eval = all_word_matrix(train_texts, eval_texts)
    result = {
        "train_split": train_split, "eval_splits": list(eval_splits), "n_train": len(train_texts),
        "n_eval": len(eval_texts), "n_words": len(vocab),
        "chance": {"word_map": float(y_eval.mean(0)[(y_eval.sum(0) > 0) & (y_eval.sum(0) < len(y_eval))].mean()),
                   "word_auc": 0.5,
                   f"retrieval_jaccard@{k}": float(jaccard(w_eval, w_train).mean())},
        "units": {},
    }
    for name, (train_units, eval_units) in data.items():
        scores = evaluate_units(train_units, eval_units, y_train, y_eval, w_train, w_eval, ngram, k)
        scores.update(unit_stats(train_units))
        result["units"][name] = scores
        logger.info("%s: %s", name, ", ".join(f"{a}={b:.4g}" for a, b in scores.items()))
    return result


def markdown(result: Dict) -> str:
    k = next(key for key in result["chance"] if key.startswith("retrieval"))
    lines = [
        f"Train on {result['train_split']} ({result['n_train']} utterances), score on "
        f"{'+'.join(result['eval_splits'])} ({result['n_eval']}); {result['n_words']} probed words.",
        "",
        f"| units | clusters used | frames/run | word mAP | word AUC | {k} |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["units"].items():
        lines.append(f"| {name} | {s['clusters_used']} | {s['frames_per_run']:.2f} | {s['word_map']:.3f} | "
                     f"{s['word_auc']:.3f} | {s[k]:.3f} |")
    lines.append(f"| chance | | | {result['chance']['word_map']:.3f} | 0.500 | {result['chance'][k]:.3f} |")
    return "\n".join(lines) + "\n"


def parse_unit_sets(specs: Sequence[str]) -> Dict[str, Path]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--units takes NAME=PAIR_DIR, got {spec!r}")
        out[name] = Path(path)
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", nargs="+", required=True, metavar="NAME=PAIR_DIR")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-splits", nargs="+", default=["dev", "tst-COMMON"])
    p.add_argument("--min-word-count", type=int, default=20, help="probe words in at least this many train sentences")
    p.add_argument("--ngram", type=int, default=3, help="largest unit n-gram in the bags")
    p.add_argument("--k", type=int, default=10, help="neighbours for retrieval")
    p.add_argument("--random-baseline", action="store_true", help="add uniformly random units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-json", type=Path)
    p.add_argument("--out-md", type=Path)
    a = p.parse_args(argv)
    result = evaluate(parse_unit_sets(a.units), a.train_split, a.eval_splits, a.min_word_count,
                      a.random_baseline, a.ngram, a.k, a.seed)
    table = markdown(result)
    print(table)
    if a.out_json:
        a.out_json.write_text(json.dumps(result, indent=1) + "\n")
    if a.out_md:
        a.out_md.write_text(table)
    return result


if __name__ == "__main__":
    main()
