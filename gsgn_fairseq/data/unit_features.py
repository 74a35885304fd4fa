"""Discrete speech units (the S-feature): frame features and nearest-centroid assignment.

Two feature back-ends, both giving one vector per 20 ms of 16 kHz audio:

- ``hubert``: the output of transformer layer ``layer`` (1-based, default 9) of a fairseq
  HuBERT checkpoint, as fairseq's ``examples/hubert/simple_kmeans/dump_hubert_feature.py``
  computes it: the waveform in [-1, 1], layer-normalized when the checkpoint's task says
  ``normalize``, audio longer than ``max_chunk`` samples encoded in chunks. The conv
  feature extractor has a 400-sample receptive field and a 320-sample stride:
  ``floor((n - 400) / 320) + 1`` frames.
- ``mfcc``: HuBERT's first-iteration features, as fairseq's ``dump_mfcc_feature.py`` but
  with a 20 ms shift: 13 Kaldi MFCCs (25 ms window, no energy) + deltas + delta-deltas = 39
  dims. Kaldi framing with ``snip_edges``: ``1 + (n - 400) // 320`` frames.

The two counts are the same (``num_frames``), so units from either back-end line up with
the fbank frames (10 ms) two to one.

Units are the index of the nearest k-means centroid (squared Euclidean distance), computed
as ``argmin(||x||^2 - 2 x C^T + ||C||^2)`` in float32 with torch, on the GPU when the
features are there. The k-means model is the joblib-dumped scikit-learn ``MiniBatchKMeans``
of fairseq's ``learn_kmeans.py`` (the released ``hubert_base_ls960_L9_km500.bin`` is one), or
a ``.npy`` of centroids, read without executing code from the file (``kmeans_io.py``).
"""
import contextlib
import logging
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .kmeans_io import load_kmeans
from .mustc import SAMPLE_RATE, DataError, cut_segment, load_segments, read_wav

logger = logging.getLogger(__name__)

FEATURES = ("hubert", "mfcc")
WINDOW = 400  # samples: 25 ms, the receptive field of one frame
HOP = 320  # samples: 20 ms, one unit
MAX_CHUNK = 1_600_000  # samples (100 s), as fairseq's dump_hubert_feature.py


def num_frames(n_samples: int) -> int:
    """Frames (units) of ``n_samples`` of 16 kHz audio: ``1 + (n - 400) // 320``, 0 below 400."""
    return 0 if n_samples < WINDOW else 1 + (n_samples - WINDOW) // HOP


class MfccFeatures:
    """39-dim MFCC + deltas + delta-deltas at 50 Hz."""

    name = "mfcc"
    dim = 39

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    def __call__(self, wavs: Sequence[np.ndarray]) -> List[torch.Tensor]:
        """Args: ``wavs``: float waveforms in [-1, 1] at 16 kHz. Returns: ``(T_i, 39)`` float32."""
        import torchaudio

        out = []
        for wav in wavs:
            if len(wav) < WINDOW:
                out.append(torch.zeros(0, self.dim, device=self.device))
                continue
            x = torch.as_tensor(wav, dtype=torch.float32).view(1, -1)
            mfcc = torchaudio.compliance.kaldi.mfcc(
                x, sample_frequency=SAMPLE_RATE, use_energy=False, frame_shift=1000.0 * HOP / SAMPLE_RATE
            ).transpose(0, 1)  # 13 x T
            deltas = torchaudio.functional.compute_deltas(mfcc)
            ddeltas = torchaudio.functional.compute_deltas(deltas)
            feats = torch.cat([mfcc, deltas, ddeltas], dim=0).transpose(0, 1).contiguous()  # T x 39
            out.append(feats.to(self.device))
        return out


def _unsupported_global(err: Exception) -> Optional[str]:
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return match.group(1) if match else None


def _model_name(state: dict) -> Optional[str]:
    """The registered model name of a loaded fairseq checkpoint (cfg.model._name or args.arch)."""
    cfg = state.get("cfg")
    model = cfg.get("model") if cfg is not None else None
    model = model if model is not None else state.get("args")
    for key in ("_name", "arch"):
        value = model.get(key) if hasattr(model, "get") else getattr(model, key, None)
        if value:
            return value
    return None


