#!/usr/bin/env python3
"""Pretrain a small HuBERT on a MuST-C-layout corpus with fairseq's own HuBERT recipe.

    gsgn-pretrain-hubert --data-root data/toy --tgt-lang de --work-dir exp/hubert_toy
    gsgn-pretrain-hubert ... --iterations 2 --it2-layer 3     # + a second iteration
    gsgn-pretrain-hubert ... --set optimization.max_update=3000 --set model.encoder_layers=6

Nothing of HuBERT is re-implemented: training is ``fairseq-hydra-train`` (run as
``python -m fairseq_cli.hydra_train``) with fairseq's ``hubert_pretraining`` task, ``hubert``
model and ``hubert`` criterion, configured by ``configs/hubert_toy.yaml`` (``--config``).
This script writes what that task reads and runs it:

1. Audio (WORK/wav/{split}/{id}.wav, WORK/manifest/{split}.tsv). fairseq's HubertDataset
   reads whole audio files, so every segment of ROOT/en-XX/data/{split} (the release layout:
   talks + segment yaml) is cut out and written as a 16 kHz 16-bit wav. Each manifest is
   fairseq's: the wav root on the first line, then ``{split}/{id}.wav<TAB>n_samples``.
   Segments shorter than ``--min-seconds`` are left out.
2. Labels (WORK/it{N}/labels/{split}.km, dict.km.txt, km.bin). One line of space-separated
   cluster ids per manifest row, one id per 20 ms: 50 Hz, as many labels as the conv feature
   extractor (HuBERT-base kernels and strides, 400-sample receptive field, 320-sample stride)
   gives frames, ``1 + (n - 400) // 320``. Audio and label durations then differ by at most
   25 ms, inside HubertDataset's ``verify_label_lengths`` tolerance (0.1 s), and the model's
   feature-to-label ratio is exactly 1. Iteration 1 labels are k-means clusters (``--n-clusters``,
   default 100) of the MFCC features of ``gsgn_fairseq.prep.units`` (13 MFCCs + deltas
   + delta-deltas with a 20 ms shift: what gsgn-learn-kmeans/gsgn-extract-units ``--feature mfcc``
   compute); the k-means model is ``--km-model`` when given (e.g. the recipe's MFCC model),
   else fitted here on ``--km-percent`` of train with gsgn-learn-kmeans's parameters. Iteration
   2 labels are k-means clusters (``--it2-clusters``) of layer ``--it2-layer`` of the
   iteration-1 model, computed with ``HubertFeatures``, the class gsgn-extract-units uses.
3. Training (WORK/it{N}/checkpoints/checkpoint_last.pt, checkpoint_best.pt, WORK/it{N}/train.log).
   fairseq's console output (its logger, JSON progress records) is shown and appended to train.log. Each iteration trains a
   model from scratch, as in the HuBERT paper.

Resuming: a rerun skips finished steps (manifests, label files and k-means models are
written atomically; an iteration whose WORK/it{N}/summary.json matches the requested number
of updates is done) and fairseq resumes an interrupted training from checkpoint_last.pt (a
larger ``optimization.max_update`` continues a finished one). Any other change of config,
overrides or labels for an existing WORK/it{N} is refused (WORK/it{N}/settings.json).
The final iteration's checkpoint is copied to WORK/hubert.pt. WORK/summary.json records,
per iteration, the checkpoint, the wall time of each step and the final training and
validation figures of fairseq's log.

The checkpoint is an ordinary fairseq HuBERT checkpoint: its units go through
``gsgn-learn-kmeans``/``gsgn-extract-units --feature ssl --checkpoint CKPT --layer L`` as
``hubert_base_ls960.pt`` does.
"""
import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from ..data.mustc import (
    SAMPLE_RATE, DataError, cut_segment, load_segments, read_wav,
)
from .units import (
    HubertFeatures, KMeansAssigner, MfccFeatures, iter_features, load_hubert, load_kmeans, num_frames,
)
from ..console import console_entry

logger = logging.getLogger("pretrain_hubert")

PACKAGE = Path(__file__).resolve().parents[1]  # gsgn_fairseq/, the --user-dir of the training run

DEFAULT_CONFIG = PACKAGE.parent / "configs" / "hubert_toy.yaml"  # in the checkout (pip install -e .)
LABEL = "km"  # label file extension: {split}.km, dict.km.txt (task.labels = ["km"])


# ---------------------------------------------------------------- audio and manifests


