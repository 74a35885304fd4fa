"""Checkpoint averaging, sacreBLEU scoring of fairseq-generate output, and training plots."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch

from gsgn_fairseq.scoring import ScoringError, score_generate_output

import plot_training  # scripts/ (pytest.ini: pythonpath)
from gsgn_fairseq.cli import average_checkpoints

BIN = Path(sys.executable).parent


def _ckpt(path, w, val, epoch, updates, step=0, metric="loss", maximize=False, model_cfg=None, provenance=None):
    # saved at the end of `epoch`: fairseq's iterator state then says epoch + 1, 0 iterations in
    torch.save(
        {
            "cfg": {"model": model_cfg or {"_name": "toy"},
                    "checkpoint": {"best_checkpoint_metric": metric, "maximize_best_checkpoint_metric": maximize}},
            "model": {"w": torch.tensor(w, dtype=torch.float32), "step": torch.tensor(step)},
            "optimizer_history": [{"num_updates": updates}],
            "last_optimizer_state": {"big": torch.zeros(3)},
            "extra_state": {"val_loss": val, "train_iterator": {"epoch": epoch + 1, "iterations_in_epoch": 0}},
            "task_state": {"units_provenance": provenance},
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
    # the direction comes from the checkpoints: a loss run refuses --maximize
    with pytest.raises(ValueError, match="--maximize contradicts the checkpoints: .*loss \\(lower is better\\)"):
        average_checkpoints.average_best(tmp_path, 1, out, maximize=True)


def test_average_last_checkpoints(tmp_path):
    runs = {1: ([0.0], 1.0), 2: ([2.0], 3.0), 3: ([4.0], 5.0), 4: ([9.0], 4.0)}  # the best is epoch 1
    for e, (w, v) in runs.items():
        _ckpt(tmp_path / f"checkpoint{e}.pt", w, v, e, e * 10)
    summary = average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt", last=True)
    assert summary["epochs"] == [3, 4] and summary["selection"] == "last"
    assert torch.allclose(torch.load(tmp_path / "avg.pt", weights_only=True)["model"]["w"], torch.tensor([6.5]))
    proc = subprocess.run([str(BIN / "gsgn-average-checkpoints"), "--inputs", tmp_path,
                           "--last", "3", "--output", tmp_path / "avg3.pt"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "avg3.pt.json").read_text())["epochs"] == [2, 3, 4]


def test_average_ranks_bleu_runs_highest_first(tmp_path):
    # a run trained with --best-checkpoint-metric bleu --maximize-best-checkpoint-metric
    for e, bleu in {1: 10.0, 2: 30.0, 3: 20.0}.items():
        _ckpt(tmp_path / f"checkpoint{e}.pt", [float(e)], bleu, e, e * 10, metric="bleu", maximize=True)
    summary = average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")
    assert summary["epochs"] == [2, 3] and summary["metric"] == "bleu" and summary["maximize"] is True
    assert summary["convergence_epoch"] == 3
    with pytest.raises(ValueError, match="--minimize contradicts"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt", maximize=False)
    _ckpt(tmp_path / "checkpoint4.pt", [4.0], 1.0, 4, 40)  # a loss-ranked checkpoint among them
    with pytest.raises(ValueError, match="ranked by different validation metrics"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")


def test_average_counts_only_copies_of_one_update_once(tmp_path, caplog):
    import shutil

    _ckpt(tmp_path / "checkpoint1.pt", [1.0], 3.0, 1, 10)
    _ckpt(tmp_path / "checkpoint2.pt", [2.0], 2.0, 2, 20)
    shutil.copy(tmp_path / "checkpoint2.pt", tmp_path / "checkpoint.best_loss_2.0000.pt")  # fairseq's copy
    assert average_checkpoints.average_best(tmp_path, 5, tmp_path / "avg.pt")["epochs"] == [1, 2]
    # another run's checkpoint saved at the same update count is a candidate of its own ...
    _ckpt(tmp_path / "checkpoint.best_loss_1.0000.pt", [8.0], 1.0, 2, 20)
    summary = average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")
    assert [c["path"] for c in summary["checkpoints"]] == [str(tmp_path / "checkpoint.best_loss_1.0000.pt"),
                                                          str(tmp_path / "checkpoint.best_loss_2.0000.pt")]
    assert "were both saved at update 20 but hold different weights" in caplog.text
    # ... so the model check runs on it
    _ckpt(tmp_path / "checkpoint.best_loss_1.0000.pt", [8.0], 1.0, 2, 20, model_cfg={"_name": "toy", "layers": 3})
    with pytest.raises(ValueError, match=r"checkpoint\.best_loss_2\.0000\.pt: not the same model as .*"
                                         r"checkpoint\.best_loss_1\.0000\.pt: model\.layers is '<unset>'"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")


def test_average_cli_refuses_bad_counts_and_names_a_truncated_checkpoint(tmp_path):
    for e in (1, 2):
        _ckpt(tmp_path / f"checkpoint{e}.pt", [float(e)], float(e), e, e * 10)

    def run(*argv):
        return subprocess.run([str(BIN / "gsgn-average-checkpoints"), "--inputs", tmp_path,
                               "--output", tmp_path / "avg.pt", *argv], capture_output=True, text=True)

    for flag, n in (("--num-best-checkpoints", "0"), ("--num-best-checkpoints", "-2"), ("--last", "0"), ("--last", "-1")):
        proc = run(flag, n)
        assert proc.returncode == 2 and f"{flag} must be a positive number of checkpoints, got {n}" in proc.stderr, \
            proc.stderr[-2000:]
    with pytest.raises(ValueError, match="--last must be a positive number of checkpoints, got 0"):
        average_checkpoints.average_best(tmp_path, 0, tmp_path / "avg.pt", last=True)
    blob = (tmp_path / "checkpoint2.pt").read_bytes()
    (tmp_path / "checkpoint2.pt").write_bytes(blob[: len(blob) // 2])
    proc = run("--num-best-checkpoints", "2")
    assert proc.returncode == 1 and f"{tmp_path / 'checkpoint2.pt'}: not a readable checkpoint" in proc.stderr, \
        proc.stderr[-2000:]
    assert not (tmp_path / "avg.pt").exists()


def test_average_refuses_checkpoints_trained_on_other_units(tmp_path):
    prov = {"feature": "mfcc", "km_model_sha1": "a" * 40, "n_clusters": 100, "units_fingerprint": "1" * 40}
    _ckpt(tmp_path / "checkpoint1.pt", [1.0], 1.0, 1, 10, provenance=prov)
    _ckpt(tmp_path / "checkpoint2.pt", [2.0], 2.0, 2, 20, provenance=dict(prov, units_fingerprint="2" * 40))
    with pytest.raises(ValueError, match=r"checkpoint2\.pt: not the same model as .*checkpoint1\.pt: "
                                         r"task_state\.units_provenance\.units_fingerprint is '2222"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")


def test_average_refuses_mixed_unit_views(tmp_path):
    _ckpt(tmp_path / "checkpoint1.pt", [1.0], 1.0, 1, 10, model_cfg={"_name": "toy", "unit_views": "units,wavlm"})
    _ckpt(tmp_path / "checkpoint2.pt", [2.0], 2.0, 2, 20, model_cfg={"_name": "toy"})  # one view (units)
    with pytest.raises(ValueError, match=r"checkpoint2\.pt: not the same model as .*checkpoint1\.pt: it reads the "
                                         r"unit views units \(--unit-views\), .* reads units,wavlm"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")
    # an older checkpoint without the option reads the one default view
    _ckpt(tmp_path / "checkpoint1.pt", [1.0], 1.0, 1, 10, model_cfg={"_name": "toy", "unit_views": "units"})
    average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")
    # the provenance of every unit set must agree
    prov = {"feature": "mfcc", "km_model_sha1": "a" * 40, "n_clusters": 100}
    for i, sha in ((1, "b"), (2, "c")):
        _ckpt(tmp_path / f"checkpoint{i}.pt", [float(i)], float(i), i, 10 * i,
              model_cfg={"_name": "toy", "unit_views": "units,wavlm"}, provenance=prov)
        state = torch.load(tmp_path / f"checkpoint{i}.pt", weights_only=False)
        state["task_state"]["unit_sets_provenance"] = {"units": prov, "wavlm": dict(prov, km_model_sha1=sha * 40)}
        torch.save(state, tmp_path / f"checkpoint{i}.pt")
    with pytest.raises(ValueError, match=r"task_state\.unit_sets_provenance\.wavlm\.km_model_sha1 is 'ccc"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")


def test_average_refuses_mismatched_shapes(tmp_path):
    _ckpt(tmp_path / "checkpoint1.pt", [1.0, 2.0], 1.0, 1, 10)
    _ckpt(tmp_path / "checkpoint2.pt", [1.0, 2.0, 3.0], 2.0, 2, 20)
    with pytest.raises(ValueError, match="checkpoint2.pt: w has shape"):
        average_checkpoints.average_best(tmp_path, 2, tmp_path / "avg.pt")


def _tsv(path, refs):
    rows = ["id\taudio\tn_frames\ttgt_text\tspeaker\tsrc_text"]
    rows += [f"utt{i}\tfbank80.zip:1:2\t100\t{r}\tspk\tsource {i}" for i, r in enumerate(refs)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_score_generate_orders_by_id_against_tsv_references(tmp_path):
    tsv = _tsv(tmp_path / "tst_st.tsv", ["der Hund schläft im Garten", "das ist ein kleiner Test"])
    out = tmp_path / "gen.txt"
    # T- lines are fairseq's re-encoded references (here with an unknown character): they check
    # the order, but the score is against the TSV's references
    t_lines = ["der Hund schl<<unk>>ft im Garten", "das ist ein kleiner Test"]
    gen = ("S-1\tx\nT-1\tdas ist ein kleiner Test\nH-1\t-0.1\t▁das ...\nD-1\t-0.1\tdas ist ein kleiner Test\n"
           "T-0\tder Hund schl<<unk>>ft im Garten\nD-0\t-0.2\tder Hund schläft im Garten\n"
           "Generate tst_st with beam=5: BLEU = {:.2f} 0.0/0.0/0.0/0.0 (BP = 1.000 ratio = 1.000 hyp_len = 9 ref_len = 9)\n")
    against_t = sacrebleu.corpus_bleu(["der Hund schläft im Garten", "das ist ein kleiner Test"], [t_lines]).score
    out.write_text(gen.format(against_t))
    res = score_generate_output(out, tsv=tsv)
    assert res["bleu"] == 100.0 and res["chrf"] == 100.0 and res["n_sentences"] == 2 and res["t_lines_checked"] == 2
    assert res["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert res["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    assert res["fairseq_bleu"] == round(against_t, 2) and res["fairseq_agrees"] is False
    assert res["fairseq_note"].startswith("differs: it scores against its T- lines, 1 of which differ from the "
                                          "references through the SentencePiece round trip (e.g. sample 0")
    out.write_text(gen.format(0.0))  # a figure its T- lines do not explain
    assert "not through its T- lines (BLEU against them: " in score_generate_output(out, tsv=tsv)["fairseq_note"]
    # a TSV that starts with a UTF-8 byte-order mark is read as it is meant
    tsv.write_text("\ufeff" + tsv.read_text(encoding="utf-8"), encoding="utf-8")
    assert score_generate_output(out, tsv=tsv)["bleu"] == 100.0
    # case-sensitive, as the paper's protocol
    out.write_text("D-0\t-0.2\tDER HUND SCHLÄFT IM GARTEN\nD-1\t-0.1\tdas ist ein kleiner Test\n")
    assert score_generate_output(out, tsv=tsv)["bleu"] < 70
    # a references file, one line per TSV row
    refs = tmp_path / "tst.de"
    refs.write_text("der Hund schläft im Garten\ndas ist ein kleiner Test\n")
    out.write_text("D-1\t-0.1\tdas ist ein kleiner Test\nD-0\t-0.2\tder Hund schläft im Garten\n")
    assert score_generate_output(out, refs_file=refs)["bleu"] == 100.0


def _gen_with_targets(path, refs, t_lines=None):
    """A fairseq-generate output that decodes every reference perfectly (T- lines: ``t_lines``)."""
    t_lines = refs if t_lines is None else t_lines
    path.write_text("".join(f"T-{i}\t{t}\nD-{i}\t-0.1\t{r}\n" for i, (t, r) in enumerate(zip(t_lines, refs))),
                    encoding="utf-8")
    return path


def test_score_generate_refuses_references_out_of_order(tmp_path):
    refs = ["der Hund schläft im Garten", "das ist ein kleiner Test", "die Katze läuft heute"]
    gen = _gen_with_targets(tmp_path / "gen.txt", refs)
    tsv = _tsv(tmp_path / "tst_st.tsv", refs[::-1])  # rows reordered
    with pytest.raises(ScoringError, match=r"gen\.txt: the references do not line up with the samples: sample 0's "
                                           r"reference in the output \(T-0\) is 'der Hund schläft im Garten', "
                                           r"but .*tst_st\.tsv:2 is 'die Katze läuft heute'"):
        score_generate_output(gen, tsv=tsv)
    ref_file = tmp_path / "tst.de"
    ref_file.write_text("\n".join([refs[0], refs[2], refs[1]]) + "\n", encoding="utf-8")
    with pytest.raises(ScoringError, match=r"sample 1's reference in the output \(T-1\) is 'das ist ein kleiner Test', "
                                           r"but .*tst\.de:2 is 'die Katze läuft heute'"):
        score_generate_output(gen, refs_file=ref_file)
    proc = subprocess.run([str(BIN / "gsgn-score"), gen, "--tsv", tsv], capture_output=True, text=True)
    assert proc.returncode == 1 and "do not line up with the samples" in proc.stderr, proc.stderr
    # the SentencePiece round trip is no mismatch: <<unk>> for unseen characters, NFKC, spacing
    tsv = _tsv(tmp_path / "tst_st.tsv", refs)
    rt = _gen_with_targets(tmp_path / "rt.txt", refs, ["der Hund schl<<unk>>ft im Garten", "das  ist ein kleiner Test",
                                                       "<<unk>> Katze l<<unk>>uft heute"])
    assert score_generate_output(rt, tsv=tsv)["t_lines_checked"] == 3
    tsv2 = _tsv(tmp_path / "nfkc_st.tsv", ["Ｔｅｓｔ ｎｕｍｂｅｒ ２"])
    assert score_generate_output(_gen_with_targets(tmp_path / "n.txt", ["Test number 2"]), tsv=tsv2)["bleu"] < 100
    # ... but <<unk>> stands for characters within a word, not for words
    wrong = _gen_with_targets(tmp_path / "w.txt", refs, [refs[0], "das <<unk>> Test", refs[2]])
    with pytest.raises(ScoringError, match=r"sample 1's reference"):
        score_generate_output(wrong, tsv=tsv)
    # the baseline of --paired-bs is held to the same check
    base = _gen_with_targets(tmp_path / "base.txt", refs[::-1])
    with pytest.raises(ScoringError, match=r"base\.txt: the references do not line up with the samples"):
        score_generate_output(gen, tsv=tsv, baseline=base)


def test_score_generate_refuses_space_stripped_hypotheses(tmp_path):
    refs = ["der Hund schläft im Garten", "das ist ein kleiner Test"]
    tsv = _tsv(tmp_path / "tst_st.tsv", refs)
    out = tmp_path / "gen.txt"
    # what --post-process sentencepiece on top of the data config's bpe_tokenizer prints
    out.write_text(
        "T-0\tderHundschläftimGarten\nH-0\t-0.2\tder Hund schläft im Garten\nD-0\t-0.2\tderHundschläftimGarten\n"
        "T-1\tdasisteinkleinerTest\nH-1\t-0.1\tdas ist ein Test\nD-1\t-0.1\tdasisteinTest\n"
    )
    with pytest.raises(ScoringError, match="gen.txt: the hypotheses look space-stripped: 2 of 2 of fairseq's T- "
                                           "references are the TSV's references without their spaces"):
        score_generate_output(out, tsv=tsv)
    # without T- lines, the H- lines tell: words, and D- is H- without its spaces
    out.write_text("H-0\t-0.2\tder Hund\nD-0\t-0.2\tderHund\nH-1\t-0.1\tdas\nD-1\t-0.1\tdas\n")
    with pytest.raises(ScoringError, match="1 D- hypotheses are their H- lines without the spaces"):
        score_generate_output(out, tsv=tsv)
    # with D- lines alone: no space anywhere, and word-long "words"
    out.write_text("D-0\t-0.2\tderHundschläftimGarten\nD-1\t-0.1\tdasisteinkleinerTest\n")
    with pytest.raises(ScoringError, match="no hypothesis has a space; 21.0 characters per word against 4.2"):
        score_generate_output(out, tsv=tsv)
    # decoded once, a weak model's output without spaces is scored, not refused
    out.write_text(
        "T-0\tder Hund schläft im Garten\nH-0\t-0.2\t\u2581 e e e e e e e e e e e e e e e e e e e e e e\n"
        "D-0\t-0.2\teeeeeeeeeeeeeeeeeeeeee\nT-1\tdas ist ein kleiner Test\nH-1\t-0.1\t\u2581Hund\nD-1\t-0.1\tHund\n"
    )
    assert score_generate_output(out, tsv=tsv)["bleu"] < 10


def test_score_generate_refuses_missing_or_extra_hypotheses(tmp_path):
    tsv = _tsv(tmp_path / "tst_st.tsv", ["a b", "c d"])
    out = tmp_path / "gen.txt"
    out.write_text("D-0\t-1\ta b\n")
    with pytest.raises(ScoringError, match=r"gen.txt against .*tst_st.tsv: 1 of 2 references have no hypothesis "
                                           r"\(first sample ids \[1\]\)"):
        score_generate_output(out, tsv=tsv)
    out.write_text("D-0\t-1\ta b\nD-1\t-1\tc d\nD-2\t-1\te f\n")
    with pytest.raises(ScoringError, match=r"sample ids \[2\] have no reference row"):
        score_generate_output(out, tsv=tsv)
    out.write_text("D-0\t-1\ta b\nD-0\t-1\tc d\n")
    with pytest.raises(ScoringError, match="two D- lines for sample 0"):
        score_generate_output(out, tsv=tsv)
    with pytest.raises(ScoringError, match="exactly one of --tsv"):
        score_generate_output(out)


def test_score_generate_cli_writes_json(tmp_path):
    tsv = _tsv(tmp_path / "tst_st.tsv", ["a b c d", "e f g h"])
    out = tmp_path / "gen.txt"
    out.write_text("D-0\t-1\ta b c d\nD-1\t-1\te f g h\n")
    p = subprocess.run([str(BIN / "gsgn-score"), str(out), "--tsv", str(tsv),
                        "--json", str(tmp_path / "bleu.json")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "BLEU = 100.00" in p.stdout and "chrF2 = 100.00" in p.stdout and "signature: nrefs:1" in p.stdout
    assert json.loads((tmp_path / "bleu.json").read_text())["bleu"] == 100.0
    out.write_text("D-0\t-1\tabcd\nD-1\t-1\tefgh\n")
    p = subprocess.run([str(BIN / "gsgn-score"), str(out), "--tsv", str(tsv)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "space-stripped" in p.stderr


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


def test_plot_training_draws_each_views_conflict_and_branches(tmp_path):
    def line(kind, rec):
        return f"2026-11-26 10:00:00 | INFO | {kind} | {json.dumps({k: str(v) for k, v in rec.items()})}\n"

    log = tmp_path / "three.log"
    log.write_text("".join(line("train_inner", {
        "epoch": 1, "num_updates": u, "grad_cos_units": 0.3, "grad_cos_mfcc": -0.1, "conflict_pct_units": u,
        "conflict_pct_mfcc": 2 * u, "conflict_pct": 2 * u, "branch_fbank_pct": 30, "branch_unit_units_pct": 10,
        "branch_unit_mfcc_pct": 10, "branch_fusion_pct": 50}) for u in (10, 20)))
    runs = {"three": plot_training.parse_log(log)}
    assert plot_training.view_names(runs) == ["units", "mfcc"]
    written = {p.name for p in plot_training.plot_all({"three": log}, tmp_path / "fig")}
    assert {"gradient_conflict_per_view.png", "branches_per_view.png"} <= written
    # two views: no per-view figures
    two = tmp_path / "two.log"
    two.write_text(line("train_inner", {"epoch": 1, "num_updates": 10, "grad_cos": 0.2, "conflict_pct": 5}))
    written = {p.name for p in plot_training.plot_all({"two": two}, tmp_path / "fig2")}
    assert not written & {"gradient_conflict_per_view.png", "branches_per_view.png"}


def test_gate_summary_has_a_column_per_view(tmp_path):
    import gate_summary

    log = tmp_path / "train.log"
    log.write_text("".join(_json_line("train", {
        "epoch": e, "train_conflict_pct": 5.0 * e, "train_grad_cos_units": 0.25, "train_conflict_pct_units": 1.0 * e,
        "train_grad_cos_mfcc": -0.5, "train_conflict_pct_mfcc": 4.0 * e}) for e in (1, 2)))
    summary = gate_summary.table({"three": log})
    assert ("| run | epoch | conflict_pct | grad_cos_units | conflict_pct_units | grad_cos_mfcc | conflict_pct_mfcc |"
            in summary), summary
    assert "| three | 2 | 10 | 0.25 | 2 | -0.5 | 8 |" in summary, summary


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
        (run / "bleu-tst-COMMON.json").write_text(json.dumps({"bleu": bleu, "signature": sig, "chrf": bleu - 10,
                                                             "chrf_signature": "nrefs:1|nc:6"}))
        (run / "checkpoint_avg5.pt.json").write_text(json.dumps({"convergence_epoch": epoch}))
    runs = [results_table.collect(tmp_path / s, ["fbank", "gsgn"], ["tst-COMMON"]) for s in ("s1", "s2")]
    table = results_table.to_markdown_seeds(runs, ["seed 1", "seed 2"], "tst-COMMON")
    # mean 62, sample sd sqrt(((60-62)^2 + (64-62)^2) / 1) = 2.83; epochs 13.5 ± 2.1
    assert "| fbank | 60.00 | 64.00 | 62.00 ± 2.83 | 52.00 ± 2.83 | 12 | 15 | 13.5 ± 2.1 |" in table
    assert "| gsgn | - | - | - | - | - | - | - |" in table
    assert sig in table and "chrF signature: `nrefs:1|nc:6`" in table
    single = results_table.to_markdown(runs[0], ["tst-COMMON"])
    assert "| fbank | 60.00 | 50.00 | 12 |" in single and "| gsgn | - | - | - |" in single


def test_bleu_statistics_add_up_to_corpus_bleu():
    import sacrebleu

    from gsgn_fairseq.scoring import bleu_from_statistics, bleu_statistics

    hyps = ["der Hund schläft", "eine Katze sieht den Vogel", "CAT CAT"]
    refs = ["der Hund schläft im Garten", "die Katze sieht den Vogel", "CAT BIG"]
    # summed over two "batches", as validation sums them over batches and workers
    parts = [bleu_statistics(hyps[:2], refs[:2]), bleu_statistics(hyps[2:], refs[2:])]
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert 0 < expected < 100 and total["counts_3"] < total["totals_3"]
    assert bleu_from_statistics(total) == round(expected, 2)  # exp smoothing, as corpus_bleu
    # no 4-gram match at all: unsmoothed BLEU would be 0
    hyp, ref = "CAT CAT CAT CAT", "CAT BIG THE CAT"
    assert bleu_from_statistics(bleu_statistics([hyp], [ref])) == round(sacrebleu.corpus_bleu([hyp], [[ref]]).score, 2) > 0


def test_results_table_labels_the_fusion_input_column(tmp_path):
    import results_table

    sig = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1"
    for v, files in {"fbank": {"bleu-tst-COMMON.json": 50.0},
                     "gsgn_drop": {"bleu-tst-COMMON.json": 61.0, "bleu-tst-COMMON.fusion.json": 60.0}}.items():
        (tmp_path / v).mkdir()
        for name, bleu in files.items():
            (tmp_path / v / name).write_text(json.dumps({"bleu": bleu, "chrf": bleu + 5, "signature": sig}))
    table = results_table.to_markdown(results_table.collect(tmp_path, ["fbank", "gsgn_drop"], ["tst-COMMON"]),
                                      ["tst-COMMON"])
    assert "| model | tst-COMMON BLEU | tst-COMMON chrF | tst-COMMON BLEU, fusion input | convergence epoch |" in table
    assert "| fbank | 50.00 | 55.00 | - | - |" in table and "| gsgn_drop | 61.00 | 66.00 | 60.00 | - |" in table
    assert "paper's protocol" in table


def _json_line(kind, rec):
    return f"2026-12-02 10:00:00 | INFO | {kind} | {json.dumps({k: str(v) for k, v in rec.items()})}\n"


def test_gate_summary_and_learning_table_read_fairseq_logs(tmp_path):
    import gate_summary
    import learning_table

    for name, acc in (("ours", (40.0, 60.0)), ("s2t", (45.0, 70.0))):
        run = tmp_path / name
        run.mkdir()
        rows = []
        for e, a in enumerate(acc, start=1):
            rows.append(_json_line("train", {"epoch": e, "train_conflict_pct": 10.0 * e, "train_gate_target": 1.0 + e / 100,
                                             "train_g_fbank_mean": 0.9, "train_wall": 30 * e}))
            rows.append(_json_line("dev_st", {"epoch": e, "dev_st_loss": 3.0 - e, "dev_st_accuracy": a}))
        (run / "train.log").write_text("".join(rows))
    (tmp_path / "ours" / "bleu-tst-COMMON.json").write_text(json.dumps(
        {"bleu": 12.5, "chrf": 40.0, "signature": "nrefs:1|tok:13a"}))
    summary = gate_summary.table({"ours": tmp_path / "ours" / "train.log"})
    assert "| run | epoch | conflict_pct | gate_target | g_fbank_mean |" in summary
    assert "| ours | 2 | 20 | 1.02 | 0.9 |" in summary
    md = learning_table.table({"ours": tmp_path / "ours", "s2t": tmp_path / "s2t"})
    assert "| epoch | dev accuracy ours | dev accuracy s2t |" in md and "| 2 | 60.00 | 70.00 |" in md
    assert "| ours | 12.50 | 40.00 | 60.00 | 2 |" in md and "| s2t | - | - | 70.00 | 2 |" in md


def _gen(path, hyps):
    path.write_text("".join(f"D-{i}\t-0.1\t{h}\n" for i, h in reversed(list(enumerate(hyps)))), encoding="utf-8")
    return path


def test_paired_bootstrap_against_a_baseline(tmp_path):
    """``--paired-bs``: sacreBLEU's paired bootstrap; a system far better than its baseline on
    many sentences is significant, one equal to it is not, and the baseline's score is its own."""
    import random

    rng = random.Random(0)
    words = "der die das Hund Katze Garten schläft läuft im am ein kleiner großer Test heute".split()
    refs = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(60)]
    tsv = _tsv(tmp_path / "tst_st.tsv", refs)
    good = _gen(tmp_path / "good.txt", [r if i % 6 else r.split(" ", 1)[1] for i, r in enumerate(refs)])
    bad = _gen(tmp_path / "bad.txt", [" ".join(r.split()[:4]) for r in refs])
    res = score_generate_output(good, tsv=tsv, baseline=bad, n_samples=200)
    bs = res["paired_bs"]
    assert bs["bleu"]["system"] == pytest.approx(res["bleu"], abs=0.01)
    assert bs["bleu"]["baseline"] == pytest.approx(score_generate_output(bad, tsv=tsv)["bleu"], abs=0.01)
    assert bs["bleu"]["p_value"] < 0.01 and bs["chrf"]["p_value"] < 0.01
    assert bs["bleu"]["system_ci"] > 0 and bs["n_samples"] == 200
    # one sentence apart: a difference the test set's sampling explains
    near = _gen(tmp_path / "near.txt", [r if i % 6 else r.split(" ", 1)[1] for i, r in enumerate(refs[:-1])] + ["x"])
    close = score_generate_output(good, tsv=tsv, baseline=near, n_samples=200)["paired_bs"]
    assert close["bleu"]["p_value"] > 0.05
    # the baseline is held to the same checks: every reference needs a hypothesis
    short = _gen(tmp_path / "short.txt", refs[:-1])
    with pytest.raises(ScoringError, match="short.txt against .*1 of 60 references have no hypothesis"):
        score_generate_output(good, tsv=tsv, baseline=short)
    proc = subprocess.run([str(BIN / "gsgn-score"), good, "--tsv", tsv, "--paired-bs", bad,
                           "--paired-bs-samples", "100", "--json", tmp_path / "s.json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "paired bootstrap (100 resamples)" in proc.stdout and "p = " in proc.stdout
    assert json.loads((tmp_path / "s.json").read_text())["paired_bs"]["baseline_output"] == str(bad)
