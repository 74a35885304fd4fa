#!/usr/bin/env python
"""Benchmark one training step of the GSGN modes against the FBank-only model and against
fairseq's own ``s2t_transformer``: step time, parameters, peak memory.

What is measured
    One fairseq ``Trainer.train_step`` per update (forward, criterion, backward, gradient
    clipping, Adam update, metric logging: what ``fairseq-train`` does per update, without
    data loading) for each mode, every mode built from ``fairseq-train`` arguments
    (``options.parse_args_and_arch`` with ``--user-dir``, ``tasks.setup_task``,
    ``task.build_model``, ``task.build_criterion``, ``Trainer``) with the recipe's flags
    (label smoothing 0.1, ``--report-accuracy``, Adam (0.9, 0.98), inverse-sqrt schedule,
    ``--clip-norm 10``) and the criterion the recipe trains every variant with
    (``label_smoothed_cross_entropy_with_gate``, which adds nothing for a model without gates):

    ==================== ===============================================================
    fbank                ``--fusion fbank``: the FBank-only model, the denominator
    gsgn-nogate          ``--fusion gsgn`` with fairseq's ``label_smoothed_cross_entropy``:
                         the second view and the fusion without any gate loss
    gsgn-factorized      ``--fusion gsgn --gate-target factorized``
    gsgn-exact           ``--fusion gsgn --gate-target exact`` (a target every update)
    gsgn-exact-i10       ``--gate-target exact --gate-target-interval 10`` (``--interval``)
    s2t_transformer      fairseq's model with our arch's sizes: encoder layers = acoustic +
                         textual layers, same D, FFN, heads, decoder layers, conv kernels and
                         channels, dropouts and normalization (its net input lacks the units)
    ==================== ===============================================================

    Optional modes (``--modes``): ``fbank-lsce`` and ``s2t_transformer-lsce`` train with
    fairseq's ``label_smoothed_cross_entropy`` instead (the gate criterion's own overhead).

How
    One task and one set of fixed batches (``--batches`` batches of ``--max-tokens`` FBank
    frames from ``--train-subset``, drawn once with ``--seed``): the same tensors, in the same
    order, for every mode. One Trainer per mode, all in this process; each mode is built and
    warmed up (``--warmup`` steps) in turn. The timed phase then interleaves the modes step by
    step: round ``s`` runs one update of every mode (order rotated each round) on batch
    ``s mod --batches``, so a change in machine load hits every mode within a second of the
    others. Every step records its wall time and the process CPU time (with one thread the
    CPU time leaves out the waits for a core that other jobs hold; with CUDA only wall time
    counts, taken between ``torch.cuda.synchronize`` calls).

    A mode's step time: rounds are grouped by their position in the period
    ``P = lcm(--interval, --batches)`` (same batch, same place in the gate-target interval);
    the median over each position's rounds, averaged over the ``P`` positions. Medians drop
    the steps a load burst hit; the average over a whole period keeps the amortized cost of
    ``gsgn-exact-i10`` (one exact target in ten steps) and of every batch. A ratio is the
    quotient of two such step times. ``--steps`` is rounded up to whole periods.

    Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` while the mode is built and warmed
    up, less what the earlier modes hold (parameters, gradients, optimizer state and the
    step's activations). On CPU a fresh subprocess per mode (same batches, same threads):
    peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` once the task and batches are
    loaded, so the imports and data loading do not set it) over its first steps, and its
    growth over the RSS before the model was built.

How to read it
    ``gsgn-factorized / fbank`` <= 1.10 says the two-view model with the factorized gate loss
    trains at most 10 % slower per update than the FBank-only model; ``gsgn-nogate`` splits
    that into the second view plus fusion (``gsgn-nogate / fbank``) and the gate loss
    (``gsgn-* / gsgn-nogate``). ``fbank / s2t_transformer`` is our stacked encoder (masked
    subsampler, adapter, one more LayerNorm) against fairseq's plain one of the same size.
    The tiny arch on one CPU thread weighs the conv front ends (the unit view has one of its
    own) far more than ``s2t_gsgn`` does: its ratios are not the paper model's.
    ``--profile N`` adds, per mode, the split of a step into criterion forward (with the exact
    probes, also shown alone), backward and the rest, and the top torch.profiler ops.

    Precision: fp32 on CPU; on CUDA fairseq's ``--bf16`` (bf16 model, FP16Optimizer with fp32
    master weights) unless ``--precision fp32|fp16|amp``. fairseq 0.12 ties ``--bf16`` to
    TPUs (it sets ``--tpu``); the script clears that flag so the Trainer runs bf16 on the
    device it was given.

    python scripts/bench_train.py --json bench.json        # CPU: s2t_gsgn_tiny, 1 thread
    python scripts/bench_train.py --device cuda            # CUDA: s2t_gsgn, bf16
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = ROOT / "gsgn_fairseq"
DEFAULT_DATA = "/tmp/toy_default/en-de"

BASELINE = "fbank"
NOGATE = "gsgn-nogate"
S2T = "s2t_transformer"
GATE_CRITERION = "label_smoothed_cross_entropy_with_gate"
LSCE = "label_smoothed_cross_entropy"
PRECISIONS = ("fp32", "bf16", "fp16", "amp")


def mode_table(interval: int):
    """name -> (kind, extra fairseq arguments); kind "gsgn" (ours, ``--arch``) or "s2t"."""
    gate = ["--criterion", GATE_CRITERION]
    return {
        "fbank": ("gsgn", [*gate, "--fusion", "fbank"]),
        NOGATE: ("gsgn", ["--criterion", LSCE, "--fusion", "gsgn"]),
        "gsgn-factorized": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "factorized"]),
        "gsgn-exact": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "exact"]),
        f"gsgn-exact-i{interval}": (
            "gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "exact", "--gate-target-interval", str(interval)]
        ),
        "gsgn-factorized-utt": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "factorized",
                                         "--gate-target-granularity", "utterance"]),
        "gsgn-exact-utt": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "exact",
                                    "--gate-target-granularity", "utterance"]),
        f"gsgn-exact-utt-i{interval}": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "exact",
                                                 "--gate-target-granularity", "utterance",
                                                 "--gate-target-interval", str(interval)]),
        # GSGN+Drop as trained by default: factorized per-utterance target, multi-stage dropout
        # in its middle stage (every branch drawn), the epoch the bench's batches belong to
        "gsgn-drop": ("gsgn", [*gate, "--fusion", "gsgn", "--gate-target", "factorized",
                               "--gate-target-granularity", "utterance", "--multi-stage-dropout",
                               "--msd-schedule", "1:0.5,0.3"]),
        S2T: ("s2t", gate),
        "fbank-lsce": ("gsgn", ["--criterion", LSCE, "--fusion", "fbank"]),
        f"{S2T}-lsce": ("s2t", ["--criterion", LSCE]),
    }


def default_modes(interval: int):
    return ["fbank", NOGATE, "gsgn-factorized", "gsgn-exact", f"gsgn-exact-i{interval}", S2T]


def goal_ratios(interval: int):
    """(numerator, denominator, goal or None), in print order."""
    return [
        ("gsgn-factorized", BASELINE, 1.10),
        (f"gsgn-exact-i{interval}", BASELINE, 1.15),
        ("gsgn-exact", BASELINE, None),
        ("gsgn-factorized-utt", BASELINE, 1.10),
        ("gsgn-drop", BASELINE, 1.10),
        ("gsgn-drop", "gsgn-factorized-utt", None),
        ("gsgn-exact-utt", BASELINE, None),
        (f"gsgn-exact-utt-i{interval}", BASELINE, 1.10),
        (NOGATE, BASELINE, None),
        ("gsgn-factorized", NOGATE, None),
        (f"gsgn-exact-i{interval}", NOGATE, None),
        ("gsgn-exact", NOGATE, None),
        (BASELINE, S2T, 1.05),
        ("fbank-lsce", f"{S2T}-lsce", 1.05),
        ("fbank", "fbank-lsce", None),
    ]


# ------------------------------------------------------------------------------------ arguments


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="prepared speech_to_text data dir with a units column")
    p.add_argument("--config-yaml", default="config_st.yaml")
    p.add_argument("--train-subset", default="train_st", help="split the fixed batches come from")
    p.add_argument("--num-units", type=int, default=None, help="K (default: n_clusters of DATA/units.json)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--arch", default=None, help="s2t_gsgn arch (default: s2t_gsgn on cuda, s2t_gsgn_tiny on cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fairseq --bf16 / --fp16 / --amp or fp32 (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="--precision bf16")
    p.add_argument("--no-bf16", dest="precision", action="store_const", const="fp32", help="--precision fp32")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="FBank frames per batch (default: 10000 on cpu as the toy recipe, 40000 on cuda as MuST-C)")
    p.add_argument("--batches", type=int, default=5, help="fixed batches, cycled")
    p.add_argument("--steps", type=int, default=60, help="timed steps per mode (rounded up to whole periods)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per mode first")
    p.add_argument("--interval", type=int, default=10, help="--gate-target-interval of the gsgn-exact-iN mode")
    p.add_argument("--modes", default=None, help="comma-separated modes (default: %s)" % ",".join(default_modes(10)))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (and OMP/MKL threads)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fairseq-args", default="", help="extra fairseq-train arguments for every mode (one string)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timing, profile N steps of each mode: sections and top torch.profiler ops")
    p.add_argument("--json", default=None, metavar="FILE", help="write all figures as JSON")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one mode, print peak RSS
    p.add_argument("--batches-file", default=None, help=argparse.SUPPRESS)  # internal: the parent's batches
    return p


def resolve_defaults(args, cuda_available: bool):
    if args.device is None:
        args.device = "cuda" if cuda_available else "cpu"
    if args.device == "cuda" and not cuda_available:
        raise SystemExit("--device cuda: no CUDA device")
    cuda = args.device == "cuda"
    if args.arch is None:
        args.arch = "s2t_gsgn" if cuda else "s2t_gsgn_tiny"
    if args.precision is None:
        args.precision = "bf16" if cuda else "fp32"
    if args.precision in ("fp16", "amp") and not cuda:
        raise SystemExit(f"--precision {args.precision} needs --device cuda")
    if args.max_tokens is None:
        args.max_tokens = 40000 if cuda else 10000
    if args.num_units is None:
        meta = Path(args.data) / "units.json"
        if not meta.is_file():
            raise SystemExit(f"--num-units not given and {meta} does not exist")
        args.num_units = int(json.loads(meta.read_text())["n_clusters"])
    if args.interval < 1 or args.batches < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("--interval, --batches, --steps, --threads must be >= 1 and --warmup >= 0")
    table = mode_table(args.interval)
    args.mode_list = args.modes.split(",") if args.modes else default_modes(args.interval)
    unknown = [m for m in args.mode_list if m not in table]
    if unknown or len(set(args.mode_list)) != len(args.mode_list):
        raise SystemExit(f"--modes: unknown or repeated {args.mode_list}; known: {', '.join(table)}")
    args.period = math.lcm(args.interval, args.batches)
    args.rounds = math.ceil(args.steps / args.period) * args.period
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
    ]
    if args.device == "cpu":
        argv.append("--cpu")
    if args.precision != "fp32":
        argv.append("--" + args.precision)
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


@contextlib.contextmanager
def quiet():
    """No warnings: fairseq's hydra config machinery warns about deprecated hydra usage on
    every parse, torch's DataLoader about pin_memory without an accelerator."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Mode:
    """One benchmarked configuration: fairseq argv, Trainer, (net-input-adapted) batches, figures."""

    def __init__(self, name, kind, argv):
        self.name, self.kind, self.argv = name, kind, argv
        self.cfg = self.task = self.trainer = self.batches = self.params = None
        self.memory = {}
        self.wall = []  # seconds, one per timed step
        self.cpu = []


