"""The data path's shortcuts give what fairseq's code gives: the per-utterance numpy seeding
(data/numpy_seed.py), the ``.npy`` reader (zip_store.npy_from_bytes) and the once-encoded
targets (SpeechToTextMultiviewDataset.get_target)."""
import io

import numpy as np
import pytest
import torch
from fairseq.data import data_utils as fairseq_data_utils
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDataset

from gsgn_fairseq.data import numpy_seed as numpy_seed_module
from gsgn_fairseq.data.numpy_seed import NumpySeed
from gsgn_fairseq.data.zip_store import npy_from_bytes
from test_task import K, setup
from tiny_s2t_data import make_tiny_multiview_data


def _draws():
    return (np.random.randint(0, 1000, 7), np.random.uniform(size=3), np.random.normal(size=5),
            np.random.permutation(9))


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("keys", [(), (1,), (3, 17), (2, 1, 999)])
def test_numpy_seed_draws_what_fairseqs_draws_and_leaves_the_stream(keys):
    seed = NumpySeed()
    np.random.seed(11)
    np.random.uniform()  # somewhere in the stream
    state = np.random.get_state()
    with seed(5, *keys):
        ours = _draws()
    assert _same(state, np.random.get_state()), "the caller's np.random moved"
    with fairseq_data_utils.numpy_seed(5, *keys):
        theirs = _draws()
    assert _same(ours, theirs)
    with seed(6, *keys):  # another seed, other draws
        assert not _same(_draws(), theirs)
    with seed(None, *keys):  # no seed: the caller's stream, as fairseq's context
        free = np.random.randint(0, 1 << 30, 4)
    np.random.set_state(state)
    assert np.array_equal(free, np.random.randint(0, 1 << 30, 4))


def test_numpy_seed_without_set_bit_generator_uses_fairseqs(monkeypatch):
    monkeypatch.setattr(numpy_seed_module, "_SWAP", False)
    seed = NumpySeed()
    assert seed._bit_generator is None
    with seed(5, 2, 3):
        ours = _draws()
    with fairseq_data_utils.numpy_seed(5, 2, 3):
        assert _same(ours, _draws())


def _npy(array, version=None) -> bytearray:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array, allow_pickle=False)
    else:
        np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    return bytearray(buf.getvalue())


@pytest.mark.parametrize("array", [
    np.arange(17, dtype=np.int16),
    np.random.default_rng(0).standard_normal((31, 80)).astype(np.float32),
    np.zeros((0, 80), dtype=np.float32),
    np.array(3.5),
    np.arange(24, dtype=">i4").reshape(2, 3, 4),
    np.arange(6, dtype=np.uint8),
], ids=["units", "fbank", "empty", "0-d", "big-endian-3d", "uint8"])
def test_npy_from_bytes_reads_what_np_load_reads(array):
    data = _npy(array)
    out = npy_from_bytes(data)
    ref = np.load(io.BytesIO(bytes(data)))
    assert out.dtype == ref.dtype and out.shape == ref.shape and np.array_equal(out, ref)
    assert out.flags.writeable  # torch.from_numpy without a warning, transforms may write
    if array.size:
        assert np.shares_memory(out, np.frombuffer(data, np.uint8))  # no copy


@pytest.mark.parametrize("make", [
    lambda: _npy(np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))),
    lambda: _npy(np.arange(12, dtype=np.float32).reshape(3, 4), version=(2, 0)),
    lambda: _npy(np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")])),
], ids=["fortran", "version-2", "structured"])
def test_npy_from_bytes_reads_other_headers_as_np_load_does(make):
    data = make()
    out, ref = npy_from_bytes(data), np.load(io.BytesIO(bytes(data)))
    assert out.dtype == ref.dtype and np.array_equal(out, ref)
    if ref.flags.f_contiguous and ref.ndim > 1:
        assert out.flags.f_contiguous


def test_npy_from_bytes_refuses_a_truncated_array_as_np_load_does():
    data = _npy(np.arange(100, dtype=np.float32))[:-8]
    with pytest.raises(ValueError):
        np.load(io.BytesIO(bytes(data)))
    with pytest.raises(ValueError):
        npy_from_bytes(data)


@pytest.fixture
def data_dir(tmp_path):
    return make_tiny_multiview_data(tmp_path / "tiny", n_train=6, n_valid=3, num_units=K)


@pytest.mark.parametrize("tags", ["none", "prepend_tgt_lang_tag", "prepend_bos_and_append_tgt_lang_tag"])
def test_targets_are_fairseqs_and_encoded_once(data_dir, tags):
    task, _ = setup(data_dir)
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    if tags != "none":
        ds.cfg.config[tags] = True
        ds.tgt_dict.add_symbol(SpeechToTextDataset.LANG_TAG_TEMPLATE.format(ds.tgt_langs[0]))
    for i in range(len(ds)):
        theirs = SpeechToTextDataset.__getitem__(ds, i).target  # fairseq's own item code
        ours = ds[i].target
        assert torch.equal(ours, theirs), f"utterance {i}"
        if tags == "prepend_tgt_lang_tag":
            assert ours[0] == ds.tgt_dict.index(SpeechToTextDataset.LANG_TAG_TEMPLATE.format(ds.tgt_langs[i]))
        if tags == "prepend_bos_and_append_tgt_lang_tag":
            assert ours[0] == ds.tgt_dict.bos()
    calls = []
    encode = ds.tgt_dict.encode_line
    ds.tgt_dict.encode_line = lambda *a, **k: calls.append(1) or encode(*a, **k)
    again = [ds[i].target for i in range(len(ds))]
    assert not calls, "targets encoded again"
    assert all(torch.equal(a, SpeechToTextDataset.__getitem__(ds, i).target) for i, a in enumerate(again))
    ds._targets = None  # a sampling tokenizer: encoded at every read
    ds[0]
    assert calls
