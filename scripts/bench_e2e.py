#!/usr/bin/env python
"""What users pay, end to end: real ``fairseq-train`` and decoding, as ratios to FBank-only.

For each ``--archs`` entry and each mode (FBank-only, GSGN, GSGN+Drop with each gate-target
reading, fairseq's ``s2t_transformer`` of the same size), ``fairseq-train`` runs as a whole
process twice, for ``N_short`` and ``N_long`` updates (``--updates N_short,N_long``), on the
same prepared data; the per-update time is ``(t_long - t_short) / (N_long - N_short)``,
so start-up, data loading set-up and the final checkpoint cancel. Each run is timed twice:
by the wall clock and by the CPU time of the process and its children (``os.wait4``), which
other work on the machine disturbs far less; the ratios are of CPU time on CPU (wall-clock
beside them) and of wall-clock on a GPU. Modes alternate within a round and the order rotates
between rounds, so a change of machine load hits every mode alike; a mode's ratio to
FBank-only is the median over ``--rounds`` of each round's ratio (a round's runs share the
machine's load), its time the median of its rounds. On a machine that other jobs share,
``--together`` starts every mode's run of a round at once instead (the short runs, then the
long ones), each timed by its own CPU time: the modes then share the load moment by moment.
Decoding: the whole ``--decode-subset`` with beam 5, in-process (``task.inference_step``;
process CPU time around the generator alone, wall-clock on a GPU), every mode's model loaded
once and the modes taking turns batch by batch, with each mode's long-run checkpoint or
``--decode-checkpoints MODE=PATH`` (trained
models: decode time depends on the hypotheses' lengths), multi-stage-dropout models with
the ``sample`` protocol. ``--decode-fixed-len N`` forces every hypothesis to N tokens, so that
models trained for a few updates (whose hypotheses differ in length) are compared on the same
decoder work; the JSON records each mode's mean hypothesis length.

    python scripts/bench_e2e.py --data data/toy/en-de --archs s2t_gsgn_tiny:10000,s2t_gsgn_s:3000 \
        --updates 10,150 --rounds 3 --json bench_e2e.json
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from bench_train import GATE_CRITERION, S2T, common_fairseq_argv, s2t_transformer_argv

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

GATE = ["--criterion", GATE_CRITERION, "--gate-target-granularity", "utterance"]
MSD = ["--multi-stage-dropout", "--msd-schedule", "1:0.3,0.0;2:0.5,0.3;3:0.3,0.0"]
MODES = {  # name -> (our arch or s2t_transformer, extra fairseq-train arguments)
    "fbank": ("gsgn", [*GATE, "--fusion", "fbank"]),
    "gsgn": ("gsgn", [*GATE, "--fusion", "gsgn", "--gate-target", "factorized"]),
    "gsgn_drop": ("gsgn", [*GATE, "--fusion", "gsgn", "--gate-target", "factorized", *MSD]),
    "gsgn_drop_exact_i10": ("gsgn", [*GATE, "--fusion", "gsgn", "--gate-target", "exact", "--gate-target-interval", "10", *MSD]),
    S2T: ("s2t", ["--criterion", "label_smoothed_cross_entropy"]),  # fairseq's own task: no units read
    # FBank + two unit views (the data must hold units_mfcc.zip beside units.zip, as the
    # three-view recipe leaves it); not in the default --modes
    "gsgn_drop_3view": ("gsgn", [*GATE, "--fusion", "gsgn", "--gate-target", "factorized", *MSD,
                                 "--unit-views", "units,mfcc"]),
}
DEFAULT_MODES = [m for m in MODES if m != "gsgn_drop_3view"]
GOALS = {("gsgn_drop", "fbank", "s2t_gsgn_tiny"): 1.10, ("gsgn_drop", "fbank", "s2t_gsgn_s"): 1.05,
         ("fbank", S2T, None): 1.03}
DECODE_GOALS = {("gsgn_drop", "fbank"): 1.10, ("fbank", S2T): 1.03}


def model_args(arch: str):
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    import gsgn_fairseq  # noqa: F401

    m = Namespace()
    ARCH_CONFIG_REGISTRY[arch](m)
    return m


def train_argv(args, arch: str, max_tokens: int, mode: str, save_dir: Path, updates: int) -> List[str]:
    kind, extra = MODES[mode]
    ns = argparse.Namespace(data=str(args.data), config_yaml="config_st.yaml", num_units=args.num_units,
                            train_subset="train_st", max_tokens=max_tokens, seed=1, device="cpu" if args.cpu else "cuda",
                            precision="fp32" if args.cpu else "bf16", fairseq_args="")
    argv = common_fairseq_argv(ns)
    if kind == "s2t":
        i = argv.index("--task")
        argv[i + 1] = "speech_to_text"
        j = argv.index("--num-units")
        del argv[j:j + 2]
        argv += s2t_transformer_argv(model_args(arch))
    else:
        argv += ["--arch", arch]
    if "--unit-views" in extra:  # one --num-units entry per view
        n_views = len(extra[extra.index("--unit-views") + 1].split(","))
        j = argv.index("--num-units")
        argv[j + 1] = ",".join([str(args.num_units)] * n_views)
    return [str(BIN / "fairseq-train"), *argv, *extra, "--max-update", str(updates), "--max-epoch", "1000",
            "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--save-interval-updates", str(updates),
            "--keep-interval-updates", "1", "--disable-validation"]


def check_updates(save_dir: Path, updates: int, log: str, cmd: List[str]) -> None:
    """Refuse a run that resumed from an earlier checkpoint or did not make ``updates`` updates."""
    import torch

    last = save_dir / "checkpoint_last.pt"
    done = torch.load(last, map_location="cpu", weights_only=False)["optimizer_history"][-1]["num_updates"]
    if "Loaded checkpoint" in log or done != updates:
        raise SystemExit(f"expected {updates} updates from scratch, {last} has {done} "
                         f"(resumed from an earlier checkpoint?): {' '.join(cmd)}")


def timed(runs: Dict[str, Tuple[List[str], Path, int]], threads: int) -> Dict[str, Tuple[float, float]]:
    """Start every ``mode -> (cmd, save_dir, updates)`` run at once (one, for runs one after
    another) and time each whole training process on its own: wall-clock from the common
    start to its exit, CPU time from its resource usage (``os.wait4``: the process and its
    data-loader workers). Each must have made ``updates`` updates from scratch. Runs side by
    side share whatever load the machine has, moment by moment."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    procs = {}
    t0 = time.perf_counter()
    for mode, (cmd, save, _) in runs.items():
        save.mkdir(parents=True, exist_ok=True)
        log = open(save / "train.out", "w")  # a file, not a pipe: nobody reads pipes while all run
        procs[mode] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    out: Dict[str, Tuple[float, float]] = {}
    by_pid = {p.pid: mode for mode, (p, _) in procs.items()}
    while by_pid:
        pid, status, ru = os.wait4(-1, 0)
        if pid not in by_pid:
            continue
        mode = by_pid.pop(pid)
        p, log = procs[mode]
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        log.close()
        out[mode] = (time.perf_counter() - t0, ru.ru_utime + ru.ru_stime)
    for mode, (cmd, save, updates) in runs.items():
        text = (save / "train.out").read_text()
        if procs[mode][0].returncode != 0:
            raise SystemExit(f"failed (exit {procs[mode][0].returncode}): {' '.join(cmd)}\n{text[-3000:]}")
        check_updates(save, updates, text, cmd)
    return out