def parse_fairseq(argv):
    from fairseq import options

    with quiet():
        parser = options.get_training_parser()
        return options.parse_args_and_arch(parser, input_args=argv)


def build_modes(args):
    """Mode objects with their fairseq argv (nothing built yet)."""
    common = common_fairseq_argv(args)
    table = mode_table(args.interval)
    ours = parse_fairseq(common + ["--arch", args.arch, "--fusion", "fbank", "--criterion", LSCE])
    if not hasattr(ours, "acoustic_encoder_layers"):
        raise SystemExit(f"--arch {args.arch} is not an s2t_gsgn arch")
    modes = []
    for name in args.mode_list:
        kind, extra = table[name]
        arch = s2t_transformer_argv(ours) if kind == "s2t" else ["--arch", args.arch]
        modes.append(Mode(name, kind, common + arch + extra))
    return modes


def setup_task(mode):
    """fairseq-train's setup: cfg from the argv, then the task (dictionaries, data config)."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = parse_fairseq(mode.argv)
    if args.bf16 and "--tpu" not in mode.argv:
        # fairseq 0.12 takes --bf16 for "on a TPU" (options.py sets tpu): run it on this device
        # instead, as the Trainer supports (bf16 model, FP16Optimizer with fp32 master weights)
        args.tpu = False
    with quiet():
        mode.cfg = convert_namespace_to_omegaconf(args)
        mode.task = tasks.setup_task(mode.cfg.task)
        mode.task.bench_model_cfg = mode.cfg.model
    return mode.task


def fixed_batches(args, task):
    """``--batches`` collated batches of the train subset (fixed by ``--seed``)."""
    with quiet():
        if getattr(getattr(task, "alignment", None), "fbank_conv_layers", 0) is None:  # the views' alignment rule comes from a built model
            task.build_model(task.bench_model_cfg)
        if getattr(task, "alignment", None) is not None:
            task.alignment.reads_units = True  # the same batches serve every mode, GSGN's included
        task.load_dataset(args.train_subset)
        itr = task.get_batch_iterator(
            dataset=task.dataset(args.train_subset),
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
        for batch in itr:
            batches.append(batch)
            if len(batches) == args.batches:
                break
    if len(batches) < args.batches:
        raise SystemExit(f"only {len(batches)} batches in {args.train_subset} with --max-tokens {args.max_tokens}")
    return batches


def adapt_batches(kind, batches):
    """fairseq's s2t_transformer takes no unit view: the same tensors without it."""
    if kind != "s2t":
        return batches
    keep = ("src_tokens", "src_lengths", "prev_output_tokens")
    return [{**b, "net_input": {k: b["net_input"][k] for k in keep}} for b in batches]


