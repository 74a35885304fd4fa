#!/usr/bin/env python3
"""One self-timing GPU check: the toy corpus through the real scripts, on one CUDA device.

Sections, in order (each timed, each result written to ``--out``/gpu_results.json as soon as
it is known, so a run cut short still reports what finished):

1. ``unpack``  the Opus-packed toy corpus (``scripts/pack_corpus.py``) back to WAV;
2. ``prep``    ``gsgn-prep-mustc`` (fbank, SentencePiece, TSVs): x real time;
3. ``hubert``  a randomly initialised HuBERT-base-sized checkpoint in fairseq's format
               (``make_random_hubert.py --preset base``), ``gsgn-learn-kmeans`` (500 clusters
               on layer 9) and ``gsgn-extract-units`` over every split on the GPU: x real time,
               audio reading, k-means assignment and unit writing included;
4. ``train``   paper-size ``s2t_gsgn`` (bf16) trained by ``fairseq-train`` on those units,
               data loading included, for FBank-only, GSGN+Drop (exact gate target every 10
               updates, the recipe's default) and GSGN with the factorized target: seconds
               per update and audio hours per hour from fairseq's own ``train_inner`` logs;
5. ``bench``   ``bench_train.py`` on the GPU (fixed batches, no data loading): step-time
               ratios of the GSGN modes over FBank-only;
6. ``toy``     MFCC-100 units (the CPU study's k-means model, ``--km-mfcc``) and the toy
               study's four Table-I variants (``s2t_gsgn_tiny``, the toy recipe's flags,
               ``scripts/recipes/must_c/run.sh`` stages 2-4), all four side by side on the one
               GPU, then the results table and the convergence comparison.

    python scripts/bench_gpu.py --packed data/toy_packed --km-mfcc km_mfcc_100.bin \
        --work /tmp/gpu_work --out "$OUT" --deadline 480

``--deadline`` is the wall-clock budget of the whole script in seconds: every subprocess is
stopped when it runs out, and what finished is reported. ``--smoke`` shrinks every section
(tiny HuBERT and arch, a few updates, one epoch) to check the script on a CPU.
Console entry points are not needed: fairseq runs as ``python -m fairseq_cli.*``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench_prep import audio_seconds  # noqa: E402
from plot_training import parse_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
T0 = time.time()


class Bench:
    def __init__(self, out: Path, deadline: float, log: Path):
        self.out, self.deadline, self.log = out, deadline, log
        self.results: dict = {"sections": {}}

    def left(self) -> float:
        return self.deadline - (time.time() - T0)

    def save(self) -> None:
        tmp = self.out / "gpu_results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1))
        os.replace(tmp, self.out / "gpu_results.json")

    def run(self, cmd, name: str, env=None, reserve: float = 0.0, log: Path | None = None) -> float:
        """Run ``cmd`` (output to ``log``, default the shared log), stopped at the deadline less
        ``reserve``. Returns its wall time; raises on failure or time-out."""
        budget = self.left() - reserve
        if budget < 5:
            raise TimeoutError(f"{name}: no time left ({budget:.0f} s)")
        with open(log or self.log, "a") as f:
            f.write(f"\n$ {' '.join(map(str, cmd))}\n")
            f.flush()
            t = time.time()
            p = subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, timeout=budget,
                               env={**os.environ, **(env or {})}, cwd=ROOT)
            el = time.time() - t
        if p.returncode:
            where = log or self.log
            tail = [l for l in Path(where).read_text(errors="replace").splitlines() if l.strip()][-15:]
            raise RuntimeError(f"{name}: exit {p.returncode} ({where.name}; its last lines:\n" + "\n".join(tail) + ")")
        return el

    def section(self, name, fn):
        t = time.time()
        print(f"[{time.time() - T0:6.0f} s] {name} ...", flush=True)
        try:
            res = fn() or {}
            res["wall_s"] = round(time.time() - t, 1)
            res["ok"] = True
        except Exception as e:  # report and go on with the next section
            res = {"ok": False, "error": repr(e)[:400], "wall_s": round(time.time() - t, 1)}
        self.results["sections"][name] = res
        self.save()
        print(f"[{time.time() - T0:6.0f} s] {name}: {json.dumps(res)}", flush=True)
        return res


def audio_hours(data: Path, splits=None) -> float:
    """Summed duration of the prepared segments of ``splits`` (default: every ``*_st.tsv``)."""
    splits = splits or sorted(t.name[: -len("_st.tsv")] for t in data.glob("*_st.tsv"))
    return audio_seconds(data, splits) / 3600


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--packed", type=Path, required=True, help="scripts/pack_corpus.py output (en-de)")
    p.add_argument("--km-mfcc", type=Path, required=True, help="MFCC k-means model of the CPU toy study")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_work"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    p.add_argument("--deadline", type=float, default=480)
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--train-updates", type=int, default=120)
    p.add_argument("--toy-epochs", type=int, default=15)
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    p.add_argument("--smoke", action="store_true", help="tiny everything, for a CPU check")
    a = p.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))

    import torch
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    b = Bench(a.out, a.deadline, a.out / "bench_gpu.log")
    b.results.update(device=torch.cuda.get_device_name(0) if cuda else "cpu", torch=torch.__version__,
                     cpus=os.cpu_count(), smoke=a.smoke, date=time.strftime("%Y-%m-%d"))
    root = a.work / "toy"
    data = root / "en-de"
    # fairseq's console scripts as thin wrappers (pip --target installs leave them off PATH)
    bin_dir = a.work / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, mod in [("fairseq-train", "fairseq_cli.train"), ("fairseq-generate", "fairseq_cli.generate")]:
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{PY}" -m {mod} "$@"\n')
        (bin_dir / name).chmod(0o755)

    def unpack():
        el = b.run([PY, "scripts/pack_corpus.py", "unpack", "--src", a.packed, "--dst", root,
                    "--jobs", a.jobs], "unpack")
        return {"seconds": round(el, 1)}

    def prep():
        el = b.run([str(Path(PY).parent / "gsgn-prep-mustc"), "--data-root", root, "--tgt-lang", "de", "--vocab-size",
                    1000, "--jobs", a.jobs], "prep")
        h = audio_hours(data)
        return {"audio_hours": round(h, 3), "seconds": round(el, 1), "x_realtime": round(h * 3600 / el, 1)}

    def hubert():
        ckpt = a.work / "hubert_random.pt"
        km = a.work / "km_hubert_L9_500.bin"
        preset, layer, k = ("tiny", 2, 20) if a.smoke else ("base", 9, 500)
        t_make = b.run([PY, "scripts/make_random_hubert.py", "--preset", preset, "--out", ckpt], "make_hubert")
        t_km = b.run([str(Path(PY).parent / "gsgn-learn-kmeans"), "--data-root", root, "--tgt-lang", "de", "--feature",
                      "hubert", "--checkpoint", ckpt, "--layer", layer, "--n-clusters", k, "--percent", 0.1,
                      "--n-init", 5, "--device", dev, "--out", km], "learn_kmeans")
        t_ext = b.run([str(Path(PY).parent / "gsgn-extract-units"), "--data-root", root, "--tgt-lang", "de", "--feature",
                       "hubert", "--checkpoint", ckpt, "--layer", layer, "--km-model", km, "--device", dev],
                      "extract_units hubert")
        h = audio_hours(data)
        return {"preset": preset, "layer": layer, "n_clusters": k, "make_checkpoint_s": round(t_make, 1),
                "learn_kmeans_s (10% of train, n_init 5)": round(t_km, 1),
                "extract_s (all splits, process start to units.zip)": round(t_ext, 1),
                "audio_hours": round(h, 3), "extract_x_realtime": round(h * 3600 / t_ext, 1)}

    def mfcc_units():
        meta = data / "units.json"
        if not (meta.exists() and json.loads(meta.read_text()).get("feature") == "mfcc"):
            b.run([str(Path(PY).parent / "gsgn-extract-units"), "--data-root", root, "--tgt-lang", "de", "--feature", "mfcc",
                   "--km-model", a.km_mfcc], "extract_units mfcc")

    def train():
        res = {}
        if not (data / "units.json").exists():  # the hubert section was skipped
            mfcc_units()
        arch = "s2t_gsgn_tiny" if a.smoke else "s2t_gsgn"
        updates = 6 if a.smoke else a.train_updates
        k = json.loads((data / "units.json").read_text())["n_clusters"]
        tr_h = audio_hours(data, ["train"])
        n_utt = len((data / "train_st.tsv").read_text().splitlines()) - 1
        modes = {
            "fbank": ["--fusion", "fbank"],
            "gsgn_drop (exact, interval 10)": ["--fusion", "gsgn", "--multi-stage-dropout", "--gate-target", "exact",
                                               "--gate-target-interval", "10"],
            "gsgn (factorized)": ["--fusion", "gsgn", "--gate-target", "factorized"],
        }
        for name, flags in modes.items():
            log = a.work / f"train_{name.split()[0]}.log"
            save = a.work / "ckpt_throughput"
            cmd = [PY, "-m", "fairseq_cli.train", data, "--user-dir", ROOT / "gsgn_fairseq",
                   "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml", "--num-units", k,
                   "--train-subset", "train_st", "--valid-subset", "dev_st", "--arch", arch,
                   "--criterion", "label_smoothed_cross_entropy_with_gate", "--label-smoothing", 0.1,
                   "--report-accuracy", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", 2e-3,
                   "--lr-scheduler", "inverse_sqrt", "--warmup-updates", 4000, "--clip-norm", 10.0,
                   "--max-tokens", 10000 if a.smoke else 40000, "--max-update", updates,
                   "--num-workers", 4, "--no-save", "--disable-validation", "--save-dir", save,
                   "--log-format", "json", "--log-interval", 2 if a.smoke else 10, "--seed", 1] + flags
            if cuda:
                cmd.append("--bf16")
            log.unlink(missing_ok=True)
            wall = b.run(cmd, f"train {name}", log=log)
            rows = parse_log(log)["train_inner"]
            if len(rows) < 3:
                raise RuntimeError(f"train {name}: only {len(rows)} train_inner lines in {log}")
            # seconds per update from fairseq's per-interval `ups` (its `wall` is whole seconds),
            # over the intervals after the first 30% of updates: the first ones run at a fraction
            # of the speed while CUDA picks kernels and the data loader starts
            start = int(0.3 * updates)
            ups = [(int(r1["num_updates"]) - int(r0["num_updates"]), float(r1["ups"]))
                   for r0, r1 in zip(rows, rows[1:]) if int(r0["num_updates"]) >= start]
            if not ups:
                raise RuntimeError(f"train {name}: no log interval after update {start} in {log}")
            s_per_up = sum(n / u for n, u in ups) / sum(n for n, _ in ups)
            bsz = statistics.mean(float(r["bsz"]) for r in rows if int(r["num_updates"]) > start)
            utt_s = bsz / s_per_up
            res[name] = {"s_per_update": round(s_per_up, 4), "utterances_per_update": round(bsz, 1),
                         "audio_h_per_h": round(utt_s * tr_h * 3600 / n_utt, 0),
                         "process_wall_s": round(wall, 1),
                         "gb_free_last": rows[-1].get("gb_free")}
        base = res["fbank"]["s_per_update"]
        for name in res:
            res[name]["ratio_to_fbank"] = round(res[name]["s_per_update"] / base, 3)
        res["arch"] = arch
        res["note"] = (f"{updates} updates of the toy train split (mean utterance "
                       f"{tr_h * 3600 / n_utt:.1f} s), timed from update {start}")
        return res

    def bench():
        js = a.work / "bench_train.json"
        cmd = [PY, "scripts/bench_train.py", "--data", data, "--json", js, "--steps", 4 if a.smoke else 20,
               "--warmup", 1 if a.smoke else 3]
        if a.smoke:
            cmd += ["--modes", "fbank,gsgn-factorized", "--no-memory", "--threads", 1, "--batches", 2,
                    "--max-tokens", 2000]
        b.run(cmd, "bench_train")
        shutil.copy(js, a.out / "bench_train.json")
        r = json.loads(js.read_text())
        return {"ratios": {k: round(v["ratio"], 3) for k, v in r["ratios"].items()},
                "step_ms": {k: round(v["step_ms"], 1) for k, v in r["modes"].items()},
                "peak_mem": {k: v.get("memory") for k, v in r["modes"].items()}}

    def toy():
        mfcc_units()
        exp = a.work / "exp_toy"
        variants = ["fbank", "unit", "gsgn", "gsgn_drop"]
        env = {"PY": PY, "BIN": str(bin_dir), "OMP_NUM_THREADS": str(max(1, a.jobs // 4))}
        flags_cmd = (f"source scripts/recipes/toy/toy_flags.sh; "
                     f"echo $(toy_recipe_flags {root} {exp} {1 if a.smoke else a.toy_epochs} "
                     f"{1 if a.smoke else '$TOY_N_AVG'}) --msd-schedule \\\"$TOY_SCHEDULE\\\"")
        flags = subprocess.run(["bash", "-c", flags_cmd], capture_output=True, text=True, check=True,
                               cwd=ROOT).stdout.strip()
        procs = []
        t = time.time()
        for v in variants:
            f = open(a.work / f"toy_{v}.log", "w")
            cmd = f"scripts/recipes/must_c/run.sh {flags} --variants {v} --stage 2 --stop-stage 4"
            # a session of its own, so that a time-out stops fairseq-train too, not only the shell
            procs.append((v, f, subprocess.Popen(["bash", "-c", cmd], stdout=f, stderr=subprocess.STDOUT,
                                                 env={**os.environ, **env}, cwd=ROOT, start_new_session=True)))
        failed = []
        for v, f, proc in procs:
            try:
                rc = proc.wait(timeout=max(1, b.left() - 25))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = "timeout"
            f.close()
            if rc:
                failed.append(f"{v}: {rc}")
        wall = time.time() - t
        res = {"variants_wall_s": round(wall, 1), "failed": failed, "epochs": a.toy_epochs}
        done = [v for v in variants if (exp / ".done" / f"decode.{v}").exists()]
        if done:
            subprocess.run([PY, "scripts/results_table.py", "--exp-dir", exp, "--variants", ",".join(done),
                            "--out", a.out / "toy_table.md"], cwd=ROOT, check=False,
                           stdout=subprocess.DEVNULL)
            if (a.out / "toy_table.md").exists():
                res["table"] = (a.out / "toy_table.md").read_text()
        if "fbank" in done and "gsgn_drop" in done:
            subprocess.run([PY, "scripts/convergence.py", "--baseline", f"fbank={exp}/fbank/train.log", "--runs",
                            f"gsgn_drop={exp}/gsgn_drop/train.log", "--out", a.out / "toy_convergence.md"],
                           cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
            if (a.out / "toy_convergence.md").exists():
                res["convergence"] = (a.out / "toy_convergence.md").read_text()
        if failed:
            raise RuntimeError(f"toy runs failed: {failed}; {json.dumps(res)[:300]}")
        return res

    sections = [("unpack", unpack), ("prep", prep), ("hubert", hubert), ("train", train), ("bench", bench),
                ("toy", toy)]
    for name, fn in sections:
        if name in skip:
            continue
        r = b.section(name, fn)
        if not r["ok"] and name in ("unpack", "prep"):
            break  # nothing else can run
    b.results["total_s"] = round(time.time() - T0, 1)
    b.save()
    # every log in one archive (the device returns few files)
    with tarfile.open(a.out / "logs.tar.gz", "w:gz") as tar:
        for f in sorted(a.work.glob("*.log")) + sorted((a.work / "exp_toy").glob("*/train.log")) + \
                sorted((a.work / "exp_toy").glob("*/bleu-*.json")):
            tar.add(f, arcname=str(f.relative_to(a.work)))
    print(json.dumps(b.results, indent=1))


if __name__ == "__main__":
    main()
