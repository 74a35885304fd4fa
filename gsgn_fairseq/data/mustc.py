"""The MuST-C release layout: segments of whole-talk wavs described by yaml + text files.

    ROOT/en-XX/data/{split}/wav/{talk}.wav
    ROOT/en-XX/data/{split}/txt/{split}.yaml   # [{offset, duration, speaker_id, wav}, ...]
    ROOT/en-XX/data/{split}/txt/{split}.en     # one source sentence per yaml entry
    ROOT/en-XX/data/{split}/txt/{split}.XX     # one target sentence per yaml entry

Utterance ids follow fairseq's MuST-C preparation: ``{talk}_{i}`` with ``i`` the segment's
index within its talk, in yaml order (after sorting a talk's segments by offset).
"""
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf
import torch
import yaml


SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")
SAMPLE_RATE = 16000


@dataclass
class Segment:
    id: str
    wav: Path
    offset: float  # seconds
    duration: float  # seconds
    speaker: str
    src_text: str
    tgt_text: str


class DataError(ValueError):
    """Bad input data; the message names the file and, where known, the utterance."""


def pair_dir(root: Path, tgt_lang: str) -> Path:
    return Path(root) / f"en-{tgt_lang}"


def available_splits(root: Path, tgt_lang: str) -> List[str]:
    base = pair_dir(root, tgt_lang) / "data"
    return [s for s in SPLITS if (base / s / "txt" / f"{s}.yaml").is_file()]


_FLOW_LINE = re.compile(r"- \{(.*)\}[ \t]*")
_WORD = re.compile(r"[A-Za-z_][\w.\-/]*")
_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")  # no sign, exponent or leading zero
_STR_KEYS = ("speaker_id", "wav")  # read as strings: a YAML float there would print differently
# plain words YAML (1.1, PyYAML) reads as booleans or null rather than strings
_NOT_STR = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"}


def fast_segment_entries(text: str) -> Optional[List[dict]]:
    """MuST-C's segment YAML (``- {duration: 3.5, offset: 16.73, ..., wav: ted_1.wav}`` per
    line) as dicts of strings, or None when any line is not in that simple form.

    For the keys ``load_segments`` reads, the result equals PyYAML's after ``float`` /
    ``str``: numbers are plain decimals and words start with a letter or ``_`` and are not
    YAML booleans or null (anything else falls back to the YAML parser). Parsing the YAML
    itself takes longer than the rest of a small corpus' preparation.
    """
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _FLOW_LINE.fullmatch(line)
        if m is None:
            return None
        entry = {}
        for item in m.group(1).split(", "):
            key, sep, value = item.partition(": ")
            if not sep or not _WORD.fullmatch(key) or key in entry:
                return None
            if _WORD.fullmatch(value):
                if value.lower() in _NOT_STR:
                    return None
            elif not _NUMBER.fullmatch(value) or (key in _STR_KEYS and "." in value):
                return None
            entry[key] = value
        entries.append(entry)
    return entries


def load_segments(root: Path, tgt_lang: str, split: str) -> Dict[str, List[Segment]]:
    """Read one split's segments, grouped by talk (wav stem), in a deterministic order."""
    base = pair_dir(root, tgt_lang) / "data" / split
    txt = base / "txt"
    yaml_path = txt / f"{split}.yaml"
    if not yaml_path.is_file():
        raise FileNotFoundError(f"segment list not found: {yaml_path}")
    text = yaml_path.read_text(encoding="utf-8")
    entries = fast_segment_entries(text)
    if entries is None:  # anything but MuST-C's one-flow-mapping-per-line layout
        entries = yaml.load(text, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)
    if not isinstance(entries, list):
        raise DataError(f"{yaml_path}: expected a list of segments, got {type(entries).__name__}")
    texts = {}
    for lang in ("en", tgt_lang):
        path = txt / f"{split}.{lang}"
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        if len(lines) != len(entries):
            raise DataError(
                f"{path} has {len(lines)} lines but {yaml_path} has {len(entries)} segments; "
                "they must be line-aligned"
            )
        texts[lang] = [l.strip() for l in lines]
    by_talk: Dict[str, List[tuple]] = {}
    for i, e in enumerate(entries):
        try:
            wav, offset, duration = e["wav"], float(e["offset"]), float(e["duration"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{yaml_path}: segment {i} is malformed ({err!r}): {e!r}") from None
        by_talk.setdefault(wav, []).append((offset, duration, str(e.get("speaker_id", "")), i))
    talks = {}
    for wav in sorted(by_talk):
        segs = sorted(by_talk[wav])
        stem = Path(wav).stem
        talks[stem] = [
            Segment(
                id=f"{stem}_{j}", wav=base / "wav" / wav, offset=off, duration=dur,
                speaker=spk, src_text=texts["en"][i], tgt_text=texts[tgt_lang][i],
            )
            for j, (off, dur, spk, i) in enumerate(segs)
        ]
    return talks


def read_wav(path: Path, strict: bool = False) -> np.ndarray:
    """Read a whole wav as float32 mono at 16 kHz.

    A file at another rate is resampled, and one with several channels averaged to mono, each
    with a warning naming the file, or refused when ``strict``. NaN or infinite samples (a
    float file can hold them) are refused here, naming the file, before they reach features.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"wav not found: {path}")
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError variants
        raise DataError(f"{path}: cannot read audio ({err})") from None
    bad = ~np.isfinite(audio).all(axis=1)  # (n,) per sample frame, any channel
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{path}: {int(bad.sum())} NaN or infinite samples, the first at {first / sr:.3f} s "
                        f"(sample {first}); the audio is damaged")
    if audio.shape[1] > 1:
        if strict:
            raise DataError(f"{path}: {audio.shape[1]} channels, expected mono (--strict)")
        warnings.warn(f"{path}: {audio.shape[1]} channels, averaging them to mono")
        audio = audio.mean(axis=1)
    else:
        audio = audio[:, 0]
    if sr != SAMPLE_RATE:
        if strict:
            raise DataError(f"{path}: sample rate {sr} Hz, expected {SAMPLE_RATE} Hz (--strict)")
        warnings.warn(f"{path}: sample rate {sr} Hz, resampling to {SAMPLE_RATE} Hz")
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), sr, SAMPLE_RATE).numpy()
    return audio


def cut_segment(audio: np.ndarray, seg: Segment, tolerance_s: float = 0.01) -> np.ndarray:
    """The samples of ``seg`` in its talk's ``audio``; a segment past the end is an error."""
    start = int(round(seg.offset * SAMPLE_RATE))
    n = int(round(seg.duration * SAMPLE_RATE))
    total = len(audio)
    if seg.offset < 0 or seg.duration <= 0:
        raise DataError(f"{seg.wav}: utterance {seg.id}: bad offset/duration {seg.offset}/{seg.duration}")
    if start + n > total + int(tolerance_s * SAMPLE_RATE):
        raise DataError(
            f"{seg.wav}: utterance {seg.id} runs past the end of the audio "
            f"(segment ends at {(start + n) / SAMPLE_RATE:.3f} s, audio is {total / SAMPLE_RATE:.3f} s)"
        )
    return audio[start : min(start + n, total)]