def load_hubert(checkpoint: Path):
    """Load a fairseq HuBERT checkpoint: ``(model, task_cfg)``; anything else is a DataError."""
    from fairseq import checkpoint_utils
    from fairseq.models.hubert import HubertModel

    from .. import checkpoint_compat  # noqa: F401  (allow-lists fairseq's checkpoint types)

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"HuBERT checkpoint not found: {path}")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    except Exception as err:
        name = _unsupported_global(err)
        if name:
            raise DataError(
                f"{path}: the checkpoint holds objects of type {name}, which loading with "
                "weights_only does not allow; if you trust the file, add the type to "
                "SAFE_GLOBALS in gsgn_fairseq/checkpoint_compat.py"
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(
            f"{path}: not a fairseq checkpoint ({type(err).__name__}: {reason[:200]})"
        ) from None
    model_name = _model_name(state)
    if model_name != "hubert":
        raise DataError(
            f"{path}: a fairseq checkpoint of model {model_name!r}, not a HuBERT model "
            "(expected cfg.model._name == 'hubert', as in hubert_base_ls960.pt)"
        )
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], state=state)
    except Exception as err:
        raise DataError(f"{path}: cannot build the HuBERT model ({type(err).__name__}: {err})") from None
    model = models[0]
    if not isinstance(model, HubertModel):
        raise DataError(f"{path}: built a {type(model).__name__}, not a HubertModel")
    return model.eval(), task.cfg


def conv_geometry(model) -> Tuple[int, int]:
    """(receptive field, stride) in samples of a wav2vec2/HuBERT conv feature extractor."""
    field, stride = 1, 1
    for block in model.feature_extractor.conv_layers:
        conv = block[0]
        field += (conv.kernel_size[0] - 1) * stride
        stride *= conv.stride[0]
    return field, stride


