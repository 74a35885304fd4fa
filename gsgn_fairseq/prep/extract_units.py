#!/usr/bin/env python3
"""Compute the discrete units of every utterance and add them to the speech_to_text TSVs.

    gsgn-extract-units --data-root ROOT --tgt-lang de --feature ssl \\
        --checkpoint hubert_base_ls960.pt --layer 9 --km-model hubert_base_ls960_L9_km500.bin
    gsgn-extract-units ... --nshard 4 --rank R      # R = 0..3, e.g. one per GPU
    gsgn-extract-units ... --merge --nshard 4       # merge explicitly
    gsgn-extract-units --data-root ROOT --tgt-lang de --from-km KM_DIR \\
        --km-model hubert_base_ls960_L9_km500.bin                 # import fairseq .km labels

For each split with a ROOT/en-XX/{split}_st.tsv (or those of ``--splits``), the waveform of
every TSV row is cut from the release layout (ROOT/en-XX/data/{split}), turned into features
(``--feature``, see ``gsgn_fairseq.prep.units``: one vector per 20 ms) and each frame
is assigned its nearest k-means centroid (a batched torch argmin, on the GPU when there).
Units are int16 ``.npy`` arrays, one per utterance, one unit per 20 ms frame (not
deduplicated), stored uncompressed in ROOT/en-XX/units.zip; every TSV gets (or has replaced)
a ``units`` column of ``units.zip:offset:length`` references. ROOT/en-XX/units.json records
K, where the units came from, and the fingerprint of units.zip that ties the record to it.

Sharding and resuming: ``--nshard K --rank R`` handles the contiguous rows
``round(n*R/K)..round(n*(R+1)/K)`` of each split (fairseq's ``get_shard_range``) and writes
ROOT/en-XX/units_shards/{split}.{R}of{K}.zip (+ .json). A shard whose .json matches the
inputs (features, checkpoint, k-means model, TSV ids) is not recomputed. When all shards of
all splits are present, the process that finishes last merges them (a lock file keeps the
merge single) into units.zip, in the fixed order (split, TSV row): the same bytes whatever
K. Units of splits not in this run whose TSV already has a ``units`` column are carried over
into the new units.zip, so earlier runs stay valid.

Several unit sets in one data directory (e.g. HuBERT and WavLM units, for ``--unit-views``):
``--name NAME`` writes the set NAME beside the default one, as ``units_NAME.zip``, the TSV
column ``units_NAME`` and the record ``units_NAME.json`` (shards in ``units_NAME_shards/``);
the default name ``units`` keeps the files above. Every record names its set (``unit_set``),
so a column that reads another set's units is refused when the data is loaded.

Before units.zip and the TSVs are written, every unit count must be within 2 of n_frames / 2
(n_frames counts 10 ms fbank frames); otherwise the run stops and names the utterances.
"""
import argparse
import hashlib
import json
import logging
import os
import re
import socket
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..data.manifest import DEFAULT_UNIT_VIEW, check_unit_view_name, read_tsv, unit_view_column, write_tsv
from ..data.mustc import SAMPLE_RATE, SPLITS, DataError, pair_dir
from ..data.provenance import PATH_KEYS, describe, first_difference, provenance_of, units_meta_path, write_units_meta
from ..fileio import sha1_file, write_json_atomic
from .ssl_features import checkpoint_sha1
from .units import (
    FEATURES, MAX_CHUNK, KMeansAssigner, build_features, check_unit_lengths, iter_features,
    iter_split_audio,
)
from ..data.zip_store import read_npy_ref, write_npy_zip, zip_manifest
from ..console import console_entry

logger = logging.getLogger("extract_units")

UNITS_ZIP = "units.zip"
SHARD_DIR = "units_shards"


def set_files(name: str = DEFAULT_UNIT_VIEW) -> Tuple[str, str, str]:
    """(TSV column, zip name, shard directory) of the unit set ``name``: ``units``,
    ``units.zip``, ``units_shards`` for the default set, ``units_NAME``... otherwise."""
    column = unit_view_column(check_unit_view_name(name, "--name"))
    return column, f"{column}.zip", f"{column}_shards"
