#!/usr/bin/env python
"""Benchmark one training step of the GSGN modes against the FBank-only model and against
fairseq's own ``s2t_transformer``: step time, parameters, peak memory.

What is measured
    The wall time of one fairseq ``Trainer.train_step`` (forward, criterion, backward, gradient
    clipping, Adam update, metric logging: what ``fairseq-train`` does per update, without data
    loading) for each mode, all built from ``fairseq-train`` arguments with the recipe's flags
    (label smoothing 0.1, ``--report-accuracy``, Adam (0.9, 0.98), inverse-sqrt schedule,
    ``--clip-norm 10``) and the criterion the recipe trains every variant with
    (``label_smoothed_cross_entropy_with_gate``; it adds nothing for a model without gates):

    ==================== ===============================================================
    fbank                ``--fusion fbank``: the FBank-only model, the denominator
    gsgn-nogate          ``--fusion gsgn`` with fairseq's ``label_smoothed_cross_entropy``:
                         the cost of the second view and the fusion alone
    gsgn-factorized      ``--fusion gsgn --gate-target factorized``
    gsgn-exact           ``--fusion gsgn --gate-target exact`` (a target every update)
    gsgn-exact-i10       ``--gate-target exact --gate-target-interval 10``
    s2t_transformer      fairseq's model with our arch's sizes: encoder layers = acoustic +
                         textual layers, same D, FFN, heads, decoder layers, conv kernels and
                         channels, dropouts and normalization (its net input lacks the units)
    ==================== ===============================================================

    Optional modes (``--modes``): ``fbank-lsce`` and ``s2t_transformer-lsce`` use fairseq's
    ``label_smoothed_cross_entropy`` instead (the criterion's own overhead).

How
    One task, one set of fixed batches (``--batches`` batches of ``--max-tokens`` FBank frames
    from ``--train-subset``, drawn once with ``--seed``; the same tensors for every mode), one
    Trainer per mode, all in this process. Each mode is built and warmed up in turn
    (``--warmup`` steps), then the timed phase runs ``--steps`` steps per mode in blocks of
    ``--block`` consecutive steps (default 10 = the gate-target interval, so every block of
    ``gsgn-exact-i10`` holds exactly one exact target: its block mean is the amortized cost),
    round-robin over the modes with the order rotated every round, so a change in machine load
    hits every mode alike. A mode's step time is the median over rounds of its block mean; a
    ratio is the median over rounds of (mode block mean / baseline block mean of the same
    round). The per-step median (every step on its own) is printed too; for interval modes it
    shows the steps without an exact target.

    Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` while the mode is built and warmed
    up (growth over what the earlier modes hold: parameters, gradients, optimizer state and the
    step's activations). On CPU a fresh subprocess per mode (same batches, same threads) reports
    its peak RSS (``ru_maxrss``) and the growth of it over its RSS before the model was built.

How to read it
    ``ratio`` < 1.10 for ``gsgn-factorized`` means the factorized gate loss with the two-view
    front end costs less than 10 % over training the FBank-only model; ``gsgn-nogate`` splits
    that into the second view / fusion and the gate loss. ``fbank`` / ``s2t_transformer`` is
    our stacked encoder (adapter, masked subsampler, extra LayerNorm) against fairseq's plain
    one of the same size. Small models on one CPU thread weigh the front end and the
    per-step Python overhead more than a GPU run of ``s2t_gsgn`` does: compare like with like.

    python scripts/bench_train.py                               # CPU, s2t_gsgn_tiny, 1 thread
    python scripts/bench_train.py --device cuda --arch s2t_gsgn --json bench.json   # bf16
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = ROOT / "gsgn_fairseq"
DEFAULT_DATA = "/tmp/toy_default/en-de"

BASELINE = "fbank"
S2T = "s2t_transformer"
GSGN_CRITERION = "label_smoothed_cross_entropy_with_gate"
LSCE = "label_smoothed_cross_entropy"
# The ratios to print (numerator, denominator, goal or None).
GOALS = {
    "gsgn-factorized": 1.10,
    "gsgn-exact-i{interval}": 1.15,
}


def mode_table(interval: int):
    """name -> (kind, extra fairseq arguments); kind: gsgn (our model) or s2t."""
    gate = ["--criterion", GSGN_CRITERION]
    return {
        "fbank": ("gsgn", [*gate, "--fusion", "fbank"]),
        "gsgn-nogate": ("gsgn", ["--criterion", LSCE, "--fusion", "gsgn"]),
        "gsgn-factorized": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "factorized"]),
        "gsgn-exact": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "exact"]),
        f"gsgn-exact-i{interval}": (
            "gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "exact", "--gate-target-interval", str(interval)]
        ),
        S2T: ("s2t", gate),
        "fbank-lsce": ("gsgn", ["--criterion", LSCE, "--fusion", "fbank"]),
        f"{S2T}-lsce": ("s2t", ["--criterion", LSCE]),
    }


def default_modes(interval: int):
    return ["fbank", "gsgn-nogate", "gsgn-factorized", "gsgn-exact", f"gsgn-exact-i{interval}", S2T]


# ------------------------------------------------------------------------------------ arguments


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="prepared speech_to_text data dir with a units column")
    p.add_argument("--config-yaml", default="config_st.yaml")
    p.add_argument("--train-subset", default="train_st", help="split the fixed batches come from")
    p.add_argument("--num-units", type=int, default=None, help="K (default: n_clusters of DATA/units.json)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--arch", default=None, help="s2t_gsgn arch (default: s2t_gsgn on cuda, s2t_gsgn_tiny on cpu)")
    p.add_argument("--bf16", dest="bf16", action="store_true", default=None, help="fairseq --bf16 (default on cuda)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="FBank frames per batch (default: 10000 on cpu as the toy recipe, 40000 on cuda as MuST-C)")
    p.add_argument("--batches", type=int, default=4, help="fixed batches, cycled")
    p.add_argument("--steps", type=int, default=40, help="timed steps per mode (rounded up to whole blocks)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per mode first (rounded up to whole blocks)")
    p.add_argument("--interval", type=int, default=10, help="--gate-target-interval of the gsgn-exact-iN mode")
    p.add_argument("--block", type=int, default=None, help="consecutive steps per visit (default: --interval)")
    p.add_argument("--modes", default=None, help="comma-separated modes (default: %s)" % ",".join(default_modes(10)))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (and OMP/MKL threads)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fairseq-args", default="", help="extra fairseq-train arguments for every mode (one string)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timing, profile N steps of each mode: sections and top torch.profiler ops")
    p.add_argument("--json", default=None, metavar="FILE", help="write all figures as JSON")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one mode, print peak RSS
    return p


def resolve_defaults(args, cuda_available: bool):
    if args.device is None:
        args.device = "cuda" if cuda_available else "cpu"
    cuda = args.device == "cuda"
    if args.arch is None:
        args.arch = "s2t_gsgn" if cuda else "s2t_gsgn_tiny"
    if args.bf16 is None:
        args.bf16 = cuda
    if args.bf16 and not cuda:
        raise SystemExit("--bf16 needs --device cuda")
    if args.max_tokens is None:
        args.max_tokens = 40000 if cuda else 10000
    if args.num_units is None:
        meta = Path(args.data) / "units.json"
        if not meta.is_file():
            raise SystemExit(f"--num-units not given and {meta} does not exist")
        args.num_units = int(json.loads(meta.read_text())["n_clusters"])
    if args.block is None:
        args.block = args.interval
    if args.block < 1 or args.interval < 1 or args.batches < 1 or args.steps < 1 or args.warmup < 0:
        raise SystemExit("--block, --interval, --batches, --steps must be >= 1 and --warmup >= 0")
    table = mode_table(args.interval)
    args.mode_list = args.modes.split(",") if args.modes else default_modes(args.interval)
    unknown = [m for m in args.mode_list if m not in table]
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; known: {', '.join(table)}")
    if any(m.startswith("gsgn-exact-i") for m in args.mode_list) and args.block % args.interval:
        raise SystemExit(f"--block {args.block} must be a multiple of --interval {args.interval} (amortized cost)")
    args.rounds = math.ceil(args.steps / args.block)
    args.warmup = math.ceil(args.warmup / args.block) * args.block
    return args


def common_fairseq_argv(args):
    """fairseq-train arguments shared by every mode (the recipe's optimization flags)."""
    argv = [
        args.data, "--user-dir", str(USER_DIR), "--task", "speech_to_text_multiview",
        "--config-yaml", args.config_yaml, "--num-units", str(args.num_units),
        "--train-subset", args.train_subset, "--valid-subset", args.train_subset,
        "--label-smoothing", "0.1", "--report-accuracy",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000", "--clip-norm", "10.0",
        "--max-tokens", str(args.max_tokens), "--required-batch-size-multiple", "1",
        "--num-workers", "0", "--seed", str(args.seed), "--no-progress-bar", "--log-format", "none",
        "--save-dir", "/nonexistent-bench-train",  # never written: the benchmark saves nothing
    ]
    if args.device == "cpu":
        argv.append("--cpu")
    if args.bf16:
        argv.append("--bf16")
    return argv + args.fairseq_args.split()


def s2t_transformer_argv(m) -> list:
    """fairseq s2t_transformer arguments of the same size as our resolved model args ``m``."""
    argv = [
        "--arch", S2T,
        "--encoder-embed-dim", str(m.encoder_embed_dim),
        "--encoder-ffn-embed-dim", str(m.encoder_ffn_embed_dim),
        "--encoder-layers", str(m.acoustic_encoder_layers + m.textual_encoder_layers),
        "--encoder-attention-heads", str(m.encoder_attention_heads),
        "--decoder-embed-dim", str(m.decoder_embed_dim),
        "--decoder-ffn-embed-dim", str(m.decoder_ffn_embed_dim),
        "--decoder-layers", str(m.decoder_layers),
        "--decoder-attention-heads", str(m.decoder_attention_heads),
        "--conv-kernel-sizes", str(m.conv_kernel_sizes),
        "--conv-channels", str(m.conv_channels),
        "--dropout", str(m.dropout),
        "--attention-dropout", str(m.attention_dropout),
        "--activation-dropout", str(m.activation_dropout),
        "--activation-fn", str(m.activation_fn),
        "--max-source-positions", str(m.max_source_positions),
        "--max-target-positions", str(m.max_target_positions),
    ]
    for flag in ("encoder_normalize_before", "decoder_normalize_before", "share_decoder_input_output_embed",
                 "no_scale_embedding", "decoder_learned_pos"):
        if getattr(m, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    return argv


# ------------------------------------------------------------------------------------ building


class Mode:
    """One benchmarked configuration: its fairseq cfg, Trainer and (net-input-adapted) batches."""

    def __init__(self, name, kind, argv):
        self.name, self.kind, self.argv = name, kind, argv
        self.trainer = None
        self.batches = None
        self.params = None
        self.memory = {}
        self.block_ms = []  # one mean per round
        self.step_ms = []  # every timed step


def quiet():
    """fairseq's hydra config machinery warns about deprecated hydra usage on every parse."""
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def parse_fairseq(argv):
    from fairseq import options

    ctx = quiet()
    try:
        parser = options.get_training_parser()
        return options.parse_args_and_arch(parser, input_args=argv)
    finally:
        ctx.__exit__(None, None, None)


def build_modes(args):
    """Mode objects with parsed fairseq args (models not built yet)."""
    common = common_fairseq_argv(args)
    table = mode_table(args.interval)
    ours = parse_fairseq(common + ["--arch", args.arch, "--fusion", "fbank", "--criterion", LSCE])
    modes = []
    for name in args.mode_list:
        kind, extra = table[name]
        arch = s2t_transformer_argv(ours) if kind == "s2t" else ["--arch", args.arch]
        modes.append(Mode(name, kind, common + arch + extra))
    return modes


def setup_task(argv):
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = parse_fairseq(argv)
    ctx = quiet()
    try:
        cfg = convert_namespace_to_omegaconf(args)
        return cfg, tasks.setup_task(cfg.task)
    finally:
        ctx.__exit__(None, None, None)


def fixed_batches(args, cfg, task):
    """``--batches`` collated batches of the train subset (fixed by ``--seed``)."""
    task.load_dataset(args.train_subset)
    dataset = task.dataset(args.train_subset)
    itr = task.get_batch_iterator(
        dataset=dataset,
        max_tokens=args.max_tokens,
        max_sentences=None,
        max_positions=task.max_positions(),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=1,
        seed=args.seed,
        num_shards=1,
        shard_id=0,
        num_workers=0,
        epoch=1,
    ).next_epoch_itr(shuffle=True)
    batches = []
    ctx = quiet()  # torch's DataLoader: pin_memory without an accelerator
    try:
        for batch in itr:
            batches.append(batch)
            if len(batches) == args.batches:
                break
    finally:
        ctx.__exit__(None, None, None)
    if not batches:
        raise SystemExit(f"no batch from {args.train_subset} with --max-tokens {args.max_tokens}")
    return batches


def adapt_batches(kind, batches):
    """fairseq's s2t_transformer takes no unit view: the same tensors without it."""
    if kind != "s2t":
        return batches
    keep = ("src_tokens", "src_lengths", "prev_output_tokens")
    return [{**b, "net_input": {k: b["net_input"][k] for k in keep}} for b in batches]


def build_trainer(mode, seed):
    import torch
    from fairseq.trainer import Trainer

    cfg, task = setup_task(mode.argv)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    mode.params = sum(p.numel() for p in model.parameters())
    trainer = Trainer(cfg, task, model, criterion)
    trainer.begin_epoch(1)
    mode.trainer = trainer
    return trainer


def sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_steps(mode, n, device, start_index=0):
    """``n`` train steps cycling over the mode's batches; returns per-step seconds."""
    times = []
    nb = len(mode.batches)
    for i in range(n):
        sample = mode.batches[(start_index + i) % nb]
        sync(device)
        t0 = time.perf_counter()
        out = mode.trainer.train_step([sample])
        sync(device)
        times.append(time.perf_counter() - t0)
        if out is None:
            raise RuntimeError(f"{mode.name}: train_step returned None (out of memory?)")
    return times


# ------------------------------------------------------------------------------------ memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(args):
    """Child process: build one mode, run warm-up + one block, print its peak RSS as JSON."""
    modes = build_modes(args)
    mode = next(m for m in modes if m.name == args.memory_probe)
    cfg, task = setup_task(modes[0].argv)
    batches = fixed_batches(args, cfg, task)
    mode.batches = adapt_batches(mode.kind, batches)
    del task
    import gc

    gc.collect()
    before = rss_bytes()
    build_trainer(mode, args.seed)
    run_steps(mode, max(args.block, len(batches)), args.device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print("MEMORY_PROBE " + json.dumps({"peak_rss_mib": peak / 2**20, "growth_mib": (peak - before) / 2**20,
                                        "rss_before_mib": before / 2**20}))


def cpu_memory(args, mode_names):
    """Peak RSS per mode, each in a fresh subprocess (run one after another)."""
    out = {}
    for name in mode_names:
        cmd = [sys.executable, str(Path(__file__).resolve()), *child_argv(args), "--memory-probe", name]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(args.threads))
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_PROBE ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"memory probe {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        out[name] = json.loads(line[-1][len("MEMORY_PROBE "):])
        print(f"  memory {name}: peak RSS {out[name]['peak_rss_mib']:.0f} MiB "
              f"(+{out[name]['growth_mib']:.0f} MiB over {out[name]['rss_before_mib']:.0f})", flush=True)
    return out


def child_argv(args):
    argv = ["--data", args.data, "--config-yaml", args.config_yaml, "--train-subset", args.train_subset,
            "--num-units", str(args.num_units), "--device", args.device, "--arch", args.arch,
            "--max-tokens", str(args.max_tokens), "--batches", str(args.batches), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--interval", str(args.interval), "--block", str(args.block),
            "--modes", ",".join(args.mode_list), "--threads", str(args.threads), "--seed", str(args.seed),
            "--fairseq-args=" + args.fairseq_args, "--bf16" if args.bf16 else "--no-bf16"]
    return argv


def thread_env(threads: int):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


# ------------------------------------------------------------------------------------ profiling


def profile_mode(mode, n, device):
    """Time the step's sections (criterion forward incl. exact probes, backward, the rest) and
    list the top torch.profiler ops over ``n`` steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    trainer = mode.trainer
    criterion, optimizer = trainer.criterion, trainer.optimizer
    sections = {"criterion_forward": 0.0, "exact_target": 0.0, "backward": 0.0, "total": 0.0}

    def timed(key, fn):
        def wrapper(*a, **kw):
            sync(device)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                sync(device)
                sections[key] += time.perf_counter() - t0
        return wrapper

    patched = [(criterion, "forward"), (optimizer, "backward")]
    if hasattr(criterion, "exact_target"):
        patched.append((criterion, "exact_target"))
    originals = {(id(o), k): getattr(o, k) for o, k in patched}
    criterion.forward = timed("criterion_forward", originals[(id(criterion), "forward")])
    optimizer.backward = timed("backward", originals[(id(optimizer), "backward")])
    if hasattr(criterion, "exact_target"):
        criterion.exact_target = timed("exact_target", originals[(id(criterion), "exact_target")])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            sections["total"] = sum(run_steps(mode, n, device))
    finally:
        for o, k in patched:
            delattr(o, k)  # back to the class's method
    ms = {k: 1000 * v / n for k, v in sections.items()}
    ms["rest_of_step"] = ms["total"] - ms["criterion_forward"] - ms["backward"]
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
    return ms, table


# ------------------------------------------------------------------------------------ main


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main(argv=None):
    args = get_parser().parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import logging

    for name in ("fairseq", "gsgn_fairseq", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    resolve_defaults(args, torch.cuda.is_available())
    if args.memory_probe:
        return memory_probe(args)
    cuda = args.device == "cuda"

    modes = build_modes(args)
    cfg, task = setup_task(modes[0].argv)
    batches = fixed_batches(args, cfg, task)
    frames = [int(b["net_input"]["src_lengths"].sum()) for b in batches]
    sizes = [int(b["nsentences"]) for b in batches]
    print(f"bench_train: arch {args.arch}, device {args.device}{' bf16' if args.bf16 else ''}, "
          f"{args.threads} thread(s), {len(batches)} fixed batches of {args.train_subset} "
          f"(utterances {sizes}, FBank frames {frames}), block {args.block}, "
          f"{args.rounds} rounds x {args.block} steps timed per mode after {args.warmup} warm-up", flush=True)

    # build and warm up each mode in turn (CUDA: its peak memory while alone)
    for mode in modes:
        mode.batches = adapt_batches(mode.kind, batches)
        if cuda:
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        build_trainer(mode, args.seed)
        run_steps(mode, max(args.warmup, 1), args.device)
        if cuda:
            torch.cuda.synchronize()
            mode.memory = {"peak_mib": (torch.cuda.max_memory_allocated() - held) / 2**20,
                           "resident_mib": (torch.cuda.memory_allocated() - held) / 2**20}
        print(f"  built + warmed up {mode.name:<22} {mode.params:>12,} params  ({time.perf_counter() - t0:.1f} s)",
              flush=True)

    # timed phase: round-robin, order rotated each round
    for r in range(args.rounds):
        k = r % len(modes)
        for mode in modes[k:] + modes[:k]:
            times = run_steps(mode, args.block, args.device, start_index=r * args.block)
            mode.step_ms.extend(1000 * t for t in times)
            mode.block_ms.append(1000 * sum(times) / len(times))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{m.name} {m.block_ms[-1]:.0f}" for m in modes) + " ms",
              flush=True)

    names = [m.name for m in modes]
    by_name = {m.name: m for m in modes}

    def paired_ratio(num, den):
        a, b = by_name[num].block_ms, by_name[den].block_ms
        return median([x / y for x, y in zip(a, b)])

    ratios = {}
    for num, goal in GOALS.items():
        num = num.format(interval=args.interval)
        if num in by_name and BASELINE in by_name:
            ratios[f"{num}/{BASELINE}"] = {"ratio": paired_ratio(num, BASELINE), "goal": goal}
    for num in names:
        key = f"{num}/{BASELINE}"
        if num != BASELINE and num.startswith("gsgn") and key not in ratios and BASELINE in by_name:
            ratios[key] = {"ratio": paired_ratio(num, BASELINE), "goal": None}
    if BASELINE in by_name and S2T in by_name:
        ratios[f"{BASELINE}/{S2T}"] = {"ratio": paired_ratio(BASELINE, S2T), "goal": 1.05}
    if "fbank-lsce" in by_name and f"{S2T}-lsce" in by_name:
        ratios[f"fbank-lsce/{S2T}-lsce"] = {"ratio": paired_ratio("fbank-lsce", f"{S2T}-lsce"), "goal": 1.05}

    profiles = {}
    if args.profile > 0:
        for mode in modes:
            ms, table = profile_mode(mode, args.profile, args.device)
            profiles[mode.name] = ms
            print(f"\n== profile {mode.name} ({args.profile} steps): "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()))
            print(table)

    if not cuda and not args.no_memory:
        print("peak memory (fresh subprocess per mode):", flush=True)
        for name, mem in cpu_memory(args, names).items():
            by_name[name].memory = mem

    # report
    mem_key = "peak_mib" if cuda else "peak_rss_mib"
    print(f"\nstep time per mode ({args.arch}, {args.device}{' bf16' if args.bf16 else ''}, "
          f"{args.threads} thread(s); median over {args.rounds} rounds of {args.block}-step block means)")
    hdr = f"{'mode':<22} {'step ms':>9} {'step med':>9} {'min blk':>9} {'params':>12} "
    hdr += f"{'peak MiB':>9} {'growth':>8}" if not cuda else f"{'peak MiB':>9} {'resident':>9}"
    print(hdr)
    for m in modes:
        second = m.memory.get("growth_mib" if not cuda else "resident_mib", float("nan"))
        print(f"{m.name:<22} {median(m.block_ms):>9.1f} {median(m.step_ms):>9.1f} {min(m.block_ms):>9.1f} "
              f"{m.params:>12,} {m.memory.get(mem_key, float('nan')):>9.0f} {second:>8.0f}")
    print("\nratios (median over rounds of the paired block-mean ratio)")
    for key, r in ratios.items():
        goal = r["goal"]
        verdict = "" if goal is None else f"  goal <= {goal:.2f}: {'met' if r['ratio'] <= goal else 'MISSED'}"
        print(f"  {key:<36} {r['ratio']:.3f}{verdict}")
    if BASELINE in by_name and S2T in by_name:
        print(f"  params {BASELINE} {by_name[BASELINE].params:,} vs {S2T} {by_name[S2T].params:,} "
              f"({by_name[BASELINE].params - by_name[S2T].params:+,})")

    if args.json:
        result = {
            "config": {k: getattr(args, k) for k in ("data", "arch", "device", "bf16", "max_tokens", "batches",
                                                        "steps", "warmup", "block", "interval", "rounds",
                                                        "threads", "seed", "fairseq_args", "num_units")},
            "command": " ".join([sys.executable, *sys.argv]),
            "torch": torch.__version__,
            "batches": {"utterances": sizes, "fbank_frames": frames},
            "modes": {
                m.name: {
                    "step_ms": median(m.block_ms),
                    "step_median_ms": median(m.step_ms),
                    "block_ms": m.block_ms,
                    "params": m.params,
                    "memory": m.memory,
                    "fairseq_argv": m.argv,
                    **({"profile_ms": profiles[m.name]} if m.name in profiles else {}),
                }
                for m in modes
            },
            "ratios": ratios,
        }
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