def per_round_ratios(runs: Dict[str, List[float]]) -> Dict[str, float]:
    """Per mode, the median over rounds of its time / FBank-only's time in the same round."""
    return {m: statistics.median(a / b for a, b in zip(v, runs["fbank"])) for m, v in runs.items()}


class Decoding:
    """One mode's model, generator and batches of ``subset``, loaded once; ``run(i)`` decodes
    batch ``i`` and returns its seconds (the generator alone: process CPU time on CPU,
    wall-clock on a GPU). Multi-stage-dropout models decode with the ``sample`` protocol."""

    def __init__(self, ckpt: Path, data: Path, subset: str, beam: int, msd: bool, cpu: bool, fixed_len: int = 0):
        from fairseq import checkpoint_utils

        import gsgn_fairseq  # noqa: F401  (the task and model; fairseq checkpoints under weights_only)

        overrides = {"data": str(data)}
        if msd:
            overrides["inference_branch"] = "sample"
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides=overrides)
        self.model = models[0].eval()
        if not cpu:
            self.model = self.model.cuda()
        self.cpu, self.task = cpu, task
        task.load_dataset(subset)
        gen_args = argparse.Namespace(beam=beam, lenpen=1.0)
        if fixed_len:  # every hypothesis exactly fixed_len tokens: the same decoder work for every model
            gen_args = argparse.Namespace(beam=beam, lenpen=1.0, min_len=fixed_len, max_len_a=0, max_len_b=fixed_len)
        self.gen = task.build_generator([self.model], gen_args)
        itr = task.get_batch_iterator(task.dataset(subset), max_tokens=50000, required_batch_size_multiple=1,
                                      seed=1).next_epoch_itr(shuffle=False)
        self.batches = list(itr)
        self.n_tokens, self.n_hyps = 0, 0

    def run(self, i: int) -> float:
        import torch

        b = self.batches[i]
        if not self.cpu:
            from fairseq import utils

            b = utils.move_to_cuda(b)
        clock = time.process_time if self.cpu else time.perf_counter
        with torch.no_grad():
            t = clock()
            hypos = self.task.inference_step(self.gen, [self.model], b)
            if not self.cpu:
                torch.cuda.synchronize()
            took = clock() - t
        eos = self.task.target_dictionary.eos()
        self.n_tokens += sum(int((h[0]["tokens"] != eos).sum()) for h in hypos)
        self.n_hyps += len(hypos)
        return took

    @property
    def mean_len(self) -> float:
        """Mean hypothesis length in tokens (EOS left out) over every batch decoded so far."""
        return self.n_tokens / max(self.n_hyps, 1)