MAX_UNITS = np.iinfo(np.int16).max + 1  # K must fit int16


class Table:
    """One split's TSV: its path, header and rows."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = read_tsv(path)  # FileNotFoundError names the path
        with open(path, encoding="utf-8") as f:
            self.columns = f.readline().rstrip("\r\n").split("\t")
        for col in ("id", "n_frames"):
            if col not in self.columns:
                raise DataError(f"{path}: no {col!r} column (columns: {' '.join(self.columns)})")
        self.ids = [r["id"] for r in self.rows]
        try:
            self.n_frames = {r["id"]: int(r["n_frames"]) for r in self.rows}
        except ValueError as err:
            raise DataError(f"{path}: bad n_frames ({err})") from None


def load_tables(pair: Path, splits: Optional[Sequence[str]]) -> Dict[str, Table]:
    if splits is None:
        splits = [s for s in SPLITS if (pair / f"{s}_st.tsv").is_file()]
        if not splits:
            raise FileNotFoundError(f"no {pair}/{{split}}_st.tsv manifests found; run gsgn-prep-mustc first")
    tables = {s: Table(pair / f"{s}_st.tsv") for s in splits}
    seen: Dict[str, str] = {}
    for split, table in tables.items():
        for uid in table.ids:
            if uid in seen:
                raise DataError(f"{table.path}: utterance id {uid} also appears in the {seen[uid]} split; "
                                f"{UNITS_ZIP} needs unique ids")
            seen[uid] = split
    return tables


def shard_range(total: int, nshard: int, rank: int) -> Tuple[int, int]:
    """fairseq's get_shard_range (an empty shard is allowed)."""
    if not 0 <= rank < nshard:
        raise ValueError(f"invalid --rank {rank} for --nshard {nshard}")
    return round(total / nshard * rank), round(total / nshard * (rank + 1))


def sha1_ids(ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


def write_json(path: Path, obj) -> None:
    write_json_atomic(path, obj, indent=1, sort_keys=True)


def read_npy_zip(path: Path) -> Dict[str, np.ndarray]:
    import io

    with zipfile.ZipFile(path) as z:
        return {n[: -len(".npy")]: np.load(io.BytesIO(z.read(n)), allow_pickle=False) for n in z.namelist()}


# ---------------------------------------------------------------- shards


def shard_paths(pair: Path, split: str, rank: int, nshard: int, name: str = DEFAULT_UNIT_VIEW) -> Tuple[Path, Path]:
    stem = pair / set_files(name)[2] / f"{split}.{rank}of{nshard}"
    return stem.with_name(stem.name + ".zip"), stem.with_name(stem.name + ".json")


def shard_meta(meta: dict, split: str, rank: int, nshard: int, ids: Sequence[str]) -> dict:
    return dict(meta, split=split, rank=rank, nshard=nshard, ids_sha1=sha1_ids(ids))


def _identity(meta: dict) -> dict:
    """What makes two runs' units the same: everything but where the input files were."""
    return {k: v for k, v in meta.items() if k not in PATH_KEYS}


def shard_done(pair: Path, smeta: dict) -> bool:
    zip_path, json_path = shard_paths(pair, smeta["split"], smeta["rank"], smeta["nshard"],
                                      smeta.get("unit_set", DEFAULT_UNIT_VIEW))
    if not (zip_path.is_file() and json_path.is_file()):
        return False
    if _identity(json.loads(json_path.read_text(encoding="utf-8"))) == _identity(smeta):
        return True
    logger.warning("%s was made from other inputs; recomputing it", zip_path)
    return False


def write_shard(pair: Path, smeta: dict, units: Dict[str, np.ndarray], ids: Sequence[str]) -> None:
    zip_path, json_path = shard_paths(pair, smeta["split"], smeta["rank"], smeta["nshard"],
                                      smeta.get("unit_set", DEFAULT_UNIT_VIEW))
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)  # the .json marks a complete shard: written last
    write_npy_zip(zip_path, ((uid, units[uid]) for uid in ids))
    write_json(json_path, smeta)


