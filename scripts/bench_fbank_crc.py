#!/usr/bin/env python
"""Benchmark the CRC-32 check of FBank members: what it adds to reading one utterance.

Writes a stored zip of random float32 (T, 80) FBank arrays, T drawn uniformly from
``--min-frames``..``--max-frames`` (MuST-C's segments average about 6 s: 600 frames), then times,
per utterance, over every member in a random order:

1. ``unchecked``: fairseq's ``get_features_or_waveform`` (what the dataset read before);
2. ``checked``: the dataset's read, the bytes checked against the zip's CRC-32 first
   (``zip_store.read_member_checked``, then ``np.load``);
3. ``crc32``: ``zlib.crc32`` of the member's bytes alone.

Each is the median over ``--repeats`` passes of the mean per utterance (files in the page
cache: the cost of the check, not of the disk).

    python scripts/bench_fbank_crc.py --n 2000 --work /tmp/bench_fbank_crc
"""
import argparse
import io
import json
import statistics
import time
import zlib
from pathlib import Path

import numpy as np
from fairseq.data.audio.audio_utils import get_features_or_waveform

from gsgn_fairseq.data.zip_store import read_member_checked, split_ref, write_npy_zip, zip_index, zip_manifest


def per_utterance_us(read, refs, repeats: int) -> float:
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for ref in refs:
            read(ref)
        passes.append((time.perf_counter() - start) / len(refs) * 1e6)
    return statistics.median(passes)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="utterances (default 2000)")
    p.add_argument("--min-frames", type=int, default=100)
    p.add_argument("--max-frames", type=int, default=1100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_fbank_crc"))
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    a.work.mkdir(parents=True, exist_ok=True)
    zip_path = a.work / "fbank80.zip"
    lengths = rng.integers(a.min_frames, a.max_frames + 1, size=a.n)
    write_npy_zip(zip_path, ((f"u{i}", rng.standard_normal((int(t), 80)).astype(np.float32))
                             for i, t in enumerate(lengths)))
    refs = [f"{zip_path}:{r.split(':', 1)[1]}" for r in zip_manifest(zip_path).values()]
    rng.shuffle(refs)
    index = zip_index(zip_path)

    def checked(ref):
        file, offset, length = split_ref(ref)
        return np.load(io.BytesIO(read_member_checked(file, offset, length, index[offset].crc)))

    def crc_only(ref):
        file, offset, length = split_ref(ref)
        with open(file, "rb") as f:
            f.seek(offset)
            zlib.crc32(f.read(length))

    def read_only(ref):  # the same read without the CRC, to separate it from the I/O
        file, offset, length = split_ref(ref)
        with open(file, "rb") as f:
            f.seek(offset)
            f.read(length)

    for ref in refs:  # warm the page cache
        checked(ref)
    out = {
        "n": a.n, "mean_frames": float(lengths.mean()), "mean_member_kib": float(lengths.mean() * 80 * 4 / 1024),
        "unchecked_us": per_utterance_us(get_features_or_waveform, refs, a.repeats),
        "checked_us": per_utterance_us(checked, refs, a.repeats),
        "crc32_us": per_utterance_us(crc_only, refs, a.repeats) - per_utterance_us(read_only, refs, a.repeats),
    }
    out["added_us"] = out["checked_us"] - out["unchecked_us"]
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}, indent=1))
    return out


if __name__ == "__main__":
    main()
