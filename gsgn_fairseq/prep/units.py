"""Discrete speech units (the S-feature): frame features and nearest-centroid assignment.

The frame features (one vector per 20 ms of 16 kHz audio, ``num_frames(n)`` of them) come from
the back-ends of ``gsgn_fairseq.prep.ssl_features`` (``mfcc``, ``ssl``/``hubert``), re-exported
here for older imports.

Units are the index of the nearest k-means centroid (squared Euclidean distance), computed
as ``argmin(||x||^2 - 2 x C^T + ||C||^2)`` in float32 with torch, on the GPU when the
features are there. The k-means model is the joblib-dumped scikit-learn ``MiniBatchKMeans``
of fairseq's ``learn_kmeans.py`` (the released ``hubert_base_ls960_L9_km500.bin`` is one), or
a ``.npy`` of centroids, read without executing code from the file (``kmeans_io.py``).
"""
import logging
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .kmeans_io import load_kmeans
from ..data.mustc import SAMPLE_RATE, DataError, cut_segment, load_segments, read_wav
from .ssl_features import (  # noqa: F401  (the feature back-ends, re-exported: one import for the tools)
    FEATURES, HOP, MAX_CHUNK, WINDOW, HubertFeatures, MfccFeatures, SslFeatures, build_features, conv_geometry,
    load_hubert, num_frames,
)

logger = logging.getLogger(__name__)


class KMeansAssigner:
    """Nearest-centroid assignment: ``argmin_k ||x - c_k||^2`` as one matmul per chunk of frames."""

    def __init__(self, centroids: np.ndarray, device: str = "cpu", source: str = "k-means model",
                 chunk_frames: int = 32768):
        self.source = source
        self.device = torch.device(device)
        self.C = torch.as_tensor(np.asarray(centroids), dtype=torch.float32, device=self.device)  # K x D
        self.Cnorm = self.C.pow(2).sum(1)  # K
        self.chunk_frames = chunk_frames

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu") -> "KMeansAssigner":
        return cls(load_kmeans(path).cluster_centers_, device=device, source=str(path))

    @property
    def n_clusters(self) -> int:
        return self.C.size(0)

    @property
    def dim(self) -> int:
        return self.C.size(1)

    def check_dim(self, dim: int, feature: str) -> None:
        if dim != self.dim:
            raise DataError(
                f"{self.source}: k-means centroids have {self.dim} dims but the {feature} features "
                f"have {dim}; use the k-means model learnt on these features"
            )

    @torch.inference_mode()
    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """Args: ``feats``: ``(N, D)``. Returns: ``(N,)`` int64 cluster ids, on the assigner's device."""
        if feats.dim() != 2 or feats.size(1) != self.dim:
            raise DataError(f"{self.source}: features of shape {tuple(feats.shape)}, expected (N, {self.dim})")
        x = feats.to(self.device, torch.float32)
        out = torch.empty(x.size(0), dtype=torch.long, device=self.device)
        for s in range(0, x.size(0), self.chunk_frames):
            xc = x[s : s + self.chunk_frames]
            dist = xc.pow(2).sum(1, keepdim=True) - 2 * (xc @ self.C.T) + self.Cnorm  # N x K
            out[s : s + self.chunk_frames] = dist.argmin(1)
        return out


def plan_batches(lengths: Sequence[int], max_samples: int) -> List[List[int]]:
    """Group indices into batches whose padded size (count x longest) is at most ``max_samples``.

    Longest first; an utterance longer than ``max_samples`` gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > max_samples:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class _TalkAudio(torch.utils.data.Dataset):
    """Item k: ``[(id, waveform), ...]`` of the k-th run of consecutive ids from one talk, the
    talk's wav read once (in a DataLoader worker process when there are workers)."""

    def __init__(self, groups: List[Tuple[Path, list]]):
        self.groups = groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, k: int) -> List[Tuple[str, np.ndarray]]:
        wav, segs = self.groups[k]
        audio = read_wav(wav)
        return [(seg.id, cut_segment(audio, seg)) for seg in segs]