def decode_rounds(decoders: Dict[str, "Decoding"], rounds: int) -> Dict[str, List[float]]:
    """Per mode, the seconds of each round's pass over the whole subset. The modes take turns
    batch by batch (the order rotating between rounds), so a change of load within a round
    hits every mode alike."""
    modes = list(decoders)
    secs: Dict[str, List[float]] = {m: [] for m in modes}
    n = max(len(d.batches) for d in decoders.values())
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        total = dict.fromkeys(modes, 0.0)
        for i in range(n):
            for m in order:
                if i < len(decoders[m].batches):
                    total[m] += decoders[m].run(i)
        for m in modes:
            secs[m].append(total[m])
    return secs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared pair with units (e.g. data/toy/en-de)")
    p.add_argument("--num-units", type=int, default=100)
    p.add_argument("--archs", default="s2t_gsgn_tiny:10000,s2t_gsgn_s:3000", help="ARCH:MAX_TOKENS,...")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help=f"comma-separated, of {', '.join(MODES)} (gsgn_drop_3view needs units_mfcc.zip in --data)")
    p.add_argument("--updates", default="10,150", help="N_short,N_long")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decode-subset", default="tst-COMMON_st")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--decode-checkpoints", nargs="*", default=[], help="MODE=CHECKPOINT (trained models)")
    p.add_argument("--decode-fixed-len", type=int, default=0, metavar="N",
                   help="force every hypothesis to N tokens (min = max length), so that models trained for a few "
                        "updates, whose hypotheses differ in length, are compared on the same decoder work")
    p.add_argument("--together", action="store_true",
                   help="run every mode's training at once in each round (each with --threads threads, each "
                        "timed by its own CPU time), so that all share the machine's load moment by moment: "
                        "for a machine other jobs share")
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--gpu", dest="cpu", action="store_false", help="train in bf16 on the GPU")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown or "fbank" not in modes:
        p.error(f"--modes: unknown {unknown} (known: {', '.join(MODES)}); fbank is the baseline and must be there")
    n_short, n_long = (int(x) for x in args.updates.split(","))
    if not 0 < n_short < n_long:
        p.error(f"--updates must be N_short,N_long with 0 < N_short < N_long, got {args.updates}")
    archs = [(a.split(":")[0], int(a.split(":")[1])) for a in args.archs.split(",")]
    result: Dict[str, dict] = {"updates": [n_short, n_long], "rounds": args.rounds, "threads": args.threads,
                               "together": args.together,
                               "decode_fixed_len": args.decode_fixed_len, "archs": {}}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for arch, max_tokens in archs:
            per_update: Dict[str, List[float]] = {m: [] for m in modes}  # CPU s (wall on a GPU)
            per_update_wall: Dict[str, List[float]] = {m: [] for m in modes}
            for r in range(args.rounds):
                order = modes[r % len(modes):] + modes[: r % len(modes)]

                def run(group: List[str], n: int) -> Dict[str, Tuple[float, float]]:
                    runs = {}
                    for mode in group:
                        # a fresh directory every run: a checkpoint_last.pt left by the last round
                        # would resume at its end and time nothing
                        save = work / arch / mode / str(n)
                        shutil.rmtree(save, ignore_errors=True)
                        runs[mode] = (train_argv(args, arch, max_tokens, mode, save, n), save, n)
                    return timed(runs, args.threads)

                times: Dict[int, Dict[str, Tuple[float, float]]] = {n_short: {}, n_long: {}}
                if args.together:  # every mode at once, the short runs, then the long ones
                    for n in (n_short, n_long):
                        times[n] = run(order, n)
                else:
                    for mode in order:
                        for n in (n_short, n_long):
                            times[n].update(run([mode], n))
                for mode in order:
                    (w0, c0), (w1, c1) = times[n_short][mode], times[n_long][mode]
                    per_update_wall[mode].append((w1 - w0) / (n_long - n_short))
                    per_update[mode].append((c1 - c0) / (n_long - n_short) if args.cpu else per_update_wall[mode][-1])
                    print(f"{arch} round {r + 1} {mode}: {1000 * per_update[mode][-1]:.1f} ms/update "
                          f"({'CPU time; ' if args.cpu else ''}wall {1000 * per_update_wall[mode][-1]:.1f})", flush=True)
            entry = {"max_tokens": max_tokens, "clock": "cpu" if args.cpu else "wall",
                     "ms_per_update": {m: 1000 * statistics.median(v) for m, v in per_update.items()},
                     "ratio_to_fbank": per_round_ratios(per_update),
                     "wall_ms_per_update": {m: 1000 * statistics.median(v) for m, v in per_update_wall.items()},
                     "wall_ratio_to_fbank": per_round_ratios(per_update_wall),
                     "runs_ms": {m: [1000 * v for v in vs] for m, vs in per_update.items()},
                     "runs_wall_ms": {m: [1000 * v for v in vs] for m, vs in per_update_wall.items()}}
            if not args.no_decode:
                ckpts = dict(item.split("=", 1) for item in args.decode_checkpoints)
                decoders = {mode: Decoding(Path(ckpts.get(mode, work / arch / mode / str(n_long) / "checkpoint_last.pt")),
                                           args.data, args.decode_subset, args.beam,
                                           "--multi-stage-dropout" in MODES[mode][1], args.cpu, args.decode_fixed_len)
                            for mode in modes}
                secs = decode_rounds(decoders, args.rounds)
                entry["decode_s"] = {m: statistics.median(v) for m, v in secs.items()}
                entry["decode_runs_s"] = secs
                entry["decode_mean_len"] = {m: d.mean_len for m, d in decoders.items()}
                entry["decode_ratio_to_fbank"] = per_round_ratios(secs)
            result["archs"][arch] = entry
    clock = "CPU" if args.cpu else "wall"
    lines = [f"| arch | mode | ms / update ({clock}) | / FBank-only (wall-clock's) | decode s ({clock}) | decode / FBank-only |",
             "|---|---|---|---|---|---|"]
    for arch, e in result["archs"].items():
        for m in modes:
            d = e.get("decode_s", {}).get(m)
            lines.append(f"| {arch} | {m} | {e['ms_per_update'][m]:.1f} | {e['ratio_to_fbank'][m]:.3f} "
                         f"({e['wall_ratio_to_fbank'][m]:.3f}) | "
                         f"{'-' if d is None else f'{d:.2f}'} | "
                         f"{'-' if d is None else format(e['decode_ratio_to_fbank'][m], '.3f')} |")
    lines += ["", "| goal | measured | target |", "|---|---|---|"]
    for arch, e in result["archs"].items():
        r = e["ratio_to_fbank"]
        for (num, den, goal_arch), goal in GOALS.items():
            if (goal_arch in (None, arch)) and num in r and den in r:
                v = r[num] / r[den]
                lines.append(f"| {arch}: {num} / {den} per update | {v:.3f} | <= {goal} {'met' if v <= goal else '**missed**'} |")
        dr = e.get("decode_ratio_to_fbank")
        for (num, den), goal in DECODE_GOALS.items():
            if dr and num in dr and den in dr:
                v = dr[num] / dr[den]
                lines.append(f"| {arch}: {num} / {den} decoding | {v:.3f} | <= {goal} {'met' if v <= goal else '**missed**'} |")
    table = "\n".join(lines)
    print(table)
    result["table"] = table
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
