"""End to end: real ``fairseq-train`` / ``fairseq-generate`` / ``fairseq-validate`` runs with
``--user-dir gsgn_fairseq`` on the tiny two-view dataset, and a resumed run that must land in
the right multi-stage dropout stage."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_s2t_data import make_tiny_multiview_data

BIN = Path(sys.executable).parent
USER_DIR = str(Path(__file__).resolve().parents[1] / "gsgn_fairseq")
K = 20
N_VALID = 4
GATE_CRITERION = "label_smoothed_cross_entropy_with_gate"


def _gate_criterion_registered() -> bool:
    import gsgn_fairseq  # noqa: F401
    from fairseq.criterions import CRITERION_REGISTRY

    return GATE_CRITERION in CRITERION_REGISTRY


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_multiview_data(tmp_path_factory.mktemp("data"), n_train=16, n_valid=N_VALID, num_units=K)


def _run(tool, argv, timeout=900):
    cmd = [str(BIN / tool), *map(str, argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{log[-4000:]}"
    return log


def train_argv(data_dir, save_dir, *extra, max_epoch=2, criterion="label_smoothed_cross_entropy"):
    return [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--num-units", K, "--arch", "s2t_gsgn_tiny", "--criterion", criterion, "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
        "--max-tokens", "600", "--required-batch-size-multiple", "1", "--max-epoch", max_epoch,
        "--num-workers", "0", "--save-dir", save_dir, "--no-progress-bar", "--log-interval", "1", "--seed", "1",
        "--cpu", "--train-subset", "train", "--valid-subset", "valid", *extra,
    ]


def train(data_dir, save_dir, *extra, max_epoch=2, criterion="label_smoothed_cross_entropy"):
    return _run("fairseq-train", train_argv(data_dir, save_dir, *extra, max_epoch=max_epoch, criterion=criterion))


def generate(data_dir, checkpoint):
    log = _run("fairseq-generate", [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--gen-subset", "valid", "--path", checkpoint, "--beam", "2", "--max-tokens", "2000", "--scoring", "sacrebleu",
        "--num-workers", "0", "--cpu",
    ])
    hypotheses = re.findall(r"^H-(\d+)\t", log, flags=re.M)
    assert sorted(map(int, hypotheses)) == list(range(N_VALID)), log[-2000:]  # every utterance, once
    assert re.search(r"Generate valid with beam=2: BLEU = [\d.]+", log), log[-2000:]
    return log


CASES = {
    "fbank": ["--fusion", "fbank"],
    "unit": ["--fusion", "unit"],
    "gsgn-msd": ["--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "1:0.3,0.2;2:0.2,0.3"],
    "concat": ["--fusion", "concat"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_train_and_generate(data_dir, tmp_path, case):
    criterion = "label_smoothed_cross_entropy"
    if case == "gsgn-msd" and _gate_criterion_registered():
        criterion = GATE_CRITERION
    log = train(data_dir, tmp_path / "ckpt", *CASES[case], criterion=criterion)
    assert "| INFO | train | epoch 002 |" in log, log[-2000:]
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").is_file()
    generate(data_dir, tmp_path / "ckpt" / "checkpoint_last.pt")
    if case == "gsgn-msd":
        assert "multi-stage dropout: epoch 2: stage 2/2" in log
        log = _run("fairseq-validate", [
            data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
            "--path", tmp_path / "ckpt" / "checkpoint_last.pt", "--valid-subset", "valid", "--max-tokens", "2000",
            "--num-workers", "0", "--cpu",
        ])
        assert re.search(r"valid on 'valid' subset \| loss [\d.]+", log), log[-2000:]


def test_resume_lands_in_the_right_stage(data_dir, tmp_path):
    args = ["--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "1:0.3,0.0;2:0.0,0.5"]
    first = train(data_dir, tmp_path / "ckpt", *args, max_epoch=1)
    assert "multi-stage dropout: epoch 1: stage 1/2" in first
    assert "begin training epoch 2" not in first
    resumed = train(data_dir, tmp_path / "ckpt", *args, max_epoch=2)
    # fairseq names the epoch it resumes with
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 2 @ \d+ updates\)", resumed), resumed[-2000:]
    assert "multi-stage dropout: epoch 2: stage 2/2 (from epoch 2: delta_fbank=0.0, delta_unit=0.5" in resumed
    assert "multi-stage dropout: epoch 1:" not in resumed  # no epoch was redone


def test_noise_range_is_measured_on_a_trained_unit_view_and_drives_noise_replace(data_dir, tmp_path):
    import json

    import torch

    train(data_dir, tmp_path / "gsgn", "--fusion", "gsgn", max_epoch=1)
    out = tmp_path / "range.json"
    proc = subprocess.run([str(BIN / "gsgn-measure-unit-range"),
                           "--path", str(tmp_path / "gsgn" / "checkpoint_last.pt"), "--data", str(data_dir),
                           "--subset", "train", "--cpu", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(out.read_text())
    assert measured["utterances"] == 16 and measured["min"] < 0 < measured["max"]
    assert proc.stdout.strip() == measured["noise_range"]
    # by hand: the unit front end of the checkpoint over every train utterance
    import gsgn_fairseq  # noqa: F401
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(tmp_path / "gsgn" / "checkpoint_last.pt")], arg_overrides={"data": str(data_dir)})
    task.load_dataset("train")
    ds = task.dataset("train")
    lo, hi = float("inf"), float("-inf")
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            x, _ = models[0].encoder.frontend.unit_frontend(item.units[None], torch.tensor([item.units.numel()]))
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    assert measured["min"] == pytest.approx(lo, abs=1e-5) and measured["max"] == pytest.approx(hi, abs=1e-5)
    log = train(data_dir, tmp_path / "noise", "--fusion", "noise-replace", f"--noise-range={measured['noise_range']}",
                max_epoch=1)
    assert "| INFO | train | epoch 001 |" in log
    state = torch.load(tmp_path / "noise" / "checkpoint_last.pt", weights_only=True)
    low, high = state["model"]["encoder.frontend.noise_range"].tolist()
    assert (low, high) == pytest.approx((measured["min"], measured["max"]), rel=1e-5)


@pytest.mark.parametrize("criterion", [GATE_CRITERION, "label_smoothed_cross_entropy"])
def test_ctc_head_without_a_ctc_loss_is_refused(data_dir, tmp_path, criterion):
    """--use-ctc with --ctc-weight 0 (or a criterion without CTC) leaves the head's parameters
    without gradients, which c10d DDP refuses: the first train step names both flags."""
    extra = ["--ctc-weight", "0"] if criterion == GATE_CRITERION else []
    cmd = [str(BIN / "fairseq-train"), *map(str, train_argv(data_dir, tmp_path / "ckpt", "--fusion", "gsgn", "--use-ctc",
                                                             *extra, max_epoch=1, criterion=criterion))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    assert "--use-ctc builds a CTC head that only a CTC loss trains" in proc.stderr, proc.stderr[-2000:]
    assert ("--ctc-weight 0.0" if extra else "has no --ctc-weight") in proc.stderr
