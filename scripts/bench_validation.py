#!/usr/bin/env python
"""Where a toy epoch's validation time goes: dev loss alone, and greedy dev BLEU per inference
branch, for checkpoints of a run, with the decoder's length cap as given.

Each checkpoint's dev set is validated as ``fairseq-train`` does (``task.valid_step`` on the
task's batches); the time of the loss pass alone and of each extra greedy decode is printed,
so the cost of ``--eval-bleu`` / ``--eval-bleu-branches`` / ``max_len_b`` can be read against
the epoch's training time (fairseq's ``train_wall`` in the run's log).

    python scripts/bench_validation.py --data data/toy/en-de --checkpoints exp/run/checkpoint1.pt \
        exp/run/checkpoint10.pt --eval-bleu-args '{"beam": 1}' '{"beam": 1, "max_len_b": 60}'
"""
import argparse
import json
import time
from pathlib import Path

import torch
from fairseq import checkpoint_utils, utils

import gsgn_fairseq  # noqa: F401


def validate(path: Path, data: Path, gen_args: str, branches: str, max_tokens: int) -> dict:
    overrides = {"data": str(data), "eval_bleu": True, "eval_bleu_args": gen_args, "eval_bleu_branches": branches}
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides=overrides)
    model = models[0].eval()
    task.load_dataset("dev_st")
    criterion = task.build_criterion(cfg.criterion)
    itr = task.get_batch_iterator(task.dataset("dev_st"), max_tokens=max_tokens, seed=1).next_epoch_itr(shuffle=False)
    batches = list(itr)
    out = {"checkpoint": str(path), "eval_bleu_args": gen_args, "branches": branches}
    with torch.no_grad():
        t = time.perf_counter()
        for b in batches:
            criterion(model, b)
        out["loss_s"] = time.perf_counter() - t
        t = time.perf_counter()
        logs = [task.valid_step(b, model, criterion)[2] for b in batches]
        out["valid_step_s"] = time.perf_counter() - t
    for prefix in ["_bleu"] + [f"_bleu_{b}" for b in branches.split(",") if b]:
        out[f"{prefix}_sys_len"] = sum(int(utils.item(l[f"{prefix}_sys_len"])) for l in logs)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoints", type=Path, nargs="+", required=True)
    p.add_argument("--eval-bleu-args", nargs="+", default=['{"beam": 1}'])
    p.add_argument("--branches", default="", help="--eval-bleu-branches, e.g. sample")
    p.add_argument("--max-tokens", type=int, default=10000)
    args = p.parse_args()
    torch.set_num_threads(1)
    for ckpt in args.checkpoints:
        for gen in args.eval_bleu_args:
            r = validate(ckpt, args.data, gen, args.branches, args.max_tokens)
            print(json.dumps(r))


if __name__ == "__main__":
    main()
