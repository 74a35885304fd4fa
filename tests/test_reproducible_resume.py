"""A resumed run is bit-reproducible: SpecAugment draws come from (seed, epoch, utterance),
whatever the order of access, the batch or the data-loader worker, and a real
``fairseq-train`` stopped and resumed ends with the weights of one that ran through."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fairseq import options, tasks

import gsgn_fairseq  # noqa: F401  (registers the task; allow-lists checkpoint types)
from tiny_s2t_data import make_tiny_multiview_data

K = 20
BIN = Path(sys.executable).parent
USER_DIR = str(Path(__file__).resolve().parents[1] / "gsgn_fairseq")
# scripts/prep_mustc.py's policy (LB) with time masks scaled to the tiny utterances (24-80 frames)
SPECAUGMENT = {"freq_mask_N": 1, "freq_mask_F": 27, "time_mask_N": 2, "time_mask_T": 10, "time_mask_p": 1.0,
               "time_warp_W": 0}


def with_specaugment(data_dir: Path) -> Path:
    """The data config as prep writes it: utterance CMVN, SpecAugment on ``_train`` only."""
    path = data_dir / "config_st.yaml"
    config = yaml.safe_load(path.read_text())
    config["specaugment"] = SPECAUGMENT
    config["feature_transforms"] = {"_train": ["utterance_cmvn", "specaugment"], "*": ["utterance_cmvn"]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return with_specaugment(make_tiny_multiview_data(tmp_path_factory.mktemp("data"), n_train=16, n_valid=4,
                                                     num_units=K))


def train_dataset(data_dir, seed=1):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data_dir), "--task", "speech_to_text_multiview", "--arch", "s2t_gsgn_tiny", "--config-yaml",
        "config_st.yaml", "--num-units", str(K), "--criterion", "label_smoothed_cross_entropy", "--seed", str(seed)])
    task = tasks.setup_task(args)
    task.build_model(args)  # sets the views' alignment rule
    task.load_dataset("train")
    return task, task.datasets["train"]


def sources(ds, epoch, order):
    ds.set_epoch(epoch)
    return {i: ds[i].source for i in order}


def test_specaugment_draws_follow_seed_epoch_and_utterance(data_dir):
    task, ds = train_dataset(data_dir)
    n = len(ds)
    state = np.random.get_state()
    forward = sources(ds, 1, range(n))
    assert all(np.array_equal(a, b) for a, b in zip(state, np.random.get_state())), "the global np.random moved"
    _, again = train_dataset(data_dir)  # a second process's dataset, read backwards, epochs interleaved
    sources(again, 2, range(n))
    backward = sources(again, 1, reversed(range(n)))
    for i in range(n):
        assert torch.equal(forward[i], backward[i]), f"utterance {i}: epoch 1 masks depend on the access order"
    epoch2 = sources(ds, 2, range(n))
    assert sum(not torch.equal(forward[i], epoch2[i]) for i in range(n)) >= n - 1  # new masks each epoch
    _, other_seed = train_dataset(data_dir, seed=2)
    assert sum(not torch.equal(forward[i], s) for i, s in sources(other_seed, 1, range(n)).items()) >= n - 1
    masked = [bool((x == x[:, :1]).all(1).any() or (x == x[:1]).all(0).any()) for x in forward.values()]
    assert sum(masked) >= n // 2  # SpecAugment is on: masked frames / channels are constant

    # through fairseq's batch iterator with two workers, over two epochs, as fairseq-train asks for it
    # (trainer.get_train_iterator(epoch) each epoch): workers see each epoch's set_epoch
    for epoch in (1, 2):
        expected = sources(ds, epoch, range(n))
        itr = task.get_batch_iterator(ds, max_tokens=600, num_workers=2, seed=1, epoch=epoch)
        seen = 0
        for batch in itr.next_epoch_itr(shuffle=True):
            for row, index in enumerate(batch["id"].tolist()):
                length = batch["net_input"]["src_lengths"][row]
                assert torch.equal(batch["net_input"]["src_tokens"][row, :length], expected[index]), \
                    f"epoch {epoch}, utterance {index}: a worker drew other masks than the main process"
                seen += 1
        assert seen == n and itr.epoch == epoch


def fairseq_train(data_dir, save_dir, max_update):
    cmd = [str(BIN / "fairseq-train"), str(data_dir), "--user-dir", USER_DIR, "--task", "speech_to_text_multiview",
           "--config-yaml", "config_st.yaml", "--num-units", str(K), "--arch", "s2t_gsgn_tiny",
           "--fusion", "gsgn", "--multi-stage-dropout", "--msd-schedule", "1:0.3,0.2;2:0.2,0.3",
           "--criterion", "label_smoothed_cross_entropy_with_gate", "--label-smoothing", "0.1",
           "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
           "--max-tokens", "600", "--required-batch-size-multiple", "1", "--max-update", str(max_update),
           "--num-workers", "0", "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--no-progress-bar",
           "--log-interval", "1", "--seed", "1", "--cpu", "--train-subset", "train", "--valid-subset", "valid"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{log[-4000:]}"
    return log


def test_resumed_run_ends_with_the_weights_of_a_straight_run(data_dir, tmp_path):
    """7 updates straight vs 3 (stopping inside epoch 2), then resumed to 7 (into epoch 3):
    the resume crosses a multi-stage-dropout stage, SpecAugment, the batch iterator and the
    learning-rate schedule."""
    straight = fairseq_train(data_dir, tmp_path / "straight", 7)
    assert "epoch 003" in straight, straight[-3000:]  # the run spans three epochs
    first = fairseq_train(data_dir, tmp_path / "resumed", 3)
    assert "epoch 002" in first and "epoch 003" not in first, first[-3000:]
    resumed = fairseq_train(data_dir, tmp_path / "resumed", 7)
    assert "Loaded checkpoint" in resumed and "(epoch 2 @ 3 updates)" in resumed, resumed[-3000:]
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 7
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ, e.g. {differ[:3]}"
