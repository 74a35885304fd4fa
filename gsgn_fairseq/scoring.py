"""Test-set scoring as the paper's protocol asks: detokenized, case-sensitive hypotheses
against the original references, sacreBLEU (13a) and chrF with their signatures.

One decode path everywhere: ``fairseq-generate`` with the data config's ``bpe_tokenizer``
(SentencePiece) already detokenizes its ``D-`` lines, so it is run *without*
``--post-process`` (with ``--post-process sentencepiece`` on top, SentencePiece decoding runs
twice and the second pass deletes every space). Validation BLEU (``--eval-bleu``) decodes its
hypotheses the same way (:func:`gsgn_fairseq.tasks.speech_to_text_multiview` uses
:func:`bleu_statistics`).

References come from the data, never from fairseq's ``T-`` lines (the reference re-encoded
with SentencePiece and decoded again, which can differ from the original text): the TSV's
``tgt_text`` column, whose row order is fairseq's sample id for a single ``--gen-subset``,
or a plain text file with one reference per TSV row. Every row needs a hypothesis; nothing is
dropped. An output that was SentencePiece-decoded twice (its spaces deleted) is refused.
"""
import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import sacrebleu

BLEU_ORDER = 4
_GEN_LINE = re.compile(r"^([TDH])-(\d+)\t(.*)$")
# fairseq-generate's last line: "Generate tst-COMMON_st with beam=5: BLEU = 79.42 86.3/..."
_FAIRSEQ_BLEU = re.compile(r"^Generate (\S+) with beam=\d+: BLEU = ([0-9.]+)")
# hypotheses whose words are this many times longer than the references' look space-stripped
WORD_LENGTH_RATIO_CEILING = 2.0


class ScoringError(ValueError):
    """A decoding output that cannot be scored as it is (names the file and what is wrong)."""


@dataclass
class GenerateOutput:
    """What ``fairseq-generate`` printed: detokenized hypotheses by sample id, its references
    (``T-`` lines, for comparison only), and the BLEU line of ``--scoring sacrebleu``."""

    hypotheses: Dict[int, str]
    fairseq_references: Dict[int, str]
    pieces: Dict[int, str]  # H- lines: hypotheses before detokenization
    fairseq_bleu: Optional[float]
    subset: Optional[str]


def read_generate_output(path: Path) -> GenerateOutput:
    hyps: Dict[int, str] = {}
    refs: Dict[int, str] = {}
    pieces: Dict[int, str] = {}
    bleu, subset = None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            m = _GEN_LINE.match(line)
            if m:
                kind, idx, rest = m.group(1), int(m.group(2)), m.group(3)
                if kind == "T":
                    refs[idx] = rest
                elif kind == "H":  # H-<id>\t<score>\t<pieces>
                    pieces[idx] = rest.split("\t", 1)[1] if "\t" in rest else ""
                elif kind == "D":  # D-<id>\t<score>\t<text>
                    if idx in hyps:
                        raise ScoringError(f"{path}: two D- lines for sample {idx}: decode one subset at a "
                                           "time (fairseq numbers the samples of each concatenated subset from 0), "
                                           "with --nbest 1")
                    hyps[idx] = rest.split("\t", 1)[1] if "\t" in rest else ""
                continue
            b = _FAIRSEQ_BLEU.match(line)
            if b:
                subset, bleu = b.group(1), float(b.group(2))
    if not hyps:
        raise ScoringError(f"{path}: no D- lines; is it a fairseq-generate output?")
    return GenerateOutput(hyps, refs, pieces, bleu, subset)


