"""Data of the pretrained initialisation (paper Table IV), made from a prepared ST pair.

* ASR, for fairseq's ``speech_to_text`` task and an ``s2t_transformer`` (it initialises the
  subsampler and the acoustic encoder): ``{split}_asr.tsv``, the ST manifests with the English
  transcript (``src_text``) as target, and ``config_asr.yaml``, ``config_st.yaml`` with the
  source SentencePiece model and vocabulary.
* MT, for fairseq's ``translation`` task and a ``transformer`` (it initialises the textual
  encoder and the decoder): ``OUT/{train,valid}.{en,TGT}``, the transcripts and translations
  as SentencePiece pieces of the ST task's own models, for
  ``fairseq-preprocess --srcdict <source dict> --tgtdict <ST target dict>``, so that the MT
  decoder's vocabulary is the ST decoder's, index for index.

    gsgn-prep-pretrain --data-root data/toy --tgt-lang de --mt-dir exp/toy/pretrain/mt_text
"""
import argparse
import logging
from pathlib import Path
from typing import Dict, List

import sentencepiece as spm
import yaml

from ..data.manifest import read_tsv, write_tsv
from ..data.mustc import DataError
from ..fileio import write_text_atomic

logger = logging.getLogger("prep_pretrain")

ASR_CONFIG = "config_asr.yaml"
MT_SPLITS = {"train": "train_st", "valid": "dev_st"}  # MT split name -> ST manifest


def _config(pair: Path) -> dict:
    path = pair / "config_st.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the pair first (gsgn-prep-mustc)")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("vocab_filename", "bpe_tokenizer", "src_vocab_filename", "src_bpe_tokenizer"):
        if key not in (config or {}):
            raise DataError(f"{path}: no '{key}' (the source SentencePiece model and vocabulary come from "
                            f"gsgn-prep-mustc)")
    return config


def _rows(tsv: Path) -> List[Dict[str, str]]:
    rows = read_tsv(tsv)
    if rows and "src_text" not in rows[0]:
        raise DataError(f"{tsv}: no 'src_text' column (the English transcript) to pretrain on")
    for i, row in enumerate(rows):
        if not (row.get("src_text") or "").strip():
            raise DataError(f"{tsv}:{i + 2}: utterance {row.get('id')}: empty src_text")
    return rows


def write_asr_data(pair: Path) -> List[Path]:
    """``{split}_asr.tsv`` for every ``{split}_st.tsv`` of ``pair``, and ``config_asr.yaml``."""
    config = _config(pair)
    asr_config = dict(config, vocab_filename=config["src_vocab_filename"], bpe_tokenizer=config["src_bpe_tokenizer"])
    for key in ("src_vocab_filename", "src_bpe_tokenizer", "src_pre_tokenizer"):
        asr_config.pop(key, None)
    written = []
    for st in sorted(pair.glob("*_st.tsv")):
        rows = _rows(st)
        columns = [c for c in rows[0] if c != "units"] if rows else ["id", "audio", "n_frames", "tgt_text", "speaker"]
        out = pair / (st.name[: -len("_st.tsv")] + "_asr.tsv")
        write_tsv(out, [dict(r, tgt_text=r["src_text"]) for r in rows], columns)
        written.append(out)
    write_text_atomic(pair / ASR_CONFIG, yaml.safe_dump(asr_config, sort_keys=False))
    logger.info(f"ASR data: {', '.join(p.name for p in written)} and {ASR_CONFIG} in {pair}")
    return written


def write_mt_text(pair: Path, out_dir: Path, tgt_lang: str) -> Dict[str, Path]:
    """SentencePiece pieces of the transcripts (``.en``) and translations (``.TGT``) of the
    train and dev manifests, in ``out_dir``; returns the two dictionaries to preprocess with."""
    config = _config(pair)
    src_model = spm.SentencePieceProcessor(model_file=config["src_bpe_tokenizer"]["sentencepiece_model"])
    tgt_model = spm.SentencePieceProcessor(model_file=config["bpe_tokenizer"]["sentencepiece_model"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, manifest in MT_SPLITS.items():
        rows = _rows(pair / f"{manifest}.tsv")
        for lang, model, key in (("en", src_model, "src_text"), (tgt_lang, tgt_model, "tgt_text")):
            lines = [" ".join(model.encode(r[key], out_type=str)) for r in rows]
            write_text_atomic(out_dir / f"{name}.{lang}", "\n".join(lines) + "\n")
    logger.info(f"MT text: {len(MT_SPLITS)} splits in {out_dir}")
    return {"srcdict": pair / config["src_vocab_filename"], "tgtdict": pair / config["vocab_filename"]}


def pretrain_arch_flags(arch: str) -> Dict[str, str]:
    """fairseq-train flags of the ASR ``s2t_transformer`` and the MT ``transformer`` whose
    parameters fit ``arch`` (an ``s2t_gsgn*`` architecture): the same widths and heads, the
    ASR encoder as deep as our acoustic encoder with our FBank subsampler, the MT encoder as
    deep as our textual encoder and the MT decoder as ours."""
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    import gsgn_fairseq  # noqa: F401  (registers the architectures)

    if arch not in ARCH_CONFIG_REGISTRY or not arch.startswith("s2t_gsgn"):
        raise ValueError(f"--arch must be an s2t_gsgn architecture, got {arch!r}")
    a = Namespace()
    ARCH_CONFIG_REGISTRY[arch](a)
    width = (f"--encoder-embed-dim {a.encoder_embed_dim} --encoder-ffn-embed-dim {a.encoder_ffn_embed_dim} "
             f"--encoder-attention-heads {a.encoder_attention_heads} --decoder-embed-dim {a.decoder_embed_dim} "
             f"--decoder-ffn-embed-dim {a.decoder_ffn_embed_dim} --decoder-attention-heads {a.decoder_attention_heads} "
             f"--decoder-layers {a.decoder_layers} --dropout {a.dropout}")
    return {
        "asr": (f"--arch s2t_transformer --encoder-layers {a.acoustic_encoder_layers} {width} "
                f"--conv-kernel-sizes {a.conv_kernel_sizes} --conv-channels {a.conv_channels}"),
        "mt": (f"--arch transformer --encoder-layers {a.textual_encoder_layers} {width} "
               f"--encoder-normalize-before --decoder-normalize-before"),
    }


def main(argv=None) -> None:
    logging.basicConfig(format="%(levelname)s:%(name)s:%(message)s", level=logging.INFO)
    p = argparse.ArgumentParser(prog="gsgn-prep-pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--tgt-lang", required=True)
    p.add_argument("--mt-dir", type=Path, required=True, help="where the MT text goes (fairseq-preprocess reads it)")
    p.add_argument("--arch", default="s2t_gsgn", help="the ST architecture the pretrained models must fit")
    args = p.parse_args(argv)
    pair = args.data_root / f"en-{args.tgt_lang}"
    write_asr_data(pair)
    dicts = write_mt_text(pair, args.mt_dir, args.tgt_lang)
    flags = pretrain_arch_flags(args.arch)
    # the shell recipe reads these lines
    print(f"srcdict\t{dicts['srcdict']}\ntgtdict\t{dicts['tgtdict']}\nasr_flags\t{flags['asr']}\nmt_flags\t{flags['mt']}")


if __name__ == "__main__":
    main()
