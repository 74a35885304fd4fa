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

The ``T-`` lines do check that the references line up with the samples: each must match its
reference row (:func:`matches_reference`: equal after NFKC normalisation, which SentencePiece's
``nmt_nfkc`` applies, and collapsing whitespace, each ``<<unk>>`` standing for one or more
characters outside the vocabulary). A reordered TSV or ``--refs`` file is refused, naming the
first sample that does not match.
"""
import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import sacrebleu

BLEU_ORDER = 4
_GEN_LINE = re.compile(r"^([TDH])-(\d+)\t(.*)$")
# fairseq-generate's last line: "Generate tst-COMMON_st with beam=5: BLEU = 79.42 86.3/..."
_FAIRSEQ_BLEU = re.compile(r"^Generate (\S+) with beam=\d+: BLEU = ([0-9.]+)")
# hypotheses whose words are this many times longer than the references' look space-stripped
WORD_LENGTH_RATIO_CEILING = 2.0
ESCAPED_UNK = "<<unk>>"  # how fairseq-generate prints an unknown target piece in T- lines


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


@dataclass
class References:
    """Reference texts in sample-id order, and where each came from (``path``, line
    ``first_line + i`` for sample ``i``)."""

    texts: List[str]
    path: Path
    first_line: int

    def where(self, i: int) -> str:
        return f"{self.path}:{self.first_line + i}"


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


def read_references(tsv: Optional[Path], refs_file: Optional[Path]) -> References:
    if (tsv is None) == (refs_file is None):
        raise ScoringError("give the references as exactly one of --tsv (the split's TSV) or --refs (a text file)")
    if tsv is not None:
        return References(read_tsv_references(tsv), Path(tsv), first_line=2)  # line 1: the header
    return References(read_text_references(refs_file), Path(refs_file), first_line=1)


def _normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def matches_reference(fairseq_reference: str, reference: str) -> bool:
    """Whether a ``T-`` line is ``reference`` after SentencePiece's round trip: equal after
    NFKC normalisation and collapsing whitespace, each ``<<unk>>`` standing for one or more
    characters (no space) that the target vocabulary lacks."""
    pieces = _normalised(fairseq_reference).split(ESCAPED_UNK)
    return re.fullmatch("[^ ]+?".join(re.escape(p) for p in pieces), _normalised(reference)) is not None


def check_references_align(output: GenerateOutput, refs: References, where: str) -> None:
    """Each ``T-`` line must match its reference row (:func:`matches_reference`); a mismatch
    means the references are not in the order of the decoded samples."""
    for i in sorted(output.fairseq_references):
        if i < len(refs.texts) and not matches_reference(output.fairseq_references[i], refs.texts[i]):
            raise ScoringError(
                f"{where}: the references do not line up with the samples: sample {i}'s reference in the output "
                f"(T-{i}) is {output.fairseq_references[i]!r}, but {refs.where(i)} is {refs.texts[i]!r}. Give the "
                "TSV (or --refs file) of the decoded subset, its rows in their original order")


def read_checked_output(path: Path, refs: References) -> Tuple[GenerateOutput, List[str]]:
    """A ``fairseq-generate`` output and its ``D-`` hypotheses in reference order, checked:
    one per reference, not space-stripped, and its ``T-`` lines matching the references."""
    output = read_generate_output(Path(path))
    hyps = align(output, refs.texts, f"{path} against {refs.path}")
    check_not_space_stripped(output, refs.texts, str(path))
    check_references_align(output, refs, str(path))
    return output, hyps


def fairseq_bleu_note(output: GenerateOutput, hyps: Sequence[str], refs: Sequence[str], bleu: float,
                      tolerance: float) -> str:
    """Why fairseq's own ``--scoring sacrebleu`` figure differs from ``bleu`` (ours), or that it
    agrees. fairseq scores the same hypotheses against its ``T-`` lines, so a difference that
    BLEU against those lines reproduces comes from the references the round trip changed."""
    if abs(output.fairseq_bleu - bleu) <= tolerance:
        return "agrees"
    if set(output.fairseq_references) != set(range(len(refs))):
        return "differs; the output has no T- line for every sample, so the cause cannot be told"
    t_lines = [output.fairseq_references[i] for i in range(len(refs))]
    changed = [i for i, (t, r) in enumerate(zip(t_lines, refs)) if _normalised(t) != _normalised(r)]
    against_t = corpus_scores(hyps, t_lines)["bleu"]
    if abs(output.fairseq_bleu - against_t) <= tolerance and changed:
        i = changed[0]
        return (f"differs: it scores against its T- lines, {len(changed)} of which differ from the references "
                f"through the SentencePiece round trip (e.g. sample {i}: {t_lines[i]!r} for {refs[i]!r})")
    return (f"differs, and not through its T- lines (BLEU against them: {against_t:.2f}): was the output decoded "
            "with other --scoring options (--sacrebleu-tokenizer, --sacrebleu-lowercase)?")


def score_generate_output(path: Path, tsv: Optional[Path] = None, refs_file: Optional[Path] = None,
                          agree_tolerance: float = 0.01, baseline: Optional[Path] = None,
                          n_samples: int = 1000) -> dict:
    """Score a ``fairseq-generate`` output against the data's references.

    Returns :func:`corpus_scores` plus ``references`` (where they came from), ``t_lines_checked``
    (how many ``T-`` lines matched their references) and, when the output has fairseq's
    ``--scoring sacrebleu`` line, ``fairseq_bleu``, ``fairseq_agrees`` and ``fairseq_note``
    (:func:`fairseq_bleu_note`). With ``baseline`` (another ``fairseq-generate`` output of the
    same split, held to the same checks), ``paired_bs`` holds :func:`paired_bootstrap` of this
    output against it.
    """
    refs = read_references(tsv, refs_file)
    output, hyps = read_checked_output(path, refs)
    out = corpus_scores(hyps, refs.texts)
    out["references"] = str(refs.path)
    out["t_lines_checked"] = len(output.fairseq_references)
    if baseline is not None:
        _, base_hyps = read_checked_output(baseline, refs)
        out["paired_bs"] = dict(paired_bootstrap(hyps, base_hyps, refs.texts, n_samples), baseline_output=str(baseline))
    if output.fairseq_bleu is not None:
        out["fairseq_bleu"] = output.fairseq_bleu
        out["fairseq_agrees"] = abs(output.fairseq_bleu - out["bleu"]) <= agree_tolerance
        out["fairseq_note"] = fairseq_bleu_note(output, hyps, refs.texts, out["bleu"], agree_tolerance)
    return out
