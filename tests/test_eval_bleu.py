"""Validation BLEU of task speech_to_text_multiview (``--eval-bleu``): the counts/totals
aggregation, detokenization through the config's sentencepiece model, and a real
``fairseq-train --eval-bleu`` run with ``--best-checkpoint-metric bleu``."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
import yaml
from fairseq import options, tasks
from fairseq.logging import metrics

import gsgn_fairseq  # noqa: F401
from gsgn_fairseq.tasks.speech_to_text_multiview import BLEU_STAT_KEYS, bleu_logging_output
from tiny_s2t_data import make_tiny_multiview_data

K = 20
BIN = Path(sys.executable).parent
USER_DIR = str(Path(__file__).resolve().parents[1] / "gsgn_fairseq")


def setup(data_dir, *extra):
    parser = options.get_training_parser()
    argv = [str(data_dir), "--task", "speech_to_text_multiview", "--arch", "s2t_gsgn_tiny", "--config-yaml",
            "config_st.yaml", "--num-units", str(K), "--criterion", "label_smoothed_cross_entropy", *extra]
    args = options.parse_args_and_arch(parser, argv)
    return tasks.setup_task(args), args


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data_dir = make_tiny_multiview_data(tmp_path_factory.mktemp("tiny"), n_train=6, n_valid=4, num_units=K)
    task, args = setup(data_dir, "--eval-bleu")
    return task, task.build_criterion(args)


def _valid_logging_output(hyps, refs):
    """What valid_step returns for a batch: the criterion's entries plus the BLEU statistics."""
    n = len(refs)
    out = {"loss": 2.0 * n, "nll_loss": 1.5 * n, "ntokens": 3 * n, "nsentences": n, "sample_size": 3 * n}
    out.update(bleu_logging_output(hyps, refs))
    return out


def _validation_bleu(task, criterion, batches):
    """``bleu`` of one validation, as fairseq-train computes it: ``reduce_metrics`` once per
    batch (each batch a list of per-worker (hyps, refs)), inside a fresh aggregation."""
    with metrics.aggregate(new_root=True) as agg:
        for batch in batches:
            task.reduce_metrics([_valid_logging_output(h, r) for h, r in batch], criterion)
        return agg.get_smoothed_values()


REFS = [
    "the cat sees a dog .",
    "a big bird likes the cat",
    "The dog, the cat and the bird.",
    "likes likes likes",
    "big dog sees a small bird today",
]
HYPS = [
    "the cat sees the dog .",
    "a bird likes the big cat",
    "The dog, the cat and a bird.",
    "likes",
    "big dog sees a small bird today",
]


@pytest.mark.parametrize(
    "hyps, refs, expected",
    [
        (REFS, REFS, 100.0),  # identical
        (["x y z w"] * 5, REFS, 0.0),  # disjoint
        (HYPS, REFS, None),  # partial: sacrebleu's corpus BLEU
    ],
    ids=["identical", "disjoint", "partial"],
)
def test_reduce_metrics_gives_sacrebleu_corpus_bleu(tiny, hyps, refs, expected):
    task, criterion = tiny
    corpus = round(sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score, 2)
    if expected is not None:
        assert corpus == expected
    pairs = list(zip(hyps, refs))
    one_batch = [[(hyps, refs)]]
    batches = [[([h], [r])] for h, r in pairs]  # one sentence per batch
    workers = [[(hyps[:2], refs[:2]), (hyps[2:3], refs[2:3])], [(hyps[3:], refs[3:])]]  # 2 workers, 2 batches
    for layout in (one_batch, batches, workers):
        stats = _validation_bleu(task, criterion, layout)
        assert stats["bleu"] == pytest.approx(corpus, abs=1e-9)
        assert not any(k.startswith("_bleu") for k in stats)  # the statistics stay hidden
    assert "loss" in stats and "nll_loss" in stats  # the criterion's metrics are still there


def test_corpus_bleu_is_not_the_mean_of_batch_bleus(tiny):
    task, criterion = tiny
    per_batch = [sacrebleu.corpus_bleu([h], [[r]]).score for h, r in zip(HYPS, REFS)]
    corpus = _validation_bleu(task, criterion, [[([h], [r])] for h, r in zip(HYPS, REFS)])["bleu"]
    assert abs(corpus - sum(per_batch) / len(per_batch)) > 1.0


def test_no_bleu_without_bleu_statistics(tiny):
    task, criterion = tiny
    train_like = {"loss": 2.0, "nll_loss": 1.5, "ntokens": 3, "nsentences": 1, "sample_size": 3}
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics([train_like], criterion)
        assert "bleu" not in agg.get_smoothed_values()