def build_trainer(mode, seed):
    """Model, criterion and Trainer as fairseq-train builds them (the task must be set up)."""
    import torch
    from fairseq.trainer import Trainer

    torch.manual_seed(seed)
    model = mode.task.build_model(mode.cfg.model)
    criterion = mode.task.build_criterion(mode.cfg.criterion)
    mode.params = sum(p.numel() for p in model.parameters())
    mode.trainer = Trainer(mode.cfg, mode.task, model, criterion)
    mode.trainer.begin_epoch(1)
    return mode.trainer


def sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def train_step(mode, step, device):
    """Update number ``step`` (batch ``step mod --batches``); returns (wall s, process CPU s)."""
    sample = mode.batches[step % len(mode.batches)]
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    out = mode.trainer.train_step([sample])
    sync(device)
    w1, c1 = time.perf_counter(), time.process_time()
    if out is None:
        raise RuntimeError(f"{mode.name}: train_step returned None (out of memory?)")
    return w1 - w0, c1 - c0


def period_estimate(xs, period):
    """Mean over the ``period`` positions of the median of each position's values."""
    return statistics.fmean(statistics.median(xs[p::period]) for p in range(period))


# ------------------------------------------------------------------------------------ memory


def proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_probe(args):
    """Child process: one mode on the parent's batches; prints its peak RSS as JSON."""
    import gc

    import torch

    mode = next(m for m in build_modes(args) if m.name == args.memory_probe)
    setup_task(mode)
    mode.batches = adapt_batches(mode.kind, torch.load(args.batches_file, weights_only=False))
    gc.collect()
    try:  # reset the high-water mark: the imports and loading must not set the peak
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = proc_status_kib("VmRSS")
    build_trainer(mode, args.seed)
    for step in range(len(mode.batches) + 1):  # every batch, and one more with the optimizer state there
        train_step(mode, step, args.device)
    peak = proc_status_kib("VmHWM")
    print("MEMORY_PROBE " + json.dumps({"peak_rss_mib": peak / 1024, "growth_mib": (peak - before) / 1024,
                                        "rss_before_mib": before / 1024, "hwm_reset": reset}))


