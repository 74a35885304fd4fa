"""scripts/bench_gpu.py on the CPU (--smoke): packed corpus in, timed sections and logs out."""
import json
import tarfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.cluster import KMeans

from tiny_mustc import make_tiny_mustc

ROOT = Path(__file__).resolve().parents[1]
import bench_gpu  # noqa: E402
import pack_corpus  # noqa: E402


def test_bench_gpu_smoke_sections(tmp_path):
    src = make_tiny_mustc(tmp_path / "src", n_talks=3, segs_per_talk=4)
    pack_corpus.convert(src, tmp_path / "packed", pack=True, jobs=1)
    km = KMeans(n_clusters=8, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(64, 39)))
    joblib.dump(km, tmp_path / "km.bin")
    out = tmp_path / "out"
    bench_gpu.main(["--packed", str(tmp_path / "packed"), "--km-mfcc", str(tmp_path / "km.bin"),
                    "--work", str(tmp_path / "work"), "--out", str(out), "--jobs", "1", "--smoke",
                    "--skip", "hubert,bench,toy", "--deadline", "600"])
    res = json.loads((out / "gpu_results.json").read_text())
    sec = res["sections"]
    assert [k for k in sec] == ["unpack", "prep", "train"], sec
    assert all(s["ok"] for s in sec.values()), "\n".join(f"{k}: {s.get('error')}" for k, s in sec.items())
    # 3 splits x 3 talks x 4 segments; prep's figure is hours / seconds
    assert sec["prep"]["audio_hours"] > 0 and sec["prep"]["x_realtime"] > 0
    train = sec["train"]
    assert train["fbank"]["ratio_to_fbank"] == 1.0
    for mode in ("gsgn_drop (exact, interval 10)", "gsgn (factorized)"):
        t = train[mode]
        assert t["s_per_update"] > 0
        assert abs(t["ratio_to_fbank"] - t["s_per_update"] / train["fbank"]["s_per_update"]) < 2e-3
    # the units came from the given k-means model (train had none without the hubert section)
    units = json.loads((tmp_path / "work" / "toy" / "en-de" / "units.json").read_text())
    assert units["n_clusters"] == 8 and units["feature"] == "mfcc"
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert {"train_fbank.log", "train_gsgn_drop.log", "train_gsgn.log"} <= set(names)
