#!/usr/bin/env python
"""Benchmark data preparation and unit extraction, as multiples of real time.

All figures come from one run on one machine:

1. ``prep_mustc`` on a fresh toy corpus with ``--jobs 1`` and with ``--jobs J`` (default 2):
   x real time of each and their ratio (the speed-up from parallel talks);
2. ``extract_units --feature mfcc`` (100 k-means centroids) over all splits;
3. ``extract_units --feature hubert`` with a randomly initialised HuBERT-base-sized model
   (layer 9, 500 centroids) over the dev split, on ``--device`` (cuda when available), audio
   reading and unit writing included.

Real time is the summed duration of the prepared segments.

    python scripts/bench_prep.py --n-train 400 --work /tmp/bench_prep
"""
import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

import make_toy_corpus  # noqa: E402
from make_random_hubert import make_random_hubert  # noqa: E402

from gsgn_fairseq.data.manifest import read_tsv  # noqa: E402
from gsgn_fairseq.prep import extract_units, prep_mustc  # noqa: E402


def audio_seconds(pair: Path, splits) -> float:
    # prep's n_frames are 10 ms fbank frames: 1 + (n - 400) // 160 samples
    return sum((int(r["n_frames"]) - 1) * 0.01 + 0.025 for s in splits for r in read_tsv(pair / f"{s}_st.tsv"))


def fake_kmeans(path: Path, n_clusters: int, dim: int, seed: int = 0) -> Path:
    """A fitted MiniBatchKMeans of the right shape (centroids from random data): speed only."""
    import joblib
    from sklearn.cluster import MiniBatchKMeans

    x = np.random.default_rng(seed).standard_normal((n_clusters * 4, dim)).astype(np.float32)
    joblib.dump(MiniBatchKMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit(x), path)
    return path


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def run(work: Path, n_train: int, jobs: int, device: str, hubert: bool) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus"
    make_toy_corpus.make_toy_corpus(corpus, pairs=["de"], n_train=n_train, n_dev=max(20, n_train // 10),
                                    n_test=max(20, n_train // 10), seed=1)
    results = {"n_train": n_train, "jobs": jobs, "device": device}
    splits = ["train", "dev", "tst-COMMON"]
    prep_secs = {}
    for j in (1, jobs):
        root = work / f"prep_jobs{j}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(corpus, root, copy_function=os.link)  # fresh outputs, shared wavs
        prep_secs[j] = timed(prep_mustc.prep_pair, root, "de", vocab_size=1000, jobs=j)
    pair = work / f"prep_jobs{jobs}" / "en-de"
    total = audio_seconds(pair, splits)
    results["audio_hours"] = round(total / 3600, 3)
    for j, secs in prep_secs.items():
        results[f"prep_jobs{j}_xrt"] = round(total / secs, 1)
    results["prep_speedup"] = round(prep_secs[1] / prep_secs[jobs], 2)

    km = fake_kmeans(work / "km_mfcc100.bin", 100, 39)
    secs = timed(extract_units.extract_units, pair.parent, "de", feature="mfcc", km_model=km, device=device)
    results["units_mfcc_xrt"] = round(total / secs, 1)

    if hubert:
        ckpt = work / "hubert_base_random.pt"
        if not ckpt.is_file():
            make_random_hubert(ckpt, preset="base", n_labels=500)
        km = fake_kmeans(work / "km_hubert500.bin", 500, 768)
        dev = audio_seconds(pair, ["dev"])
        # a copy without units: the dev units of another model must not meet the MFCC ones
        hub_root = work / "hubert_units"
        shutil.rmtree(hub_root, ignore_errors=True)
        shutil.copytree(work / "prep_jobs1", hub_root, copy_function=os.link)
        secs = timed(extract_units.extract_units, hub_root, "de", feature="hubert", km_model=km,
                     checkpoint=ckpt, layer=9, splits=["dev"], device=device)
        results["units_hubert_base_dev_xrt"] = round(dev / secs, 1)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_prep"))
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-hubert", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    res = run(args.work, args.n_train, args.jobs, device, not args.no_hubert)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
