"""The real command-line tools refuse data that does not belong to the model: units made
another way (training resumed, fairseq-validate, fairseq-generate), NaN features, and
checkpoint averaging across different models."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_train_integration import BIN, K, USER_DIR, train
from tiny_s2t_data import make_tiny_multiview_data, poison_fbank

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("prov")
    data = make_tiny_multiview_data(base / "data", n_train=8, n_valid=3, num_units=K)
    train(data, base / "ckpt", "--fusion", "gsgn", max_epoch=1)
    return data, base / "ckpt"


def _run(tool, argv, timeout=900):
    cmd = [str(BIN / tool), *map(str, argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _copy_with(data, dest: Path, **provenance) -> Path:
    shutil.copytree(data, dest)
    meta = json.loads((dest / "units.json").read_text())
    meta.update(provenance)
    (dest / "units.json").write_text(json.dumps(meta))
    cfg = (dest / "config_st.yaml").read_text().replace(str(Path(data).resolve()), str(dest.resolve()))
    (dest / "config_st.yaml").write_text(cfg)
    return dest


def _validate(data, checkpoint):
    return _run("fairseq-validate", [
        data, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--path", checkpoint, "--valid-subset", "valid", "--max-tokens", "2000", "--num-workers", "0", "--cpu",
    ])


def _generate(data, checkpoint):
    return _run("fairseq-generate", [
        data, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--gen-subset", "valid", "--path", checkpoint, "--beam", "2", "--max-tokens", "2000",
        "--num-workers", "0", "--cpu",
    ])


def test_checkpoint_records_the_units_provenance(trained):
    import torch

    import gsgn_fairseq  # noqa: F401  (weights_only allow-list)

    data, ckpt = trained
    state = torch.load(ckpt / "checkpoint_last.pt", map_location="cpu")
    assert state["task_state"]["units_provenance"]["feature"] == "synthetic"
    assert state["task_state"]["units_provenance"]["n_clusters"] == K


def test_validate_generate_and_resume_refuse_units_of_another_kmeans_model(trained, tmp_path):
    data, ckpt = trained
    other = _copy_with(data, tmp_path / "other", km_model_sha1="f" * 40)
    rc, log = _validate(other, ckpt / "checkpoint_last.pt")
    assert rc != 0 and "km_model_sha1 is 'ffff" in log and "for the model" in log, log[-3000:]
    rc, log = _generate(other, ckpt / "checkpoint_last.pt")
    assert rc != 0 and "made differently from those the model was trained on" in log, log[-3000:]
    resume_dir = tmp_path / "resume"
    shutil.copytree(ckpt, resume_dir)
    with pytest.raises(AssertionError, match=r"km_model_sha1 is 'ffff"):
        train(other, resume_dir, "--fusion", "gsgn", max_epoch=2)
    rc, log = _validate(data, ckpt / "checkpoint_last.pt")  # the model's own data still passes
    assert rc == 0, log[-3000:]


def test_validate_and_generate_refuse_a_units_json_copied_from_other_units(trained, tmp_path):
    data, ckpt = trained
    other = make_tiny_multiview_data(tmp_path / "other", n_train=8, n_valid=3, num_units=K, seed=1)
    copied = _copy_with(data, tmp_path / "copied")
    shutil.copy(other / "units.json", copied / "units.json")  # same k-means record, other units
    rc, log = _validate(copied, ckpt / "checkpoint_last.pt")
    assert rc != 0 and "units.json does not describe" in log and "units_fingerprint is" in log, log[-3000:]
    rc, log = _generate(copied, ckpt / "checkpoint_last.pt")
    assert rc != 0 and "units.json does not describe" in log, log[-3000:]


def test_validate_stops_on_nan_features_naming_the_utterance(trained, tmp_path):
    data, ckpt = trained
    bad = _copy_with(data, tmp_path / "nan")
    poison_fbank(bad, "valid_1", np.inf)
    rc, log = _validate(bad, ckpt / "checkpoint_last.pt")
    assert rc != 0 and "utterance valid_1: its FBank features hold NaN or Inf" in log, log[-3000:]


def test_average_checkpoints_refuses_different_gate_activations(trained, tmp_path):
    data, ckpt = trained
    train(data, tmp_path / "sigmoid", "--fusion", "gsgn", "--gate-activation", "sigmoid", max_epoch=2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(ckpt / "checkpoint1.pt", mixed / "checkpoint1.pt")
    shutil.copy(tmp_path / "sigmoid" / "checkpoint2.pt", mixed / "checkpoint2.pt")  # another update count
    proc = subprocess.run([str(BIN / "gsgn-average-checkpoints"), "--inputs", mixed,
                           "--num-best-checkpoints", "2", "--output", tmp_path / "avg.pt"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0 and "not the same model" in proc.stderr, proc.stderr[-3000:]
    assert "model.gate_activation is" in proc.stderr and "'sigmoid'" in proc.stderr and "'2sigmoid'" in proc.stderr, proc.stderr[-1500:]
    assert not (tmp_path / "avg.pt").exists()
