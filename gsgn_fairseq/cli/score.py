#!/usr/bin/env python
"""Score a ``fairseq-generate`` output with sacreBLEU and chrF, and print their signatures.

Hypotheses are the ``D-`` lines (detokenized by the data config's ``bpe_tokenizer``: decode
*without* ``--post-process``); references are the original texts, from the split's TSV
(``tgt_text``) or a text file with one line per TSV row, never fairseq's re-encoded ``T-``
lines. A reference without a hypothesis, hypotheses that look space-stripped, and references
that do not line up with the samples (a ``T-`` line that does not match its reference row)
are errors. When the output holds fairseq's own ``--scoring sacrebleu`` line, it is printed
beside ours, with the cause when they differ. The scoring itself is ``gsgn_fairseq.scoring``.

    gsgn-score exp/gsgn/generate-tst-COMMON.txt \
        --tsv data/en-de/tst-COMMON_st.tsv --json exp/gsgn/bleu-tst-COMMON.json

``--paired-bs BASELINE_GEN`` adds sacreBLEU's paired bootstrap resampling against another
system's output of the same split: both systems' scores with their 95% confidence
intervals, and the p-value of the difference, for BLEU and chrF.
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
    p.add_argument("--paired-bs", type=Path, metavar="BASELINE_GEN",
                   help="a baseline's fairseq-generate output of the same split: paired bootstrap resampling against it")
    p.add_argument("--paired-bs-samples", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    args = p.parse_args()
    if args.paired_bs_samples < 1:
        p.error(f"--paired-bs-samples must be positive, got {args.paired_bs_samples}")
    try:
        out = score_generate_output(args.generate_output, tsv=args.tsv, refs_file=args.refs,
                                    baseline=args.paired_bs, n_samples=args.paired_bs_samples)
    except (ScoringError, OSError) as e:
        sys.exit(f"gsgn-score: {e}")
    print(f"{out['detail']}\nchrF2 = {out['chrf']:.2f}\nsignature: {out['signature']}\n"
          f"chrF signature: {out['chrf_signature']}\nreferences: {out['references']} ({out['n_sentences']} sentences)")
    if out["t_lines_checked"]:
        print(f"sample order: {out['t_lines_checked']} T- lines match their references")
    if "fairseq_bleu" in out:
        print(f"fairseq-generate's own BLEU: {out['fairseq_bleu']:.2f} ({out['fairseq_note']})")
    if "paired_bs" in out:
        bs = out["paired_bs"]
        print(f"paired bootstrap ({bs['n_samples']} resamples) against {bs['baseline_output']}:")
        for key, name in (("bleu", "BLEU"), ("chrf", "chrF2")):
            r = bs[key]
            print(f"  {name}: baseline {r['baseline']:.2f} ({r['baseline_mean']:.2f} ± {r['baseline_ci']:.2f}), "
                  f"this {r['system']:.2f} ({r['system_mean']:.2f} ± {r['system_ci']:.2f}), p = {r['p_value']:.4f}")
    if args.json:
        write_json_atomic(args.json, out)


if __name__ == "__main__":
    main()
