#!/usr/bin/env python
"""Average the N best fairseq checkpoints of a run, as the paper's evaluation protocol does.

The candidates are the epoch checkpoints (``checkpoint{N}.pt``) and the
``checkpoint.best_{metric}_{value}.pt`` files that ``--keep-best-checkpoints`` writes in a
fairseq save dir (``checkpoint_best.pt`` and ``checkpoint_last.pt`` are copies of those). Two
candidates count once only when they are copies: the same update count, epoch and weights
(fairseq writes one file and copies it to the other names). Different checkpoints saved at
the same update count (two runs' files in one directory) are both candidates, with a warning,
and averaging them runs the model check below. Each candidate is ranked by the
validation value fairseq stored in it (``extra_state["val_loss"]``, which holds whatever
``--best-checkpoint-metric`` measured). The metric and its direction are read from the
checkpoints' own configuration (``checkpoint.best_checkpoint_metric``,
``maximize_best_checkpoint_metric``): loss is ranked lowest first, BLEU (trained with
``--maximize-best-checkpoint-metric``) highest first. Candidates saved with different metrics
are refused, and so is a ``--maximize`` / ``--minimize`` that contradicts the checkpoints.

The checkpoints must hold the same model: their model configuration (``cfg.model`` without
the bookkeeping entries that belong to the other sections, such as paths, seeds, logging,
optimisation and criterion settings), task configuration (without ``data``) and units
provenance (``task_state``, with the fingerprint of the units trained on) must agree; the
first difference is named. Parameters are
averaged in float64 and cast back. The output keeps the first checkpoint's
configuration (so ``fairseq-generate --path`` loads it) without the optimizer state, and a
``.json`` beside it lists the averaged epochs; the largest is the run's "convergence epoch".

    gsgn-average-checkpoints --inputs exp/gsgn --num-best-checkpoints 10 \
        --output exp/gsgn/checkpoint_avg10.pt
    gsgn-average-checkpoints --inputs exp/gsgn --last 10 --output exp/gsgn/checkpoint_last10.pt
"""
import argparse
import collections
import hashlib
import logging
import pickle
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..fairseq_patches import checkpoint_compat  # noqa: F401  (fairseq checkpoints under weights_only)
from ..fileio import atomic_path, write_json_atomic

logger = logging.getLogger("average_checkpoints")
CANDIDATE = re.compile(r"^checkpoint(\d+|\.best_.+)\.pt$")


@dataclass
class Candidate:
    path: str
    epoch: int
    num_updates: int
    metric: float
    metric_name: str = "loss"
    maximize: bool = False


def best_metric_of(state: dict) -> tuple:
    """(metric name, maximize) that fairseq ranked this checkpoint's ``val_loss`` by."""
    cfg = state.get("cfg") or {}
    ckpt = cfg.get("checkpoint") if isinstance(cfg, dict) else None
    if ckpt is None and state.get("args") is not None:  # pre-hydra checkpoints
        ckpt = vars(state["args"])
    ckpt = ckpt or {}
    return str(ckpt.get("best_checkpoint_metric", "loss")), bool(ckpt.get("maximize_best_checkpoint_metric", False))


def _load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:  # truncated, damaged, not a checkpoint
        raise ValueError(f"{path}: not a readable checkpoint ({err}); was it cut short while being "
                         "saved or copied? Leave it out of the directory or replace it") from None


def weights_digest(state: dict) -> str:
    """A hash of a checkpoint's model parameters (names, dtypes, shapes and bytes)."""
    h = hashlib.sha1()
    for name, tensor in sorted(state["model"].items()):
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def completed_epoch(itr_state: dict) -> int:
    """The epoch a checkpoint was saved in: fairseq stores ``epoch + 1`` once an epoch ends."""
    epoch = int(itr_state["epoch"])
    return epoch - 1 if int(itr_state.get("iterations_in_epoch", 0)) == 0 and epoch > 1 else epoch


def list_candidates(save_dir: Path) -> List[Candidate]:
    """Every distinct checkpoint in ``save_dir`` that carries a validation value; copies of
    one (same update count, epoch and weights) count once."""
    kept: List[Candidate] = []
    digests: Dict[str, str] = {}  # path -> weights_digest, computed only when update counts collide

    def digest(path: str) -> str:
        if path not in digests:
            digests[path] = weights_digest(_load(Path(path)))
        return digests[path]

    for path in sorted(Path(save_dir).iterdir()):
        if not CANDIDATE.match(path.name):
            continue
        state = _load(path)
        extra = state.get("extra_state") or {}
        metric = extra.get("val_loss")
        if metric is None:
            logger.warning(f"{path}: no validation value stored; skipped")
            continue
        epoch = completed_epoch(extra["train_iterator"])
        updates = int(state["optimizer_history"][-1]["num_updates"])
        name, maximize = best_metric_of(state)
        candidate = Candidate(str(path), epoch, updates, float(metric), name, maximize)
        same_update = [c for c in kept if c.num_updates == updates]
        if any(c.epoch == epoch and digest(c.path) == digest(candidate.path) for c in same_update):
            continue  # a copy (checkpoint.best_*.pt of checkpointN.pt)
        for c in same_update:
            logger.warning(f"{path} and {c.path} were both saved at update {updates} but hold different weights "
                           f"(epochs {epoch} and {c.epoch}): two runs in one directory? Both are candidates")
        kept.append(candidate)
    return kept


