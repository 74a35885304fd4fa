#!/usr/bin/env python3
"""Learn the k-means model that turns frame features into discrete units.

    gsgn-learn-kmeans --data-root ROOT --tgt-lang de --feature ssl \\
        --checkpoint hubert_base_ls960.pt --layer 9 --n-clusters 500 --percent 0.1 --out km500.bin
    gsgn-learn-kmeans --data-root ROOT --tgt-lang de --feature mfcc \\
        --n-clusters 100 --out km100_mfcc.bin        # no HuBERT checkpoint (HuBERT iteration 1)

Reads ROOT/en-XX/{split}_st.tsv (default split: train), samples utterances as fairseq's
``examples/hubert/simple_kmeans/learn_kmeans.py`` does (``ceil(n * percent)`` of them, without
replacement, numpy seeded with ``--seed``), cuts their audio from the release layout, computes
the features (``gsgn_fairseq.prep.units``) and fits scikit-learn's MiniBatchKMeans
with fairseq's parameters (k-means++, max_iter 100, batch_size 10000, tol 0,
max_no_improvement 100, n_init 20, reassignment_ratio 0, init_size None, no labels). The model
is saved with ``joblib.dump``, the format of the released ``hubert_base_ls960_L9_km500.bin``.
"""
import argparse
import logging
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import joblib
import numpy as np

from ..data.manifest import read_tsv
from ..data.mustc import SAMPLE_RATE, DataError, pair_dir
from .units import (
    FEATURES, MAX_CHUNK, build_features, iter_features, iter_split_audio,
)
from ..console import console_entry

logger = logging.getLogger("learn_kmeans")


def sample_indices(n: int, percent: float, seed: int) -> np.ndarray:
    """fairseq's sampling: all rows for ``percent < 0``, else ``ceil(n * percent)`` rows, sorted."""
    if percent < 0:
        return np.arange(n)
    if not 0 < percent <= 1:
        raise ValueError(f"--percent is a fraction in (0, 1] (or -1 for all), got {percent}")
    return np.sort(np.random.RandomState(seed).choice(n, int(math.ceil(n * percent)), replace=False))


def collect_features(data_root: Path, tgt_lang: str, split: str, features, percent: float = -1.0,
                     seed: int = 0, batch_seconds: float = 100.0) -> np.ndarray:
    """Features of the sampled utterances of ``split``, concatenated in TSV order: (N, dim) float32."""
    tsv = pair_dir(data_root, tgt_lang) / f"{split}_st.tsv"
    ids = [row["id"] for row in read_tsv(tsv)]
    if not ids:
        raise DataError(f"{tsv}: no utterances")
    chosen = [ids[i] for i in sample_indices(len(ids), percent, seed)]
    feats, seconds, start = {}, 0.0, time.time()
    audio = iter_split_audio(data_root, tgt_lang, split, chosen, manifest=tsv)
    for uid, n_samples, f in iter_features(audio, features, batch_seconds):
        feats[uid] = f.cpu().numpy()
        seconds += n_samples / SAMPLE_RATE
    elapsed = max(time.time() - start, 1e-9)
    out = np.empty((sum(len(f) for f in feats.values()), features.dim), dtype=np.float32)
    offset = 0
    for uid in chosen:  # TSV order, freeing each utterance as it is copied
        f = feats.pop(uid)
        out[offset : offset + len(f)] = f
        offset += len(f)
    logger.info("%s features of %d/%d utterances of %s: %d frames x %d dims, %.1f s of audio "
                "in %.1f s (%.1fx real time)", features.name, len(chosen), len(ids), split,
                out.shape[0], out.shape[1], seconds, elapsed, seconds / elapsed)
    return out


def fit_kmeans(feats: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 20, init: str = "k-means++",
               max_iter: int = 100, batch_size: int = 10000, tol: float = 0.0, max_no_improvement: int = 100,
               reassignment_ratio: float = 0.0):
    """MiniBatchKMeans with the parameters of fairseq's simple_kmeans/learn_kmeans.py."""
    from sklearn.cluster import MiniBatchKMeans

    if len(feats) < n_clusters:
        raise DataError(f"only {len(feats)} frames for {n_clusters} clusters; raise --percent or lower --n-clusters")
    km = MiniBatchKMeans(
        n_clusters=n_clusters, init=init, max_iter=max_iter, batch_size=batch_size, verbose=0,
        compute_labels=False, tol=tol, max_no_improvement=max_no_improvement, init_size=None,
        n_init=n_init, reassignment_ratio=reassignment_ratio, random_state=seed,
    )
    return km.fit(feats)


def learn_kmeans(data_root: Path, tgt_lang: str, feature: str, n_clusters: int, out: Path,
                 percent: float = -1.0, checkpoint: Optional[Path] = None, layer: int = 9, seed: int = 0,
                 n_init: int = 20, split: str = "train", device: str = "cpu", batch_seconds: float = 100.0,
                 max_chunk: int = MAX_CHUNK, dtype: Optional[str] = None):
    """Fit on ``split`` and save the model to ``out`` (joblib); returns the model."""
    features = build_features(feature, checkpoint, layer, device, max_chunk, dtype)
    feats = collect_features(data_root, tgt_lang, split, features, percent, seed, batch_seconds)
    start = time.time()
    km = fit_kmeans(feats, n_clusters, seed=seed, n_init=n_init)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(km, out)
    logger.info("fitted %d clusters on %d frames in %.1f s; inertia per frame %.5f; saved %s",
                n_clusters, len(feats), time.time() - start, -km.score(feats) / len(feats), out)
    return km


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True, help="MuST-C root holding en-XX/")
    p.add_argument("--tgt-lang", required=True, help="target language XX of the en-XX pair")
    p.add_argument("--feature", choices=sorted(FEATURES), required=True,
                   help="frame features (gsgn_fairseq.prep.ssl_features; hubert = ssl)")
    p.add_argument("--n-clusters", type=int, required=True, help="K (the paper: 500)")
    p.add_argument("--out", type=Path, required=True, help="where to write the joblib k-means model")
    p.add_argument("--percent", type=float, default=-1.0,
                   help="fraction (0, 1] of the split's utterances to sample, as fairseq; -1 for all")
    p.add_argument("--checkpoint", type=Path,
                   help="--feature ssl/hubert: a fairseq .pt of HuBERT or wav2vec 2.0, or a Hugging Face "
                   "model directory (HubertModel, WavLMModel, Wav2Vec2Model, Data2VecAudioModel)")
    p.add_argument("--layer", type=int, default=9,
                   help="transformer layer of the SSL model, 1-based (transformers' hidden_states[L])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-init", type=int, default=20, help="k-means++ initializations (fairseq: 20)")
    p.add_argument("--split", default="train")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), help="SSL model precision on CUDA (default fp16)")
    p.add_argument("--batch-seconds", type=float, default=100.0, help="padded audio per SSL model batch")
    p.add_argument("--max-chunk", type=int, default=MAX_CHUNK, help="longer audio is encoded in chunks (samples)")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Optional[Sequence[str]] = None):
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    a = get_parser().parse_args(argv)
    return learn_kmeans(a.data_root, a.tgt_lang, a.feature, a.n_clusters, a.out, a.percent, a.checkpoint,
                        a.layer, a.seed, a.n_init, a.split, a.device, a.batch_seconds, a.max_chunk, a.dtype)

cli = console_entry(main)  # gsgn-* console script


if __name__ == "__main__":
    cli()
