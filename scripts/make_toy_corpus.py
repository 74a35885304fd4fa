#!/usr/bin/env python3
"""Write the toy speech-translation corpus in the MuST-C release layout.

    OUT/en-XX/data/{train,dev,tst-COMMON}/wav/talk_{split}_{k:04d}.wav
    OUT/en-XX/data/{split}/txt/{split}.yaml      - {duration: 3.52, offset: 16.09,
                                                   speaker_id: spk_03, wav: talk_train_0007.wav}
    OUT/en-XX/data/{split}/txt/{split}.en, {split}.XX   (line-aligned with the yaml)

for XX in de, fr, es. All pairs share the same English sentences, talks and audio (the
wavs are hard links when the file system allows); they differ only in the target text.

Text: English sentences from a small grammar (44 nouns with genders, 25 adjectives,
20 transitive and 4 clause-taking verbs, numbers two..ten, 10 prepositions, subordinate
clauses with because/when/while/if, "that"-complements), 4-14 words each, with rule-based
German, French and Spanish translations that need case, agreement and reordering (see
toy_grammar/grammar.py). Each split has distinct sentences and no sentence occurs in two
splits; the dev and test sentences do not depend on --n-train.

Speech: espeak-ng English voices (8 accents x 11 variants), a speaker being a
(voice, pitch) pair with its own speaking rate (130-190 words/min, varying by utterance).
40 speakers; dev and tst-COMMON talks are given by speakers unseen in train. A talk is
10-30 utterances of one speaker separated by 0.3-1.2 s pauses, resampled to 16 kHz mono
16-bit PCM, with light white noise (20-35 dB SNR). Segments are on a 10 ms grid and
contain the whole utterance with 50 ms margins.

The same --seed gives the same text, segmentation and audio bytes whatever --jobs; a
finished corpus is stamped with OUT/.toy_corpus.json and a rerun with the same flags
returns at once.

    python scripts/make_toy_corpus.py --out data/toy [--pairs de,fr,es] [--n-train 4000]
"""
import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


from toy_grammar import generate_sentences, translate  # beside this script

from gsgn_fairseq.fileio import write_json_atomic

CORPUS_VERSION = 1               # bump whenever the generated data change (invalidates stamps)
PAIRS = ("de", "fr", "es")
SPLITS = ("train", "dev", "tst-COMMON")
STAMP = ".toy_corpus.json"
SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
FRAME = SAMPLE_RATE // 100        # segment boundaries lie on a 10 ms grid
MARGIN = 5 * FRAME                # 50 ms around each utterance inside its segment

ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5")
N_SPEAKERS = 40
HELD_OUT_SPEAKERS = 4             # per dev / test split, unseen in train
TALK_SIZE = (10, 30)              # utterances per talk


# ----------------------------------------------------------------------------- planning

def make_speakers(seed: int) -> list:
    """N_SPEAKERS dicts with id, voice, pitch (30-70) and rate (words/min)."""
    rng = np.random.default_rng([seed, 1])
    voices = [a + v for a in ACCENTS for v in VARIANTS]
    picks = rng.choice(len(voices), size=N_SPEAKERS, replace=False)
    return [dict(id=f"spk_{i:02d}", voice=voices[p], pitch=int(rng.integers(30, 71)),
                 rate=int(rng.integers(145, 176)))
            for i, p in enumerate(picks)]


def talk_sizes(n: int, rng: np.random.Generator) -> list:
    """Split n utterances into talks of TALK_SIZE[0]..TALK_SIZE[1] (fewer if n is small)."""
    k = max(1, round(n / 20))
    sizes = [n // k + (i < n % k) for i in range(k)]
    lo, hi = TALK_SIZE
    for _ in range(4 * k):  # move utterances between random talks to vary the sizes
        i, j = rng.integers(k, size=2)
        step = int(rng.integers(1, 6))
        if i != j and sizes[i] - step >= lo and sizes[j] + step <= hi:
            sizes[i] -= step
            sizes[j] += step
    return sizes


def split_sentences(n_train: int, n_dev: int, n_test: int, seed: int) -> dict:
    """Distinct sentences per split; test and dev are drawn first so they do not depend
    on n_train."""
    test = generate_sentences(n_test, seed, "tst-COMMON")
    dev = generate_sentences(n_dev, seed, "dev", exclude={translate(s, "en") for s in test})
    taken = {translate(s, "en") for s in test + dev}
    return {"train": generate_sentences(n_train, seed, "train", exclude=taken),
            "dev": dev, "tst-COMMON": test}


def plan_talks(sentences: dict, seed: int) -> list:
    """One task per talk: speaker, utterance texts and rates, pauses and noise."""
    speakers = make_speakers(seed)
    held_out = {"tst-COMMON": speakers[:HELD_OUT_SPEAKERS],
                "dev": speakers[HELD_OUT_SPEAKERS:2 * HELD_OUT_SPEAKERS],
                "train": speakers[2 * HELD_OUT_SPEAKERS:]}
    talks = []
    for s_idx, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, 2, s_idx])
        pool = held_out[split]
        todo = list(sentences[split])
        for k, size in enumerate(talk_sizes(len(todo), rng)):
            spk = pool[k % len(pool)]
            utts, todo = todo[:size], todo[size:]
            rates = np.clip(spk["rate"] + rng.integers(-15, 16, size=size), 130, 190)
            talks.append(dict(
                split=split, name=f"talk_{split}_{k:04d}", speaker=spk,
                texts=[translate(s, "en") for s in utts], sentences=utts,
                rates=[int(r) for r in rates],
                pauses=[int(p) for p in rng.integers(30, 121, size=size + 1)],  # in FRAMEs
                snr_db=float(rng.uniform(20, 35)), noise_seed=[seed, 3, s_idx, k]))
    return talks


