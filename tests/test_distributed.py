"""Data-parallel training on CPU (gloo): the torchrun launch, pooled gate targets over the
global batch, rank-independent branch draws, ranks in sync.

* ``configure_torchrun`` (gsgn_fairseq/fairseq_patches/distributed_launch.py) on fairseq's parsed config.
* Two gloo processes running the criterion on halves of one batch: the pooled target is the
  single-process target of the whole batch, on every rank, counted once.
* ``torchrun --nproc_per_node 2`` running fairseq-train (``tests/rank_recording_train.py``:
  fairseq's ``cli_main`` plus read-only recorders) with ``--cpu``, once per gate-target
  reading and granularity, under both DDP backends: parameters agree across ranks and with
  rank 0's checkpoint, pooled targets agree across ranks and reach the logs, branch draws are
  the keyed functions of ``(seed, epoch, utterance)`` (``(seed, update)`` per batch).
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tiny_s2t_data import make_tiny_multiview_data

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = str(ROOT / "gsgn_fairseq")
K = 20
SCHEDULE = "1:0.3,0.3"
UPDATES = 3


# ------------------------------------------------------------------------------ the launch


def _cfg(*extra):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import gsgn_fairseq  # noqa: F401

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["--task", "dummy_lm", "--arch", "transformer_lm", *extra])
    return convert_namespace_to_omegaconf(args)


TORCHRUN_ENV = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}


def test_torchrun_on_cpu_gets_env_rendezvous_with_gloo(monkeypatch):
    from gsgn_fairseq.fairseq_patches.distributed_launch import configure_torchrun

    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cfg = _cfg("--cpu")
    assert cfg.distributed_training.distributed_world_size == 1  # fairseq's default without GPUs
    assert configure_torchrun(cfg)
    dt = cfg.distributed_training
    assert (dt.distributed_init_method, dt.distributed_world_size, dt.distributed_rank, dt.device_id) == ("env://", 2, 1, 1)
    assert dt.distributed_no_spawn and dt.distributed_backend == "gloo"


def test_torchrun_on_gpus_keeps_fairseqs_setup_but_takes_the_world_size(monkeypatch):
    from gsgn_fairseq.fairseq_patches.distributed_launch import configure_torchrun

    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU per node
    cfg = _cfg()
    configure_torchrun(cfg)
    dt = cfg.distributed_training
    assert dt.distributed_world_size == 2 and dt.distributed_init_method is None and dt.distributed_backend == "nccl"


def test_multi_process_cpu_run_without_torchrun_names_the_command(monkeypatch):
    from gsgn_fairseq.fairseq_patches.distributed_launch import configure_torchrun

    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    cfg = _cfg("--cpu", "--distributed-world-size", "2")
    with pytest.raises(ValueError, match="torchrun --nproc_per_node 2"):
        configure_torchrun(cfg)


# ------------------------------------------------------- pooled targets over two processes

SPLITS = {  # utterances of make_sample (branches 2, 0, 2, 1, 2) per rank
    "halves": ([0, 1, 2], [3, 4]),
    "no-fusion-on-rank-1": ([0, 2, 4], [1, 3]),
}


def _pooled_rank(rank, world_size, init_file, out_dir):
    """One rank: the batch criterion on its share of ``make_sample(seed=3)``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    from test_criterion import BRANCHES, FakeGSGN, make_criterion, make_sample

    from gsgn_fairseq.modules import gate_targets

    seen = []
    finite_target = gate_targets._finite_target

    def spy(ab, aa, bb, max_target):
        out = finite_target(ab, aa, bb, max_target)
        seen.append((out[0].item(), out[1].item()))
        return out

    gate_targets._finite_target = spy
    sample = make_sample(seed=3)
    results = {}
    cases = [(split, mode, False) for split in SPLITS for mode in ("exact", "factorized")]
    cases += [("halves", "exact", True)]  # rank 1 trains on fairseq's stand-in batch
    for split, mode, stand_in in cases:
        index = torch.tensor(SPLITS[split][rank])
        model = FakeGSGN([BRANCHES[i] for i in index.tolist()], seed=3, linear=False).double().train()
        crit = make_criterion(gate_target=mode)
        crit.set_ignore_grad(stand_in and rank == 1)
        seen.clear()
        loss, _, log = crit(model, gate_targets._select_sample(sample, index, len(BRANCHES)))
        loss.backward()
        results[f"{split}/{mode}/{stand_in}"] = {
            "seen": list(seen), "count": log["gate_cos_count"].item(), "target_sum": log["gate_target_sum"].item(),
        }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_pooled_targets_are_the_global_batch_targets_on_every_rank(tmp_path, monkeypatch):
    from test_criterion import BRANCHES, FakeGSGN, make_criterion, make_sample

    from gsgn_fairseq.modules import gate_targets

    seen = []
    finite_target = gate_targets._finite_target
    monkeypatch.setattr(gate_targets, "_finite_target",
                        lambda *a: seen.append(tuple(v.item() for v in finite_target(*a)[:2])) or finite_target(*a))
    mp.spawn(_pooled_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    sample = make_sample(seed=3)
    for key in ranks[0]:
        split, mode, stand_in = key.split("/")
        # single process on the utterances the two ranks really trained on
        index = sorted(SPLITS[split][0] + ([] if stand_in == "True" else SPLITS[split][1]))
        index = torch.tensor(index)
        single = FakeGSGN([BRANCHES[i] for i in index.tolist()], seed=3, linear=False).double().train()
        seen.clear()
        loss, _, log = make_criterion(gate_target=mode)(single, gate_targets._select_sample(sample, index, len(BRANCHES)))
        loss.backward()
        (expected,) = seen
        assert expected[0] > 1.0, key  # a conflicting batch: the target is not the trivial 1
        for r in range(2):
            (got,) = ranks[r][key]["seen"]
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (key, r)
        # counted once over the ranks, as fairseq sums logging outputs
        assert ranks[0][key]["count"] + ranks[1][key]["count"] == 1, key
        assert ranks[0][key]["target_sum"] + ranks[1][key]["target_sum"] == pytest.approx(expected[0], rel=1e-6)  # float32 logs


# ------------------------------------------------------------------- torchrun fairseq-train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_multiview_data(tmp_path_factory.mktemp("data"), n_train=16, n_valid=4, num_units=K)


RUNS = {  # gate-target reading/granularity, DDP backend and what else the run exercises
    "exact-batch": ["--gate-target", "exact", "--gate-target-granularity", "batch", "--gate-target-interval", "2",
                    "--ddp-backend", "c10d"],
    "exact-utterance": ["--gate-target", "exact", "--gate-target-granularity", "utterance", "--ddp-backend", "c10d",
                        "--msd-granularity", "batch"],
    "factorized-batch": ["--gate-target", "factorized", "--gate-target-granularity", "batch", "--ddp-backend", "c10d",
                         "--update-freq", "2"],
    "factorized-utterance": ["--gate-target", "factorized", "--gate-target-granularity", "utterance",
                             "--ddp-backend", "legacy_ddp"],
}


def torchrun_train(data_dir, out: Path, *extra):
    out.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(ROOT / "tests" / "rank_recording_train.py"), str(data_dir),
        "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--num-units", str(K), "--arch", "s2t_gsgn_tiny", "--fusion", "gsgn",
        "--multi-stage-dropout", "--msd-schedule", SCHEDULE,
        "--criterion", "label_smoothed_cross_entropy_with_gate", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
        "--max-tokens", "300", "--required-batch-size-multiple", "1", "--max-update", str(UPDATES),
        "--num-workers", "0", "--save-dir", str(out / "ckpt"), "--no-epoch-checkpoints", "--disable-validation",
        "--no-progress-bar", "--log-interval", "1", "--seed", "1", "--cpu",
        "--train-subset", "train", "--valid-subset", "valid", *extra,
    ]
    env = {**os.environ, "RANK_RECORD_DIR": str(out)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{log[-4000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], log


def checkpoint_sha256(path: Path) -> str:
    state = torch.load(path, weights_only=True)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def expected_branches(draw, granularity):
    from gsgn_fairseq.modules.branch_sampler import BranchSampler

    sampler = BranchSampler(SCHEDULE, granularity)
    sampler.set_epoch(draw["epoch"])
    keys = torch.tensor(draw["keys"]) if draw["keys"] is not None else None
    return sampler.sample_training(len(draw["branches"]), keys, seed=1, update=draw["update"]).tolist()


def logged_grad_cos(log):
    """update -> grad_cos of rank 0's train_inner lines."""
    out = {}
    for m in re.finditer(r"train_inner \|.*?grad_cos=([-\d.]+).*?num_updates=(\d+)", log):
        out[int(m.group(2)) - 1] = float(m.group(1))
    return out


@pytest.mark.parametrize("run", list(RUNS))
def test_torchrun_training_on_cpu(data_dir, tmp_path, run):
    records, log = torchrun_train(data_dir, tmp_path / run, *RUNS[run])
    assert "torchrun rank 0 of 2 (CPU, gloo)" in log
    # ranks in sync, and rank 0's checkpoint holds what every rank trained
    ckpt = tmp_path / run / "ckpt" / "checkpoint_last.pt"
    assert records[0]["state_sha256"] == records[1]["state_sha256"] == checkpoint_sha256(ckpt)
    assert torch.load(ckpt, weights_only=True)["optimizer_history"][-1]["num_updates"] == UPDATES

    # branch draws: keyed per utterance (per update with --msd-granularity batch)
    granularity = "batch" if "--msd-granularity" in RUNS[run] else "utterance"
    for rank in records:
        assert rank["draws"]
        for draw in rank["draws"]:
            assert draw["branches"] == expected_branches(draw, granularity), (run, draw)
    by_update = [{} for _ in records]
    for r, rank in enumerate(records):
        for draw in rank["draws"]:
            by_update[r].setdefault(draw["update"], []).append(draw["branches"])
    if granularity == "batch":  # one branch for the global batch of each update
        for u in range(UPDATES):
            assert len({b for r in range(2) for branches in by_update[r][u] for b in branches}) == 1, u
    else:  # independent ranks: not the same draws at the same batch positions
        first = [[by_update[r][u][0] for u in range(UPDATES)] for r in range(2)]
        prefixes_differ = [a[: min(len(a), len(b))] != b[: min(len(a), len(b))] for a, b in zip(*first)]
        assert any(prefixes_differ), first

    # pooled targets: the same on every rank, and what the logs report
    if "batch" in RUNS[run][RUNS[run].index("--gate-target-granularity") + 1]:
        targets = [[(t["update"], t["target"], t["cos"]) for t in rank["targets"]] for rank in records]
        assert targets[0] and len(targets[0]) == len(targets[1])
        for (u0, t0, c0), (u1, t1, c1) in zip(*targets):
            assert u0 == u1 and t0 == pytest.approx(t1, rel=1e-6) and c0 == pytest.approx(c1, rel=1e-6, abs=1e-9)
        logged, current = logged_grad_cos(log), None
        for u in range(UPDATES):
            at_u = [c[0] for (v, _, c) in targets[0] if v == u]
            current = sum(at_u) / len(at_u) if at_u else current  # an interval reuses the last target
            assert logged[u] == pytest.approx(current, abs=1e-4), (u, logged, targets[0])


def test_torchrun_training_with_two_unit_views(tmp_path_factory, tmp_path):
    """Three views (FBank + two S-feature sets) under data parallelism: ranks in sync with the
    checkpoint, keyed draws over the four branches, and the pooled N-view target (Eq. 11 with
    each conflicting view's component removed) the same on every rank."""
    data = make_tiny_multiview_data(tmp_path_factory.mktemp("data3"), n_train=16, n_valid=4, num_units=K,
                                    unit_sets={"mfcc": 12})
    records, log = torchrun_train(data, tmp_path / "three", "--unit-views", "units,mfcc", "--num-units", f"{K},12",
                                  "--gate-target", "exact", "--gate-target-granularity", "batch",
                                  "--ddp-backend", "c10d")
    assert "torchrun rank 0 of 2 (CPU, gloo)" in log
    ckpt = tmp_path / "three" / "ckpt" / "checkpoint_last.pt"
    assert records[0]["state_sha256"] == records[1]["state_sha256"] == checkpoint_sha256(ckpt)
    from gsgn_fairseq.modules.branch_sampler import BranchSampler

    for rank in records:
        assert rank["draws"]
        for draw in rank["draws"]:
            sampler = BranchSampler(SCHEDULE, "utterance", n_views=2)
            sampler.set_epoch(draw["epoch"])
            want = sampler.sample_training(len(draw["branches"]), torch.tensor(draw["keys"]), seed=1,
                                           update=draw["update"]).tolist()
            assert draw["branches"] == want, draw
    seen = {b for rank in records for draw in rank["draws"] for b in draw["branches"]}
    assert max(seen) <= 3  # fbank, unit:units, unit:mfcc, fusion
    targets = [[(t["update"], t["target"], t["cos"]) for t in rank["targets"]] for rank in records]
    assert targets[0] and len(targets[0]) == len(targets[1])
    for (u0, t0, c0), (u1, t1, c1) in zip(*targets):
        assert len(c0) == 2 * len(t0)  # a cosine per S-feature view
        assert u0 == u1 and t0 == pytest.approx(t1, rel=1e-6) and c0 == pytest.approx(c1, rel=1e-6, abs=1e-9)
    assert re.search(r"conflict_pct_mfcc", log), log[-2000:]


def test_resumed_run_gives_every_rank_the_model_units_provenance(data_dir, tmp_path):
    """Every rank reads its own data, so every rank's task must hold the checkpoint's units
    provenance to check it (rank 0 reads the checkpoint, the others receive it)."""
    first, _ = torchrun_train(data_dir, tmp_path / "first", "--max-update", "2")
    assert [r["units_provenance"] for r in first] == [None, None]  # a fresh run: nothing to check against
    resumed, log = torchrun_train(data_dir, tmp_path / "resumed", "--save-dir", str(tmp_path / "first" / "ckpt"))
    assert "Loaded checkpoint" in log
    recorded = json.loads((data_dir / "units.json").read_text())
    for rank in resumed:
        assert rank["units_provenance"] is not None and {k: rank["units_provenance"][k] for k in recorded} == recorded
