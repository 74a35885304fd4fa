#!/usr/bin/env python3
"""Prepare one MuST-C language pair (release layout) as fairseq speech_to_text data.

    gsgn-prep-mustc --data-root ROOT --tgt-lang de --vocab-size 8000 --jobs 8

reads ROOT/en-XX/data/{split}/{wav,txt} (see ``gsgn_fairseq.data.mustc``) and writes to ROOT/en-XX:

    fbank80.zip                          80-dim Kaldi fbank of every kept segment: float32 .npy
                                         (n_frames, 80), stored uncompressed
    {split}_st.tsv                       id audio n_frames tgt_text speaker src_text, with audio =
                                         fbank80.zip:offset:length (relative to audio_root)
    spm_unigram{V}_st.{model,vocab,txt}  target SentencePiece model; .txt is the fairseq dictionary
    spm_unigram{V}_src.{model,vocab,txt} source (English) model, for CTC on the transcript
    config_st.yaml                       S2TDataConfig: utterance CMVN, SpecAugment (LB) on _train,
                                         absolute audio_root and SentencePiece paths

Features are those of fairseq's examples/speech_to_text/prep_mustc_data.py: torchaudio's
``compliance.kaldi.fbank`` of the waveform scaled by 2**15, 80 bins, 16 kHz; ``n_frames`` is the
number of fbank rows.

Filters, as fairseq's ``filter_manifest_df`` (each utterance counted under its first reason,
counts printed per split): empty target text, empty source text, fewer than 5 frames, more than
3000 frames (train only). Empty text is bad input: every such utterance is named in a warning
and left out, or, with ``--strict``, stops the run.

Other bad input stops the run with an error that names the file and, where there is one, the
utterance: a missing or unreadable wav, yaml and text files of different lengths, a segment past
the end of its wav, an utterance id used twice, a wav not at 16 kHz with ``--strict`` (without
it the wav is resampled with a warning).

Resuming: each talk's features are cached in en-XX/.prep_cache/{split}/{talk}.npz (written to a
temporary file, then renamed), keyed on the wav's size and mtime and the talk's segments, so a
killed run restarts with the talks not yet cached. fbank80.zip, the TSVs, the SentencePiece
files and the config are also written tmp+rename, in a fixed order (split, talk, segment): reruns
give the same bytes whatever ``--jobs``. On success the cache is removed (``--keep-cache`` keeps
it) and .prep_done.json records fingerprints of the inputs and options; a rerun with the same
ones returns at once, and a new ``--vocab-size`` only retrains the vocabularies.

SentencePiece: unigram, character coverage 1.0, fairseq's ids (bos 0, pad 1, eos 2, unk 3),
trained on the kept train utterances. ``--vocab-size`` is a soft limit (``hard_vocab_limit``
off): a corpus too small for it gets the largest vocabulary it supports, and a note says so.
"""
import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import yaml
from tqdm import tqdm

from ..data.manifest import S2T_COLUMNS, read_tsv, write_tsv
from ..data.mustc import (
    SAMPLE_RATE, SPLITS, DataError, Segment, available_splits, cut_segment, load_segments, pair_dir,
    read_wav,
)
from ..data.zip_store import npy_shape, write_npy_zip, zip_manifest
from .fbank import N_MEL_BINS, WINDOW, extract_fbank  # noqa: F401  (re-exported)

MIN_FRAMES, MAX_FRAMES = 5, 3000  # fairseq's filter_manifest_df
SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # fairseq's gen_vocab ids
SPECAUGMENT_LB = {  # fairseq's "lb" policy (MuST-C recipe)
    "freq_mask_F": 27, "freq_mask_N": 1, "time_mask_N": 1, "time_mask_T": 100, "time_mask_p": 1.0,
    "time_wrap_W": 0,
}
TASK = "st"
CACHE_DIR, DONE_FILE, KEY_ENTRY = ".prep_cache", ".prep_done.json", "__key__"
VERSION = 1  # bump when the features or outputs change meaning


def filter_reason(seg: Segment, n_frames: int, is_train: bool) -> Optional[str]:
    """Why an utterance is left out of the manifest, or None to keep it."""
    if not seg.tgt_text:
        return "empty target text"
    if not seg.src_text:
        return "empty source text"
    if n_frames < MIN_FRAMES:
        return f"short speech (<{MIN_FRAMES} frames)"
    if is_train and n_frames > MAX_FRAMES:
        return f"long speech (>{MAX_FRAMES} frames)"
    return None


