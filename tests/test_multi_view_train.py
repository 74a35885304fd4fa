"""End to end with two unit sets (``--unit-views units,wavlm``): ``fairseq-train`` of GSGN +
multi-stage dropout with the gate criterion, per-view statistics in its log, ``fairseq-validate``
and ``fairseq-generate`` with the model's sets, and the second set's provenance checked on
resume, validation and generation."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_s2t_data import make_tiny_multiview_data

BIN = Path(sys.executable).parent
USER_DIR = str(Path(__file__).resolve().parents[1] / "gsgn_fairseq")
K, K2 = 20, 12


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_multiview_data(tmp_path_factory.mktemp("data"), n_train=16, n_valid=4, num_units=K,
                                    unit_sets={"wavlm": K2})


def _run(tool, argv, ok=True, timeout=900):
    proc = subprocess.run([str(BIN / tool), *map(str, argv)], capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, log[-4000:]
    return log


def train(data_dir, save_dir, *extra, max_epoch=1, ok=True):
    return _run("fairseq-train", [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--unit-views", "units,wavlm", "--num-units", f"{K},{K2}", "--arch", "s2t_gsgn_tiny", "--fusion", "gsgn",
        "--multi-stage-dropout", "--msd-schedule", "1:0.2,0.4", "--criterion", "label_smoothed_cross_entropy_with_gate",
        "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "4", "--max-tokens", "300", "--required-batch-size-multiple", "1", "--max-epoch",
        max_epoch, "--num-workers", "0", "--save-dir", save_dir, "--no-progress-bar", "--log-format", "json",
        "--log-interval", "1", "--seed", "1", "--cpu", "--train-subset", "train", "--valid-subset", "valid", *extra,
    ], ok=ok)


def _set_wavlm_record(data_dir, **changes):
    path = data_dir / "units_wavlm.json"
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    save = tmp_path_factory.mktemp("ckpt")
    return train(data_dir, save), save


def test_two_sets_train_with_per_view_statistics(trained):
    log, save = trained
    inner = [json.loads(m) for m in re.findall(r"\| train_inner \| (\{.*\})$", log, flags=re.M)]
    keys = set().union(*inner)
    for key in ("grad_cos_units", "grad_cos_wavlm", "conflict_pct_units", "conflict_pct_wavlm", "conflict_pct",
                "branch_unit_units_pct", "branch_unit_wavlm_pct", "branch_fbank_pct", "branch_fusion_pct"):
        assert key in keys, (key, sorted(keys))
    assert "grad_cos" not in keys and "branch_unit_pct" not in keys
    import torch

    state = torch.load(save / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["model"].unit_views == "units,wavlm" and state["cfg"]["model"].num_units == f"{K},{K2}"
    sets = state["task_state"]["unit_sets_provenance"]
    assert sets["wavlm"]["n_clusters"] == K2 and sets["units"]["n_clusters"] == K
    assert "encoder.frontend.more_unit_frontends.wavlm.embed_units.weight" in state["model"]


def test_generate_and_validate_read_every_set_of_the_model(data_dir, trained):
    _, save = trained
    # no --unit-views / --num-units: the checkpoint's are used
    log = _run("fairseq-generate", [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--gen-subset", "valid", "--path", save / "checkpoint_last.pt", "--beam", "2", "--max-tokens", "2000",
        "--model-overrides", "{'inference_branch': 'unit:wavlm'}", "--num-workers", "0", "--cpu"])
    assert sorted(map(int, re.findall(r"^H-(\d+)\t", log, flags=re.M))) == [0, 1, 2, 3], log[-2000:]
    _run("fairseq-validate", [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--path", save / "checkpoint_last.pt", "--valid-subset", "valid", "--max-tokens", "2000", "--num-workers",
        "0", "--cpu"])


def test_the_second_sets_provenance_is_checked_everywhere(data_dir, trained, tmp_path):
    _, save = trained
    other = Path(shutil.copytree(data_dir, tmp_path / "other"))
    _set_wavlm_record(other, km_model_sha1="f" * 40)
    expected = r"units of .* were made differently from those the model was trained on \(the model's checkpoint of " \
               r"unit set wavlm\): km_model_sha1"
    log = _run("fairseq-validate", [
        other, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--path", save / "checkpoint_last.pt", "--valid-subset", "valid", "--max-tokens", "2000", "--num-workers",
        "0", "--cpu"], ok=False)
    assert re.search(expected, log), log[-3000:]
    log = _run("fairseq-generate", [
        other, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--gen-subset", "valid", "--path", save / "checkpoint_last.pt", "--beam", "2", "--max-tokens", "2000",
        "--num-workers", "0", "--cpu"], ok=False)
    assert re.search(expected, log), log[-3000:]
    resumed = tmp_path / "resumed"
    shutil.copytree(save, resumed)
    log = train(other, resumed, max_epoch=2, ok=False)
    assert re.search(expected, log), log[-3000:]