def ranking(candidates: List[Candidate], maximize: Optional[bool] = None) -> tuple:
    """(metric name, maximize) shared by all candidates; ``maximize`` (from the command line)
    must agree with what the checkpoints were saved with."""
    kinds = sorted({(c.metric_name, c.maximize) for c in candidates})
    if len(kinds) > 1:
        first = {k: next(c.path for c in candidates if (c.metric_name, c.maximize) == k) for k in kinds}
        raise ValueError("checkpoints were ranked by different validation metrics: "
                         + "; ".join(f"{p}: {n} ({'higher' if m else 'lower'} is better)" for (n, m), p in first.items()))
    name, saved = kinds[0]
    if maximize is not None and maximize != saved:
        raise ValueError(f"{'--maximize' if maximize else '--minimize'} contradicts the checkpoints: they were saved "
                         f"with --best-checkpoint-metric {name} ({'higher' if saved else 'lower'} is better)")
    return name, saved


def select_best(candidates: List[Candidate], n: int, maximize: Optional[bool] = None) -> List[Candidate]:
    if not candidates:
        raise ValueError("no checkpoints with a validation value to choose from")
    _, maximize = ranking(candidates, maximize)
    ranked = sorted(candidates, key=lambda c: (-c.metric if maximize else c.metric, c.epoch))
    if len(ranked) < n:
        logger.warning(f"asked for {n} best checkpoints, only {len(ranked)} exist; averaging those")
    return ranked[:n]


NON_MODEL_SECTIONS = ("common", "common_eval", "distributed_training", "dataset", "optimization", "checkpoint",
                      "bmuf", "generation", "eval_lm", "interactive", "ema", "optimizer", "lr_scheduler",
                      "scoring", "bpe", "tokenizer", "criterion")
TASK_BOOKKEEPING = ("data",)


def _as_dict(section) -> dict:
    if section is None:
        return {}
    if isinstance(section, dict):
        return dict(section)
    return dict(vars(section))


def model_identity(state: dict) -> Dict[str, object]:
    """What must agree for two checkpoints to be averaged: ``model.X``, ``task.X`` and
    ``task_state.units_provenance`` entries (bookkeeping left out, see the module docstring)."""
    cfg = state.get("cfg")
    if cfg is None and state.get("args") is not None:  # pre-hydra checkpoints: one namespace
        cfg = {"model": state["args"]}
    cfg = cfg or {}
    bookkeeping = set(TASK_BOOKKEEPING)
    for name in NON_MODEL_SECTIONS:
        bookkeeping.update(_as_dict(cfg.get(name)))
    # a legacy (argparse) model's cfg.model, and often cfg.task, hold every option of the run
    model = {k: v for k, v in _as_dict(cfg.get("model")).items() if k not in bookkeeping}
    out = {f"model.{k}": v for k, v in model.items()}
    out.update({f"task.{k}": v for k, v in _as_dict(cfg.get("task")).items()
                if k not in bookkeeping and k not in model})
    for section in ("model", "task"):  # the unit sets: "units" unless the run named others
        if f"{section}.unit_views" in out or section == "model":
            out[f"{section}.unit_views"] = out.get(f"{section}.unit_views") or "units"
    task_state = state.get("task_state") or {}
    prov = task_state.get("units_provenance")
    if prov is None:
        out["task_state.units_provenance"] = None
    else:  # one entry per key, so that the first difference (e.g. units_fingerprint) is named
        out.update({f"task_state.units_provenance.{k}": v for k, v in prov.items()})
    for name, set_prov in (task_state.get("unit_sets_provenance") or {}).items():  # every unit set's
        out.update({f"task_state.unit_sets_provenance.{name}.{k}": v for k, v in (set_prov or {}).items()})
    return out


def unit_views_of(state: dict) -> str:
    cfg = state.get("cfg") or {"model": state.get("args")}
    return getattr(_as_dict(cfg.get("model")).get("unit_views"), "strip", lambda: None)() or "units"


