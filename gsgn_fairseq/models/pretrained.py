"""Initialise parts of an ``s2t_gsgn`` model from fairseq ASR / MT checkpoints (paper Table IV).

* ``--load-pretrained-acoustic-encoder-from``: a fairseq ``s2t_transformer`` checkpoint (ASR).
  ``encoder.subsample.*`` -> ``encoder.subsample.*`` (same parameter layout, see
  ``MaskedConv1dSubsampler``), ``encoder.transformer_layers.N.*`` ->
  ``encoder.acoustic_layers.N.*``, ``encoder.layer_norm.*`` -> ``encoder.acoustic_layer_norm.*``.
* ``--load-pretrained-text-encoder-from``: a fairseq ``transformer`` checkpoint (MT).
  ``encoder.layers.N.*`` -> ``encoder.textual_layers.N.*``, ``encoder.layer_norm.*`` ->
  ``encoder.layer_norm.*`` (the final norm after the textual encoder).
* ``--load-pretrained-decoder-from``: a fairseq ``transformer`` checkpoint (MT).
  ``decoder.*`` -> ``decoder.*``. Its target dictionary must be ours, symbol for symbol: it is
  read from the checkpoint's task data directory (``dict.{target_lang}.txt``, where
  ``fairseq-preprocess --tgtdict`` put it); a different symbol at any row is an error naming
  ``decoder.embed_tokens.weight``, the row and both symbols. When that file is not there
  (the checkpoint moved), only the shapes are checked, with a warning.

Checkpoints are read with ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` (safe loading,
see ``fairseq_patches/checkpoint_compat.py``). Every parameter that maps to ours must have our shape, else a
``ValueError`` names both keys and shapes; nothing is copied in that case. The log lists what
was loaded, which parameters of the target component stayed as initialised, and which
checkpoint parameters of the mapped prefixes had no counterpart (e.g. extra layers).
"""
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from fairseq import checkpoint_utils

logger = logging.getLogger(__name__)

# (checkpoint prefix, our prefix)
ACOUSTIC_ENCODER_MAP = (
    ("encoder.subsample.", "encoder.frontend.subsample."),
    ("encoder.transformer_layers.", "encoder.acoustic_layers."),
    ("encoder.layer_norm.", "encoder.acoustic_layer_norm."),
)
TEXT_ENCODER_MAP = (
    ("encoder.layers.", "encoder.textual_layers."),
    ("encoder.layer_norm.", "encoder.layer_norm."),
)
DECODER_MAP = (("decoder.", "decoder."),)


@dataclass
class LoadReport:
    path: str
    loaded: List[str] = field(default_factory=list)  # our keys that received checkpoint values
    not_loaded: List[str] = field(default_factory=list)  # our keys under the mapped prefixes left as they were
    unused: List[str] = field(default_factory=list)  # checkpoint keys under the mapped prefixes we have no slot for


def _summary(keys: Sequence[str], limit: int = 20) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "") if keys else "none"


def _cfg_get(node, key):
    if node is None:
        return None
    return node.get(key) if hasattr(node, "get") else getattr(node, key, None)


def check_vocabulary(state: dict, path: str, dictionary, what: str = "decoder") -> bool:
    """The checkpoint's target dictionary must equal ``dictionary`` symbol for symbol.

    Returns False (with a warning) when the checkpoint's dictionary file cannot be found."""
    task = _cfg_get(state.get("cfg"), "task") or state.get("args")  # fairseq >= 0.10 cfg, else old Namespace
    data, lang = _cfg_get(task, "data"), _cfg_get(task, "target_lang")
    dict_path = Path(str(data).split(os.pathsep)[0]) / f"dict.{lang}.txt" if data and lang else None
    if dict_path is None or not dict_path.is_file():
        logger.warning(f"pretrained {what} {path}: its target dictionary ({dict_path or 'no task data in the checkpoint'}) "
                       f"is not there, so only the parameter shapes are checked, not the vocabulary")
        return False
    from fairseq.data import Dictionary

    theirs = Dictionary.load(str(dict_path)).symbols
    ours = list(dictionary.symbols)
    if theirs != ours:
        row = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        at = lambda syms: repr(syms[row]) if row < len(syms) else "nothing"  # noqa: E731
        raise ValueError(
            f"{path}: the pretrained {what}'s vocabulary ({dict_path}, {len(theirs)} symbols) is not ours "
            f"({len(ours)} symbols): decoder.embed_tokens.weight row {row} is {at(theirs)} there and {at(ours)} here; "
            f"pretrain the MT model on the ST target dictionary (fairseq-preprocess --tgtdict, as "
            f"scripts/recipes/must_c/pretrain.sh does)"
        )
    return True


def load_pretrained_component(
    model: nn.Module, path: str, mapping: Sequence[Tuple[str, str]], what: str, dictionary=None
) -> LoadReport:
    """Copy the checkpoint parameters under ``mapping``'s prefixes into ``model``.

    Args:
        model: the full model (keys like ``encoder.acoustic_layers.0.fc1.weight``).
        path: fairseq checkpoint file.
        mapping: (checkpoint prefix, model prefix) pairs; the first matching pair wins.
        what: name of the component for messages (e.g. ``"acoustic encoder"``).
        dictionary: when given, the checkpoint's target dictionary must equal it
            (:func:`check_vocabulary`).

    Returns:
        A :class:`LoadReport`; also logged.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"pretrained {what} checkpoint not found: {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    if "model" not in state:
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' entry; keys {list(state)})")
    ckpt = state["model"]
    if dictionary is not None:
        check_vocabulary(state, path, dictionary, what)
    ours = model.state_dict()
    report = LoadReport(path=str(path))
    updates = {}
    for ckpt_key, value in ckpt.items():
        for src_prefix, dst_prefix in mapping:
            if ckpt_key.startswith(src_prefix):
                dst_key = dst_prefix + ckpt_key[len(src_prefix):]
                if dst_key not in ours:
                    report.unused.append(ckpt_key)
                elif tuple(ours[dst_key].shape) != tuple(value.shape):
                    raise ValueError(
                        f"{path}: pretrained {what} key {ckpt_key} has shape {tuple(value.shape)} but our "
                        f"{dst_key} has shape {tuple(ours[dst_key].shape)}; check the arch (dims, layers, "
                        f"conv kernels) and the dictionary against the pretrained model"
                    )
                else:
                    updates[dst_key] = value
                    report.loaded.append(dst_key)
                break
    if not updates:
        raise ValueError(
            f"{path}: no parameter of the pretrained {what} matched; expected checkpoint keys starting with "
            f"{[p for p, _ in mapping]}"
        )
    with torch.no_grad():
        for key, value in updates.items():
            ours[key].copy_(value.to(dtype=ours[key].dtype))
    dst_prefixes = tuple(dst for _, dst in mapping)
    loaded = set(report.loaded)
    report.not_loaded = [k for k in ours if k.startswith(dst_prefixes) and k not in loaded]
    logger.info(f"pretrained {what} from {path}: loaded {len(report.loaded)} tensors: {_summary(report.loaded)}")
    logger.info(f"pretrained {what}: not loaded (kept their initialisation): {_summary(report.not_loaded)}")
    if report.unused:
        logger.info(f"pretrained {what}: checkpoint tensors without a counterpart: {_summary(report.unused)}")
    return report
