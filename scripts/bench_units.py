#!/usr/bin/env python
"""Benchmark SSL feature extraction: padded batches vs one utterance at a time, in x real time.

Two randomly initialised base-sized models (random weights run as fast as trained ones):

- ``hubert_base``: HuBERT-base in fairseq's format (``make_random_hubert.py --preset base``):
  512-channel conv stack with a group norm on its first layer, 12 layers, d=768;
- ``wavlm_base``: WavLM-base as a Hugging Face directory (transformers' ``WavLMConfig()``
  defaults: the same conv stack and size, gated relative position bias).

Audio: random waveforms of lengths drawn uniformly from ``--min-len``..``--max-len`` seconds
until ``--seconds`` of audio. Each model runs layer ``--layer`` over all of it twice, after one
warm-up call: through ``iter_features`` (utterances sorted by length, batches of at most
``--batch-seconds`` of padded audio), and one utterance per call. It prints x real time (audio
seconds / wall seconds) of both, their ratio (``speedup``), the largest difference between the
two sets of features, the padded audio the batches compute over the real audio, and the load
average before and after (other jobs on the machine skew the figures).

    python scripts/bench_units.py --work /tmp/bench_units --device cpu
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from make_random_hubert import make_random_hubert  # noqa: E402

from gsgn_fairseq.data.mustc import SAMPLE_RATE  # noqa: E402
from gsgn_fairseq.prep.units import iter_features, plan_batches  # noqa: E402
from gsgn_fairseq.prep.ssl_features import build_features  # noqa: E402


def random_wavlm_base(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised WavLM-base (``WavLMConfig()`` defaults), saved with save_pretrained."""
    import torch
    from transformers import WavLMConfig, WavLMModel

    if not (directory / "config.json").is_file():
        torch.manual_seed(seed)
        WavLMModel(WavLMConfig()).save_pretrained(directory)
    return directory


def mixed_audio(seconds: float, min_len: float, max_len: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    wavs, total = [], 0
    while total < seconds * SAMPLE_RATE:
        n = int(rng.uniform(min_len, max_len) * SAMPLE_RATE)
        wavs.append(np.clip(0.1 * rng.standard_normal(n), -1, 1).astype(np.float32))
        total += n
    return wavs


def bench(features, wavs, batch_seconds: float) -> dict:
    import torch

    seconds = sum(len(w) for w in wavs) / SAMPLE_RATE
    features([wavs[0][: SAMPLE_RATE]])  # warm-up
    sync = torch.cuda.synchronize if features.device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    batched = {uid: f for uid, _, f in iter_features(((str(i), w) for i, w in enumerate(wavs)), features,
                                                     batch_seconds)}
    sync()
    batched_secs = time.perf_counter() - start
    start = time.perf_counter()
    alone = {str(i): features([w])[0] for i, w in enumerate(wavs)}
    sync()
    alone_secs = time.perf_counter() - start
    diff = max(float((batched[k] - alone[k]).abs().max()) for k in alone)
    return {"batched_xrt": round(seconds / batched_secs, 2), "per_utterance_xrt": round(seconds / alone_secs, 2),
            "speedup": round(alone_secs / batched_secs, 2), "max_abs_diff": diff}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_units"), help="where the random models go")
    p.add_argument("--seconds", type=float, default=60.0, help="total audio")
    p.add_argument("--min-len", type=float, default=0.5, help="shortest utterance (s)")
    p.add_argument("--max-len", type=float, default=8.0, help="longest utterance (s)")
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--batch-seconds", type=float, default=100.0, help="padded audio per batch (extract_units default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), help="precision on CUDA (default fp16)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.work.mkdir(parents=True, exist_ok=True)
    hubert = args.work / "hubert_base_random.pt"
    if not hubert.is_file():
        make_random_hubert(hubert, preset="base", n_labels=500)
    models = {"hubert_base": hubert, "wavlm_base": random_wavlm_base(args.work / "wavlm_base_random")}
    wavs = mixed_audio(args.seconds, args.min_len, args.max_len)
    lengths = [len(w) for w in wavs]
    # the batches iter_features forms (one pool: all the audio fits pool_batches batches)
    batches = plan_batches(lengths, int(args.batch_seconds * SAMPLE_RATE))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    res = {"device": device, "torch_threads": torch.get_num_threads(), "utterances": len(wavs),
           "audio_seconds": round(sum(lengths) / SAMPLE_RATE, 1), "layer": args.layer,
           "batch_seconds": args.batch_seconds, "batches": len(batches),
           "padded_audio_ratio": round(padded / sum(lengths), 2),
           "load_before": [round(x, 2) for x in os.getloadavg()]}
    for name, ckpt in models.items():
        features = build_features("ssl", ckpt, layer=args.layer, device=device, dtype=args.dtype)
        res[name] = bench(features, wavs, args.batch_seconds)
        del features
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
