#!/usr/bin/env python
"""Where the data path's time goes, per utterance: the multiview dataset's ``__getitem__`` and
collater for an FBank-only and a GSGN model, against fairseq's own ``SpeechToTextDataset``.

Modes (each a task and a model built from ``fairseq-train`` arguments, on the same split):

    fairseq        fairseq's ``speech_to_text`` task: FBank read, no checks, no units
    fbank_before   FBank-only as it was: every unit view read and checked although the model
                   reads none, finiteness by an element-wise mask, texts tokenized at every read
    fbank          FBank-only now: no unit I/O, finiteness by one sum, texts tokenized once
    gsgn           GSGN (the unit view read, CRC- and range-checked, aligned)

One pass reads ``--n`` utterances (``ds[i]``) and collates them in batches of ``--batch``;
the modes alternate within a round and the order rotates between rounds, so a change of
machine load hits every mode alike; a mode's figure is the median over ``--rounds``. Then one
extra pass per mode under cProfile splits the time into its parts (FBank read with its CRC and
the feature transforms, finiteness check, units read with CRC and range check, view alignment,
target tokenization, transcript, collater), in microseconds per utterance (cProfile's own
overhead inflates them; compare them across modes, not with the timed rounds). Files are in the page cache after the
first pass, as they are in training from the second epoch.

    python scripts/bench_data.py --data data/toy_study/en-de --num-units 100 --subset train_st --n 2000
"""
import argparse
import cProfile
import json
import pstats
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fairseq", "fbank_before", "fbank", "gsgn")
PARTS = {  # part -> function name in the cProfile statistics (the outermost call of that name)
    "FBank read (+ CRC-32) and transforms": "_get_source_audio",
    "of which feature transforms": "__call__",  # CompositeAudioTransform, fairseq/data/audio/__init__.py
    "finiteness check": "check_finite",
    "units read + checks": "load_units",
    "view alignment": "check",  # ViewAlignment.check
    "target tokenization": "get_tokenized_tgt_text",
    "transcript": "get_transcript",
    "collater": "collater",
}
PART_FILES = {"of which feature transforms": "audio/__init__.py", "view alignment": "multiview_dataset.py"}


def old_check_finite(ds) -> Callable:
    """The finiteness check as it was: an element-wise mask of every utterance."""
    from gsgn_fairseq.data.mustc import DataError

    def check_finite(index, source):
        if not bool(torch.isfinite(source).all()):
            raise DataError(f"utterance {ds.utt_id(index)}: its FBank features hold NaN or Inf")
    return check_finite


def build(args, mode: str):
    """The split's dataset as ``mode`` reads it."""
    from fairseq import options, tasks

    import gsgn_fairseq  # noqa: F401

    parser = options.get_training_parser()
    if mode == "fairseq":
        argv = [str(args.data), "--task", "speech_to_text", "--arch", "s2t_transformer_s", "--config-yaml",
                args.config_yaml, "--criterion", "label_smoothed_cross_entropy"]
    else:
        fusion = "gsgn" if mode == "gsgn" else "fbank"
        argv = [str(args.data), "--user-dir", str(ROOT / "gsgn_fairseq"), "--task", "speech_to_text_multiview",
                "--arch", args.arch, "--fusion", fusion, "--config-yaml", args.config_yaml,
                "--num-units", str(args.num_units), "--criterion", "label_smoothed_cross_entropy"]
    model_args = options.parse_args_and_arch(parser, argv)
    task = tasks.setup_task(model_args)
    if mode != "fairseq":
        task.build_model(model_args)  # sets the views' alignment rule and whether units are read
    task.load_dataset(args.subset)
    ds = task.datasets[args.subset]
    if mode == "fbank_before":
        task.alignment.reads_units = True
        ds.check_finite = old_check_finite(ds)
        ds._tgt_pieces = ds._transcripts = None  # texts tokenized at every read
    return ds


def one_pass(ds, indices: List[int], batch: int) -> float:
    """Seconds to read and collate ``indices``."""
    t = time.perf_counter()
    for start in range(0, len(indices), batch):
        ds.collater([ds[i] for i in indices[start:start + batch]])
    return time.perf_counter() - t


def parts_us(ds, indices: List[int], batch: int) -> Dict[str, float]:
    """Microseconds per utterance in each part (cumulative time, cProfile)."""
    prof = cProfile.Profile()
    prof.enable()
    one_pass(ds, indices, batch)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    out = {}
    for part, name in PARTS.items():
        suffix = PART_FILES.get(part, "")
        # the outermost call: a method that calls its parent's (collater, _get_source_audio)
        # must not count twice
        ct = max([v[3] for (file, _, fn), v in stats.items() if fn == name and file.endswith(suffix)], default=0.0)
        if ct:
            out[part] = 1e6 * ct / len(indices)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared pair with units (e.g. data/toy/en-de)")
    p.add_argument("--config-yaml", default="config_st.yaml")
    p.add_argument("--num-units", type=int, default=100)
    p.add_argument("--arch", default="s2t_gsgn_tiny")
    p.add_argument("--subset", default="train_st")
    p.add_argument("--n", type=int, default=2000, help="utterances per pass (the first N of the split)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    datasets = {m: build(args, m) for m in MODES}
    n = min(args.n, len(datasets["fbank"]))
    indices = list(range(n))
    for ds in datasets.values():  # warm the page cache and the lazy zip handles
        one_pass(ds, indices, args.batch)
    runs: Dict[str, List[float]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
            runs[mode].append(1e6 * one_pass(datasets[mode], indices, args.batch) / n)
        print(f"round {r + 1}: " + ", ".join(f"{m} {runs[m][-1]:.0f} us/utt" for m in MODES), flush=True)
    med = {m: statistics.median(v) for m, v in runs.items()}
    parts = {m: parts_us(datasets[m], indices, args.batch) for m in MODES}
    lines = [f"{n} utterances of {args.subset}, batches of {args.batch}, median of {args.rounds} rounds", "",
             "| mode | us / utterance | / fairseq |", "|---|---|---|"]
    lines += [f"| {m} | {med[m]:.0f} | {med[m] / med['fairseq']:.2f} |" for m in MODES]
    lines += ["", "| part (cProfile, us / utterance) | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
    for part in PARTS:
        if any(part in parts[m] for m in MODES):
            lines.append(f"| {part} | " + " | ".join(f"{parts[m][part]:.0f}" if part in parts[m] else "-"
                                                   for m in MODES) + " |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"n": n, "rounds_us": runs, "median_us": med, "parts_us": parts,
                                         "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