class HubertFeatures:
    """Layer-``layer`` features of a fairseq HuBERT checkpoint at 50 Hz.

    Batches run the conv feature extractor per utterance (HuBERT-base normalizes the first
    conv layer over time, which padding would change) and the transformer on the padded
    batch with a padding mask, so a batch gives the same features as one utterance at a time.
    An utterance longer than ``max_chunk`` samples is encoded alone in consecutive chunks
    whose frames tile the utterance (chunks start at multiples of 320 samples and overlap by
    80), so the frame count is ``num_frames(n)`` however the audio is chunked.
    """

    name = "hubert"

    def __init__(
        self,
        checkpoint: Path,
        layer: int = 9,
        device: str = "cpu",
        max_chunk: int = MAX_CHUNK,
        dtype: Optional[str] = None,
    ):
        self.checkpoint = Path(checkpoint)
        self.model, task_cfg = load_hubert(checkpoint)
        self.normalize = bool(task_cfg.normalize)
        n_layers = len(self.model.encoder.layers)
        if not 1 <= layer <= n_layers:
            raise ValueError(f"{checkpoint}: --layer {layer} out of range; the model has layers 1..{n_layers}")
        if conv_geometry(self.model) != (WINDOW, HOP) or int(task_cfg.sample_rate) != SAMPLE_RATE:
            raise DataError(
                f"{checkpoint}: conv receptive field/stride {conv_geometry(self.model)} at "
                f"{task_cfg.sample_rate} Hz; units need ({WINDOW}, {HOP}) at {SAMPLE_RATE} Hz (50 Hz frames)"
            )
        if max_chunk < WINDOW:
            raise ValueError(f"max_chunk must be at least {WINDOW} samples, got {max_chunk}")
        self.layer = layer
        self.device = torch.device(device)
        self.model.to(self.device)
        self.dim = self.model.encoder.embedding_dim
        self.chunk_frames = num_frames(max_chunk)  # frames per chunk of long audio
        if self.device.type == "cuda":
            dtype = dtype or "fp16"  # HuBERT was trained in fp16
            self.autocast = None if dtype == "fp32" else {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        else:
            if dtype not in (None, "fp32"):
                logger.warning("--dtype %s is for CUDA; computing in fp32 on %s", dtype, self.device)
            self.autocast = None

    def _precision(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _encode(self, wavs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Layer outputs for waveforms of at least 400 samples, as in HubertModel.forward."""
        model = self.model
        convs = [model.forward_features(w.view(1, -1))[0] for w in wavs]  # each C x T_i
        lengths = [c.size(1) for c in convs]
        feats = torch.zeros(len(convs), convs[0].size(0), max(lengths), device=self.device, dtype=convs[0].dtype)
        padding_mask = torch.ones(len(convs), max(lengths), dtype=torch.bool, device=self.device)
        for i, c in enumerate(convs):
            feats[i, :, : c.size(1)] = c
            padding_mask[i, : c.size(1)] = False
        x = model.layer_norm(feats.transpose(1, 2))  # B x T x C
        if model.post_extract_proj is not None:
            x = model.post_extract_proj(x)
        x, _ = model.encoder(x, padding_mask=padding_mask, layer=self.layer - 1)  # B x T x D
        return [x[i, :n].float() for i, n in enumerate(lengths)]

    @torch.inference_mode()
    def __call__(self, wavs: Sequence[np.ndarray]) -> List[torch.Tensor]:
        """Args: ``wavs``: float waveforms in [-1, 1] at 16 kHz. Returns: ``(T_i, dim)`` float32."""
        out: List[Optional[torch.Tensor]] = [None] * len(wavs)
        batch, batch_idx = [], []
        for i, wav in enumerate(wavs):
            n = len(wav)
            if n < WINDOW:
                out[i] = torch.zeros(0, self.dim, device=self.device)
                continue
            x = torch.as_tensor(np.asarray(wav), dtype=torch.float32, device=self.device)
            if self.normalize:
                x = F.layer_norm(x, x.shape)
            if num_frames(n) <= self.chunk_frames:
                batch.append(x)
                batch_idx.append(i)
                continue
            step = self.chunk_frames * HOP
            span = (self.chunk_frames - 1) * HOP + WINDOW
            chunks = [x[s : s + span] for s in range(0, n - WINDOW + 1, step)]
            with self._precision():
                out[i] = torch.cat([self._encode([c])[0] for c in chunks], dim=0)
        if batch:
            with self._precision():
                for i, feats in zip(batch_idx, self._encode(batch)):
                    out[i] = feats
        return out


def build_features(
    feature: str,
    checkpoint: Optional[Path] = None,
    layer: int = 9,
    device: str = "cpu",
    max_chunk: int = MAX_CHUNK,
    dtype: Optional[str] = None,
):
    """The back-end named ``feature`` (``hubert`` needs ``checkpoint``)."""
    if feature == "mfcc":
        return MfccFeatures(device)
    if feature == "hubert":
        if checkpoint is None:
            raise ValueError("--feature hubert needs --checkpoint (a fairseq HuBERT .pt)")
        return HubertFeatures(checkpoint, layer=layer, device=device, max_chunk=max_chunk, dtype=dtype)
    raise ValueError(f"unknown feature {feature!r}; choose from {FEATURES}")


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


def iter_split_audio(root: Path, tgt_lang: str, split: str, ids: Sequence[str],
                     manifest: Optional[Path] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(id, waveform)`` for ``ids`` of one split, cut from the release-layout talks.

    Each talk's wav is read once when the ids come grouped by talk (as in the TSVs).
    """
    talks = load_segments(root, tgt_lang, split)
    by_id = {seg.id: seg for segs in talks.values() for seg in segs}
    cached_wav, audio = None, None
    for uid in ids:
        seg = by_id.get(uid)
        if seg is None:
            raise DataError(
                f"{manifest or split}: utterance {uid} is not a segment of {split} "
                f"in {Path(root) / f'en-{tgt_lang}' / 'data' / split}"
            )
        if seg.wav != cached_wav:
            audio, cached_wav = read_wav(seg.wav), seg.wav
        yield uid, cut_segment(audio, seg)


def iter_features(
    utterances: Iterable[Tuple[str, np.ndarray]],
    features,
    batch_seconds: float = 100.0,
    pool_batches: int = 8,
) -> Iterator[Tuple[str, int, torch.Tensor]]:
    """Yield ``(id, n_samples, (T, dim) features)``, batching utterances by total audio length.

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
