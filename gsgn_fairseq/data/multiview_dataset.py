"""fairseq speech_to_text dataset with a second view: HuBERT discrete units (and a transcript).

A manifest row has the usual columns ``id audio n_frames tgt_text speaker src_text`` plus
``units``, a reference to an int16 ``.npy`` of unit ids (one per 20 ms), normally
``units.zip:offset:length``. Both are read with fairseq's ``get_features_or_waveform``.
``audio`` is relative to the data config's ``audio_root``; when that is empty we use the data
directory (stock fairseq would use the working directory, which breaks ``fairseq-generate``
run from elsewhere). ``units`` is relative to the data directory, where
``gsgn-extract-units`` writes ``units.zip`` beside the TSVs, and to ``audio_root`` only
when the data directory lacks the file. A copied data directory with its own units then
uses them, although its ``audio_root`` (absolute, as fairseq's prep writes it) still names
the original. Absolute paths are used as they are.

A model that reads no unit view (FBank-only, the noise controls; the task says so through
``ViewAlignment.reads_units``) gets its utterances without units: nothing of the unit views is
read, checked or collated for it, so it pays for no view it does not use.

Checks, made when an utterance is loaded (the unit count is only known then) and raised as
``ValueError`` naming the utterance id:

* the bytes of both views' zip members must match the zip's CRC-32 (``DataError``);
* unit ids must lie in ``[0, K)`` (``--num-units K``; K itself is the padding id);
* the views must belong together: after subsampling the FBank frames ``2^n``x and the units
  ``2^(n-1)``x (n = FBank conv layers of the model) the lengths may differ by at most
  ``tolerance`` frames (2 by default); the model trims or pads the unit view to the FBank
  length.

The collater pads units with K and adds ``src_units`` (B, T_unit) and ``src_units_lengths``
(B,) to ``net_input``, in the same (descending FBank length) order as ``src_tokens``, and the
original ``tgt_text`` of each utterance as ``sample["target_text"]`` (a list), and
``net_input["utt_keys"]`` (B,), a stable hash of each utterance id that keys the paper's
inference-branch draw (``modules/branch_sampler.py``). When the
task has a source dictionary, the transcript (``src_text`` through the optional
``src_pre_tokenizer``/``src_bpe_tokenizer``, no EOS) goes to ``sample["source_text"]``
(B, S) padded with the source dictionary's pad, with ``sample["source_text_lengths"]`` (B,)
and ``sample["source_text_ntokens"]``, for CTC (docs/INTERFACES.md).
Batching is by FBank length (``n_frames``), as in fairseq, except that the last batch is
never dropped (see ``batch_by_size``).

With ``seed`` (the task passes ``--seed``), the feature transforms' random draws (SpecAugment)
of utterance ``index`` in epoch ``e`` come from ``numpy_seed(seed, e, index)`` (the same draws,
by the cheaper ``numpy_seed.NumpySeed``), so a run resumed from a checkpoint sees the same
masks as one that ran through.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from fairseq.data import ConcatDataset, Dictionary, ResamplingDataset
from fairseq.data import data_utils as fairseq_data_utils
from fairseq.data.audio.audio_utils import get_features_or_waveform
from fairseq.data.audio.data_cfg import S2TDataConfig
from fairseq.data.audio.dataset_transforms.concataugment import ConcatAugment
from fairseq.data.audio.dataset_transforms.noisyoverlapaugment import NoisyOverlapAugment
from fairseq.data.audio.speech_to_text_dataset import (
    SpeechToTextDataset,
    SpeechToTextDatasetCreator,
    SpeechToTextDatasetItem,
)
from torch import Tensor

from ..modules.keyed_random import utterance_key
from ..modules.unit_frontend import subsampled_length
from .manifest import DEFAULT_UNIT_VIEW, strip_bom, unit_view_column
from .manifest_checks import REQUIRED_COLUMNS, check_n_frames, check_rows, check_zip_refs
from .mustc import DataError
from .numpy_seed import NumpySeed
from .provenance import check_same_provenance, describe, read_units_provenance
from .zip_store import ZipMember, npy_from_bytes, read_member_checked, split_ref

logger = logging.getLogger(__name__)

DEFAULT_LENGTH_TOLERANCE = 2


@dataclass
class ViewAlignment:
    """How the two views are compared; shared (by reference) between the task and its datasets.

    ``fbank_conv_layers`` is the model's number of FBank conv layers n (FBank subsampled 2^n x,
    units 2^(n-1) x). The task sets it from the model it builds, before any utterance is loaded.
    So does ``reads_units``: False for a model that reads no unit view (FBank-only, the noise
    controls), whose utterances then come without units, so that reading and checking them
    costs it nothing.
    """

    fbank_conv_layers: Optional[int] = None
    tolerance: int = DEFAULT_LENGTH_TOLERANCE
    reads_units: Optional[bool] = None  # None: not known yet, read them

    def check(self, utt_id: str, n_fbank: int, n_units: int, unit_set: Optional[str] = None) -> None:
        n = self.fbank_conv_layers
        if n is None:
            raise RuntimeError(f"utterance {utt_id}: the views' alignment rule is not known yet: it comes from the "
                               "model, so build the model (task.build_model) before reading utterances")
        if n < 1:
            raise ValueError(f"the FBank subsampler needs at least one conv layer, got {n}")
        len_fbank = subsampled_length(n_fbank, n)
        len_units = subsampled_length(n_units, n - 1)
        if abs(len_fbank - len_units) > self.tolerance:
            raise ValueError(
                f"utterance {utt_id}: FBank and unit views do not belong together"
                f"{f' (unit set {unit_set})' if unit_set else ''}: "
                f"{n_fbank} FBank frames -> {len_fbank} after {2 ** n}x subsampling, "
                f"{n_units} units -> {len_units} after {2 ** (n - 1)}x; they may differ by at most "
                f"{self.tolerance} frames"
            )


@dataclass
class UnitSet:
    """A further unit view of a split (``--unit-views`` beyond the first): its name, TSV
    column, one path and zip member per utterance, provenance and K."""

    name: str
    column: str
    paths: List[str]
    members: List[Optional[ZipMember]]
    provenance: Optional[dict]
    num_units: int


@dataclass
class MultiviewDatasetItem(SpeechToTextDatasetItem):
    units: Optional[Tensor] = None  # (T_unit,) long
    more_units: Optional[Dict[str, Tensor]] = None  # the further unit views, (T_unit,) long each
    transcript: Optional[Tensor] = None  # (S,) long, source-dictionary ids, no EOS
    tgt_text: Optional[str] = None  # the original reference (the TSV's tgt_text)
    utt_key: int = 0  # utterance_key(id): keys the paper's inference-branch draw


def resolve_data_root(cfg: S2TDataConfig, data_dir: str) -> Path:
    """Where relative ``audio``/``units`` paths start: ``audio_root``, else the data dir.

    A relative ``audio_root`` that does not exist from the working directory but does from
    the data directory is taken relative to the data directory.
    """
    audio_root = cfg.audio_root
    if not audio_root:
        return Path(data_dir)
    root = Path(audio_root)
    if not root.is_absolute() and not root.exists() and (Path(data_dir) / root).exists():
        return Path(data_dir) / root
    return root


def resolve_units_paths(refs: List[str], data_dir: str, audio_root: Path) -> List[str]:
    """``get_features_or_waveform`` paths of ``units`` references (see the module docstring):
    a relative file is taken from the data directory when it is there, else from ``audio_root``."""
    roots = {}
    paths = []
    for ref in refs:
        file = ref.split(":", 1)[0]
        if Path(file).is_absolute():
            paths.append(ref)
            continue
        if file not in roots:
            beside = Path(data_dir) / file
            roots[file] = Path(data_dir) if beside.exists() else audio_root
            if roots[file] != audio_root and (audio_root / file).exists() and \
                    (audio_root / file).resolve() != beside.resolve():
                logger.info("units from %s (beside the TSVs), not %s (audio_root)", beside, audio_root / file)
        paths.append((roots[file] / ref).as_posix())
    return paths


class SpeechToTextMultiviewDataset(SpeechToTextDataset):
    """SpeechToTextDataset that also loads units (and a transcript); see the module docstring.

    Args (beyond SpeechToTextDataset's, keyword only):
        units_paths: one ``get_features_or_waveform`` path per utterance.
        units_members: the zip member behind each units path (its CRC-32 is checked when the
            units are read), or None for plain files.
        audio_members: the same for the FBank paths.
        units_provenance: how the units were made (``data/provenance.py``), or None.
        num_units: K; ids must be < K, padding is K.
        unit_view: the name of that (first) unit view (``--unit-views``).
        more_unit_sets: the further unit views (:class:`UnitSet`), in ``--unit-views`` order.
        alignment: the shared :class:`ViewAlignment`.
        src_dict: source dictionary for transcripts (None: no transcripts).
        src_pre_tokenizer, src_bpe_tokenizer: fairseq encoders applied to ``src_text``.
        seed: with it, the feature transforms' random draws (SpecAugment) of an utterance
            come from (seed, epoch, index) only; None: fairseq's global ``np.random``.
    """

    def __init__(
        self,
        *,
        units_paths: List[str],
        num_units: int,
        units_members: Optional[List[Optional[ZipMember]]] = None,
        audio_members: Optional[List[Optional[ZipMember]]] = None,
        units_provenance: Optional[dict] = None,
        unit_view: str = "units",
        more_unit_sets: Optional[List[UnitSet]] = None,
        alignment: ViewAlignment,
        src_dict: Optional[Dictionary] = None,
        src_pre_tokenizer=None,
        src_bpe_tokenizer=None,
        seed: Optional[int] = None,
        **kwargs,
    ):
        # tokenizing a text again at every read gives the same pieces unless a tokenizer samples
        # (SentencePiece's enable_sampling): then each read tokenizes anew, as fairseq does. Set
        # before fairseq's __init__, whose OOV count tokenizes every target once.
        self._tgt_pieces: Optional[Dict[int, str]] = (
            {} if _deterministic(pre_tokenizer=kwargs.get("pre_tokenizer"), bpe=kwargs.get("bpe_tokenizer")) else None)
        super().__init__(**kwargs)
        self._targets: Optional[Dict[int, Tensor]] = {} if self._tgt_pieces is not None else None
        if len(units_paths) != self.n_samples:
            raise ValueError(f"{self.split}: {len(units_paths)} unit paths for {self.n_samples} utterances")
        if num_units <= 0:
            raise ValueError(f"--num-units must be positive, got {num_units}")
        for transform in (ConcatAugment, NoisyOverlapAugment):
            if self.dataset_transforms.has_transform(transform):
                raise NotImplementedError(
                    f"{self.split}: dataset transform {transform.__name__} is not supported with the unit view"
                )
        if self.n_frames_per_step != 1:
            raise NotImplementedError(f"n_frames_per_step={self.n_frames_per_step} is not supported")
        if self.cfg.use_audio_input:
            raise NotImplementedError("use_audio_input: the multiview task reads FBank features, not waveforms")
        self.units_paths = units_paths
        self.units_members = units_members or [None] * len(units_paths)
        self.audio_members = audio_members or [None] * len(units_paths)
        # the flag that sets max_tokens in batch_by_size: the task says which one its tool reads
        self.max_tokens_flag = "--max-tokens"
        self.units_provenance = units_provenance
        self.num_units = num_units
        self.unit_pad = num_units
        self.unit_view = unit_view
        self.more_unit_sets = list(more_unit_sets or [])
        for unit_set in self.more_unit_sets:
            if len(unit_set.paths) != self.n_samples:
                raise ValueError(f"{self.split}: {len(unit_set.paths)} {unit_set.column} paths for {self.n_samples} "
                                 "utterances")
        self.alignment = alignment
        self.src_dict = src_dict
        self.src_pre_tokenizer = src_pre_tokenizer
        self.src_bpe_tokenizer = src_bpe_tokenizer
        self.utt_keys = [utterance_key(self.utt_id(i)) for i in range(self.n_samples)]
        self._transcripts: Optional[Dict[int, Tensor]] = (
            {} if _deterministic(pre_tokenizer=src_pre_tokenizer, bpe=src_bpe_tokenizer) else None)
        self.seed = seed
        self._numpy_seed = NumpySeed()  # fairseq's numpy_seed, without its 140 us state copies
        self.epoch = 1  # fairseq's batch iterator sets it (set_epoch) before loading any utterance

    def utt_id(self, index: int) -> str:
        return self.ids[index] if self.ids is not None else f"#{index}"

    def read_member(self, index: int, path: str, member: ZipMember) -> np.ndarray:
        """The array of a zip member of utterance ``index``, its bytes checked against the
        zip's CRC-32 (damage that stays finite and in range is caught only this way)."""
        file, offset, length = split_ref(path)
        try:
            return npy_from_bytes(read_member_checked(file, offset, length, member.crc))
        except DataError as err:
            raise DataError(f"utterance {self.utt_id(index)}: {err}") from None

    def _get_source_audio(self, index) -> Tensor:
        """fairseq's FBank read (then its feature transforms), with the member's CRC-32 checked."""
        member = self.audio_members[index] if isinstance(index, (int, np.integer)) else None
        if member is None:  # a plain file
            return super()._get_source_audio(index)
        source = self.read_member(index, self.audio_paths[index], member)
        if self.feature_transforms is not None:
            source = self.feature_transforms(source)
        return torch.from_numpy(source).float()

    def load_units(self, index: int, unit_set: Optional[UnitSet] = None) -> Tensor:
        """(T_unit,) long unit ids of utterance ``index`` (of the first unit view, or of
        ``unit_set``), range-checked against its K."""
        if unit_set is None:
            path, member, k, which = self.units_paths[index], self.units_members[index], self.num_units, "units"
            if len(self.more_unit_sets):
                which = f"units of set {self.unit_view}"
        else:
            path, member, k = unit_set.paths[index], unit_set.members[index], unit_set.num_units
            which = f"units of set {unit_set.name} (column {unit_set.column})"
        uid = self.utt_id(index)
        if member is not None:
            array = self.read_member(index, path, member)
        else:
            array = np.asarray(get_features_or_waveform(path))
        if array.ndim != 1:
            raise ValueError(f"utterance {uid}: {which} must be a 1-D array, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"utterance {uid}: {which} must be integers, got dtype {array.dtype}")
        if array.size == 0:
            raise ValueError(f"utterance {uid}: no units in {path}")
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= k:
            ids = "unit ids" if which == "units" else f"unit ids ({which})"
            raise ValueError(
                f"utterance {uid}: {ids} must be in [0, {k - 1}] (--num-units {k}), "
                f"found min {low} max {high}"
            )
        return torch.from_numpy(array.astype(np.int64))

    def get_tokenized_tgt_text(self, index):
        """fairseq's, tokenized once per utterance (see ``_tgt_pieces``)."""
        if not isinstance(index, (int, np.integer)):  # concatenated utterances (ConcatAugment)
            return super().get_tokenized_tgt_text(index)
        return _memo(self._tgt_pieces, int(index), super().get_tokenized_tgt_text)

    def get_target(self, index: int) -> Optional[Tensor]:
        """(S,) target ids as fairseq's ``SpeechToTextDataset.__getitem__`` makes them (its
        language tags included), encoded once per utterance unless a tokenizer samples: the
        dictionary lookup costs some 80 us an utterance, as much as the whole FBank read."""
        if self.tgt_texts is None:
            return None
        return _memo(self._targets, int(index), self._encode_target)

    def _encode_target(self, index: int) -> Tensor:
        # fairseq 0.12's SpeechToTextDataset.__getitem__, target part
        tokenized = self.get_tokenized_tgt_text(index)
        target = self.tgt_dict.encode_line(tokenized, add_if_not_exist=False, append_eos=self.append_eos).long()
        if self.cfg.prepend_tgt_lang_tag:
            lang_tag = self.get_lang_tag_idx(self.tgt_langs[index], self.tgt_dict)
            target = torch.cat((torch.LongTensor([lang_tag]), target), 0)
        if self.cfg.prepend_bos_and_append_tgt_lang_tag:
            lang_tag = self.get_lang_tag_idx(self.tgt_langs[index], self.tgt_dict)
            target = torch.cat((torch.LongTensor([self.tgt_dict.bos()]), target, torch.LongTensor([lang_tag])), 0)
        return target

    def get_transcript(self, index: int) -> Tensor:
        """(S,) source-dictionary ids of the transcript, encoded once per utterance unless a
        tokenizer samples."""
        return _memo(self._transcripts, index, self._encode_transcript)

    def _encode_transcript(self, index: int) -> Tensor:
        text = self.tokenize(self.src_pre_tokenizer, self.src_texts[index])
        text = self.tokenize(self.src_bpe_tokenizer, text)
        return self.src_dict.encode_line(text, add_if_not_exist=False, append_eos=False).long()

    def check_finite(self, index: int, source: Tensor) -> None:
        """NaN/Inf FBank features are an error naming the utterance (fairseq would train or
        validate on them and report a NaN loss, or name a layer). A finite sum proves every
        element finite, at a fraction of the cost of an element-wise mask; only a sum that is
        not finite (a NaN or Inf, or finite values that overflow when added) takes the mask."""
        if not math.isfinite(float(source.sum())) and not bool(torch.isfinite(source).all()):
            raise DataError(
                f"utterance {self.utt_id(index)}: its FBank features hold NaN or Inf "
                f"({self.audio_paths[index]}); recompute its features (rerun the prep) or remove it from {self.split}.tsv"
            )

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        # A new batch iterator each epoch, so that its data-loader workers start after set_epoch
        # (fairseq's reused, persistent workers keep the first epoch's copy of the dataset); with
        # the data config's `shuffle`, a resumed run then also batches as one that ran through.
        return False

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = epoch

    def __getitem__(self, index: int) -> MultiviewDatasetItem:
        # fairseq's feature transforms draw from the global np.random: seeded per utterance, they
        # do not depend on batch composition, workers or where a resumed run restarted
        with self._numpy_seed(self.seed, self.epoch, index):
            source = self.pack_frames(self._get_source_audio(index))
        speaker_id = self.speaker_to_id[self.speakers[index]] if self.speaker_to_id is not None else None
        item = SpeechToTextDatasetItem(index=index, source=source, target=self.get_target(index), speaker_id=speaker_id)
        self.check_finite(index, item.source)
        if self.alignment.reads_units is False:  # the model reads no unit view
            return self._item(index, item, None, None)
        units = self.load_units(index)
        first = self.unit_view if self.more_unit_sets else None
        self.alignment.check(self.utt_id(index), item.source.size(0), units.size(0), first)
        more_units = None
        if self.more_unit_sets:
            more_units = {}
            for unit_set in self.more_unit_sets:
                more_units[unit_set.name] = self.load_units(index, unit_set)
                self.alignment.check(self.utt_id(index), item.source.size(0), more_units[unit_set.name].size(0),
                                     unit_set.name)
        return self._item(index, item, units, more_units)

    def _item(self, index: int, item: SpeechToTextDatasetItem, units: Optional[Tensor],
              more_units: Optional[Dict[str, Tensor]]) -> MultiviewDatasetItem:
        transcript = self.get_transcript(index) if self.src_dict is not None else None
        return MultiviewDatasetItem(
            index=item.index,
            source=item.source,
            target=item.target,
            speaker_id=item.speaker_id,
            units=units,
            more_units=more_units,
            transcript=transcript,
            tgt_text=self.tgt_texts[index],
            utt_key=self.utt_keys[index],
        )

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        """fairseq's batching, but the last batch is kept when its size is not a multiple of
        ``required_batch_size_multiple`` (fairseq 0.12 drops it, which silently loses up to
        ``multiple - 1`` utterances of every dev/test set in ``fairseq-generate``), and an
        utterance longer than ``max_tokens`` is an error that names it (fairseq's names none)."""
        if max_tokens is not None and len(indices) > 0:
            sizes = np.asarray(self.n_frames)[np.asarray(indices, dtype=np.int64)]
            long = np.asarray(indices)[sizes > max_tokens]
            if len(long):
                shown = ", ".join(f"{self.utt_id(int(i))} ({self.n_frames[int(i)]} frames)" for i in long[:5])
                raise DataError(
                    f"{self.split}: {len(long)} utterance(s) longer than {self.max_tokens_flag} "
                    f"{max_tokens} FBank frames: {shown}{' ...' if len(long) > 5 else ''}. Raise that flag above "
                    f"{int(max(self.n_frames[int(i)] for i in long))}, or drop them with --max-source-positions "
                    f"{max_tokens} and --skip-invalid-size-inputs-valid-test (fairseq then says how many it skipped)"
                )
        batches = list(super().batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple))
        covered = sum(len(b) for b in batches)
        if covered < len(indices):
            seen = set(np.concatenate(batches).tolist()) if batches else set()
            rest = np.array([i for i in indices if int(i) not in seen], dtype=np.int64)
            batches.append(rest)
        return batches

    def collater(self, samples: List[MultiviewDatasetItem], return_order: bool = False) -> Dict:
        if len(samples) == 0:
            return {}
        out = super().collater(samples, return_order=True)
        order = out["order"] if return_order else out.pop("order")  # (B,) sorted position -> sample
        if samples[0].units is not None:
            self._collate_units(samples, order, out["net_input"])
        # the original references (validation BLEU scores against them, as test scoring does)
        out["target_text"] = [samples[i].tgt_text for i in order.tolist()]
        keys = torch.tensor([s.utt_key for s in samples], dtype=torch.long)
        out["net_input"]["utt_keys"] = keys.index_select(0, order)  # (B,)
        if self.src_dict is not None:
            tokens = fairseq_data_utils.collate_tokens(
                [s.transcript for s in samples], self.src_dict.pad(), left_pad=False
            )
            lengths = torch.tensor([s.transcript.size(0) for s in samples], dtype=torch.long)
            out["source_text"] = tokens.index_select(0, order)  # (B, S)
            out["source_text_lengths"] = lengths.index_select(0, order)  # (B,)
            out["source_text_ntokens"] = int(lengths.sum())
        return out

    def _collate_units(self, samples: List[MultiviewDatasetItem], order: Tensor, net_input: Dict) -> None:
        """Adds every unit view, padded and in the batch's (sorted) order, to ``net_input``."""
        units = fairseq_data_utils.collate_tokens([s.units for s in samples], self.unit_pad, left_pad=False)
        unit_lengths = torch.tensor([s.units.size(0) for s in samples], dtype=torch.long)
        net_input["src_units"] = units.index_select(0, order)  # (B, T_unit)
        net_input["src_units_lengths"] = unit_lengths.index_select(0, order)  # (B,)
        if self.more_unit_sets:  # the further unit views, by name
            more, more_lengths = {}, {}
            for unit_set in self.more_unit_sets:
                seqs = [s.more_units[unit_set.name] for s in samples]
                more[unit_set.name] = fairseq_data_utils.collate_tokens(
                    seqs, unit_set.num_units, left_pad=False).index_select(0, order)  # (B, T_unit)
                more_lengths[unit_set.name] = torch.tensor(
                    [t.size(0) for t in seqs], dtype=torch.long).index_select(0, order)  # (B,)
            net_input["src_units_more"] = more
            net_input["src_units_more_lengths"] = more_lengths


def _memo(cache: Optional[dict], index: int, compute):
    """``compute(index)``, kept in ``cache`` (None: computed at every call)."""
    if cache is None:
        return compute(index)
    if index not in cache:
        cache[index] = compute(index)
    return cache[index]


def _deterministic(**tokenizers) -> bool:
    """Whether fairseq tokenizers give the same pieces for a text at every call (SentencePiece
    with ``sentencepiece_enable_sampling`` does not)."""
    return not any(getattr(t, "enable_sampling", False) for t in tokenizers.values() if t is not None)


def dataset_parts(dataset) -> list:
    """The split datasets inside what ``load_dataset`` built (a ConcatDataset of comma-separated
    splits, each perhaps in a ResamplingDataset)."""
    return [getattr(part, "dataset", part) for part in getattr(dataset, "datasets", [dataset])]


def units_files(units_paths: List[str]) -> List[Path]:
    """The units files (zips, or one plain file per directory) a split's references read."""
    files = {}
    for p in units_paths:
        file = Path(p.rsplit(":", 2)[0] if p.count(":") >= 2 else p)
        files.setdefault(file.parent if file.suffix != ".zip" else file, file)
    return [f for _, f in sorted(files.items())]


def units_provenance(tsv: Path, units_paths: List[str], unit_set: Optional[str] = None,
                     column: str = "units") -> Optional[dict]:
    """The provenance of a split's units (the record beside its units zip: ``units.json``, or
    ``units_NAME.json`` for a named set); every zip the split references must agree. None when
    there is no record. A record written for another unit set (``unit_set`` in it) is an error
    naming both: the columns of two sets were swapped."""
    # one units.json per directory (units.zip, or a directory of plain .npy files)
    files = {}
    for p in units_paths:
        file = Path(p.rsplit(":", 2)[0] if p.count(":") >= 2 else p)
        files.setdefault(file.parent, file)
    found = [(f, read_units_provenance(f)) for _, f in sorted(files.items())]
    for file, prov in found:
        recorded = (prov or {}).get("unit_set")
        if unit_set is not None and recorded is not None and recorded != unit_set:
            raise DataError(f"{tsv}: column {column} (unit set {unit_set}) reads {file}, whose record names the unit "
                            f"set {recorded}: the unit sets' columns are swapped or copied; rerun gsgn-extract-units "
                            f"--name {unit_set}")
    first_file, first = found[0]
    for file, prov in found[1:]:
        check_same_provenance(first, f"{first_file}", prov, f"{file} (also referenced by {tsv})")
    return first


class SpeechToTextMultiviewDatasetCreator(SpeechToTextDatasetCreator):
    KEY_UNITS = "units"

    @classmethod
    def _load_samples_from_tsv(cls, root: str, split: str):
        return strip_bom(super()._load_samples_from_tsv(root, split))

    @classmethod
    def _multiview_from_list(
        cls,
        split_name: str,
        is_train_split: bool,
        samples: List[Dict],
        data_dir: str,
        cfg: S2TDataConfig,
        tgt_dict,
        pre_tokenizer,
        bpe_tokenizer,
        speaker_to_id,
        num_units: int,
        alignment: ViewAlignment,
        src_dict,
        src_pre_tokenizer,
        src_bpe_tokenizer,
        seed: Optional[int] = None,
        unit_views: Sequence[str] = (DEFAULT_UNIT_VIEW,),
    ) -> SpeechToTextMultiviewDataset:
        tsv = Path(data_dir) / f"{split_name}.tsv"
        ks = [num_units] * len(unit_views) if isinstance(num_units, int) else list(num_units)
        columns = [unit_view_column(v) for v in unit_views]
        check_rows(tsv, samples, REQUIRED_COLUMNS + tuple(columns))
        root = resolve_data_root(cfg, data_dir)
        audio_paths = [(root / s[cls.KEY_AUDIO]).as_posix() for s in samples]
        audio_members = check_zip_refs(tsv, samples, cls.KEY_AUDIO, audio_paths)
        check_n_frames(tsv, samples, audio_paths, audio_members)
        sets, read_by = [], {}
        for view, column, k in zip(unit_views, columns, ks):
            paths = resolve_units_paths([s[column] for s in samples], data_dir, root)
            members = check_zip_refs(tsv, samples, column, paths)
            for file in units_files(paths):
                if file.resolve() in read_by:
                    raise DataError(f"{tsv}: columns {read_by[file.resolve()]} and {column} both read {file}: every "
                                    "unit set has its own units (gsgn-extract-units --name NAME writes units_NAME.zip)")
                read_by[file.resolve()] = column
            provenance = units_provenance(tsv, paths, view, column)
            sets.append(UnitSet(view, column, paths, members, provenance, k))
        first = sets[0]
        return SpeechToTextMultiviewDataset(
            split=split_name,
            is_train_split=is_train_split,
            cfg=cfg,
            audio_paths=audio_paths,
            n_frames=[int(s[cls.KEY_N_FRAMES]) for s in samples],
            src_texts=[s.get(cls.KEY_SRC_TEXT, cls.DEFAULT_SRC_TEXT) for s in samples],
            tgt_texts=[s[cls.KEY_TGT_TEXT] for s in samples],
            speakers=[s.get(cls.KEY_SPEAKER, cls.DEFAULT_SPEAKER) for s in samples],
            src_langs=[s.get(cls.KEY_SRC_LANG, cls.DEFAULT_LANG) for s in samples],
            tgt_langs=[s.get(cls.KEY_TGT_LANG, cls.DEFAULT_LANG) for s in samples],
            ids=[s[cls.KEY_ID] for s in samples],
            tgt_dict=tgt_dict,
            pre_tokenizer=pre_tokenizer,
            bpe_tokenizer=bpe_tokenizer,
            speaker_to_id=speaker_to_id,
            units_paths=first.paths,
            units_members=first.members,
            audio_members=audio_members,
            units_provenance=first.provenance,
            num_units=first.num_units,
            unit_view=first.name,
            more_unit_sets=sets[1:],
            alignment=alignment,
            src_dict=src_dict,
            src_pre_tokenizer=src_pre_tokenizer,
            src_bpe_tokenizer=src_bpe_tokenizer,
            seed=seed,
        )

    @classmethod
    def from_tsv_multiview(
        cls,
        root: str,
        cfg: S2TDataConfig,
        splits: str,
        tgt_dict,
        pre_tokenizer,
        bpe_tokenizer,
        is_train_split: bool,
        epoch: int,
        seed: int,
        num_units: int,
        alignment: ViewAlignment,
        src_dict=None,
        src_pre_tokenizer=None,
        src_bpe_tokenizer=None,
        speaker_to_id=None,
        unit_views: Sequence[str] = (DEFAULT_UNIT_VIEW,),
    ):
        """Like ``SpeechToTextDatasetCreator.from_tsv`` (comma-separated splits, temperature
        resampling of train splits) for :class:`SpeechToTextMultiviewDataset`; ``num_units``
        one K, or one per unit view of ``unit_views``."""
        datasets = [
            cls._multiview_from_list(
                split,
                is_train_split,
                cls._load_samples_from_tsv(root, split),
                root,
                cfg,
                tgt_dict,
                pre_tokenizer,
                bpe_tokenizer,
                speaker_to_id,
                num_units,
                alignment,
                src_dict,
                src_pre_tokenizer,
                src_bpe_tokenizer,
                seed,
                unit_views,
            )
            for split in splits.split(",")
        ]
        if is_train_split and len(datasets) > 1 and cfg.sampling_alpha != 1.0:
            size_ratios = cls.get_size_ratios(datasets, alpha=cfg.sampling_alpha)
            datasets = [
                ResamplingDataset(d, size_ratio=r, seed=seed, epoch=epoch, replace=(r >= 1.0))
                for r, d in zip(size_ratios, datasets)
            ]
        return ConcatDataset(datasets) if len(datasets) > 1 else datasets[0]
