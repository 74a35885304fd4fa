"""A tiny synthetic corpus in the MuST-C release layout, for tests.

``make_tiny_mustc(root)`` writes, for each target language XX and split::

    root/en-XX/data/{split}/wav/ted_{n}.wav     # one "talk": tones over noise, 16-bit PCM mono
    root/en-XX/data/{split}/txt/{split}.yaml    # MuST-C style segment list, one line per segment
    root/en-XX/data/{split}/txt/{split}.en      # one English sentence per segment
    root/en-XX/data/{split}/txt/{split}.XX      # its word-by-word translation

Each segment is a tone (its pitch set by the sentence's first word) over low noise, 0.4-1.0 s
long, with quiet gaps (0.1-0.3 s) before segments; texts come from a tiny grammar with a fixed
lexicon (de, fr, es; other languages get reversed English words). Talk names are unique across
splits, as in MuST-C. The same arguments always give the same bytes; every pair holds the same
audio and English text.
"""
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

SPLIT_IDS = {"train": 1, "dev": 2, "tst-COMMON": 3, "tst-HE": 4}

# English word -> (de, fr, es)
LEXICON = {
    "the": ("der", "le", "el"),
    "a": ("ein", "un", "un"),
    "cat": ("Katze", "chat", "gato"),
    "dog": ("Hund", "chien", "perro"),
    "bird": ("Vogel", "oiseau", "pajaro"),
    "sees": ("sieht", "voit", "ve"),
    "likes": ("mag", "aime", "quiere"),
    "big": ("grosse", "grand", "grande"),
    "small": ("kleine", "petit", "pequeno"),
}
LANG_INDEX = {"de": 0, "fr": 1, "es": 2}
DETERMINERS, NOUNS, VERBS, ADJECTIVES = ["the", "a"], ["cat", "dog", "bird"], ["sees", "likes"], ["big", "small"]


def translate(sentence: str, lang: str) -> str:
    if lang not in LANG_INDEX:
        return " ".join(w[::-1] for w in sentence.split())
    return " ".join(LEXICON[w][LANG_INDEX[lang]] for w in sentence.split())


def _sentence(rng: np.random.Generator) -> str:
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return " ".join([pick(DETERMINERS), pick(ADJECTIVES), pick(NOUNS), pick(VERBS), pick(DETERMINERS), pick(NOUNS)])


def _talk(rng: np.random.Generator, sentences: Sequence[str], sample_rate: int):
    """Audio of one talk and its (offset, duration) segments in seconds."""
    # Durations are whole milliseconds and drawn before the noise, so every sample rate gives
    # the same segments in seconds.
    n_ms = [round(rng.uniform(400, 1000)) if i % 2 else round(rng.uniform(100, 300)) for i in range(2 * len(sentences))]
    noise = np.random.default_rng(rng.integers(2**32))
    pieces, segments, t = [0.003 * noise.standard_normal(sample_rate // 5)], [], 0.2
    for i, ms in enumerate(n_ms):
        n = ms * sample_rate // 1000
        if i % 2:  # speech: a tone whose pitch depends on the words, over noise
            words = sentences[i // 2].split()
            freq = 200.0 + 50.0 * sorted(LEXICON).index(words[0]) + 30.0 * len(words[2])
            tone = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate) * np.hanning(n)
            pieces.append(tone + 0.02 * noise.standard_normal(n))
            segments.append((t, ms / 1000))
        else:  # pause
            pieces.append(0.003 * noise.standard_normal(n))
        t += ms / 1000
    return np.concatenate(pieces).astype(np.float32), segments


def make_tiny_mustc(
    root,
    tgt_langs: Sequence[str] = ("de",),
    splits: Sequence[str] = ("train", "dev", "tst-COMMON"),
    n_talks: int = 2,
    segs_per_talk: int = 3,
    seed: int = 0,
    sample_rate: int = 16000,
) -> Path:
    """Write the tiny corpus under ``root`` and return ``root`` (the MuST-C data root).

    Args:
        root: data root; ``root/en-XX`` is created for each language in ``tgt_langs``.
        tgt_langs: target languages, one ``en-XX`` pair directory each.
        splits: MuST-C split names (train, dev, tst-COMMON, tst-HE).
        n_talks: talks (wav files) per split.
        segs_per_talk: segments (utterances) per talk; ids are ``ted_{n}_{i}``.
        seed: random seed for texts, durations and noise.
        sample_rate: sample rate the wavs are written at (MuST-C is 16 kHz).
    Returns:
        ``Path(root)``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    talks = {}  # split -> [(talk name, audio, segments, sentences)]
    for split in splits:
        talks[split] = []
        for k in range(n_talks):
            name = f"ted_{SPLIT_IDS.get(split, 9)}{k:03d}"
            sentences = [_sentence(rng) for _ in range(segs_per_talk)]
            audio, segments = _talk(rng, sentences, sample_rate)
            talks[split].append((name, audio, segments, sentences))
    for lang in tgt_langs:
        for split in splits:
            base = root / f"en-{lang}" / "data" / split
            (base / "wav").mkdir(parents=True, exist_ok=True)
            (base / "txt").mkdir(parents=True, exist_ok=True)
            yaml_lines, en, xx = [], [], []
            for name, audio, segments, sentences in talks[split]:
                sf.write(base / "wav" / f"{name}.wav", audio, sample_rate, subtype="PCM_16")
                for (offset, duration), s in zip(segments, sentences):
                    yaml_lines.append(
                        f"- {{duration: {duration:.6f}, offset: {offset:.6f}, rw: 1.000000, "
                        f"speaker_id: spk.{name[4:]}, wav: {name}.wav}}"
                    )
                    en.append(s)
                    xx.append(translate(s, lang))
            for path, lines in ((f"{split}.yaml", yaml_lines), (f"{split}.en", en), (f"{split}.{lang}", xx)):
                (base / "txt" / path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