def compute_units(data_root: Path, tgt_lang: str, split: str, ids: Sequence[str], features,
                  assigner: KMeansAssigner, batch_seconds: float, manifest: Path = None,
                  num_workers: int = 0) -> Dict[str, np.ndarray]:
    """int16 units of ``ids`` (one split), logging throughput in x real time. Audio is read in
    ``num_workers`` processes; each batch's frames are assigned in one matmul."""
    units, seconds, start = {}, 0.0, time.time()
    audio = iter_split_audio(data_root, tgt_lang, split, ids, manifest=manifest, num_workers=num_workers)
    for uid, n_samples, ids_ in tqdm(iter_features(audio, features, batch_seconds, assigner=assigner), total=len(ids),
                                     desc=f"{split} {features.name} units", unit="utt"):
        units[uid] = ids_.cpu().numpy().astype(np.int16)
        seconds += n_samples / SAMPLE_RATE
    elapsed = max(time.time() - start, 1e-9)
    logger.info("%s: %d utterances, %.1f s of audio in %.1f s (%.1fx real time)",
                split, len(ids), seconds, elapsed, seconds / elapsed)
    return units


# ---------------------------------------------------------------- .km import


def read_km_labels(km_dir: Path, split: str, table: Table, n_clusters: int) -> Dict[str, np.ndarray]:
    """Units of ``split`` from fairseq .km files (one line per TSV row, in TSV order)."""
    km_dir = Path(km_dir)
    single = km_dir / f"{split}.km"
    pattern = re.compile(rf"{re.escape(split)}_(\d+)_(\d+)\.km")
    sharded = {}
    for p in km_dir.glob(f"{split}_*_*.km"):
        m = pattern.fullmatch(p.name)
        if m:
            sharded[(int(m.group(1)), int(m.group(2)))] = p
    if single.is_file() and sharded:
        raise DataError(f"{km_dir}: both {single.name} and {split}_{{rank}}_{{nshard}}.km files; keep one set")
    if single.is_file():
        files = [(single, 0, len(table.ids))]
    elif sharded:
        nshards = {k for _, k in sharded}
        if len(nshards) != 1:
            raise DataError(f"{km_dir}: {split} .km shards of different nshard {sorted(nshards)}")
        k = nshards.pop()
        missing = [f"{split}_{r}_{k}.km" for r in range(k) if (r, k) not in sharded]
        if missing:
            raise DataError(f"{km_dir}: missing {', '.join(missing)}")
        files = [(sharded[(r, k)], *shard_range(len(table.ids), k, r)) for r in range(k)]
    else:
        raise FileNotFoundError(f"no {split}.km or {split}_{{rank}}_{{nshard}}.km in {km_dir}")
    units = {}
    for path, start, end in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) != end - start:
            raise DataError(f"{path}: {len(lines)} lines for the {end - start} utterances of rows "
                            f"{start}..{end - 1} of {table.path}; one line per TSV row, in TSV order")
        for i, (line, uid) in enumerate(zip(lines, table.ids[start:end])):
            try:
                labels = np.array(line.split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{i + 1}: utterance {uid}: not space-separated integers") from None
            bad = labels[(labels < 0) | (labels >= n_clusters)]
            if len(bad):
                raise DataError(f"{path}:{i + 1}: utterance {uid}: unit id {bad[0]} out of range "
                                f"[0, {n_clusters}) ({len(bad)} such ids)")
            units[uid] = labels.astype(np.int16)
    return units


# ---------------------------------------------------------------- merge


def try_lock(path: Path) -> bool:
    """Create ``path`` exclusively (holding "host pid"); False when it already exists.

    A lock left by a dead process of this host is removed.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            host, pid = path.read_text().split()
            if host == socket.gethostname():
                os.kill(int(pid), 0)
        except ProcessLookupError:
            logger.warning("removing %s, left by the dead process %s", path, pid)
            path.unlink(missing_ok=True)
            return try_lock(path)
        except (OSError, ValueError):  # unreadable, half-written or not ours to check
            pass
        return False
    os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
    os.close(fd)
    return True


def _compatible(old: dict, new: dict) -> bool:
    """Units made the same way (``gsgn_fairseq.data.provenance``), so both can go in one units.zip."""
    return first_difference(provenance_of(old), provenance_of(new)) is None


def merge(data_root: Path, tgt_lang: str, tables: Dict[str, Table], nshard: int, explicit: bool = False,
          expected_meta: Optional[dict] = None, name: str = DEFAULT_UNIT_VIEW) -> Optional[Path]:
    """Merge the shards of ``tables``' splits into units.zip (``units_NAME.zip`` for the set
    ``name``) and update the TSVs.

    Returns the units.zip path, or None when shards are missing (an error when ``explicit``).
    The merge runs under a lock file; without ``explicit`` a busy lock is waited for.
    """
    pair = pair_dir(data_root, tgt_lang)
    column, zip_name, shard_dir = set_files(name)
    lock = pair / f"{zip_name}.lock"
    waited = 0
    while not try_lock(lock):  # another rank is checking or merging: wait, then look again
        if explicit:
            raise RuntimeError(f"{lock} exists: another extract_units is merging; if none is, delete it")
        if waited % 60 == 0:
            logger.info("waiting for %s (another process is merging)", lock)
        time.sleep(1)
        waited += 1
    try:
        missing = [str(shard_paths(pair, s, r, nshard, name)[1]) for s in tables for r in range(nshard)
                   if not shard_paths(pair, s, r, nshard, name)[1].is_file()]
        if missing:
            if explicit:
                raise FileNotFoundError(f"cannot merge, shards missing: {', '.join(missing[:10])}")
            logger.info("%d shard(s) still missing, not merging yet", len(missing))
            return None
        units, meta = {}, expected_meta
        for split, table in tables.items():
            units[split] = {}
            for rank in range(nshard):
                zip_path, json_path = shard_paths(pair, split, rank, nshard, name)
                smeta = json.loads(json_path.read_text(encoding="utf-8"))
                run_meta = {k: v for k, v in smeta.items() if k not in ("split", "rank", "nshard", "ids_sha1")}
                meta = meta or run_meta
                start, end = shard_range(len(table.ids), nshard, rank)
                if _identity(run_meta) != _identity(meta) or smeta["ids_sha1"] != sha1_ids(table.ids[start:end]):
                    raise DataError(f"{json_path}: made from other inputs than the other shards or the "
                                    f"current {table.path}; rerun rank {rank}")
                units[split].update(read_npy_zip(zip_path))
        zip_path = pair / zip_name
        carried = carry_over(pair, tables, meta, name)
        all_tables = {**tables, **{s: t for s, (t, _) in carried.items()}}
        units.update({s: u for s, (_, u) in carried.items()})
        n_ids = sum(len(t.ids) for t in all_tables.values())
        if len({uid for t in all_tables.values() for uid in t.ids}) != n_ids:
            raise DataError(f"{pair}: an utterance id appears in two splits' TSVs; {zip_name} needs unique ids")
        for split, table in all_tables.items():
            check_unit_lengths(units[split], table.n_frames, str(table.path))
            top = max((int(u.max()) for u in units[split].values() if len(u)), default=0)
            low = min((int(u.min()) for u in units[split].values() if len(u)), default=0)
            if low < 0 or top >= meta["n_clusters"]:
                raise DataError(f"{table.path}: unit ids in [{low}, {top}] outside [0, {meta['n_clusters']})")
        order = [s for s in SPLITS if s in all_tables] + [s for s in all_tables if s not in SPLITS]
        write_npy_zip(zip_path, ((uid, units[s][uid]) for s in order for uid in all_tables[s].ids))
        refs = zip_manifest(zip_path)
        for split in order:
            table = all_tables[split]
            for row in table.rows:
                row[column] = refs[row["id"]]
            columns = table.columns + ([column] if column not in table.columns else [])
            write_tsv(table.path, table.rows, columns)
        write_units_meta(zip_path, dict(meta, splits={s: len(all_tables[s].ids) for s in order}))
        for split in tables:
            for p in (pair / shard_dir).glob(f"{split}.*of*.*"):
                p.unlink()
        if (pair / shard_dir).is_dir() and not any((pair / shard_dir).iterdir()):
            (pair / shard_dir).rmdir()
        logger.info(f"wrote %s (%s) and the {column} column of %s", zip_path,
                    ", ".join(f"{s}: {len(all_tables[s].ids)}" for s in order),
                    ", ".join(all_tables[s].path.name for s in order))
        return zip_path
    finally:
        lock.unlink(missing_ok=True)


def carry_over(pair: Path, tables: Dict[str, Table], meta: dict,
               name: str = DEFAULT_UNIT_VIEW) -> Dict[str, Tuple[Table, Dict[str, np.ndarray]]]:
    """Units already in the set's zip for splits outside this run (their TSV has its column)."""
    out = {}
    column, zip_name, _ = set_files(name)
    others = [s for s in SPLITS if s not in tables and (pair / f"{s}_st.tsv").is_file()]
    for split in others:
        table = Table(pair / f"{split}_st.tsv")
        if column not in table.columns:
            continue
        old_meta_path = units_meta_path(pair / zip_name)
        old = json.loads(old_meta_path.read_text(encoding="utf-8")) if old_meta_path.is_file() else {}
        if not _compatible(old, meta):
            raise DataError(f"{table.path}: its units were made differently ({old_meta_path}: "
                            f"{describe(provenance_of(old)) if old else 'missing'}; this run: {describe(provenance_of(meta))}); "
                            f"add {split} to --splits to recompute them")
        out[split] = (table, {r["id"]: read_npy_ref(pair, r[column]) for r in table.rows})
        logger.info("keeping the units of %s (%d utterances)", split, len(table.rows))
    return out