# ----------------------------------------------------------------------------- audio

class EspeakNotFound(RuntimeError):
    pass


def check_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        raise EspeakNotFound("espeak-ng not found: the toy corpus needs it for its voices; "
                             "run scripts/setup.sh (it installs the Debian package espeak-ng)")


def synthesize(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """espeak-ng speech trimmed of leading/trailing silence, float32 at 16 kHz."""
    import soundfile as sf
    import torch
    import torchaudio

    cmd = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="int16")
    assert sr == ESPEAK_RATE, (voice, sr)
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 64)  # trim on integers: exact
    if len(loud) == 0:
        raise RuntimeError(f"espeak-ng gave silence for {text!r} with voice {voice}")
    x = x[loud[0]:loud[-1] + 1].astype(np.float32) / 32768
    y = torchaudio.functional.resample(torch.from_numpy(x), ESPEAK_RATE, SAMPLE_RATE)
    return y.numpy()


def render_talk(task: dict, wav_paths: list) -> list:
    """Synthesize a talk, write it to wav_paths[0], link the others to it; returns the
    segments as (offset, duration) in FRAMEs."""
    import soundfile as sf

    spk = task["speaker"]
    speech = [synthesize(t, spk["voice"], r, spk["pitch"])
              for t, r in zip(task["texts"], task["rates"])]
    seg_frames = [math.ceil((len(x) + 2 * MARGIN) / FRAME) for x in speech]
    pauses = task["pauses"]
    total = sum(seg_frames) + sum(pauses)
    audio = np.zeros(total * FRAME, dtype=np.float32)
    segments, pos = [], pauses[0]
    for x, n, pause in zip(speech, seg_frames, pauses[1:]):
        start = pos * FRAME + MARGIN
        audio[start:start + len(x)] = x
        segments.append((pos, n))
        pos += n + pause
    rms = math.sqrt(float(np.mean(np.concatenate(speech) ** 2)))
    noise = np.random.default_rng(task["noise_seed"]).standard_normal(len(audio), np.float32)
    audio += noise * np.float32(rms * 10 ** (-task["snr_db"] / 20))
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)

    first, *others = [Path(p) for p in wav_paths]
    first.unlink(missing_ok=True)  # never write through a hard link of an older corpus
    sf.write(first, pcm, SAMPLE_RATE, subtype="PCM_16")
    for p in others:
        p.unlink(missing_ok=True)
        try:
            os.link(first, p)
        except OSError:
            shutil.copyfile(first, p)
    return segments


def _worker_init() -> None:
    import torch
    torch.set_num_threads(1)


def _render_job(job):
    return render_talk(*job)


# ----------------------------------------------------------------------------- corpus

def _flags(pairs, n_train, n_dev, n_test, seed) -> dict:
    return dict(version=CORPUS_VERSION, pairs=sorted(pairs), n_train=n_train, n_dev=n_dev,
                n_test=n_test, seed=seed)


def _read_stamp(out: Path):
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(stamp, flags: dict, out: Path) -> bool:
    if not stamp or not set(flags["pairs"]) <= set(stamp.get("pairs", [])):
        return False
    if any(stamp.get(k) != v for k, v in flags.items() if k != "pairs"):
        return False
    return all((out / f"en-{p}/data/{s}/txt/{s}.yaml").is_file()
               for p in flags["pairs"] for s in SPLITS)


def _yaml_line(offset: int, duration: int, speaker: str, wav: str) -> str:
    return (f"- {{duration: {duration / 100:.2f}, offset: {offset / 100:.2f}, "
            f"speaker_id: {speaker}, wav: {wav}}}\n")


