"""A tiny, self-contained fairseq speech_to_text dataset with both views, for tests.

``make_tiny_multiview_data(out_dir)`` writes::

    out_dir/fbank80.zip       # {id}.npy float32 (T, 80), stored members
    out_dir/units.zip         # {id}.npy int16 (T // 2,), one unit per two FBank frames (20 ms)
    out_dir/units.json        # their provenance (feature "synthetic", K), as extract_units writes it
    out_dir/units_NAME.zip, units_NAME.json   # with unit_sets={NAME: K}: a further unit set each,
                              # in column units_NAME (another clustering of the same frames)
    out_dir/train.tsv, valid.tsv   # id audio n_frames tgt_text speaker src_text units
    out_dir/dict.txt          # target words (plain whitespace dictionary, no BPE)
    out_dir/src_dict.txt      # source words (for CTC)
    out_dir/config_st.yaml    # audio_root = out_dir, vocab_filename, src_vocab_filename

Utterances are 2-4 words from ``vocab_words``. Each word is a block of 12-20 FBank frames
around a word-specific prototype vector (plus noise), and its unit frames mostly take one of
two word-specific ids (some random), so both views are learnable. The target is the
upper-cased source words in reverse order (needs attention, not just copying). Same
arguments, same bytes.
"""
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import yaml

from gsgn_fairseq.data.manifest import S2T_COLUMNS, UNITS_COLUMN, unit_view_column, write_tsv
from gsgn_fairseq.data.provenance import write_units_meta
from gsgn_fairseq.data.zip_store import write_npy_zip, zip_manifest

DEFAULT_WORDS = ("the", "a", "cat", "dog", "bird", "sees", "likes", "big")


def _write_dict(path: Path, sentences: Sequence[str]) -> None:
    counts = {}
    for s in sentences:
        for w in s.split():
            counts[w] = counts.get(w, 0) + 1
    with open(path, "w", encoding="utf-8") as f:
        for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"{w} {c}\n")


def make_tiny_multiview_data(
    out_dir,
    n_train: int = 16,
    n_valid: int = 4,
    num_units: int = 20,
    seed: int = 0,
    vocab_words: Optional[Sequence[str]] = None,
    unit_sets: Optional[Dict[str, int]] = None,
) -> Path:
    """Write the dataset under ``out_dir`` (created if needed) and return it as a Path.
    ``unit_sets`` adds further unit sets (name -> K), as ``gsgn-extract-units --name`` writes
    them; the default files are the same bytes with or without them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = list(vocab_words) if vocab_words is not None else list(DEFAULT_WORDS)
    if not words:
        raise ValueError("vocab_words must not be empty")
    if num_units < 1:
        raise ValueError(f"num_units must be positive, got {num_units}")
    rng = np.random.default_rng(seed)
    prototypes = 2.0 * rng.standard_normal((len(words), 80)).astype(np.float32)  # (V, 80)

    fbanks, units, rows, unit_words_of = [], [], {}, {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows[split] = []
        for i in range(n):
            uid = f"{split}_{i}"
            seq = rng.integers(len(words), size=int(rng.integers(2, 5)))
            blocks, frame_words = [], []
            for w in seq:
                n_frames = int(rng.integers(12, 21))
                blocks.append(prototypes[w] + 0.5 * rng.standard_normal((n_frames, 80)).astype(np.float32))
                frame_words += [int(w)] * n_frames
            fbank = np.concatenate(blocks).astype(np.float32)  # (T, 80)
            unit_words = np.array(frame_words[::2][: len(frame_words) // 2])  # (T // 2,), word at each 20 ms
            ids = (2 * unit_words + rng.integers(2, size=unit_words.shape)) % num_units
            noisy = rng.random(unit_words.shape) < 0.1
            ids[noisy] = rng.integers(num_units, size=int(noisy.sum()))
            unit_words_of[uid] = unit_words
            fbanks.append((uid, fbank))
            units.append((uid, ids.astype(np.int16)))
            src_text = " ".join(words[w] for w in seq)
            tgt_text = " ".join(words[w].upper() for w in reversed(seq))
            rows[split].append(
                {"id": uid, "n_frames": fbank.shape[0], "tgt_text": tgt_text, "speaker": "spk0", "src_text": src_text}
            )

    write_npy_zip(out / "fbank80.zip", fbanks)
    write_npy_zip(out / "units.zip", units)
    provenance = {"feature": "synthetic", "checkpoint_sha1": None, "layer": None, "km_model_sha1": None,
                  "n_clusters": num_units}
    write_units_meta(out / "units.zip", provenance)
    audio_refs, unit_refs = zip_manifest(out / "fbank80.zip"), zip_manifest(out / "units.zip")
    columns = S2T_COLUMNS + [UNITS_COLUMN]
    for s_index, (name, k) in enumerate(sorted((unit_sets or {}).items())):
        column = unit_view_column(name)
        set_rng = np.random.default_rng([seed, 1000 + s_index])  # the default files' draws stay as they were
        word_ids = set_rng.permutation(max(k, len(words)))[: len(words)] % k  # another clustering: a unit per word
        items = []
        for uid, unit_words in unit_words_of.items():
            ids = word_ids[unit_words].copy()
            noisy = set_rng.random(ids.shape) < 0.2
            ids[noisy] = set_rng.integers(k, size=int(noisy.sum()))
            items.append((uid, ids.astype(np.int16)))
        write_npy_zip(out / f"{column}.zip", items)
        write_units_meta(out / f"{column}.zip", dict(provenance, n_clusters=k, unit_set=name))
        refs = zip_manifest(out / f"{column}.zip")
        for split_rows in rows.values():
            for r in split_rows:
                r[column] = refs[r["id"]]
        columns.append(column)
    for split, split_rows in rows.items():
        for r in split_rows:
            r["audio"], r[UNITS_COLUMN] = audio_refs[r["id"]], unit_refs[r["id"]]
        write_tsv(out / f"{split}.tsv", split_rows, columns)

    all_rows = rows["train"] + rows["valid"]
    _write_dict(out / "dict.txt", [r["tgt_text"] for r in all_rows])
    _write_dict(out / "src_dict.txt", [r["src_text"] for r in all_rows])
    config = {
        "audio_root": str(out.resolve()),
        "input_channels": 1,
        "input_feat_per_channel": 80,
        "vocab_filename": "dict.txt",
        "src_vocab_filename": "src_dict.txt",
        "feature_transforms": {"*": ["utterance_cmvn"]},
    }
    with open(out / "config_st.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return out


def poison_fbank(data_dir, uid: str, value: float, frame: int = 0, dim: int = 0) -> None:
    """Set one FBank value of utterance ``uid`` (e.g. NaN) and rewrite fbank80.zip and the TSVs."""
    from gsgn_fairseq.data.manifest import read_tsv
    from gsgn_fairseq.data.zip_store import read_npy_ref

    data_dir = Path(data_dir)
    rows = {split: read_tsv(data_dir / f"{split}.tsv") for split in ("train", "valid")}
    items = []
    for split_rows in rows.values():
        for r in split_rows:
            x = read_npy_ref(data_dir, r["audio"])
            if r["id"] == uid:
                x = x.copy()
                x[frame, dim] = value
            items.append((r["id"], x))
    write_npy_zip(data_dir / "fbank80.zip", items)
    refs = zip_manifest(data_dir / "fbank80.zip")
    for split, split_rows in rows.items():
        for r in split_rows:
            r["audio"] = refs[r["id"]]
        write_tsv(data_dir / f"{split}.tsv", split_rows, S2T_COLUMNS + [UNITS_COLUMN])