def read_manifest(path: Path) -> Tuple[Path, List[Tuple[str, int]]]:
    """fairseq's audio manifest: ``(root, [(relative path, n_samples), ...])``."""
    with open(path, encoding="utf-8") as f:
        root = Path(f.readline().rstrip("\n"))
        rows = []
        for i, line in enumerate(f, start=2):
            items = line.rstrip("\n").split("\t")
            if len(items) != 2:
                raise DataError(f"{path}:{i}: expected 'path<TAB>n_samples', got {line!r}")
            rows.append((items[0], int(items[1])))
    return root, rows


def _write_atomic(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def write_audio(data_root: Path, tgt_lang: str, split: str, work_dir: Path, min_seconds: float = 0.25) -> Path:
    """Cut every segment of ``split`` into WORK/wav/{split}/{id}.wav; write WORK/manifest/{split}.tsv."""
    manifest = work_dir / "manifest" / f"{split}.tsv"
    if manifest.is_file():
        logger.info("%s: %s exists, keeping it", split, manifest)
        return manifest
    wav_root = (work_dir / "wav").resolve()
    out_dir = wav_root / split
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    min_samples = max(int(min_seconds * SAMPLE_RATE), 400)
    rows, skipped, seconds, start = [], 0, 0.0, time.time()
    for talk, segs in load_segments(data_root, tgt_lang, split).items():
        audio = read_wav(segs[0].wav)
        for seg in segs:
            wav = cut_segment(audio, seg)
            if len(wav) < min_samples:
                skipped += 1
                continue
            sf.write(out_dir / f"{seg.id}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
            rows.append(f"{split}/{seg.id}.wav\t{len(wav)}")
            seconds += len(wav) / SAMPLE_RATE
    if not rows:
        raise DataError(f"{split}: no segment of at least {min_seconds} s in {data_root}/en-{tgt_lang}")
    _write_atomic(manifest, [str(wav_root)] + rows)
    logger.info("%s: wrote %d utterances (%.2f h) to %s in %.1f s; %d shorter than %.2f s left out",
                split, len(rows), seconds / 3600, out_dir, time.time() - start, skipped, min_seconds)
    return manifest


def iter_manifest_audio(manifest: Path, indices: Optional[Sequence[int]] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """``(relative path, waveform)`` of the manifest rows (all, or ``indices``), in order."""
    root, rows = read_manifest(manifest)
    for i in range(len(rows)) if indices is None else indices:
        rel, n = rows[i]
        wav = read_wav(root / rel)
        if len(wav) != n:
            raise DataError(f"{manifest}: {rel} has {len(wav)} samples, the manifest says {n}")
        yield rel, wav


# ---------------------------------------------------------------- labels


def fit_label_kmeans(manifest: Path, features, n_clusters: int, percent: float, out: Path, seed: int = 0,
                     n_init: int = 20, batch_seconds: float = 100.0):
    """k-means on the features of ``percent`` of the manifest's utterances (gsgn-learn-kmeans's fit)."""
    import joblib
    from . import learn_kmeans

    _, rows = read_manifest(manifest)
    chosen = learn_kmeans.sample_indices(len(rows), percent, seed)
    start = time.time()
    feats = {}
    for rel, _, f in iter_features(iter_manifest_audio(manifest, chosen), features, batch_seconds):
        feats[rel] = f.cpu().numpy()
    x = np.concatenate([feats[rows[i][0]] for i in chosen]) if len(chosen) else np.zeros((0, features.dim))
    logger.info("k-means on %s features of %d/%d utterances: %d frames x %d dims (features in %.1f s)",
                features.name, len(chosen), len(rows), x.shape[0], x.shape[1], time.time() - start)
    start = time.time()
    km = learn_kmeans.fit_kmeans(x, n_clusters, seed=seed, n_init=n_init)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    joblib.dump(km, tmp)
    os.replace(tmp, out)
    logger.info("fitted %d clusters in %.1f s; inertia per frame %.4f; saved %s",
                n_clusters, time.time() - start, -km.score(x) / max(len(x), 1), out)
    return km


def write_labels(manifest: Path, features, assigner: KMeansAssigner, out: Path, batch_seconds: float = 100.0) -> Path:
    """One line of cluster ids per manifest row (50 Hz, ``num_frames(n)`` of them)."""
    if out.is_file():
        logger.info("%s exists, keeping it", out)
        return out
    assigner.check_dim(features.dim, features.name)
    _, rows = read_manifest(manifest)
    start = time.time()
    units: Dict[str, str] = {}
    for rel, n, f in iter_features(iter_manifest_audio(manifest), features, batch_seconds):
        u = assigner(f).cpu().numpy()
        if len(u) != num_frames(n):
            raise RuntimeError(f"{rel}: {len(u)} labels for {n} samples, expected {num_frames(n)}")
        units[rel] = " ".join(map(str, u.tolist()))
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, [units[rel] for rel, _ in rows])
    seconds = sum(n for _, n in rows) / SAMPLE_RATE
    logger.info("%s: labels of %d utterances (%.2f h) in %.1f s", out, len(rows), seconds / 3600, time.time() - start)
    return out


def write_dict(n_clusters: int, out: Path) -> None:
    """fairseq Dictionary text of the labels: ``{i} 1`` for i in 0..K-1 (as simple_kmeans)."""
    _write_atomic(out, [f"{i} 1" for i in range(n_clusters)])


def make_labels(iteration_dir: Path, manifests: Dict[str, Path], features, km_model: Optional[Path],
                n_clusters: int, km_percent: float, seed: int, batch_seconds: float, device: str) -> Path:
    """WORK/it{N}/labels/{split}.km + dict.km.txt + km.bin; returns the label directory."""
    label_dir = iteration_dir / "labels"
    label_dir.mkdir(parents=True, exist_ok=True)
    km_path = label_dir / "km.bin"
    if km_model is not None:
        if not km_path.is_file():
            shutil.copyfile(km_model, km_path)
    elif not km_path.is_file():
        fit_label_kmeans(manifests["train"], features, n_clusters, km_percent, km_path, seed=seed,
                         batch_seconds=batch_seconds)
    assigner = KMeansAssigner(load_kmeans(km_path).cluster_centers_, device=device, source=str(km_path))
    for split, manifest in manifests.items():
        write_labels(manifest, features, assigner, label_dir / f"{split}.{LABEL}", batch_seconds)
    write_dict(assigner.n_clusters, label_dir / f"dict.{LABEL}.txt")
    return label_dir


# ---------------------------------------------------------------- training


def train_command(config: Path, manifest_dir: Path, label_dir: Path, iteration_dir: Path,
                  overrides: Sequence[str] = ()) -> List[str]:
    """``python -m fairseq_cli.hydra_train`` (= fairseq-hydra-train) with our paths as overrides."""
    config = Path(config).resolve()
    return [
        sys.executable, "-m", "fairseq_cli.hydra_train",
        "--config-dir", str(config.parent), "--config-name", config.stem,
        f"task.data={manifest_dir.resolve()}",
        f"task.label_dir={label_dir.resolve()}",
        f"checkpoint.save_dir={(iteration_dir / 'checkpoints').resolve()}",
        # the plugin allow-lists the types of fairseq checkpoints for torch.load(weights_only=True),
        # which resuming from checkpoint_last.pt needs
        f"common.user_dir={PACKAGE}",
        f"hydra.run.dir={(iteration_dir / 'hydra').resolve()}",
        *overrides,
    ]


def parse_log(log: Path) -> Dict[str, Dict[str, float]]:
    """The last end-of-epoch ``train`` record and the last validation record of a fairseq JSON log.

    fairseq prefixes validation keys with the subset's name (``dev_loss``, ``dev_correct_m_0``);
    they are returned under ``valid`` with the prefix replaced by ``valid_``.
    """
    out: Dict[str, Dict[str, float]] = {}
    if not log.is_file():
        return out
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        start = line.find("{")
        if start < 0 or '"epoch"' not in line:
            continue
        try:
            record = json.loads(line[start:])
        except (json.JSONDecodeError, ValueError):
            continue
        if not isinstance(record, dict) or "loss" in record:  # train_inner
            continue
        prefixes = [k[: -len("_loss")] for k in record if k.endswith("_loss") and k.count("_") == 1]
        if not prefixes:
            continue
        prefix = prefixes[0]
        values = {}
        for k, v in record.items():
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            values[k if prefix == "train" else "valid" + k[len(prefix):] if k.startswith(prefix + "_") else k] = value
        out["train" if prefix == "train" else "valid"] = values
    return out


def checkpoint_updates(path: Path) -> Optional[int]:
    """num_updates stored in a fairseq checkpoint (None when absent or unreadable)."""
    if not path.is_file():
        return None
    import torch

    from gsgn_fairseq.fairseq_patches import checkpoint_compat  # noqa: F401

    state = torch.load(path, map_location="cpu")
    history = state.get("optimizer_history") or [{}]
    return history[-1].get("num_updates")


def train(config: Path, manifest_dir: Path, label_dir: Path, iteration_dir: Path,
          overrides: Sequence[str] = ()) -> Path:
    """Run fairseq-hydra-train (resuming from checkpoint_last.pt if there); returns that checkpoint."""
    cmd = train_command(config, manifest_dir, label_dir, iteration_dir, overrides)
    logger.info("training: %s", " ".join(cmd))
    (iteration_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # fairseq's console output (its logger and JSON progress records), also appended to train.log
    with open(iteration_dir / "train.log", "a", encoding="utf-8") as log, subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            log.flush()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    ckpt = iteration_dir / "checkpoints" / "checkpoint_last.pt"
    if not ckpt.is_file():
        raise RuntimeError(f"fairseq finished without writing {ckpt}")
    return ckpt


# ---------------------------------------------------------------- the pipeline


@contextlib.contextmanager
def cpu_threads(n: Optional[int]):
    """torch intra-op threads and the BLAS/OpenMP pools of numpy and scikit-learn limited to ``n``.

    Label features are many small per-utterance operations: on a busy machine, OpenMP threads
    that wait for each other make them up to 100x slower (MFCCs of 1.5 h of audio: 1.6 s on one
    thread, 195 s on two threads of two cores shared with two other jobs).
    """
    if not n:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _settings(config: Path, overrides: Sequence[str], labels: str) -> Dict:
    """What an iteration's training depends on, except optimization.max_update (which may grow)."""
    return {
        "config_sha1": hashlib.sha1(Path(config).read_bytes()).hexdigest(),
        "overrides": [o for o in overrides if o.lstrip("+").partition("=")[0] != "optimization.max_update"],
        "labels": labels,
    }


def pretrain(data_root: Path, tgt_lang: str, work_dir: Path, config: Path = DEFAULT_CONFIG,
             iterations: int = 1, km_model: Optional[Path] = None, n_clusters: int = 100,
             km_percent: float = 0.5, it2_layer: Optional[int] = None, it2_clusters: int = 100,
             overrides: Sequence[str] = (), splits: Sequence[str] = ("train", "dev"),
             min_seconds: float = 0.25, seed: int = 0, batch_seconds: float = 100.0,
             device: str = "cpu", label_threads: Optional[int] = 1) -> Dict:
    """The whole pipeline; returns (and writes to WORK/summary.json) what it did.

    The final iteration's checkpoint_last.pt is also copied to WORK/hubert.pt.
    """
    if "train" not in splits or len(splits) < 2:
        raise ValueError("--splits needs train and a validation split (the config's dataset.valid_subset)")
    if iterations not in (1, 2):
        raise ValueError(f"--iterations is 1 or 2, got {iterations}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    summary_path = work_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update(data_root=str(data_root), tgt_lang=tgt_lang, config=str(config), overrides=list(overrides))
    timings = summary.setdefault("timings_s", {})

    start = time.time()
    todo = [s for s in splits if not (work_dir / "manifest" / f"{s}.tsv").is_file()]
    manifests = {s: write_audio(data_root, tgt_lang, s, work_dir, min_seconds) for s in splits}
    if todo:
        timings["audio"] = round(time.time() - start, 1)
    max_update = _max_update(config, overrides)

    checkpoint = None
    for it in range(1, iterations + 1):
        it_dir = work_dir / f"it{it}"
        it_dir.mkdir(parents=True, exist_ok=True)
        if it == 1:
            labels = f"mfcc k-means {km_model or f'K={n_clusters} fitted on {km_percent} of train'}"
        else:
            layer = it2_layer or default_it2_layer(checkpoint)
            labels = (f"k-means K={it2_clusters} of layer {layer} of {checkpoint.resolve()} "
                      f"({checkpoint_updates(checkpoint)} updates)")
        settings = _settings(config, overrides, labels)
        settings_path = it_dir / "settings.json"
        if settings_path.is_file():
            before = json.loads(settings_path.read_text())
            if before != settings:
                raise ValueError(
                    f"{it_dir} was made with other settings ({before}); now {settings}. Use another "
                    "--work-dir or remove that directory (only optimization.max_update may change on a rerun)")
        else:
            _write_atomic(settings_path, [json.dumps(settings, indent=1)])
        it_summary_path = it_dir / "summary.json"
        if it_summary_path.is_file():
            done = json.loads(it_summary_path.read_text())
            if done.get("num_updates") == max_update and Path(done["checkpoint"]).is_file():
                logger.info("iteration %d: done (%d updates), %s", it, max_update, done["checkpoint"])
                summary[f"it{it}"] = done
                checkpoint = Path(done["checkpoint"])
                continue
        t0 = time.time()
        with cpu_threads(label_threads):
            if it == 1:
                features = MfccFeatures(device)
                label_dir = make_labels(it_dir, manifests, features, km_model, n_clusters, km_percent, seed,
                                        batch_seconds, device)
            else:
                features = HubertFeatures(checkpoint, layer=layer, device=device)
                label_dir = make_labels(it_dir, manifests, features, None, it2_clusters, km_percent, seed,
                                        batch_seconds, device)
        t_labels = time.time() - t0
        t0 = time.time()
        checkpoint = train(config, manifests["train"].parent, label_dir, it_dir, overrides)
        t_train = time.time() - t0
        figures = parse_log(it_dir / "train.log")
        done = {
            "checkpoint": str(checkpoint.resolve()),
            "num_updates": checkpoint_updates(checkpoint),
            "labels": labels,
            "timings_s": {"labels": round(t_labels, 1), "train": round(t_train, 1)},
            "train": figures.get("train", {}),
            "valid": figures.get("valid", {}),
        }
        _write_atomic(it_summary_path, [json.dumps(done, indent=1)])
        summary[f"it{it}"] = done
        logger.info("iteration %d: %s updates in %.1f s (labels %.1f s); last valid: %s", it,
                    done["num_updates"], t_train, t_labels, _brief(done["valid"]))
    final = work_dir / "hubert.pt"
    tmp = final.with_name(final.name + ".tmp")
    shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, final)
    summary["checkpoint"] = str(final.resolve())
    summary["checkpoint_of"] = str(checkpoint.resolve())
    _write_atomic(summary_path, [json.dumps(summary, indent=1)])
    logger.info("HuBERT checkpoint: %s (= %s)", final, checkpoint)
    return summary


def default_it2_layer(checkpoint: Path) -> int:
    """The layer above the middle of the model (3 of 4; HuBERT-base's iteration 2 used 6 of 12)."""
    n_layers = len(load_hubert(checkpoint)[0].encoder.layers)
    return n_layers // 2 + 1


def _brief(record: Dict[str, float]) -> str:
    keys = [k for k in record if k.endswith(("_loss", "_correct_m_0", "_correct_u_0"))]
    return ", ".join(f"{k}={record[k]:.4g}" for k in keys) or "-"


def _max_update(config: Path, overrides: Sequence[str]) -> Optional[int]:
    """optimization.max_update of the config after the overrides."""
    value = None
    import yaml

    with open(config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    value = (cfg.get("optimization") or {}).get("max_update")
    for o in overrides:
        key, _, v = o.lstrip("+").partition("=")
        if key == "optimization.max_update":
            value = v
    return int(value) if value is not None else None


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True, help="MuST-C root holding en-XX/data/{split}")
    p.add_argument("--tgt-lang", required=True, help="target language XX of the en-XX pair (only the audio is used)")
    p.add_argument("--work-dir", type=Path, required=True, help="wavs, manifests, labels, checkpoints, logs")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="fairseq hydra config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="hydra override passed to fairseq-hydra-train, e.g. optimization.max_update=2000 (repeatable)")
    p.add_argument("--iterations", type=int, default=1, choices=(1, 2))
    p.add_argument("--km-model", type=Path, help="MFCC k-means model for iteration 1 (default: fit one here)")
    p.add_argument("--n-clusters", type=int, default=100, help="iteration-1 MFCC clusters (HuBERT: 100)")
    p.add_argument("--km-percent", type=float, default=0.5, help="fraction of train utterances k-means is fitted on")
    p.add_argument("--it2-layer", type=int, help="iteration-1 layer clustered for iteration 2 (default: n_layers // 2 + 1)")
    p.add_argument("--it2-clusters", type=int, default=100, help="iteration-2 clusters")
    p.add_argument("--splits", nargs="+", default=["train", "dev"], help="train and the validation split")
    p.add_argument("--min-seconds", type=float, default=0.25, help="shorter segments are left out")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (training: the config's common.seed)")
    p.add_argument("--batch-seconds", type=float, default=100.0, help="audio per feature batch (labels)")
    p.add_argument("--device", default=None, help="device for label features (default: cuda when available)")
    p.add_argument("--label-threads", type=int, default=1,
                   help="CPU threads for label features and k-means (0: library defaults); training uses "
                   "fairseq's (all cores, or OMP_NUM_THREADS)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    a = get_parser().parse_args(argv)
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    return pretrain(a.data_root, a.tgt_lang, a.work_dir, a.config, a.iterations, a.km_model, a.n_clusters,
                    a.km_percent, a.it2_layer, a.it2_clusters, a.overrides, a.splits, a.min_seconds, a.seed,
                    a.batch_seconds, a.device, a.label_threads)

cli = console_entry(main)  # gsgn-* console script


if __name__ == "__main__":
    cli()
