#!/usr/bin/env python
"""Score a ``fairseq-generate`` output with sacreBLEU and chrF, and print their signatures.

Hypotheses are the ``D-`` lines (detokenized by the data config's ``bpe_tokenizer``: decode
*without* ``--post-process``); references are the original texts, from the split's TSV
(``tgt_text``) or a text file with one line per TSV row, never fairseq's re-encoded ``T-``
lines. A reference without a hypothesis, or hypotheses that look space-stripped, are errors.
When the output holds fairseq's own ``--scoring sacrebleu`` line, both scores are printed and
a disagreement is reported. The scoring itself is ``gsgn_fairseq.scoring``.

    gsgn-score exp/gsgn/generate-tst-COMMON.txt \
        --tsv data/en-de/tst-COMMON_st.tsv --json exp/gsgn/bleu-tst-COMMON.json
"""
import argparse
import sys
from pathlib import Path

from ..fileio import write_json_atomic
from ..scoring import ScoringError, score_generate_output


def main():
    p = argparse.ArgumentParser(prog="gsgn-score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generate_output", type=Path)
    refs = p.add_mutually_exclusive_group(required=True)
    refs.add_argument("--tsv", type=Path, help="the decoded split's TSV (references: its tgt_text column)")
    refs.add_argument("--refs", type=Path, help="references, one line per TSV row")
    p.add_argument("--json", type=Path, help="also write the scores here")
    args = p.parse_args()
    try:
        out = score_generate_output(args.generate_output, tsv=args.tsv, refs_file=args.refs)
    except (ScoringError, OSError) as e:
        sys.exit(f"gsgn-score: {e}")
    print(f"{out['detail']}\nchrF2 = {out['chrf']:.2f}\nsignature: {out['signature']}\n"
          f"chrF signature: {out['chrf_signature']}\nreferences: {out['references']} ({out['n_sentences']} sentences)")
    if "fairseq_bleu" in out:
        verdict = "agrees" if out["fairseq_agrees"] else "DIFFERS (its T- references are re-encoded text)"
        print(f"fairseq-generate's own BLEU: {out['fairseq_bleu']:.2f} ({verdict})")
    if args.json:
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
