#!/usr/bin/env python
"""Score a ``fairseq-generate`` output with sacreBLEU and print its signature.

fairseq's own ``--scoring sacrebleu`` prints a score without the signature the paper's
protocol asks for, so we read the detokenized hypotheses (``D-`` lines, written when
generating with ``--post-process sentencepiece``) and references (``T-`` lines), restore
corpus order by sample id, and score them with sacrebleu's default 13a tokenizer. A sample
without a hypothesis is an error, never silently dropped.

    python scripts/score_generate.py exp/gsgn/generate-tst-COMMON.txt --json exp/gsgn/bleu.json
"""
import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

import sacrebleu

_LINE = re.compile(r"^([TD])-(\d+)\t(.*)$")


def read_generate_output(path: Path) -> Tuple[List[str], List[str]]:
    """(hypotheses, references) of a fairseq-generate log, in sample-id order."""
    hyps: Dict[int, str] = {}
    refs: Dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
            if kind == "T":
                refs[idx] = rest
            else:  # D-<id>\t<score>\t<text>
                hyps[idx] = rest.split("\t", 1)[1] if "\t" in rest else ""
    if not refs:
        raise ValueError(f"{path}: no T- lines; is it a fairseq-generate output?")
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(f"{path}: {len(missing)} samples have no D- hypothesis (first ids {missing[:10]})")
    ids = sorted(refs)
    return [hyps[i] for i in ids], [refs[i] for i in ids]


def score(path: Path) -> dict:
    hyps, refs = read_generate_output(path)
    metric = sacrebleu.metrics.BLEU()
    result = metric.corpus_score(hyps, [refs])
    return {
        "bleu": round(result.score, 2),
        "signature": str(metric.get_signature()),
        "n_sentences": len(hyps),
        "detail": str(result),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generate_output", type=Path)
    p.add_argument("--json", type=Path, help="also write the score here")
    args = p.parse_args()
    out = score(args.generate_output)
    print(f"{out['detail']}\nsignature: {out['signature']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