# ---------------------------------------------------------------- main


def extract_units(data_root: Path, tgt_lang: str, feature: Optional[str] = None, km_model: Optional[Path] = None,
                  checkpoint: Optional[Path] = None, layer: int = 9, splits: Optional[Sequence[str]] = None,
                  nshard: int = 1, rank: int = 0, batch_seconds: float = 100.0, device: str = "cpu",
                  dtype: Optional[str] = None, max_chunk: int = MAX_CHUNK, from_km: Optional[Path] = None,
                  n_clusters: Optional[int] = None, merge_only: bool = False, num_workers: int = 2,
                  name: str = DEFAULT_UNIT_VIEW) -> Optional[Path]:
    """Compute (or import) units and merge them; returns units.zip (``units_NAME.zip`` for the
    set ``name``) when it was written."""
    pair = pair_dir(data_root, tgt_lang)
    set_files(name)  # the name is checked before any work
    tables = load_tables(pair, splits)
    if merge_only:
        return merge(data_root, tgt_lang, tables, nshard, explicit=True, name=name)

    km_sha1 = sha1_file(km_model) if km_model else None
    if from_km is not None:
        if km_model:
            n_clusters = KMeansAssigner.from_file(km_model).n_clusters
        if not n_clusters:
            raise ValueError("--from-km needs --km-model or --n-clusters (K, to check the unit ids)")
        meta = {"feature": {"hubert": "ssl"}.get(feature, feature) or "km-files", "km_dir": str(Path(from_km).resolve()),
                "n_clusters": n_clusters, "km_model_sha1": km_sha1,
                "checkpoint_sha1": checkpoint_sha1(checkpoint) if checkpoint else None,
                "layer": layer if checkpoint else None,
                "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                "km_model": str(Path(km_model).resolve()) if km_model else None, "unit_set": name}
        for split, table in tables.items():
            units = read_km_labels(from_km, split, table, n_clusters)
            write_shard(pair, shard_meta(meta, split, 0, 1, table.ids), units, table.ids)
        return merge(data_root, tgt_lang, tables, 1, explicit=True, expected_meta=meta, name=name)

    if feature is None or km_model is None:
        raise ValueError("--feature and --km-model are needed (or --from-km / --merge)")
    assigner = KMeansAssigner.from_file(km_model, device=device)
    if assigner.n_clusters > MAX_UNITS:
        raise DataError(f"{km_model}: {assigner.n_clusters} clusters do not fit int16 units")
    features = build_features(feature, checkpoint, layer, device, max_chunk, dtype)
    assigner.check_dim(features.dim, feature)
    # how the units were made (gsgn_fairseq.data.provenance): training checks it against the model's
    meta = dict(features.provenance, n_clusters=assigner.n_clusters, km_model_sha1=km_sha1,
                checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None, km_model=str(Path(km_model).resolve()),
                unit_set=name)
    for split, table in tables.items():
        start, end = shard_range(len(table.ids), nshard, rank)
        ids = table.ids[start:end]
        smeta = shard_meta(meta, split, rank, nshard, ids)
        if shard_done(pair, smeta):
            logger.info("%s: shard %d/%d already done", split, rank, nshard)
            continue
        units = compute_units(data_root, tgt_lang, split, ids, features, assigner, batch_seconds, table.path,
                              num_workers)
        write_shard(pair, smeta, units, ids)
    return merge(data_root, tgt_lang, tables, nshard, expected_meta=meta, name=name)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True, help="MuST-C root holding en-XX/")
    p.add_argument("--tgt-lang", required=True, help="target language XX of the en-XX pair")
    p.add_argument("--feature", choices=sorted(FEATURES),
                   help="frame features the k-means model was learnt on (hubert = ssl)")
    p.add_argument("--km-model", type=Path, help="joblib k-means model (gsgn-learn-kmeans, a .npy of centroids, or the released km500)")
    p.add_argument("--checkpoint", type=Path,
                   help="--feature ssl/hubert: a fairseq .pt of HuBERT or wav2vec 2.0, or a Hugging Face "
                   "model directory (HubertModel, WavLMModel, Wav2Vec2Model, Data2VecAudioModel)")
    p.add_argument("--layer", type=int, default=9,
                   help="transformer layer of the SSL model, 1-based (transformers' hidden_states[L])")
    p.add_argument("--splits", nargs="+", help="default: every split with a {split}_st.tsv")
    p.add_argument("--nshard", type=int, default=1, help="number of shards (rows of each split, contiguous)")
    p.add_argument("--rank", type=int, default=0, help="the shard this process computes, 0..nshard-1")
    p.add_argument("--merge", action="store_true", help="only merge the --nshard shards into units.zip")
    p.add_argument("--batch-seconds", type=float, default=100.0, help="padded audio per SSL model batch")
    p.add_argument("--max-chunk", type=int, default=MAX_CHUNK, help="longer audio is encoded in chunks (samples)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), help="SSL model precision on CUDA (default fp16)")
    p.add_argument(
        "--from-km", type=Path, metavar="DIR",
        help="import fairseq simple_kmeans labels instead of computing units: DIR/{split}.km, or "
        "DIR/{split}_{rank}_{nshard}.km for every rank. Line i holds the space-separated units of "
        "row i of {split}_st.tsv (TSV order, header excluded; with shards, rank r holds the rows "
        "round(n*r/nshard)..round(n*(r+1)/nshard), as fairseq's get_shard_range), computed from "
        "the segment's 16 kHz audio at 50 Hz. Needs --km-model or --n-clusters.",
    )
    p.add_argument("--n-clusters", type=int, help="K, for --from-km without --km-model")
    p.add_argument("--name", default=DEFAULT_UNIT_VIEW,
                   help="the unit set to write: 'units' (default: units.zip, column units, units.json) or NAME for "
                        "units_NAME.zip, column units_NAME and units_NAME.json beside it (--unit-views NAME reads it)")
    p.add_argument("--num-workers", type=int, default=2,
                   help="processes that read and cut the audio ahead of the feature model (0: in this process)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Optional[Path]:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    a = get_parser().parse_args(argv)
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    return extract_units(a.data_root, a.tgt_lang, a.feature, a.km_model, a.checkpoint, a.layer, a.splits,
                         a.nshard, a.rank, a.batch_seconds, a.device, a.dtype, a.max_chunk, a.from_km,
                         a.n_clusters, a.merge, a.num_workers, a.name)

cli = console_entry(main)  # gsgn-* console script


if __name__ == "__main__":
    cli()