def make_toy_corpus(out, pairs=PAIRS, n_train: int = 4000, n_dev: int = 200,
                    n_test: int = 200, seed: int = 1, jobs=None) -> dict:
    """Write the corpus under `out` (see the module docstring); returns the summary."""
    out = Path(out)
    pairs = list(dict.fromkeys(pairs))
    bad = [p for p in pairs if p not in PAIRS]
    if bad or not pairs:
        raise ValueError(f"pairs must be a non-empty subset of {PAIRS}, got {pairs}")
    if min(n_train, n_dev, n_test) < 1:
        raise ValueError(f"every split needs sentences: n_train={n_train}, n_dev={n_dev}, "
                         f"n_test={n_test}")
    flags = _flags(pairs, n_train, n_dev, n_test, seed)
    stamp = _read_stamp(out)
    if _is_complete(stamp, flags, out):
        print(f"toy corpus already complete at {out} ({out / STAMP})")
        _print_summary(out, stamp["summary"])
        return stamp["summary"]
    check_espeak()
    (out / STAMP).unlink(missing_ok=True)

    sentences = split_sentences(n_train, n_dev, n_test, seed)
    talks = plan_talks(sentences, seed)
    for pair in pairs:
        for split in SPLITS:
            wav_dir = out / f"en-{pair}/data/{split}/wav"
            wav_dir.mkdir(parents=True, exist_ok=True)
            (out / f"en-{pair}/data/{split}/txt").mkdir(exist_ok=True)
            for old in wav_dir.glob(f"talk_{split}_*.wav"):
                old.unlink()
    jobs_list = [(t, [out / f"en-{p}/data/{t['split']}/wav/{t['name']}.wav" for p in pairs])
                 for t in talks]
    segments = _run(jobs_list, jobs or len(os.sched_getaffinity(0)),
                    total=sum(len(t["texts"]) for t in talks))

    summary = {"splits": {}, "vocab": {}}
    for split in SPLITS:
        idx = [i for i, t in enumerate(talks) if t["split"] == split]
        lines = [(talks[i], seg, s) for i in idx
                 for seg, s in zip(segments[i], talks[i]["sentences"])]
        for pair in pairs:
            txt = out / f"en-{pair}/data/{split}/txt"
            with open(txt / f"{split}.yaml", "w") as y, open(txt / f"{split}.en", "w") as en, \
                    open(txt / f"{split}.{pair}", "w") as tgt:
                for talk, (offset, duration), s in lines:
                    y.write(_yaml_line(offset, duration, talk["speaker"]["id"],
                                       f"{talk['name']}.wav"))
                    en.write(translate(s, "en") + "\n")
                    tgt.write(translate(s, pair) + "\n")
        summary["splits"][split] = dict(
            utterances=len(lines), talks=len(idx),
            speech_hours=round(sum(seg[1] for _, seg, _ in lines) / 360_000, 3),
            speakers=len({talks[i]["speaker"]["id"] for i in idx}))
    for lang in ["en"] + pairs:
        words = {w for ss in sentences.values() for s in ss
                 for w in re.findall(r"\w+", translate(s, lang).lower())}
        summary["vocab"][lang] = len(words)

    write_json_atomic(out / STAMP, dict(flags, summary=summary), indent=1)
    _print_summary(out, summary)
    return summary


def _run(jobs_list: list, jobs: int, total: int) -> list:
    """render_talk over all talks, in a process pool when jobs > 1; results in order."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="utt", desc="synthesizing", file=sys.stderr)
    results = []
    if jobs <= 1:
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for job in jobs_list:
                results.append(render_talk(*job))
                bar.update(len(job[0]["texts"]))
        finally:
            torch.set_num_threads(threads)
    else:
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")  # no fork after torch has run
        with ctx.Pool(min(jobs, len(jobs_list)), initializer=_worker_init) as pool:
            for job, segs in zip(jobs_list, pool.imap(_render_job, jobs_list)):
                results.append(segs)
                bar.update(len(job[0]["texts"]))
    bar.close()
    return results


def _print_summary(out: Path, summary: dict) -> None:
    print(f"toy corpus at {out}")
    print(f"  {'split':<11} {'utts':>6} {'talks':>6} {'hours':>7} {'speakers':>9}")
    for split, s in summary["splits"].items():
        print(f"  {split:<11} {s['utterances']:>6} {s['talks']:>6} "
              f"{s['speech_hours']:>7.3f} {s['speakers']:>9}")
    print("  vocabulary (word types): "
          + ", ".join(f"{k} {v}" for k, v in summary["vocab"].items()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output root (gets en-XX/ folders)")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="target languages, e.g. de,fr")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-dev", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=200, help="tst-COMMON utterances")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    try:
        make_toy_corpus(args.out, [p for p in args.pairs.split(",") if p], args.n_train,
                        args.n_dev, args.n_test, args.seed, args.jobs)
    except EspeakNotFound as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
