#!/usr/bin/env python
"""The range of the S-feature over a training set, for the noise controls of Table II.

The paper's noise spans "the same maximum and minimum values as the S-feature across the
entire training set" (Sec. IV-A). This runs a trained model's unit front end (the unit view,
``x_unit``, before fusion) over every utterance of a subset and prints ``MIN,MAX`` over the
valid frames, the value of ``--noise-range`` for ``--fusion noise-sum`` / ``noise-replace``.

    gsgn-measure-unit-range --path exp/gsgn/checkpoint_avg10.pt --data data/en-de \
        --subset train_st --json exp/noise_range.json
"""
import argparse
import logging
from pathlib import Path

import torch
from fairseq import checkpoint_utils, utils
from tqdm import tqdm

from ..fairseq_patches import checkpoint_compat  # noqa: F401  (checkpoints load under weights_only)
from ..fileio import write_json_atomic

logger = logging.getLogger("measure_unit_range")


@torch.no_grad()
def unit_range(path: Path, data: Path, subset: str, max_tokens: int = 50000, cpu: bool = False) -> dict:
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(path)], arg_overrides={"data": str(data)}
    )
    model = models[0].eval()
    frontend = getattr(model.encoder, "frontend", None)
    if frontend is None or frontend.unit_frontend is None:
        raise SystemExit(f"{path}: the model has no unit view (--fusion {getattr(cfg.model, 'fusion', '?')}); "
                         "measure on a model trained with units (e.g. --fusion gsgn)")
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        model.cuda()
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    itr = task.get_batch_iterator(dataset, max_tokens=max_tokens, required_batch_size_multiple=1,
                                  ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
    low, high, frames, utts = float("inf"), float("-inf"), 0, 0
    for sample in tqdm(itr, desc=f"unit view over {subset}"):
        if use_cuda:
            sample = utils.move_to_cuda(sample)
        net = sample["net_input"]
        x_unit, lengths = frontend.unit_frontend(net["src_units"], net["src_units_lengths"])  # (B, T', D)
        valid = torch.arange(x_unit.size(1), device=x_unit.device).unsqueeze(0) < lengths.unsqueeze(1)
        values = x_unit[valid]  # (frames, D)
        low, high = min(low, float(values.min())), max(high, float(values.max()))
        frames += int(valid.sum())
        utts += x_unit.size(0)
    if utts != len(dataset):
        raise RuntimeError(f"{subset}: read {utts} of {len(dataset)} utterances")
    return {"min": low, "max": high, "noise_range": f"{low:.6g},{high:.6g}", "frames": frames,
            "utterances": utts, "checkpoint": str(path), "subset": subset}


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    p = argparse.ArgumentParser(prog="gsgn-measure-unit-range", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, type=Path, help="a trained checkpoint with a unit view")
    p.add_argument("--data", required=True, type=Path, help="its prepared data directory")
    p.add_argument("--subset", default="train_st")
    p.add_argument("--max-tokens", type=int, default=50000)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    out = unit_range(args.path, args.data, args.subset, args.max_tokens, args.cpu)
    logger.info(f"unit view over {out['utterances']} utterances ({out['frames']} frames): "
                f"min {out['min']:.6g}, max {out['max']:.6g}")
    print(out["noise_range"])
    if args.json:
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