def iter_split_audio(root: Path, tgt_lang: str, split: str, ids: Sequence[str],
                     manifest: Optional[Path] = None, num_workers: int = 0) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(id, waveform)`` for ``ids`` of one split, in order, cut from the release-layout talks.

    Each talk's wav is read once when the ids come grouped by talk (as in the TSVs); with
    ``num_workers`` > 0 the talks are read and cut in that many DataLoader worker processes,
    a few talks ahead of the consumer, in the same order.
    """
    talks = load_segments(root, tgt_lang, split)
    by_id = {seg.id: seg for segs in talks.values() for seg in segs}
    groups: List[Tuple[Path, list]] = []
    for uid in ids:
        seg = by_id.get(uid)
        if seg is None:
            raise DataError(
                f"{manifest or split}: utterance {uid} is not a segment of {split} "
                f"in {Path(root) / f'en-{tgt_lang}' / 'data' / split}"
            )
        if groups and groups[-1][0] == seg.wav:
            groups[-1][1].append(seg)
        else:
            groups.append((seg.wav, [seg]))
    loader = torch.utils.data.DataLoader(_TalkAudio(groups), batch_size=None, shuffle=False,
                                         num_workers=num_workers, prefetch_factor=4 if num_workers else None)
    for items in loader:
        yield from items


def iter_features(
    utterances: Iterable[Tuple[str, np.ndarray]],
    features,
    batch_seconds: float = 100.0,
    pool_batches: int = 8,
    assigner: Optional["KMeansAssigner"] = None,
) -> Iterator[Tuple[str, int, torch.Tensor]]:
    """Yield ``(id, n_samples, (T, dim) features)``, batching utterances by total audio length;
    with ``assigner``, ``(id, n_samples, (T,) unit ids)``, the whole batch assigned at once.

    Utterances are pooled (about ``pool_batches`` batches of audio at a time), sorted by length
    within the pool and cut into batches of at most ``batch_seconds`` of padded audio, so the
    yield order differs from the input order.
    """
    max_samples = max(int(batch_seconds * SAMPLE_RATE), WINDOW)
    pool: List[Tuple[str, np.ndarray]] = []
    pool_samples = 0

    def flush():
        for batch in plan_batches([len(w) for _, w in pool], max_samples):
            feats = features([pool[i][1] for i in batch])
            if assigner is not None:  # one nearest-centroid matmul for the whole batch
                frames = [f.size(0) for f in feats]
                feats = list(assigner(torch.cat(feats)).split(frames)) if sum(frames) else \
                    [torch.zeros(0, dtype=torch.long) for _ in feats]
            for i, f in zip(batch, feats):
                uid, wav = pool[i]
                if f.size(0) != num_frames(len(wav)):
                    raise RuntimeError(f"utterance {uid}: {f.size(0)} {features.name} frames for {len(wav)} "
                                       f"samples, expected {num_frames(len(wav))}")
                yield uid, len(wav), f

    for uid, wav in utterances:
        pool.append((uid, wav))
        pool_samples += len(wav)
        if pool_samples >= pool_batches * max_samples:
            yield from flush()
            pool, pool_samples = [], 0
    yield from flush()


def check_unit_lengths(units: Dict[str, np.ndarray], n_frames: Dict[str, int], where: str,
                       tolerance: float = 2.0) -> None:
    """Every utterance's unit count must be within ``tolerance`` of ``n_frames / 2``.

    ``n_frames`` counts 10 ms fbank frames, units are 20 ms. Raises DataError naming the first
    10 offenders and their count.
    """
    bad = [(uid, len(u), n_frames[uid]) for uid, u in units.items() if abs(len(u) - n_frames[uid] / 2) > tolerance]
    if bad:
        shown = ", ".join(f"{uid} ({n} units, n_frames {nf})" for uid, n, nf in bad[:10])
        raise DataError(
            f"{where}: {len(bad)} utterance(s) whose unit count is not n_frames/2 (+-{tolerance:g}): "
            f"{shown}{' ...' if len(bad) > 10 else ''}. The units do not belong to these utterances "
            "(wrong order, wrong audio or wrong frame rate)."
        )