def child_argv(args):
    return ["--data", args.data, "--config-yaml", args.config_yaml, "--train-subset", args.train_subset,
            "--num-units", str(args.num_units), "--device", args.device, "--arch", args.arch,
            "--max-tokens", str(args.max_tokens), "--batches", str(args.batches), "--interval", str(args.interval),
            "--modes", ",".join(args.mode_list), "--threads", str(args.threads), "--seed", str(args.seed),
            "--fairseq-args=" + args.fairseq_args, "--precision", args.precision]


def thread_env(threads: int):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def cpu_memory(args, names, batches):
    """Peak RSS per mode, each in a fresh subprocess (one after another)."""
    import torch

    out = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        path = Path(tmp) / "batches.pt"
        torch.save(batches, path)
        for name in names:
            cmd = [sys.executable, str(Path(__file__).resolve()), *child_argv(args),
                   "--memory-probe", name, "--batches-file", str(path)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(args.threads))
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_PROBE ")]
            if proc.returncode != 0 or not line:
                raise RuntimeError(f"memory probe {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            out[name] = json.loads(line[-1][len("MEMORY_PROBE "):])
            print(f"  {name:<22} peak RSS {out[name]['peak_rss_mib']:7.0f} MiB, "
                  f"+{out[name]['growth_mib']:.0f} MiB over {out[name]['rss_before_mib']:.0f} before the model",
                  flush=True)
    return out


# ------------------------------------------------------------------------------------ profiling


def profile_mode(mode, n, device, first_step):
    """Split ``n`` steps into criterion forward (exact probes also alone), backward and the
    rest (process CPU time on CPU, synchronized wall time on CUDA); top torch.profiler ops."""
    from torch.profiler import ProfilerActivity, profile

    clock = time.perf_counter if device == "cuda" else time.process_time
    trainer = mode.trainer
    criterion, optimizer = trainer.criterion, trainer.optimizer
    sections = {"criterion_forward": 0.0, "exact_target": 0.0, "backward": 0.0}

    def timed(key, fn):
        def wrapper(*a, **kw):
            sync(device)
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                sync(device)
                sections[key] += clock() - t0
        return wrapper

    patched = [(criterion, "forward", "criterion_forward"), (optimizer, "backward", "backward")]
    if hasattr(criterion, "exact_target"):
        patched.append((criterion, "exact_target", "exact_target"))
    for obj, attr, key in patched:
        setattr(obj, attr, timed(key, getattr(obj, attr)))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            total = 0.0
            for i in range(n):
                wall, cpu = train_step(mode, first_step + i, device)
                total += wall if device == "cuda" else cpu
    finally:
        for obj, attr, _ in patched:
            delattr(obj, attr)  # the class's method again
    ms = {k: 1000 * v / n for k, v in sections.items()}
    ms["total"] = 1000 * total / n
    ms["rest_of_step"] = ms["total"] - ms["criterion_forward"] - ms["backward"]
    sort = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    return ms, prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=50)