def test_tensor_statistics_from_stat_sync(tiny):
    """After a multi-worker all-reduce the entries are (float) tensors."""
    task, criterion = tiny
    out = _valid_logging_output(HYPS, REFS)
    synced = {k: torch.tensor(float(v), dtype=torch.double) for k, v in out.items()}
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics([synced], criterion)
        bleu = agg.get_smoothed_values()["bleu"]
    assert bleu == round(sacrebleu.corpus_bleu(HYPS, [REFS]).score, 2)


def test_eval_bleu_args_must_be_a_json_object(tmp_path):
    data_dir = make_tiny_multiview_data(tmp_path / "tiny", n_train=2, n_valid=2, num_units=K)
    task, args = setup(data_dir, "--eval-bleu", "--eval-bleu-args", "[1]")
    with pytest.raises(ValueError, match="JSON object"):
        task.build_model(args)
    task, args = setup(data_dir)  # without --eval-bleu: no generator, args unread
    task.build_model(args)
    assert task.sequence_generator is None


# ---------------------------------------------------------------- sentencepiece targets
@pytest.fixture(scope="module")
def spm_data(tmp_path_factory):
    import sentencepiece as spm

    data_dir = make_tiny_multiview_data(tmp_path_factory.mktemp("spm"), n_train=8, n_valid=4, num_units=K)
    texts = [line.split("\t")[3] for split in ("train", "valid")
             for line in (data_dir / f"{split}.tsv").read_text().splitlines()[1:]]
    (data_dir / "spm.input").write_text("\n".join(texts) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.Train(
        input=str(data_dir / "spm.input"), model_prefix=str(data_dir / "spm"), model_type="unigram",
        vocab_size=30, hard_vocab_limit=False, character_coverage=1.0, num_threads=1, minloglevel=2,
        unk_id=3, bos_id=0, eos_id=2, pad_id=1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(data_dir / "spm.model"))
    pieces = [sp.id_to_piece(i) for i in range(4, sp.get_piece_size())]
    (data_dir / "spm.txt").write_text("".join(f"{p} 1\n" for p in pieces), encoding="utf-8")
    config = yaml.safe_load((data_dir / "config_st.yaml").read_text())
    config["vocab_filename"] = "spm.txt"
    config["bpe_tokenizer"] = {"bpe": "sentencepiece", "sentencepiece_model": str(data_dir / "spm.model")}
    (data_dir / "config_st.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return data_dir


def test_sentencepiece_targets_are_detokenized(spm_data):
    task, args = setup(spm_data, "--eval-bleu", "--eval-bleu-args", '{"beam": 1, "max_len_b": 8}')
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    torch.manual_seed(0)
    model = task.build_model(args).eval()
    assert task.sequence_generator is not None and task.sequence_generator.beam_size == 1
    assert any(task.tgt_dict[i].startswith("\u2581") for i in range(len(task.tgt_dict)))  # real pieces
    targets = [dataset[i].target for i in range(len(dataset))]
    # some word is split into several pieces (EOS aside)
    assert any(len(t) - 1 > len(text.split()) for t, text in zip(targets, dataset.tgt_texts))
    refs = [task.eval_bleu_decode(t) for t in targets]
    assert refs == dataset.tgt_texts  # the raw references, restored
    assert all(" " in r for r in refs)  # decoded once: the spaces are there
    the = task.tgt_dict.index("\u2581THE")
    assert the != task.tgt_dict.unk()
    unk = torch.tensor([the, task.tgt_dict.unk(), task.tgt_dict.eos()])
    assert task.eval_bleu_decode(unk) == "THE<unk>"  # as fairseq-generate's D- lines print it

    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    _, _, logging_output = task.valid_step(sample, model, task.build_criterion(args))
    ref_words = sum(len(sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(t).split()) for t in dataset.tgt_texts)
    assert logging_output["_bleu_ref_len"] == ref_words
    assert sample["target_text"] == [dataset.tgt_texts[i] for i in sample["id"].tolist()]
    # the references are the original texts the sample carries, not the decoded target ids
    sample["target_text"] = [t + " EXTRA WORDS" for t in sample["target_text"]]
    _, _, longer = task.valid_step(sample, model, task.build_criterion(args))
    assert longer["_bleu_ref_len"] == ref_words + 2 * len(dataset)
    assert 0 < logging_output["_bleu_sys_len"] <= 4 * len(dataset) * 8  # greedy, at most max_len_b pieces each


# ---------------------------------------------------------------- fairseq-train
def _run(tool, argv, timeout=600):
    cmd = [str(BIN / tool), *map(str, argv)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{log[-4000:]}"
    return log


def _train(data_dir, save_dir, max_epoch, *extra):
    return _run("fairseq-train", [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--num-units", K, "--arch", "s2t_gsgn_tiny", "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "4", "--max-tokens", "600", "--required-batch-size-multiple", "1",
        "--max-epoch", max_epoch, "--num-workers", "0", "--save-dir", save_dir, "--no-progress-bar",
        "--log-interval", "1", "--seed", "1", "--cpu", "--train-subset", "train", "--valid-subset", "valid",
        "--fusion", "gsgn", "--eval-bleu", "--eval-bleu-args", '{"beam": 1}', "--eval-bleu-print-samples",
        "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric", *extra,
    ])


def test_fairseq_train_logs_valid_bleu(tmp_path):
    data_dir = make_tiny_multiview_data(tmp_path / "data", n_train=16, n_valid=4, num_units=K)
    save_dir = tmp_path / "ckpt"
    first = _train(data_dir, save_dir, 1, "--eval-bleu-branches", "fbank")
    resumed = _train(data_dir, save_dir, 2, "--eval-bleu-branches", "fbank")  # the checkpoint's BLEU meters load back (weights_only)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 2 @ \d+ updates\)", resumed), resumed[-2000:]
    bleu = {}
    valid_line = re.compile(r"\| valid \| epoch (\d+) \| valid on 'valid' subset \|.*\| bleu ([\d.]+) \|")
    for log in (first, resumed):
        for epoch, value in valid_line.findall(log):
            bleu[int(epoch)] = float(value)
        assert "example hypothesis: " in log and "example reference: " in log
    assert sorted(bleu) == [1, 2], (first + resumed)[-3000:]
    assert len(re.findall(r"\| valid \| epoch \d+ \|.*\| bleu_fbank [\d.]+ \|", first + resumed)) == 2
    assert re.search(rf"\| valid \| epoch 002 \|.*\| best_bleu {max(bleu.values()):g}", resumed), resumed[-2000:]
    assert (save_dir / "checkpoint_best.pt").is_file()
    assert "bleu" not in "".join(re.findall(r"\| train \| epoch .*", first + resumed))

    # the same greedy decoding through fairseq-generate scores the same BLEU as validation did
    gen = _run("fairseq-generate", [
        data_dir, "--user-dir", USER_DIR, "--task", "speech_to_text_multiview", "--config-yaml", "config_st.yaml",
        "--gen-subset", "valid", "--path", save_dir / "checkpoint2.pt", "--beam", "1", "--max-tokens", "600",
        "--required-batch-size-multiple", "1", "--scoring", "sacrebleu", "--num-workers", "0", "--cpu",
    ])
    generated = float(re.search(r"Generate valid with beam=1: BLEU = ([\d.]+)", gen).group(1))
    assert generated == pytest.approx(bleu[2], abs=0.01)


# ---------------------------------------------------------------- per-branch validation BLEU
def test_eval_bleu_branches_decode_with_each_branch(spm_data):
    """``--eval-bleu-branches``: each named branch's statistics equal those of the same model
    validated with that ``--inference-branch``; the model's own branch is restored after."""
    flags = ["--fusion", "gsgn", "--multi-stage-dropout", "--eval-bleu", "--eval-bleu-args", '{"beam": 1, "max_len_b": 8}']
    task, args = setup(spm_data, *flags, "--eval-bleu-branches", "fbank,unit,sample")
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    torch.manual_seed(0)
    model = task.build_model(args).eval()
    criterion = task.build_criterion(args)
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    _, _, out = task.valid_step(sample, model, criterion)
    frontend = model.encoder.frontend
    assert frontend.inference_branch == "fusion"
    per_branch = {}
    for branch in ("fusion", "fbank", "unit", "sample"):
        frontend.inference_branch = branch
        _, _, alone = task.valid_step(sample, model, criterion)
        per_branch[branch] = {f"_bleu_{k}": alone[f"_bleu_{k}"] for k in BLEU_STAT_KEYS}
    frontend.inference_branch = "fusion"
    for branch in ("fbank", "unit", "sample"):
        mine = {k.replace(f"_bleu_{branch}_", "_bleu_"): v for k, v in out.items() if k.startswith(f"_bleu_{branch}_")}
        assert mine == per_branch[branch], branch
    assert {k: v for k, v in out.items() if k in per_branch["fusion"]} == per_branch["fusion"]
    # the branches decode different inputs: some statistic differs between fusion and fbank
    assert per_branch["fusion"] != per_branch["fbank"]
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics([out], criterion)
        stats = agg.get_smoothed_values()
    assert {"bleu", "bleu_fbank", "bleu_unit", "bleu_sample"} <= set(stats)


def test_eval_bleu_branches_are_checked(spm_data):
    task, args = setup(spm_data, "--fusion", "fbank", "--eval-bleu", "--eval-bleu-branches", "unit")
    with pytest.raises(ValueError, match="--eval-bleu-branches unit needs both views"):
        task.build_model(args)
    task, args = setup(spm_data, "--fusion", "gsgn", "--eval-bleu", "--eval-bleu-branches", "fusoin")
    with pytest.raises(ValueError, match="--eval-bleu-branches must be one of"):
        task.build_model(args)
    with pytest.raises(ValueError, match="needs --eval-bleu"):
        setup(spm_data, "--fusion", "gsgn", "--eval-bleu-branches", "fbank")