@dataclass
class TalkJob:
    split: str
    talk: str
    segments: List[Segment]
    cache: Path
    key: str  # fingerprint of the wav and segments; a cache file with another key is stale
    strict: bool


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _wav_stat(path: Path) -> list:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def _is_cached(job: TalkJob) -> bool:
    try:
        with np.load(job.cache) as z:
            return str(z[KEY_ENTRY]) == job.key
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False


def _process_talk(job: TalkJob) -> str:
    """Read a talk, cut its segments, cache their fbank (atomically); return the talk name."""
    audio = read_wav(job.segments[0].wav, strict=job.strict)
    arrays = {seg.id: extract_fbank(cut_segment(audio, seg)) for seg in job.segments}
    arrays[KEY_ENTRY] = np.array(job.key)
    tmp = job.cache.with_name(job.cache.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, job.cache)
    return job.talk


def _init_worker() -> None:
    torch.set_num_threads(1)


def _check_inputs(talks: Dict[str, Dict[str, List[Segment]]], pdir: Path, tgt_lang: str, strict: bool) -> None:
    """Fail before the long part on what can be seen without decoding audio."""
    seen = {}
    for split, by_talk in talks.items():
        txt = pdir / "data" / split / "txt"
        for talk, segs in by_talk.items():
            wav = segs[0].wav
            where = f"{txt / f'{split}.yaml'}, utterances {segs[0].id}..{segs[-1].id}"
            if not wav.is_file():
                raise FileNotFoundError(f"wav not found: {wav} (used by {where})")
            try:
                sr = sf.info(str(wav)).samplerate
            except Exception as err:  # soundfile raises LibsndfileError / RuntimeError variants
                raise DataError(f"{wav}: cannot read audio ({err}) (used by {where})") from None
            if strict and sr != SAMPLE_RATE:
                raise DataError(f"{wav}: sample rate {sr} Hz, expected {SAMPLE_RATE} Hz (--strict)")
            for seg in segs:
                if seg.id in seen:
                    raise DataError(f"{txt / f'{split}.yaml'}: utterance id {seg.id} also in split {seen[seg.id]}")
                seen[seg.id] = split
                for lang, text in (("en", seg.src_text), (tgt_lang, seg.tgt_text)):
                    if not text:
                        msg = f"{txt / f'{split}.{lang}'}: utterance {seg.id}: empty text"
                        if strict:
                            raise DataError(msg + " (--strict)")
                        warnings.warn(msg + "; left out")


def _extract(jobs_by_split: Dict[str, List[TalkJob]], n_jobs: int) -> None:
    """Cache the fbank of every talk not cached yet, in parallel over talks."""
    pending = {s: [j for j in jobs if not _is_cached(j)] for s, jobs in jobs_by_split.items()}
    for jobs in jobs_by_split.values():
        for j in jobs:
            j.cache.parent.mkdir(parents=True, exist_ok=True)
    n_pending = sum(len(p) for p in pending.values())
    pool = mp.get_context("fork").Pool(n_jobs, _init_worker) if n_jobs > 1 and n_pending > 1 else None
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in the workers: the same arithmetic whatever --jobs
        for split, jobs in pending.items():
            total = len(jobs_by_split[split])
            results = pool.imap_unordered(_process_talk, jobs) if pool else map(_process_talk, jobs)
            for _ in tqdm(results, total=total, initial=total - len(jobs), desc=f"fbank {split}", unit="talk"):
                pass
    finally:
        torch.set_num_threads(threads)
        if pool:
            pool.terminate()
            pool.join()


