"""scripts/pack_corpus.py: Opus packing keeps every talk's sample count and the text files."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tiny_mustc import make_tiny_mustc

import pack_corpus  # noqa: E402


def test_pack_unpack_round_trip(tmp_path):
    src = make_tiny_mustc(tmp_path / "src", n_talks=1, segs_per_talk=2)
    n = pack_corpus.convert(src, tmp_path / "packed", pack=True, jobs=1)
    wavs = sorted(src.rglob("*.wav"))
    oggs = sorted((tmp_path / "packed").rglob("*.ogg"))
    assert len(oggs) == len(wavs) == 3 and n == 3 + 9  # 3 talks, 3 text files per split
    packed_size = sum(f.stat().st_size for f in oggs)
    assert packed_size < sum(f.stat().st_size for f in wavs) / 4
    pack_corpus.convert(tmp_path / "packed", tmp_path / "back", pack=False, jobs=1)
    for wav in wavs:
        rel = wav.relative_to(src)
        a, sr_a = sf.read(wav, dtype="int16")
        b, sr_b = sf.read(tmp_path / "back" / rel, dtype="int16")
        assert sr_a == sr_b == 16000 and len(a) == len(b)  # segment offsets stay valid
        # lossy, but the same signal: strongly correlated
        assert np.corrcoef(a.astype(float), b.astype(float))[0, 1] > 0.8
    for txt in src.rglob("txt/*"):
        assert (tmp_path / "back" / txt.relative_to(src)).read_bytes() == txt.read_bytes()


def test_pack_skips_finished_files(tmp_path):
    src = make_tiny_mustc(tmp_path / "src", n_talks=1, segs_per_talk=1, splits=("dev",))
    pack_corpus.convert(src, tmp_path / "packed", pack=True, jobs=1)
    ogg = next((tmp_path / "packed").rglob("*.ogg"))
    mtime = ogg.stat().st_mtime_ns
    pack_corpus.convert(src, tmp_path / "packed", pack=True, jobs=1)
    assert ogg.stat().st_mtime_ns == mtime


def test_pack_names_a_corpus_without_release_layout(tmp_path):
    (tmp_path / "src" / "en-de").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="en-de/data"):
        pack_corpus.convert(tmp_path / "src", tmp_path / "out", pack=True)


def test_pack_level_trades_size_for_fidelity(tmp_path):
    src = make_tiny_mustc(tmp_path / "src", n_talks=1, segs_per_talk=2, splits=("dev",))
    sizes = {}
    for level in (0.5, 0.97):
        pack_corpus.convert(src, tmp_path / f"p{level}", pack=True, jobs=1, level=level)
        sizes[level] = sum(f.stat().st_size for f in (tmp_path / f"p{level}").rglob("*.ogg"))
    assert sizes[0.5] > 2 * sizes[0.97]
    with pytest.raises(ValueError, match="--level must be in"):
        pack_corpus.convert(src, tmp_path / "bad", pack=True, level=1.5)
