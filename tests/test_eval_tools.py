"""Checkpoint averaging, sacreBLEU scoring of fairseq-generate output, and training plots."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import average_checkpoints  # noqa: E402
import plot_training  # noqa: E402
import score_generate  # noqa: E402


def _ckpt(path, w, val, epoch, updates, step=0):
    # saved at the end of `epoch`: fairseq's iterator state then says epoch + 1, 0 iterations in
    torch.save(
        {
            "cfg": {"model": {"_name": "toy"}},
            "model": {"w": torch.tensor(w, dtype=torch.float32), "step": torch.tensor(step)},
            "optimizer_history": [{"num_updates": updates}],
            "last_optimizer_state": {"big": torch.zeros(3)},
            "extra_state": {"val_loss": val, "train_iterator": {"epoch": epoch + 1, "iterations_in_epoch": 0}},
        },
        path,
    )


def test_average_best_checkpoints(tmp_path):
    # epoch: (weights, dev loss)
    runs = {1: ([0.0, 0.0], 5.0), 2: ([2.0, 4.0], 3.0), 3: ([4.0, 8.0], 2.0), 4: ([9.0, 9.0], 4.0)}
    for e, (w, v) in runs.items():
        _ckpt(tmp_path / f"checkpoint{e}.pt", w, v, e, e * 10, step=e)
    _ckpt(tmp_path / "checkpoint_best.pt", [4.0, 8.0], 2.0, 3, 30, step=3)  # duplicate of epoch 3
    _ckpt(tmp_path / "checkpoint_last.pt", [9.0, 9.0], 4.0, 4, 40, step=4)  # ignored by name
    out = tmp_path / "avg.pt"
    summary = average_checkpoints.average_best(tmp_path, 2, out)
    assert summary["epochs"] == [2, 3]  # the two lowest dev losses, epoch 3 counted once
    assert summary["convergence_epoch"] == 3
    state = torch.load(out, weights_only=True)
    assert torch.allclose(state["model"]["w"], torch.tensor([3.0, 6.0]))  # (2+4)/2, (4+8)/2
    assert state["model"]["w"].dtype == torch.float32
    assert int(state["model"]["step"]) == 3  # integer buffers come from the best checkpoint
    assert "last_optimizer_state" not in state
    assert json.loads(Path(str(out) + ".json").read_text())["convergence_epoch"] == 3
    # higher-is-better metrics (e.g. BLEU)
    assert average_checkpoints.average_best(tmp_path, 1, out, maximize=True)["epochs"] == [1]


def test_average_refuses_mismatched_shapes(tmp_path):
    _ckpt(tmp_path / "checkpoint1.pt", [1.0, 2.0], 1.0, 1, 10)
    _ckpt(tmp_path / "checkpoint2.pt", [1.0, 2.0, 3.0], 2.0, 2, 20)
    with pytest.raises(ValueError, match="checkpoint2.pt: w has shape"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")


def test_score_generate_orders_by_id_and_prints_signature(tmp_path):
    out = tmp_path / "gen.txt"
    out.write_text(
        "S-1\tx\nT-1\tdas ist ein kleiner test\nH-1\t-0.1\t▁das ...\n"
        "D-1\t-0.1\tdas ist ein kleiner test\n"
        "T-0\tder hund schläft im garten\nD-0\t-0.2\tder hund schläft im garten\n"
    )
    res = score_generate.score(out)
    assert res["bleu"] == 100.0 and res["n_sentences"] == 2
    assert res["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    out.write_text("T-0\tder hund\nD-0\t-0.2\tdie katze\n")
    assert score_generate.score(out)["bleu"] == 0.0


def test_score_generate_refuses_missing_hypotheses(tmp_path):
    out = tmp_path / "gen.txt"
    out.write_text("T-0\ta b\nD-0\t-1\ta b\nT-7\tc d\n")
    with pytest.raises(ValueError, match=r"gen.txt: 1 samples have no D- hypothesis \(first ids \[7\]\)"):
        score_generate.score(out)


def test_plot_training_reads_fairseq_json_logs(tmp_path):
    def line(kind, rec):
        return f"2026-11-26 10:00:00 | INFO | {kind} | {json.dumps({k: str(v) for k, v in rec.items()})}\n"

    fb = tmp_path / "fbank.log"
    fb.write_text("".join(line("dev_st", {"epoch": e, "dev_st_loss": 5 - e}) for e in (1, 2, 3))
                  + "2026-11-26 10:00:00 | INFO | fairseq_cli.train | {'_name': None}\n")
    gs = tmp_path / "gsgn.log"
    gs.write_text(
        "".join(line("train_inner", {"epoch": 1, "num_updates": u, "grad_cos": 0.5 - u / 100,
                                     "conflict_pct": u, "g_fbank_mean": 0.9 + u / 100}) for u in (10, 20))
        + "".join(line("dev_st", {"epoch": e, "dev_st_loss": 4 - e, "dev_st_bleu": 10 * e}) for e in (1, 2))
    )
    recs = plot_training.parse_log(gs)
    assert plot_training.series(recs["valid"], "epoch", "valid_bleu") == ([1.0, 2.0], [10.0, 20.0])
    written = plot_training.plot_all({"fbank": fb, "gsgn": gs}, tmp_path / "fig")
    assert sorted(p.name for p in written) == ["gate_means.png", "gradient_conflict.png", "learning_curves.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    # an fbank-only log has no gate metrics: only the learning curves are drawn
    assert [p.name for p in plot_training.plot_all({"fbank": fb}, tmp_path / "fig2")] == ["learning_curves.png"]


def test_convergence_speedup_from_logs(tmp_path):
    import convergence

    def log(path, bleus, secs_per_epoch):
        rows = []
        for e, b in enumerate(bleus, start=1):
            rows.append(f"x | INFO | train | {json.dumps({'epoch': e, 'train_wall': str(e * secs_per_epoch)})}\n")
            rows.append(f"x | INFO | dev_st | {json.dumps({'epoch': e, 'dev_st_bleu': str(b)})}\n")
        path.write_text("".join(rows))
        return path

    base = log(tmp_path / "fbank.log", [5, 20, 30, 40, 38], 10)  # best 40 at epoch 4, 40 s
    fast = log(tmp_path / "gsgn.log", [10, 41, 45], 20)  # reaches 40 at epoch 2, 40 s
    never = log(tmp_path / "unit.log", [10, 20, 39], 10)
    res = convergence.compare(base, {"gsgn_drop": fast, "unit": never})
    assert (res["baseline_best_bleu"], res["baseline_epoch"], res["baseline_wall"]) == (40.0, 4, 40.0)
    assert res["runs"]["gsgn_drop"] == {"best_bleu": 45.0, "epoch": 2, "wall": 40.0, "epoch_ratio": 2.0, "wall_ratio": 1.0}
    assert res["runs"]["unit"]["epoch"] is None and res["runs"]["unit"]["epoch_ratio"] is None
    assert "| unit | 39.00 | - |" in convergence.to_markdown(res, "fbank")


def test_results_table_over_seeds(tmp_path):
    import results_table

    sig = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1"
    for seed, (bleu, epoch) in {"s1": (60.0, 12), "s2": (64.0, 15)}.items():
        run = tmp_path / seed / "fbank"
        run.mkdir(parents=True)
        (run / "bleu-tst-COMMON.json").write_text(json.dumps({"bleu": bleu, "signature": sig}))
        (run / "checkpoint_avg5.pt.json").write_text(json.dumps({"convergence_epoch": epoch}))
    runs = [results_table.collect(tmp_path / s, ["fbank", "gsgn"], ["tst-COMMON"]) for s in ("s1", "s2")]
    table = results_table.to_markdown_seeds(runs, ["seed 1", "seed 2"], "tst-COMMON")
    # mean 62, sample sd sqrt(((60-62)^2 + (64-62)^2) / 1) = 2.83; epochs 13.5 ± 2.1
    assert "| fbank | 60.00 | 64.00 | 62.00 ± 2.83 | 12 | 15 | 13.5 ± 2.1 |" in table
    assert "| gsgn | - | - | - | - | - | - |" in table
    assert sig in table