def check_same_model(first: dict, first_path: str, state: dict, path: str) -> None:
    if unit_views_of(first) != unit_views_of(state):
        raise ValueError(f"{path}: not the same model as {first_path}: it reads the unit views "
                         f"{unit_views_of(state)} (--unit-views), {first_path} reads {unit_views_of(first)}; "
                         "checkpoints of models over different views cannot be averaged")
    a, b = model_identity(first), model_identity(state)
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            raise ValueError(f"{path}: not the same model as {first_path}: {key} is {b.get(key, '<unset>')!r} "
                             f"there but {a.get(key, '<unset>')!r} in {first_path}; average checkpoints of one run")


def average_states(paths: List[str]) -> dict:
    """Average the ``model`` entries of the checkpoints at ``paths`` (which must hold the same
    model: :func:`check_same_model`)."""
    total: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    first = None
    for path in paths:
        state = _load(Path(path))
        if first is None:
            first = state
        else:
            check_same_model(first, paths[0], state, path)
        params = state["model"]
        if total and set(params) != set(total):
            diff = sorted(set(params) ^ set(total))[:5]
            raise ValueError(f"{path}: parameters differ from {paths[0]} (e.g. {diff})")
        for k, v in params.items():
            if k in total and total[k].shape != v.shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, {paths[0]} has {tuple(total[k].shape)}")
            if v.is_floating_point():
                total[k] = v.double() if k not in total else total[k] + v.double()
            else:  # integer buffers (e.g. step counters) are taken from the first checkpoint
                total.setdefault(k, v.clone())
    averaged = collections.OrderedDict(
        (k, (v / len(paths)).to(first["model"][k].dtype) if v.is_floating_point() else v)
        for k, v in total.items()
    )
    out = {k: v for k, v in first.items() if k != "last_optimizer_state"}
    out["model"] = averaged
    return out


def select_last(candidates: List[Candidate], n: int) -> List[Candidate]:
    """The ``n`` latest saved updates (fairseq's MuST-C example averages the last 10 epochs)."""
    if not candidates:
        raise ValueError("no checkpoints with a validation value to choose from")
    ranked = sorted(candidates, key=lambda c: -c.num_updates)
    if len(ranked) < n:
        logger.warning(f"asked for the last {n} checkpoints, only {len(ranked)} exist; averaging those")
    return ranked[:n]


def average_best(save_dir: Path, n: int, output: Path, maximize: Optional[bool] = None, last: bool = False) -> dict:
    """Average the ``n`` best checkpoints of ``save_dir`` on dev (or, with ``last``, the ``n``
    latest) into ``output``; returns the summary also written to ``output.json``."""
    if n < 1:
        raise ValueError(f"{'--last' if last else '--num-best-checkpoints'} must be a positive number of "
                         f"checkpoints, got {n}")
    candidates = list_candidates(save_dir)
    chosen = select_last(candidates, n) if last else select_best(candidates, n, maximize)
    state = average_states([c.path for c in chosen])
    output = Path(output)
    with atomic_path(output) as tmp:
        torch.save(state, tmp)
    summary = {
        "checkpoints": [asdict(c) for c in chosen],
        "epochs": sorted(c.epoch for c in chosen),
        "convergence_epoch": max(c.epoch for c in chosen),
        "metric": chosen[0].metric_name,
        "maximize": chosen[0].maximize,
        "selection": "last" if last else "best",
    }
    write_json_atomic(str(output) + ".json", summary)
    return summary


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    p = argparse.ArgumentParser(prog="gsgn-average-checkpoints", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", required=True, type=Path, help="fairseq --save-dir of one run")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--num-best-checkpoints", type=int, metavar="N",
                       help="average the N best on dev (default 10; the paper's protocol)")
    which.add_argument("--last", type=int, metavar="N",
                       help="average the N latest checkpoints instead (fairseq's MuST-C example: 10)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--maximize", dest="maximize", action="store_const", const=True,
                           help="assert that higher is better (default: what the checkpoints were saved with)")
    direction.add_argument("--minimize", dest="maximize", action="store_const", const=False,
                           help="assert that lower is better")
    p.add_argument("--output", required=True, type=Path)
    args = p.parse_args()
    for flag, n in (("--last", args.last), ("--num-best-checkpoints", args.num_best_checkpoints)):
        if n is not None and n < 1:
            p.error(f"{flag} must be a positive number of checkpoints, got {n}")
    try:
        if args.last is not None:
            summary = average_best(args.inputs, args.last, args.output, last=True)
            how = "the latest"
        else:
            n = 10 if args.num_best_checkpoints is None else args.num_best_checkpoints
            summary = average_best(args.inputs, n, args.output, args.maximize)
            how = f"best by {summary['metric']} ({'highest' if summary['maximize'] else 'lowest'} first)"
    except (ValueError, OSError) as err:
        sys.exit(f"gsgn-average-checkpoints: {err}")
    logger.info(f"{how}: averaged epochs {summary['epochs']} -> {args.output} "
                f"(convergence epoch {summary['convergence_epoch']})")


if __name__ == "__main__":
    main()
