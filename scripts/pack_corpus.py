#!/usr/bin/env python3
"""Pack a MuST-C-layout corpus small (Opus-in-Ogg audio), and unpack it back to 16-bit WAV.

For moving the toy corpus to a machine that cannot generate it (no espeak-ng, no network),
e.g. a GPU box with a small upload limit. The audio is lossy-compressed: Opus at libsndfile
``--level`` 0.97 by default, about 13 kbit/s and ~20x smaller than WAV. Lower levels give
higher bitrates: 0.9 is about 30 kbit/s, ~8x smaller. The sample count of every talk is
kept exactly, so the segment offsets of the YAML files stay valid. Features computed from
unpacked audio differ from those of the original. At the default level FBank-only models
learn much more slowly on the toy corpus (docs/RESULTS.md), so use it for timing and a
lower level for BLEU.

    python scripts/pack_corpus.py pack --src data/toy --dst /tmp/toy_packed --pairs de
    python scripts/pack_corpus.py unpack --src /tmp/toy_packed --dst data/toy_gpu

Text files (``txt/``: YAML segments, transcripts, translations) are copied as they are.
Both directions skip files whose output already exists (resumable) and write atomically.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

OPUS_LEVEL = 0.97


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def encode_talk(wav: Path, ogg: Path, level: float = OPUS_LEVEL) -> None:
    """WAV (16 kHz, mono) -> Opus-in-Ogg with the same sample count."""
    audio, sr = sf.read(wav, dtype="int16")
    if audio.ndim != 1 or sr not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError(f"{wav}: need mono audio at an Opus rate, got shape {audio.shape} at {sr} Hz")
    tmp = ogg.with_name(ogg.name + ".tmp")
    with sf.SoundFile(tmp, "w", sr, 1, format="OGG", subtype="OPUS", compression_level=level) as out:
        out.write(audio)
    n = sf.info(tmp).frames
    if n != len(audio):
        tmp.unlink()
        raise RuntimeError(f"{wav}: Opus round trip changed the length {len(audio)} -> {n}")
    os.replace(tmp, ogg)


def decode_talk(ogg: Path, wav: Path) -> None:
    audio, sr = sf.read(ogg, dtype="int16")
    tmp = wav.with_name(wav.name + ".tmp")
    sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, wav)


def _jobs(src: Path, dst: Path, pack: bool, pairs: list[str] | None, level: float = OPUS_LEVEL):
    """(function, input, output) for every file of the corpus."""
    todo = []
    for pair_dir in sorted(src.glob("en-*")):
        if pairs and pair_dir.name[3:] not in pairs:
            continue
        data = pair_dir / "data"
        if not data.is_dir():
            raise FileNotFoundError(f"{data}: not a MuST-C release layout (en-XX/data/SPLIT/...)")
        for f in sorted(data.rglob("*")):
            if not f.is_file() or f.name.endswith(".tmp"):
                continue
            rel = f.relative_to(src)
            if pack and f.suffix == ".wav":
                todo.append((functools.partial(encode_talk, level=level), f, dst / rel.with_suffix(".ogg")))
            elif not pack and f.suffix == ".ogg":
                todo.append((decode_talk, f, dst / rel.with_suffix(".wav")))
            elif f.suffix not in (".wav", ".ogg"):
                todo.append((_atomic_copy, f, dst / rel))
    if not todo:
        raise FileNotFoundError(f"{src}: no en-XX/data/ files found")
    return todo


def _run(job):
    fn, a, b = job
    b.parent.mkdir(parents=True, exist_ok=True)
    if not b.exists():
        fn(a, b)


def convert(src: Path, dst: Path, pack: bool, pairs: list[str] | None = None, jobs: int = 1,
            level: float = OPUS_LEVEL) -> int:
    """Pack (WAV -> Opus) or unpack (Opus -> WAV) a corpus; returns the number of files."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"--level must be in [0, 1] (libsndfile's compression level), got {level}")
    todo = _jobs(Path(src), Path(dst), pack, pairs, level)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for _ in tqdm(pool.map(_run, todo), total=len(todo), desc="pack" if pack else "unpack"):
            pass
    return len(todo)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("direction", choices=["pack", "unpack"])
    p.add_argument("--src", type=Path, required=True, help="corpus root holding en-XX/data/")
    p.add_argument("--dst", type=Path, required=True)
    p.add_argument("--pairs", nargs="+", help="target languages to take (default: all)")
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--level", type=float, default=OPUS_LEVEL,
                   help="Opus compression level in [0, 1]: higher is smaller and lossier")
    a = p.parse_args(argv)
    n = convert(a.src, a.dst, a.direction == "pack", a.pairs, a.jobs, a.level)
    print(f"{a.direction}: {n} files -> {a.dst}")


if __name__ == "__main__":
    main()