def read_tsv_references(tsv: Path) -> List[str]:
    """``tgt_text`` of every row of a speech_to_text TSV, in row order (fairseq's sample ids)."""
    with open(tsv, encoding="utf-8-sig", newline="") as f:  # a byte-order mark is read past
        reader = csv.DictReader(f, delimiter="\t", quotechar=None, doublequote=False,
                                lineterminator="\n", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None or "tgt_text" not in reader.fieldnames:
            raise ScoringError(f"{tsv}: no 'tgt_text' column (columns: {reader.fieldnames})")
        refs = []
        for i, row in enumerate(reader):
            if row.get("tgt_text") is None:
                raise ScoringError(f"{tsv}: row {i + 2} ({row.get('id')}) has no tgt_text field")
            refs.append(row["tgt_text"])
    return refs


def read_text_references(path: Path) -> List[str]:
    """One reference per line (e.g. a MuST-C ``{split}.de`` file that matches the TSV rows)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").strip() for line in f]


def mean_word_length(texts: Sequence[str]) -> float:
    """Characters per whitespace-separated word over a corpus (0 when it has no words)."""
    words = [w for t in texts for w in t.split()]
    return sum(len(w) for w in words) / len(words) if words else 0.0


def _stripped(text: str, original: str) -> bool:
    return " " in original and text != original and text == original.replace(" ", "")


def space_stripping_evidence(output: GenerateOutput, refs: Sequence[str]) -> Optional[str]:
    """Why the output looks decoded twice (SentencePiece's second pass deletes every space),
    or None. The references fairseq printed (``T-``) are the surest sign, since they do not
    depend on the model: decoded twice, they are the original references without spaces. Then
    the hypotheses' own lines: decoded twice, ``H-`` holds words and no piece marker, and
    ``D-`` is ``H-`` without its spaces. Last, with neither, no hypothesis has a space while
    the references do, and its "words" are far longer than theirs."""
    spaced = [i for i, r in enumerate(refs) if " " in r]
    with_t = [i for i in spaced if i in output.fairseq_references]
    if with_t:
        n = sum(_stripped(output.fairseq_references[i], refs[i]) for i in with_t)
        if n * 2 >= len(with_t):
            i = next(i for i in with_t if _stripped(output.fairseq_references[i], refs[i]))
            return (f"{n} of {len(with_t)} of fairseq's T- references are the TSV's references without their "
                    f"spaces (sample {i}: {output.fairseq_references[i][:50]!r} for {refs[i][:50]!r})")
        return None
    if output.pieces:
        if any("\u2581" in h for h in output.pieces.values()):
            return None  # H- lines are SentencePiece pieces: decoded once
        joined = [i for i, h in output.pieces.items() if " " in h]
        if joined and all(_stripped(output.hypotheses.get(i, ""), output.pieces[i]) for i in joined):
            return f"{len(joined)} D- hypotheses are their H- lines without the spaces"
        return None
    hyps = list(output.hypotheses.values())
    h, r = mean_word_length(hyps), mean_word_length(refs)
    if spaced and not any(" " in x for x in hyps) and r > 0 and h > WORD_LENGTH_RATIO_CEILING * r:
        return f"no hypothesis has a space; {h:.1f} characters per word against {r:.1f} in the references"
    return None


def check_not_space_stripped(output: GenerateOutput, refs: Sequence[str], where: str) -> None:
    """Refuse an output that was SentencePiece-decoded twice (see :func:`space_stripping_evidence`)."""
    reason = space_stripping_evidence(output, refs)
    if reason:
        raise ScoringError(
            f"{where}: the hypotheses look space-stripped: {reason}. Was SentencePiece decoding applied "
            "twice (fairseq-generate --post-process sentencepiece on top of the data config's "
            "bpe_tokenizer)? Decode without --post-process."
        )


def align(output: GenerateOutput, refs: List[str], where: str) -> List[str]:
    """The hypotheses in reference order; every reference needs exactly one."""
    extra = sorted(set(output.hypotheses) - set(range(len(refs))))
    if extra:
        raise ScoringError(f"{where}: sample ids {extra[:10]} have no reference row "
                           f"({len(refs)} references); was it decoded from another subset?")
    missing = [i for i in range(len(refs)) if i not in output.hypotheses]
    if missing:
        raise ScoringError(f"{where}: {len(missing)} of {len(refs)} references have no hypothesis "
                           f"(first sample ids {missing[:10]}); nothing may be dropped")
    return [output.hypotheses[i] for i in range(len(refs))]


def corpus_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """sacreBLEU (13a, case-sensitive) and chrF of ``hyps`` against one reference each."""
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(list(hyps), [list(refs)])
    c = chrf.corpus_score(list(hyps), [list(refs)])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "n_sentences": len(hyps),
        "detail": str(b),
    }


def bleu_statistics(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, int]:
    """sacreBLEU's (13a) sufficient statistics: sys_len, ref_len, counts_i, totals_i (plain
    ints), so that corpus BLEU over many batches is :func:`bleu_from_statistics` of their sum."""
    b = sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize="13a")
    out = {"sys_len": int(b.sys_len), "ref_len": int(b.ref_len)}
    for i in range(BLEU_ORDER):
        out[f"counts_{i}"] = int(b.counts[i])
        out[f"totals_{i}"] = int(b.totals[i])
    return out


def bleu_from_statistics(stats: Dict[str, int]) -> float:
    """Corpus BLEU (sacreBLEU's default ``exp`` smoothing), rounded to 2 decimals."""
    b = sacrebleu.metrics.BLEU.compute_bleu(
        correct=[stats[f"counts_{i}"] for i in range(BLEU_ORDER)],
        total=[stats[f"totals_{i}"] for i in range(BLEU_ORDER)],
        sys_len=stats["sys_len"], ref_len=stats["ref_len"],
        smooth_method="exp",  # corpus_bleu's default; compute_bleu's own default is "none"
    )
    return round(b.score, 2)


def paired_bootstrap(hyps: Sequence[str], baseline_hyps: Sequence[str], refs: Sequence[str],
                     n_samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap resampling (Koehn, 2004) of a system against a baseline on
    the same references, for BLEU and chrF: each score with its bootstrap mean and 95%
    confidence interval, and the system's p-value (the chance that a difference this large
    arises from the test set's sampling alone; sacreBLEU's fixed resampling seed)."""
    from sacrebleu.significance import PairedTest

    if not len(hyps) == len(baseline_hyps) == len(refs):
        raise ScoringError(f"paired bootstrap needs one hypothesis of each system per reference: "
                           f"{len(hyps)} and {len(baseline_hyps)} for {len(refs)} references")
    test = PairedTest([("baseline", list(baseline_hyps)), ("system", list(hyps))],
                      {"BLEU": sacrebleu.metrics.BLEU(), "chrF": sacrebleu.metrics.CHRF()},
                      references=[list(refs)], test_type="bs", n_samples=n_samples)
    signatures, scores = test()
    out = {"n_samples": n_samples}
    for metric, key in (("BLEU", "bleu"), ("chrF2", "chrf")):
        base, system = scores[metric]
        out[key] = {"baseline": base.score, "baseline_mean": base.mean, "baseline_ci": base.ci,
                    "system": system.score, "system_mean": system.mean, "system_ci": system.ci,
                    "p_value": system.p_value, "signature": str(signatures[metric])}
    return out


def read_references(tsv: Optional[Path], refs_file: Optional[Path]) -> List[str]:
    if (tsv is None) == (refs_file is None):
        raise ScoringError("give the references as exactly one of --tsv (the split's TSV) or --refs (a text file)")
    return read_tsv_references(tsv) if tsv is not None else read_text_references(refs_file)


def read_scorable_hypotheses(path: Path, refs: List[str], refs_name: str) -> List[str]:
    """The ``D-`` hypotheses of a ``fairseq-generate`` output in reference order, checked."""
    output = read_generate_output(Path(path))
    hyps = align(output, refs, f"{path} against {refs_name}")
    check_not_space_stripped(output, refs, str(path))
    return hyps


def score_generate_output(path: Path, tsv: Optional[Path] = None, refs_file: Optional[Path] = None,
                          agree_tolerance: float = 0.01, baseline: Optional[Path] = None,
                          n_samples: int = 1000) -> dict:
    """Score a ``fairseq-generate`` output against the data's references.

    Returns :func:`corpus_scores` plus ``references`` (where they came from) and, when the
    output has fairseq's ``--scoring sacrebleu`` line, ``fairseq_bleu`` and ``fairseq_agrees``
    (fairseq scores against its re-encoded ``T-`` lines; a difference means the
    SentencePiece round trip changed some references). With ``baseline`` (another
    ``fairseq-generate`` output of the same split), ``paired_bs`` holds
    :func:`paired_bootstrap` of this output against it.
    """
    refs = read_references(tsv, refs_file)
    output = read_generate_output(Path(path))
    hyps = align(output, refs, f"{path} against {tsv or refs_file}")
    check_not_space_stripped(output, refs, str(path))
    out = corpus_scores(hyps, refs)
    out["references"] = str(tsv or refs_file)
    if baseline is not None:
        base_hyps = read_scorable_hypotheses(baseline, refs, str(tsv or refs_file))
        out["paired_bs"] = dict(paired_bootstrap(hyps, base_hyps, refs, n_samples), baseline_output=str(baseline))
    if output.fairseq_bleu is not None:
        out["fairseq_bleu"] = output.fairseq_bleu
        out["fairseq_agrees"] = abs(output.fairseq_bleu - out["bleu"]) <= agree_tolerance
    return out