# ------------------------------------------------------------------------------------ main


def main(argv=None):
    args = get_parser().parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import logging

    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    for name in ("fairseq", "gsgn_fairseq", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # once-per-model notices of fairseq 0.12 on torch 2.x (deprecated autocast spelling, mask types)
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.autocast.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*mismatched key_padding_mask and attn_mask.*")
    warnings.filterwarnings("ignore", message=r".*Profiler clears events.*")
    resolve_defaults(args, torch.cuda.is_available())
    if args.memory_probe:
        return memory_probe(args)
    cuda = args.device == "cuda"
    what = f"{args.arch}, {args.device} {args.precision}, {args.threads} thread(s)"

    modes = build_modes(args)
    batches = fixed_batches(args, setup_task(modes[0]))
    sizes = [int(b["nsentences"]) for b in batches]
    frames = [int(b["net_input"]["src_lengths"].sum()) for b in batches]
    print(f"bench_train: {what}; {len(batches)} fixed batches of {args.train_subset} (utterances {sizes}, "
          f"FBank frames {frames}); {args.warmup} warm-up steps, then {args.rounds} interleaved rounds "
          f"(period {args.period})", flush=True)

    # build and warm up each mode in turn (CUDA: its peak memory, alone)
    for mode in modes:
        t0 = time.perf_counter()
        if mode.task is None:
            setup_task(mode)
        mode.batches = adapt_batches(mode.kind, batches)
        if cuda:
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        build_trainer(mode, args.seed)
        for step in range(max(args.warmup, 1)):
            train_step(mode, step, args.device)
        if cuda:
            torch.cuda.synchronize()
            mode.memory = {"peak_mib": (torch.cuda.max_memory_allocated() - held) / 2**20,
                           "resident_mib": (torch.cuda.memory_allocated() - held) / 2**20}
        print(f"  built + warmed up {mode.name:<22} {mode.params:>12,} params  ({time.perf_counter() - t0:.1f} s)",
              flush=True)

    # timed phase: one step of every mode per round, order rotated
    first = max(args.warmup, 1)
    t_start = time.perf_counter()
    for r in range(args.rounds):
        k = r % len(modes)
        for mode in modes[k:] + modes[:k]:
            wall, cpu = train_step(mode, first + r, args.device)
            mode.wall.append(wall)
            mode.cpu.append(cpu)
        if (r + 1) % args.period == 0:
            print(f"  {r + 1}/{args.rounds} rounds ({time.perf_counter() - t_start:.0f} s)", flush=True)

    by_name = {m.name: m for m in modes}
    for m in modes:
        m.wall_ms = 1000 * period_estimate(m.wall, args.period)
        m.cpu_ms = 1000 * period_estimate(m.cpu, args.period)
        m.time_ms = m.wall_ms if cuda else m.cpu_ms
    clock = "wall" if cuda else "cpu"
    ratios = {}
    for num, den, goal in goal_ratios(args.interval):
        if num in by_name and den in by_name:
            a, b = by_name[num], by_name[den]
            ratios[f"{num}/{den}"] = {"ratio": a.time_ms / b.time_ms, "wall_ratio": a.wall_ms / b.wall_ms,
                                      "cpu_ratio": a.cpu_ms / b.cpu_ms, "goal": goal}

    profiles = {}
    if args.profile > 0:
        for mode in modes:
            ms, table = profile_mode(mode, args.profile, args.device, first + args.rounds)
            profiles[mode.name] = ms
            print(f"\n== profile {mode.name}, {args.profile} steps ({clock} ms per step): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()))
            print(table)

    if not cuda and not args.no_memory:
        print("peak memory (a fresh subprocess per mode):", flush=True)
        for name, mem in cpu_memory(args, [m.name for m in modes], batches).items():
            by_name[name].memory = mem

    # report
    print(f"\nstep time per mode ({what}): per batch/interval position the median over "
          f"{args.rounds // args.period} rounds, averaged over the period of {args.period}")
    mem_cols = ("peak_mib", "resident_mib") if cuda else ("peak_rss_mib", "growth_mib")
    print(f"{'mode':<22} {'cpu ms' if not cuda else '':>8} {'wall ms':>8} {'params':>12} "
          f"{'peak MiB':>9} {'resident' if cuda else 'growth':>8}")
    nan = float("nan")
    for m in modes:
        cpu_col = f"{m.cpu_ms:8.1f}" if not cuda else " " * 8
        print(f"{m.name:<22} {cpu_col} {m.wall_ms:8.1f} {m.params:>12,} "
              f"{m.memory.get(mem_cols[0], nan):9.0f} {m.memory.get(mem_cols[1], nan):8.0f}")
    print(f"\nratios ({clock} time{'; wall-time ratio beside it' if not cuda else ''})")
    for key, r in ratios.items():
        verdict = "" if r["goal"] is None else f"   goal <= {r['goal']:.2f}: {'met' if r['ratio'] <= r['goal'] else 'MISSED'}"
        beside = f"  (wall {r['wall_ratio']:.3f})" if not cuda else ""
        print(f"  {key:<34} {r['ratio']:.3f}{beside}{verdict}")
    if BASELINE in by_name and S2T in by_name:
        a, b = by_name[BASELINE].params, by_name[S2T].params
        print(f"  params: {BASELINE} {a:,}, {S2T} {b:,} ({a - b:+,}, {100 * (a - b) / b:+.2f} %)")

    if args.json:
        result = {
            "config": {k: getattr(args, k) for k in ("data", "arch", "device", "precision", "max_tokens", "batches",
                                                        "steps", "warmup", "interval", "period", "rounds",
                                                        "threads", "seed", "fairseq_args", "num_units")},
            "clock": clock,
            "command": " ".join([sys.executable, *sys.argv]),
            "torch": torch.__version__,
            "batches": {"utterances": sizes, "fbank_frames": frames},
            "modes": {
                m.name: {
                    "step_ms": m.time_ms,
                    "cpu_ms": m.cpu_ms,
                    "wall_ms": m.wall_ms,
                    "steps_wall_ms": [1000 * t for t in m.wall],
                    "steps_cpu_ms": [1000 * t for t in m.cpu],
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