def _assemble(pdir: Path, jobs_by_split: Dict[str, List[TalkJob]]) -> Dict[str, dict]:
    """Write fbank80.zip and the TSVs from the cache; return per-split counts."""
    rows, stats = {}, {}

    def kept_features():
        for split, jobs in jobs_by_split.items():
            rows[split] = []
            filtered = stats.setdefault(split, {"segments": 0, "kept": 0, "filtered": {}})["filtered"]
            for job in tqdm(jobs, desc=f"zip {split}", unit="talk"):
                # the cache is np.savez's stored zip: copy each member's .npy bytes as they are
                # (the bytes np.save gives), reading only the header for the frame count
                with zipfile.ZipFile(job.cache) as z:
                    for seg in job.segments:
                        feats = z.read(f"{seg.id}.npy")
                        (n_frames, *_), _ = npy_shape(feats)
                        reason = filter_reason(seg, n_frames, split == "train")
                        if reason:
                            filtered[reason] = filtered.get(reason, 0) + 1
                            continue
                        rows[split].append({
                            "id": seg.id, "audio": None, "n_frames": n_frames, "tgt_text": seg.tgt_text,
                            "speaker": seg.speaker, "src_text": seg.src_text,
                        })
                        yield seg.id, feats
            stats[split]["segments"] = sum(len(j.segments) for j in jobs)
            stats[split]["kept"] = len(rows[split])

    zip_path = pdir / "fbank80.zip"
    write_npy_zip(zip_path, kept_features())
    refs = zip_manifest(zip_path)
    for split, split_rows in rows.items():
        for row in split_rows:
            row["audio"] = refs[row["id"]]
        write_tsv(pdir / f"{split}_{TASK}.tsv", split_rows, S2T_COLUMNS)
        s = stats[split]
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(s["filtered"].items())) or "nothing"
        print(f"| {split}: {s['segments']} segments, filtered {reasons}; {s['kept']} kept")
        if not split_rows:
            warnings.warn(f"{pdir / f'{split}_{TASK}.tsv'}: no utterance left; fairseq cannot load it")
    return stats


def train_spm(texts: Sequence[str], prefix: Path, vocab_size: int) -> int:
    """Train a unigram SentencePiece model and write fairseq's dictionary; return its size.

    Writes ``{prefix}.model``, ``.vocab`` and ``.txt`` (the dictionary without the 4 specials),
    each atomically.
    """
    import sentencepiece as spm

    tmp = prefix.with_name(prefix.name + ".tmp")
    text_file = tmp.with_suffix(".input")
    text_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    try:
        spm.SentencePieceTrainer.Train(
            input=str(text_file), model_prefix=str(tmp), model_type="unigram", vocab_size=vocab_size,
            character_coverage=1.0, num_threads=os.cpu_count() or 1, hard_vocab_limit=False,
            unk_id=SPECIALS["<unk>"], bos_id=SPECIALS["<s>"], eos_id=SPECIALS["</s>"], pad_id=SPECIALS["<pad>"],
            minloglevel=1,
        )
    finally:
        text_file.unlink()
    sp = spm.SentencePieceProcessor(model_file=f"{tmp}.model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert all(pieces[i] == p for p, i in SPECIALS.items()), f"special ids moved: {pieces[:4]}"
    Path(f"{tmp}.txt").write_text("".join(f"{p} 1\n" for p in pieces[len(SPECIALS):]), encoding="utf-8")
    for ext in (".model", ".vocab", ".txt"):
        os.replace(f"{tmp}{ext}", f"{prefix}{ext}")
    if len(pieces) < vocab_size:
        print(f"| {prefix.name}: vocabulary capped at {len(pieces)} (asked for {vocab_size}; "
              "the training text supports no more)")
    return len(pieces)


def write_config(pdir: Path, tgt_prefix: Path, src_prefix: Path) -> None:
    pdir = pdir.resolve()
    config = {
        "input_channels": 1,
        "input_feat_per_channel": N_MEL_BINS,
        "audio_root": str(pdir),
        "vocab_filename": f"{tgt_prefix.name}.txt",
        "bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": str(pdir / f"{tgt_prefix.name}.model")},
        "src_vocab_filename": f"{src_prefix.name}.txt",
        "src_bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": str(pdir / f"{src_prefix.name}.model")},
        "specaugment": dict(SPECAUGMENT_LB),
        "feature_transforms": {"_train": ["utterance_cmvn", "specaugment"], "*": ["utterance_cmvn"]},
    }
    path = pdir / f"config_{TASK}.yaml"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False), encoding="utf-8")
    os.replace(tmp, path)


