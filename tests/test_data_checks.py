"""Bad data and mismatched views: each is an error that names the file, the utterance and
what to do, before fairseq sees it (data/manifest_checks.py, data/provenance.py, the task)."""
import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from gsgn_fairseq.data.manifest import S2T_COLUMNS, UNITS_COLUMN, read_tsv, write_tsv
from gsgn_fairseq.data.mustc import DataError, read_wav
from gsgn_fairseq.data.zip_store import split_ref, zip_fingerprint
from test_task import K, setup
from tiny_s2t_data import make_tiny_multiview_data, poison_fbank

COLUMNS = S2T_COLUMNS + [UNITS_COLUMN]


@pytest.fixture
def data_dir(tmp_path):
    return make_tiny_multiview_data(tmp_path / "tiny", n_train=6, n_valid=3, num_units=K)


def _load(data_dir, split="valid", *extra):
    task, _ = setup(data_dir, *extra)
    task.load_dataset(split)
    return task, task.datasets[split]


def _rewrite_lines(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")


# ----------------------------------------------------------------- the manifest


def test_tsv_without_n_frames_names_the_column(data_dir):
    rows = read_tsv(data_dir / "valid.tsv")
    write_tsv(data_dir / "valid.tsv", rows, [c for c in COLUMNS if c != "n_frames"])
    with pytest.raises(DataError, match=r"valid\.tsv: no 'n_frames' column"):
        _load(data_dir)


def test_row_missing_its_last_field_names_line_and_utterance(data_dir):
    _rewrite_lines(data_dir / "valid.tsv", lambda ls: ls[:2] + [ls[2].rsplit("\t", 1)[0]] + ls[3:])
    with pytest.raises(DataError, match=r"valid\.tsv:3: utterance valid_1: the row ends before column\(s\) units"):
        _load(data_dir)


def test_non_integer_n_frames_names_line_and_utterance(data_dir):
    rows = read_tsv(data_dir / "valid.tsv")
    rows[0]["n_frames"] = "abc"
    write_tsv(data_dir / "valid.tsv", rows, COLUMNS)
    with pytest.raises(DataError, match=r"valid\.tsv:2: utterance valid_0: n_frames must be a positive integer.*'abc'"):
        _load(data_dir)


def test_false_n_frames_is_caught_against_the_fbank_header(data_dir):
    rows = read_tsv(data_dir / "valid.tsv")
    true_frames = rows[1]["n_frames"]
    rows[1]["n_frames"] = "5"  # a valid integer, but not the utterance's length
    write_tsv(data_dir / "valid.tsv", rows, COLUMNS)
    with pytest.raises(DataError, match=rf"valid\.tsv:3: utterance valid_1: n_frames is 5 but its FBank features "
                                        rf"\(fbank80\.zip:\d+:\d+\) have {true_frames} frames"):
        _load(data_dir)


def test_tsv_with_a_byte_order_mark_is_read(data_dir):
    text = (data_dir / "valid.tsv").read_text(encoding="utf-8")
    (data_dir / "valid.tsv").write_text("\ufeff" + text, encoding="utf-8")
    _, ds = _load(data_dir)
    assert ds.ids == [r["id"] for r in read_tsv(data_dir / "valid.tsv")] and len(ds) == 3
    ds[0]


def test_yaml_list_as_data_config_names_the_file(data_dir):
    (data_dir / "config_st.yaml").write_text("- audio_root\n- vocab_filename\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"config_st\.yaml: the data config must be a YAML mapping.*list"):
        setup(data_dir, build_model=False)


# ----------------------------------------------------------------- zip references


def test_swapped_units_references_are_caught_by_id(data_dir):
    rows = read_tsv(data_dir / "valid.tsv")
    rows[0]["units"], rows[1]["units"] = rows[1]["units"], rows[0]["units"]
    write_tsv(data_dir / "valid.tsv", rows, COLUMNS)
    with pytest.raises(DataError, match=r"valid\.tsv:2: utterance valid_0: units .* points at valid_1\.npy .*not valid_0\.npy"):
        _load(data_dir)


def test_swapped_fbank_references_are_caught_by_id(data_dir):
    rows = read_tsv(data_dir / "valid.tsv")
    rows[1]["audio"], rows[2]["audio"] = rows[2]["audio"], rows[1]["audio"]
    write_tsv(data_dir / "valid.tsv", rows, COLUMNS)
    with pytest.raises(DataError, match=r"utterance valid_1: audio .* points at valid_2\.npy"):
        _load(data_dir)


def test_truncated_units_zip_names_the_file(data_dir):
    blob = (data_dir / "units.zip").read_bytes()
    (data_dir / "units.zip").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"units\.zip: damaged or truncated zip"):
        _load(data_dir)


def test_in_range_garbage_in_a_units_entry_fails_its_crc(data_dir):
    ref = read_tsv(data_dir / "valid.tsv")[1]["units"]
    _, offset, length = split_ref(ref)
    blob = bytearray((data_dir / "units.zip").read_bytes())
    body = offset + length - 4  # the last unit (int16): an in-range id that differs
    old = int.from_bytes(blob[body : body + 2], "little")
    blob[body : body + 2] = ((old + 1) % K).to_bytes(2, "little")
    (data_dir / "units.zip").write_bytes(bytes(blob))
    _, ds = _load(data_dir)
    ds[0]  # the other utterances are intact
    with pytest.raises(DataError, match=r"utterance valid_1: .*units\.zip:\d+:\d+: CRC mismatch"):
        ds[1]


def test_a_model_that_reads_no_units_reads_none(data_dir):
    """FBank-only: no unit I/O (a damaged units entry goes unread, no src_units in the batch);
    a GSGN model built by the same task (an ensemble) brings the units, and their checks, back."""
    ref = read_tsv(data_dir / "valid.tsv")[1]["units"]
    _, offset, length = split_ref(ref)
    blob = bytearray((data_dir / "units.zip").read_bytes())
    blob[offset + length - 4] ^= 0x01  # in-range garbage: only the CRC check would see it
    (data_dir / "units.zip").write_bytes(bytes(blob))
    task, args = setup(data_dir, "--fusion", "fbank")
    task.load_dataset("valid")
    ds = task.datasets["valid"]
    assert ds[1].units is None
    batch = ds.collater([ds[0], ds[1]])
    assert "src_units" not in batch["net_input"] and batch["net_input"]["src_tokens"].size(0) == 2
    args.fusion = "gsgn"
    task.build_model(args)
    assert ds[0].units is not None
    assert "src_units" in ds.collater([ds[0]])["net_input"]
    with pytest.raises(DataError, match=r"utterance valid_1: .*units\.zip:\d+:\d+: CRC mismatch"):
        ds[1]


def test_finite_damage_in_an_fbank_entry_fails_its_crc(data_dir):
    ref = read_tsv(data_dir / "valid.tsv")[1]["audio"]
    _, offset, length = split_ref(ref)
    blob = bytearray((data_dir / "fbank80.zip").read_bytes())
    blob[offset + length - 2] ^= 0x01  # a low bit of the last float: still finite
    (data_dir / "fbank80.zip").write_bytes(bytes(blob))
    _, ds = _load(data_dir)
    ds[0]
    with pytest.raises(DataError, match=r"utterance valid_1: .*fbank80\.zip:\d+:\d+: CRC mismatch"):
        ds[1]


# ----------------------------------------------------------------- features and lengths


def test_nan_fbank_names_the_utterance(data_dir):
    poison_fbank(data_dir, "valid_2", np.nan, frame=3, dim=5)
    _, ds = _load(data_dir)
    ds[0]
    with pytest.raises(DataError, match=r"utterance valid_2: its FBank features hold NaN or Inf \(.*fbank80\.zip:\d+:\d+\)"):
        ds[2]


def test_infinite_fbank_names_the_utterance(data_dir):
    _, ds = _load(data_dir)
    source = torch.zeros(20, 80)
    source[7, 3] = -float("inf")
    with pytest.raises(DataError, match=r"utterance valid_1: its FBank features hold NaN or Inf"):
        ds.check_finite(1, source)


def test_large_finite_fbank_whose_sum_overflows_is_accepted(data_dir):
    # the check's fast path (a finite sum) fails here, and the element-wise check must decide
    _, ds = _load(data_dir)
    source = torch.full((20, 80), 3.0e38)
    assert not torch.isfinite(source.sum())
    ds.check_finite(1, source)


def _batches(task, split, max_tokens):
    return task.get_batch_iterator(task.dataset(split), max_tokens=max_tokens, max_positions=(10 ** 6, 10 ** 6))


def test_utterance_longer_than_max_tokens_names_the_flag_of_the_tool(data_dir):
    task, ds = _load(data_dir)
    longest = int(np.argmax(ds.n_frames))
    limit = int(ds.n_frames[longest]) - 1
    # fairseq-validate and fairseq-generate batch by --max-tokens
    with pytest.raises(DataError, match=rf"longer than --max-tokens {limit} .*{ds.utt_id(longest)} "):
        _batches(task, "valid", limit)
    # fairseq-train: once the training batches are asked for, validation batches by --max-tokens-valid
    task.load_dataset("train")
    _batches(task, "train", 10 ** 6)
    with pytest.raises(DataError, match=rf"longer than --max-tokens-valid {limit} .*{ds.utt_id(longest)} "):
        _batches(task, "valid", limit)
    with pytest.raises(DataError, match=r"longer than --max-tokens 1 "):
        _batches(task, "train", 1)


def test_msd_schedule_without_multi_stage_dropout_is_refused(data_dir):
    with pytest.raises(ValueError, match=r"--msd-schedule without --multi-stage-dropout would be ignored"):
        setup(data_dir, "--msd-schedule", "1:0.5,0.5")
    with pytest.raises(ValueError, match=r"--msd-granularity without --multi-stage-dropout"):
        setup(data_dir, "--msd-granularity", "batch")
    setup(data_dir, "--msd-schedule", "1:0.5,0.5", "--multi-stage-dropout")  # fine with it
    setup(data_dir, "--msd-schedule", "1:0.5,0.5", "--inference-branch", "sample")  # its last stage is used


def test_stereo_audio_is_downmixed_with_a_warning(tmp_path):
    path = tmp_path / "talk.wav"
    sf.write(path, np.stack([np.full(1600, 0.2), np.full(1600, 0.4)], axis=1).astype(np.float32), 16000)
    with pytest.warns(UserWarning, match=r"talk\.wav: 2 channels, averaging them to mono"):
        audio = read_wav(path)
    assert audio.shape == (1600,) and np.allclose(audio, 0.3, atol=1e-4)
    with pytest.raises(DataError, match="2 channels, expected mono"):
        read_wav(path, strict=True)


# ----------------------------------------------------------------- units provenance


def _set_provenance(data_dir, **changes) -> None:
    meta = json.loads((data_dir / "units.json").read_text())
    meta.update(changes)
    (data_dir / "units.json").write_text(json.dumps(meta))


def test_task_records_the_units_provenance_in_its_state(data_dir):
    task, _ = _load(data_dir, "train")
    state = task.state_dict()
    assert state["units_provenance"] == {"feature": "synthetic", "checkpoint_sha1": None, "layer": None,
                                         "km_model_sha1": None, "n_clusters": K, "checkpoint": None,
                                         "km_model": None, "units_zip": "units.zip",
                                         "units_fingerprint": zip_fingerprint(data_dir / "units.zip")}
    torch.save(state, data_dir / "state.pt")  # plain types: readable under weights_only
    assert torch.load(data_dir / "state.pt", weights_only=True) == state


def test_units_of_another_kmeans_model_are_refused_naming_both(data_dir):
    task, _ = _load(data_dir, "train")
    state = task.state_dict()  # as saved with the model
    _set_provenance(data_dir, km_model_sha1="0" * 40)
    fresh, _ = setup(data_dir)
    fresh.load_state_dict(state)  # the checkpoint first (fairseq-generate's order) ...
    with pytest.raises(DataError, match=r"km_model_sha1 is '0000.*' in the data but None for the model"):
        fresh.load_dataset("valid")
    other, _ = setup(data_dir)
    other.load_dataset("valid")  # ... or the data first (fairseq-train resuming)
    with pytest.raises(DataError, match=r"made differently from those the model was trained on"):
        other.load_state_dict(state)


def test_units_json_with_a_non_integer_k_names_the_file(data_dir):
    _set_provenance(data_dir, n_clusters=str(K))
    with pytest.raises(DataError, match=rf"units\.json: n_clusters must be a positive integer .*got '{K}' \(str\)"):
        _load(data_dir)


def test_a_units_json_copied_from_other_units_is_refused(data_dir, tmp_path):
    other = make_tiny_multiview_data(tmp_path / "other", n_train=6, n_valid=3, num_units=K, seed=1)
    (data_dir / "units.json").write_bytes((other / "units.json").read_bytes())  # same K, same "k-means"
    with pytest.raises(DataError, match=rf"units\.json does not describe .*units\.zip: its units_fingerprint is "
                                        rf"{zip_fingerprint(other / 'units.zip')}, the zip's is "
                                        rf"{zip_fingerprint(data_dir / 'units.zip')}"):
        _load(data_dir)


def test_units_json_without_a_fingerprint_is_read_with_a_warning(data_dir, caplog):
    meta = json.loads((data_dir / "units.json").read_text())
    del meta["units_fingerprint"]  # written by an older extract_units
    (data_dir / "units.json").write_text(json.dumps(meta))
    task, _ = _load(data_dir)
    assert task.data_units_provenance[0]["n_clusters"] == K
    assert "units.json: no units_fingerprint (written by an older extract_units)" in caplog.text


def test_require_provenance_refuses_missing_records(data_dir, caplog):
    task, _ = _load(data_dir, "train")
    state = task.state_dict()
    (data_dir / "units.json").unlink()
    _load(data_dir)  # by default: a warning
    assert "no units.json beside the units (written for their zip): their provenance cannot be checked" in caplog.text
    with pytest.raises(DataError, match=r"valid\.tsv .*no units\.json beside the units \(written for their zip\), "
                                        r"and --require-provenance"):
        _load(data_dir, "valid", "--require-provenance")
    strict, _ = setup(data_dir, "--require-provenance")
    with pytest.raises(DataError, match="checkpoint records no units provenance .*--require-provenance"):
        strict.load_state_dict(dict(state, units_provenance=None))


def test_units_k_must_match_num_units(data_dir):
    _set_provenance(data_dir, n_clusters=K + 5)
    with pytest.raises(DataError, match=rf"K = {K + 5} clusters but --num-units is {K}; pass --num-units {K + 5}"):
        _load(data_dir)