def prep_pair(
    data_root, tgt_lang: str, vocab_size: int = 8000, jobs: int = 1, strict: bool = False,
    splits: Optional[Sequence[str]] = None, keep_cache: bool = False,
) -> dict:
    """Prepare ``data_root/en-{tgt_lang}``; see the module docstring for what is written.

    Returns ``{"splits": {split: {"segments", "kept", "filtered": {reason: count}}},
    "vocab_size": {"st": n, "src": n}, "up_to_date": bool}``; ``up_to_date`` is True when an
    earlier run with the same inputs and options had done everything already.
    """
    pdir = pair_dir(data_root, tgt_lang)
    splits = [s for s in SPLITS if s in (splits or available_splits(data_root, tgt_lang))]
    if not splits:
        raise FileNotFoundError(f"no MuST-C split found under {pdir / 'data'} (expected {{split}}/txt/{{split}}.yaml)")
    if "train" not in splits:
        raise ValueError(f"the train split is needed for the SentencePiece models; got splits {splits}")
    talks = {s: load_segments(data_root, tgt_lang, s) for s in splits}
    _check_inputs(talks, pdir, tgt_lang, strict)

    # Fingerprints of what each stage's outputs depend on.
    # --strict is not among them: what it refuses is checked above on every run.
    feat_fp = _sha([VERSION, tgt_lang, {
        s: [[_wav_stat(segs[0].wav), [[g.id, g.offset, g.duration, g.speaker, g.src_text, g.tgt_text] for g in segs]]
            for segs in by_talk.values()]
        for s, by_talk in talks.items()
    }])
    vocab_fp = _sha([feat_fp, vocab_size])
    tgt_prefix, src_prefix = pdir / f"spm_unigram{vocab_size}_{TASK}", pdir / f"spm_unigram{vocab_size}_src"
    feat_outputs = [pdir / "fbank80.zip"] + [pdir / f"{s}_{TASK}.tsv" for s in splits]
    vocab_outputs = [Path(f"{p}{e}") for p in (tgt_prefix, src_prefix) for e in (".model", ".vocab", ".txt")]
    vocab_outputs.append(pdir / f"config_{TASK}.yaml")
    done_path = pdir / DONE_FILE
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}
    feat_done = done.get("features") == feat_fp and all(p.is_file() for p in feat_outputs)
    vocab_done = feat_done and done.get("vocab") == vocab_fp and all(p.is_file() for p in vocab_outputs)
    if vocab_done:
        print(f"| {pdir}: already prepared ({done_path.name} matches the inputs and options)")
        return {**done["stats"], "up_to_date": True}
    done_path.unlink(missing_ok=True)  # outputs are about to change

    if feat_done:
        split_stats = done["stats"]["splits"]
    else:
        jobs_by_split = {
            s: [
                TalkJob(s, talk, segs, pdir / CACHE_DIR / s / f"{talk}.npz",
                        _sha([VERSION, _wav_stat(segs[0].wav), [[g.id, g.offset, g.duration] for g in segs]]),
                        strict)
                for talk, segs in by_talk.items()
            ]
            for s, by_talk in talks.items()
        }
        _extract(jobs_by_split, max(1, jobs))
        split_stats = _assemble(pdir, jobs_by_split)
        for s in SPLITS:  # a TSV of a split not prepared now would point into the old zip
            stale = pdir / f"{s}_{TASK}.tsv"
            if s not in splits and stale.is_file():
                stale.unlink()
                print(f"| removed {stale.name}: {s} is not among the prepared splits")

    train = read_tsv(pdir / f"train_{TASK}.tsv")
    sizes = {
        TASK: train_spm([r["tgt_text"] for r in train], tgt_prefix, vocab_size),
        "src": train_spm([r["src_text"] for r in train], src_prefix, vocab_size),
    }
    write_config(pdir, tgt_prefix, src_prefix)

    stats = {"splits": split_stats, "vocab_size": sizes}
    tmp = done_path.with_name(done_path.name + ".tmp")
    tmp.write_text(json.dumps({"features": feat_fp, "vocab": vocab_fp, "stats": stats}, indent=1))
    os.replace(tmp, done_path)
    if not keep_cache:
        shutil.rmtree(pdir / CACHE_DIR, ignore_errors=True)
    return {**stats, "up_to_date": False}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="gsgn-prep-mustc", description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, help="directory holding en-XX/data/...")
    parser.add_argument("--tgt-lang", required=True, help="target language, e.g. de")
    parser.add_argument("--vocab-size", type=int, default=8000, help="SentencePiece vocabulary size (soft limit)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes (over talks)")
    parser.add_argument("--strict", action="store_true",
                        help="stop on empty text and on wavs not at 16 kHz instead of warning")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, help="splits to prepare (default: all present)")
    parser.add_argument("--keep-cache", action="store_true", help=f"keep {CACHE_DIR}/ after success")
    args = parser.parse_args(argv)
    prep_pair(args.data_root, args.tgt_lang, args.vocab_size, args.jobs, args.strict, args.splits, args.keep_cache)


if __name__ == "__main__":
    main()
