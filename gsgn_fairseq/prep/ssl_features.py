"""Frame features for discrete units: a registry of back-ends, one vector per 20 ms of 16 kHz audio.

Every back-end maps waveforms in [-1, 1] to ``(T_i, dim)`` float32 tensors with
``T_i = num_frames(len(wav)) = 1 + (n - 400) // 320`` (0 below 400 samples): a 400-sample
receptive field and a 320-sample hop, 50 Hz frames that line up with the 10 ms fbank frames two
to one. Back-ends (``FEATURES``; ``build_features`` dispatches, ``@register_feature`` adds one):

- ``mfcc``: HuBERT's first-iteration features, as fairseq's ``dump_mfcc_feature.py`` but with a
  20 ms shift: 13 Kaldi MFCCs (25 ms window, no energy) + deltas + delta-deltas = 39 dims, Kaldi
  framing with ``snip_edges``.
- ``ssl`` (alias ``hubert``): the output of transformer layer ``layer`` of a speech SSL model,
  either a fairseq checkpoint (``.pt`` of HuBERT or wav2vec 2.0) or a Hugging Face model
  directory (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin`` of ``HubertModel``,
  ``WavLMModel``, ``Wav2Vec2Model`` or ``Data2VecAudioModel``, read offline).

Layer numbering is the same for every kind: layer L (1-based) is the output of the L-th
transformer layer, Hugging Face's ``output_hidden_states=True`` ``hidden_states[L]``. For a
pre-LN encoder (``do_stable_layer_norm``; fairseq ``layer_norm_first``) ``hidden_states[L]`` is
the raw residual stream for L below the last layer and, for the last layer, the stream after the
encoder's final LayerNorm; fairseq's full forward gives the same tensor at the last layer.
Only layers 1..L are kept and run.

Batches run the whole model on the padded batch and give the same features as one utterance at
a time. The conv feature extractor is run on the padded waveforms once (``conv_features``): its
convolutions are valid ones, so padding only reaches frames that are dropped, except through a
group norm (HuBERT/wav2vec 2.0 base normalise each channel of the first conv layer over time),
whose statistics are therefore taken over each utterance's own frames (``masked_group_norm``).
The transformer gets a padding mask; stacked positional convolutions (data2vec) get their padded
frames zeroed between stages, as the encoder does before the first one.
"""
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.mustc import SAMPLE_RATE, DataError

logger = logging.getLogger(__name__)

WINDOW = 400  # samples: 25 ms, the receptive field of one frame
HOP = 320  # samples: 20 ms, one unit
MAX_CHUNK = 1_600_000  # samples (100 s), as fairseq's dump_hubert_feature.py

FEATURES: Dict[str, type] = {}  # registry name -> back-end class


def num_frames(n_samples: int) -> int:
    """Frames (units) of ``n_samples`` of 16 kHz audio: ``1 + (n - 400) // 320``, 0 below 400."""
    return 0 if n_samples < WINDOW else 1 + (n_samples - WINDOW) // HOP


def register_feature(name: str):
    """Class decorator: make a back-end available as ``--feature name``."""

    def register(cls):
        if name in FEATURES:
            raise ValueError(f"feature back-end {name!r} is already registered ({FEATURES[name].__name__})")
        FEATURES[name] = cls
        return cls

    return register


class FeatureBackend:
    """The interface of a back-end.

    ``name`` (its registry name), ``dim``, the frame geometry ``window``/``hop`` (samples at
    16 kHz), ``provenance`` (a JSON-able dict naming what the features come from) and
    ``__call__(wavs) -> [(T_i, dim) float32]`` with ``T_i = num_frames(len(wav))``.
    """

    name: str
    dim: int
    window = WINDOW
    hop = HOP

    @classmethod
    def from_options(cls, checkpoint: Optional[Path] = None, layer: int = 9, device: str = "cpu",
                     max_chunk: int = MAX_CHUNK, dtype: Optional[str] = None) -> "FeatureBackend":
        raise NotImplementedError

    @property
    def provenance(self) -> dict:
        raise NotImplementedError

    def __call__(self, wavs: Sequence[np.ndarray]) -> List[torch.Tensor]:
        raise NotImplementedError


@register_feature("mfcc")
class MfccFeatures(FeatureBackend):
    """39-dim MFCC + deltas + delta-deltas at 50 Hz."""

    name = "mfcc"
    dim = 39

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    @classmethod
    def from_options(cls, checkpoint=None, layer=9, device="cpu", max_chunk=MAX_CHUNK, dtype=None):
        if checkpoint is not None:
            raise ValueError(f"--feature mfcc reads no model, but --checkpoint {checkpoint} was given; "
                             "drop it, or use --feature ssl for the model's features")
        return cls(device)

    @property
    def provenance(self) -> dict:
        return {"feature": self.name, "checkpoint_sha1": None, "layer": None}

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


# ---------------------------------------------------------------- the conv feature extractor


@dataclass(frozen=True)
class ConvBlock:
    """One layer of a wav2vec 2.0-style conv feature extractor: conv -> norm -> activation.

    ``norm`` is an ``nn.GroupNorm`` (statistics over time: per utterance), an ``nn.LayerNorm``
    (over the channels of each frame) or None.
    """

    conv: nn.Conv1d
    norm: Optional[nn.Module]
    activation: nn.Module


def conv_blocks(model: nn.Module, source: object = "model") -> List[ConvBlock]:
    """The conv layers of a fairseq or Hugging Face SSL model (``model.feature_extractor``).

    fairseq blocks are ``Sequential(conv, dropout, [norm], activation)`` (the layer norm wrapped in
    ``TransposeLast``); transformers' have ``conv``, ``layer_norm`` (absent without a norm) and
    ``activation``. Raises DataError naming ``source`` for anything else.
    """
    layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
    if layers is None:
        raise DataError(f"{source}: a {type(model).__name__} has no feature_extractor.conv_layers; "
                        "expected a wav2vec 2.0-style conv feature extractor")
    blocks = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Sequential):
            mods = [m for m in layer if not isinstance(m, nn.Dropout)]
            conv, activation, norms = mods[0], mods[-1], mods[1:-1]
            norm = norms[0] if norms else None
            if isinstance(norm, nn.Sequential):  # TransposeLast, LayerNorm, TransposeLast
                norm = next((m for m in norm if isinstance(m, nn.LayerNorm)), norm)
            if len(norms) > 1:
                norm = layer  # not one norm: refused below
        else:
            conv, activation = getattr(layer, "conv", None), getattr(layer, "activation", None)
            norm = getattr(layer, "layer_norm", None)
        if not isinstance(conv, nn.Conv1d) or activation is None or not (
                norm is None or isinstance(norm, (nn.GroupNorm, nn.LayerNorm))):
            raise DataError(f"{source}: conv feature extractor layer {i} is not conv -> group/layer norm -> "
                            f"activation ({layer})")
        if conv.padding != (0,) or conv.dilation != (1,):
            raise DataError(f"{source}: conv feature extractor layer {i} has padding {conv.padding} and "
                            f"dilation {conv.dilation}; frames need unpadded, undilated convolutions")
        blocks.append(ConvBlock(conv, norm, activation))
    return blocks


def conv_geometry(model_or_blocks) -> Tuple[int, int]:
    """(receptive field, stride) in samples of a conv feature extractor (a model or its blocks)."""
    blocks = model_or_blocks if isinstance(model_or_blocks, list) else conv_blocks(model_or_blocks)
    field, stride = 1, 1
    for block in blocks:
        field += (block.conv.kernel_size[0] - 1) * stride
        stride *= block.conv.stride[0]
    return field, stride


def masked_group_norm(x: torch.Tensor, lengths: Sequence[int], norm: nn.GroupNorm) -> torch.Tensor:
    """``norm`` applied to each utterance's first ``lengths[i]`` frames alone.

    Args: ``x``: ``(B, C, T)``; ``lengths``: valid frames per utterance; ``norm``: the model's
    GroupNorm (its groups, eps and affine weights). Statistics are computed in float32, as
    fairseq's Fp32GroupNorm and autocast do. Returns: ``(B, C, T)`` in ``x``'s dtype; frames past
    a length hold values normalized with that utterance's statistics (they are dropped later).
    """
    B, C, T = x.shape
    G = norm.num_groups
    mean = x.new_empty(B, G, dtype=torch.float32)
    var = x.new_empty(B, G, dtype=torch.float32)
    for i, n in enumerate(lengths):
        var[i], mean[i] = torch.var_mean(x[i, :, :n].float().reshape(G, -1), dim=1, correction=0)
    rstd = torch.rsqrt(var + norm.eps).repeat_interleave(C // G, dim=1)  # B x C
    mean = mean.repeat_interleave(C // G, dim=1)
    scale = rstd * norm.weight.float() if norm.affine else rstd
    shift = (norm.bias.float() if norm.affine else 0.0) - mean * scale
    return torch.addcmul(shift[:, :, None], x.float(), scale[:, :, None]).to(x.dtype)


def conv_features(blocks: Sequence[ConvBlock], wavs: torch.Tensor,
                  lengths: Sequence[int]) -> Tuple[torch.Tensor, List[int]]:
    """The conv feature extractor on a padded batch.

    Args: ``wavs``: ``(B, N)`` waveforms, zero-padded; ``lengths``: samples per utterance (each at
    least the receptive field). Returns: ``(B, C, T)`` features and each utterance's valid frames.
    Valid convolutions read only an utterance's own samples for its valid frames, so only the
    group norm needs the lengths.
    """
    x = wavs.unsqueeze(1)  # B x 1 x N
    lengths = list(lengths)
    for block in blocks:
        x = block.conv(x)
        k, s = block.conv.kernel_size[0], block.conv.stride[0]
        lengths = [(n - k) // s + 1 for n in lengths]
        if isinstance(block.norm, nn.GroupNorm):
            x = masked_group_norm(x, lengths, block.norm)
        elif block.norm is not None:  # LayerNorm over the channels of each frame
            x = block.norm(x.transpose(1, 2)).transpose(1, 2)
        x = block.activation(x)
    return x, lengths


@contextlib.contextmanager
def zero_padded_inputs(modules: Sequence[nn.Module], padding_mask: Optional[torch.Tensor]) -> Iterator[None]:
    """While active, zero the padded frames of the ``(B, C, T)`` input of each of ``modules``.

    For stacked positional convolutions: without it the padded frames of one stage, no longer
    zero, would reach the last valid frames through the next stage's kernel.
    """
    if padding_mask is None or not modules:
        yield
        return
    keep = (~padding_mask).unsqueeze(1)  # B x 1 x T

    def hook(module, args):
        return (args[0] * keep.to(args[0].dtype),) + tuple(args[1:])

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- checkpoints


FAIRSEQ_MODELS = {"hubert": "HuBERT", "wav2vec2": "wav2vec 2.0"}  # cfg.model._name -> what it is
HF_MODELS = {"hubert": "HubertModel", "wavlm": "WavLMModel", "wav2vec2": "Wav2Vec2Model",
             "data2vec-audio": "Data2VecAudioModel"}  # config.model_type -> transformers class
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "pytorch_model.bin.index.json")


def _is_hf_weight_file(name: str) -> bool:
    return (name.startswith("model") and name.endswith(".safetensors")) or (
        name.startswith("pytorch_model") and name.endswith(".bin"))


def checkpoint_sha1(path: Path) -> str:
    """sha1 of a checkpoint file; of a model directory, of ``config.json`` then its weight files
    (``model*.safetensors``, ``pytorch_model*.bin``), concatenated in sorted name order."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        (p for p in path.iterdir() if p.name == "config.json" or _is_hf_weight_file(p.name)), key=lambda p: p.name)
    h = hashlib.sha1()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


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


def _is_unilm_wavlm(path: Path) -> bool:
    """Whether ``path`` is an original (microsoft/unilm) WavLM checkpoint: {"cfg": dict, "model": ...}."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    model = state.get("model") if isinstance(state, dict) else None
    return isinstance(state.get("cfg"), dict) and isinstance(model, dict) and any(
        "relative_attention_bias" in k for k in model)


def load_fairseq_ssl(checkpoint: Path, kinds: Sequence[str] = tuple(FAIRSEQ_MODELS)):
    """Load a fairseq SSL checkpoint of one of ``kinds``: ``(model, task_cfg, model_name)``.

    Loading stays ``weights_only`` (``gsgn_fairseq.fairseq_patches.checkpoint_compat`` allow-lists fairseq's
    types). Anything else is a DataError naming the file.
    """
    from fairseq import checkpoint_utils
    from fairseq.models.hubert import HubertModel
    from fairseq.models.wav2vec import Wav2Vec2Model

    from ..fairseq_patches import checkpoint_compat  # noqa: F401  (allow-lists fairseq's checkpoint types)

    path = Path(checkpoint)
    what = " or ".join(FAIRSEQ_MODELS[k] for k in kinds)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    except Exception as err:
        name = _unsupported_global(err)
        if name:
            raise DataError(
                f"{path}: the checkpoint holds objects of type {name}, which loading with "
                "weights_only does not allow; if you trust the file, add the type to "
                "SAFE_GLOBALS in gsgn_fairseq/fairseq_patches/checkpoint_compat.py"
            ) from None
        if _is_unilm_wavlm(path):
            raise DataError(
                f"{path}: an original (microsoft/unilm) WavLM checkpoint, which is not read here; convert it "
                "to a Hugging Face WavLMModel directory (transformers' "
                "convert_wavlm_original_pytorch_checkpoint_to_pytorch.py) and pass that directory"
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(
            f"{path}: not a fairseq checkpoint ({type(err).__name__}: {reason[:200]})"
        ) from None
    model_name = _model_name(state)
    if model_name not in kinds:
        raise DataError(
            f"{path}: a fairseq checkpoint of model {model_name!r}, not a {what} model (expected "
            f"cfg.model._name in {list(kinds)}, as in hubert_base_ls960.pt or wav2vec_small.pt)"
        )
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], state=state)
    except Exception as err:
        raise DataError(f"{path}: cannot build the {what} model ({type(err).__name__}: {err})") from None
    model = models[0]
    if not isinstance(model, (HubertModel, Wav2Vec2Model)):
        raise DataError(f"{path}: built a {type(model).__name__}, not a HubertModel or Wav2Vec2Model")
    return model.eval(), task.cfg, model_name


def load_hubert(checkpoint: Path):
    """Load a fairseq HuBERT checkpoint: ``(model, task_cfg)``; anything else is a DataError."""
    model, task_cfg, _ = load_fairseq_ssl(checkpoint, kinds=("hubert",))
    return model, task_cfg


def load_hf_ssl(directory: Path):
    """Load a Hugging Face SSL model directory offline: ``(model, config, feature_extractor or None)``.

    Only files in ``directory`` are read (``local_files_only``: the hub is never contacted).
    Parameters the model needs but the weights lack are an error, not a random initialisation.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json; a Hugging Face model directory holds config.json "
                                f"and one of {', '.join(HF_WEIGHTS)} (as save_pretrained writes)")
    if not any((directory / name).is_file() for name in HF_WEIGHTS):
        raise FileNotFoundError(f"{directory}: no weights; expected one of {', '.join(HF_WEIGHTS)}")
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"{directory} is a Hugging Face model directory, which needs transformers "
                          f"({err}); pip install -r requirements.txt") from None

    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as err:
        raise DataError(f"{directory}/config.json: not a transformers model config "
                        f"({type(err).__name__}: {str(err)[:200]})") from None
    if config.model_type not in HF_MODELS:
        raise DataError(f"{directory}: a {config.model_type!r} model; --feature ssl reads "
                        f"{', '.join(f'{t} ({c})' for t, c in HF_MODELS.items())}")
    cls = getattr(transformers, HF_MODELS[config.model_type])
    model, info = cls.from_pretrained(directory, config=config, local_files_only=True, dtype=torch.float32,
                                      output_loading_info=True)
    # masked_spec_embed is the training-time mask embedding, unused here
    missing = [k for k in info["missing_keys"] if k != "masked_spec_embed"]
    if missing or info["mismatched_keys"]:
        bad = missing + [k for k, *_ in info["mismatched_keys"]]
        raise DataError(f"{directory}: the weights lack or mismatch {len(bad)} parameter(s) of {cls.__name__} "
                        f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); not a checkpoint of this model")
    extractor = None
    if (directory / "preprocessor_config.json").is_file():
        extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(directory, local_files_only=True)
    return model.eval(), config, extractor


# ---------------------------------------------------------------- after the conv stack


class _FairseqTrunk(nn.Module):
    """fairseq HuBERT / wav2vec 2.0 after the conv stack, as ``extract_features`` (no masking).

    ``(B, C, T)`` conv features + ``(B, T)`` padding mask (True = padded) -> ``(B, T, D)``.
    """

    def __init__(self, model: nn.Module, layer: int, source: object):
        super().__init__()
        from fairseq.models.wav2vec.wav2vec2 import TransformerSentenceEncoderLayer

        encoder = model.encoder
        self.n_layers = len(encoder.layers)
        _check_layer(layer, self.n_layers, source)
        if not all(isinstance(m, TransformerSentenceEncoderLayer) for m in encoder.layers):
            raise DataError(f"{source}: encoder layers of type {type(encoder.layers[0]).__name__}; only "
                            "transformer layers (layer_type=transformer) are supported")
        if getattr(model, "input_quantizer", None) is not None:
            raise DataError(f"{source}: a wav2vec 2.0 model with a quantized input is not supported")
        encoder.layers = encoder.layers[:layer]  # later layers are never run
        # the full forward (layer=None) applies a pre-LN encoder's final LayerNorm: hidden_states[n]
        self.tgt_layer = None if layer == self.n_layers else layer - 1
        self.model = model
        # pos_conv_depth > 1: a Sequential of conv stages; depth 1: Sequential(conv, SamePad, GELU)
        self.pos_conv_stages = [m for m in encoder.pos_conv if isinstance(m, nn.Sequential)]

    def forward(self, feats: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.model.layer_norm(feats.transpose(1, 2))  # B x T x C
        if self.model.post_extract_proj is not None:
            x = self.model.post_extract_proj(x)  # B x T x D
        with zero_padded_inputs(self.pos_conv_stages, padding_mask):
            x, _ = self.model.encoder(x, padding_mask=padding_mask, layer=self.tgt_layer)
        return x


class _HfTrunk(nn.Module):
    """A transformers SSL model after the conv stack, as its forward without masking.

    ``(B, C, T)`` conv features + ``(B, T)`` padding mask (True = padded) -> ``(B, T, D)``, the
    encoder's ``hidden_states[layer]``. The encoder keeps only its first ``layer`` layers; a
    pre-LN encoder (``do_stable_layer_norm``) keeps its final LayerNorm only when ``layer`` is
    its last, since ``hidden_states[L]`` carries that norm only there.
    """

    def __init__(self, model: nn.Module, layer: int, source: object):
        super().__init__()
        encoder = model.encoder
        self.n_layers = len(encoder.layers)
        _check_layer(layer, self.n_layers, source)
        encoder.layers = encoder.layers[:layer]
        if getattr(model.config, "do_stable_layer_norm", False) and layer < self.n_layers:
            encoder.layer_norm = nn.Identity()
        self.model = model
        self.pos_conv_stages = list(getattr(encoder.pos_conv_embed, "layers", []))  # data2vec: stacked

    def forward(self, feats: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.model.feature_projection(feats.transpose(1, 2))  # B x T x D
        if isinstance(x, tuple):  # (projected, layer-normed conv features)
            x = x[0]
        attention_mask = None if padding_mask is None else ~padding_mask  # bool: the encoder indexes with ~mask
        with zero_padded_inputs(self.pos_conv_stages, padding_mask):
            out = self.model.encoder(x, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state


def _check_layer(layer: int, n_layers: int, source: object) -> None:
    if not 1 <= layer <= n_layers:
        raise ValueError(f"{source}: --layer {layer} out of range; the model has layers 1..{n_layers}")


# ---------------------------------------------------------------- the SSL back-end


@register_feature("ssl")
class SslFeatures(FeatureBackend):
    """Layer-``layer`` features of a speech SSL model at 50 Hz (see the module docstring).

    Waveforms are normalised as the model's own configuration says: a fairseq checkpoint's task
    ``normalize`` (``F.layer_norm`` over the utterance); for a Hugging Face directory its
    ``preprocessor_config.json`` ``do_normalize`` when there is one, else
    ``feat_extract_norm == "layer"`` (the convention of the released processors), with
    transformers' ``zero_mean_unit_var_norm``. An utterance longer than ``max_chunk`` samples is
    encoded alone in consecutive chunks whose frames tile the utterance (chunks start at multiples
    of 320 samples and overlap by 80), so the frame count is ``num_frames(n)`` however the audio
    is chunked.
    """

    name = "ssl"

    def __init__(self, checkpoint: Path, layer: int = 9, device: str = "cpu", max_chunk: int = MAX_CHUNK,
                 dtype: Optional[str] = None):
        self.checkpoint = path = Path(checkpoint)
        sample_rate = SAMPLE_RATE
        if path.is_dir():
            self.model, config, extractor = load_hf_ssl(path)
            self.format, self.model_type, trunk = "transformers", config.model_type, _HfTrunk
            if extractor is not None:
                self.normalize, sample_rate = bool(extractor.do_normalize), int(extractor.sampling_rate)
            else:
                self.normalize = getattr(config, "feat_extract_norm", "layer") == "layer"
            self.dim = config.hidden_size
        elif path.is_file():
            self.model, task_cfg, self.model_type = load_fairseq_ssl(path)
            self.format, trunk = "fairseq", _FairseqTrunk
            self.normalize, sample_rate = bool(task_cfg.normalize), int(task_cfg.sample_rate)
            self.dim = self.model.encoder.embedding_dim
        else:
            raise FileNotFoundError(f"SSL checkpoint not found: {path} (a fairseq .pt of HuBERT or wav2vec 2.0, "
                                    "or a Hugging Face model directory)")
        self.blocks = conv_blocks(self.model, path)
        geometry = conv_geometry(self.blocks)
        if geometry != (WINDOW, HOP) or sample_rate != SAMPLE_RATE:
            raise DataError(
                f"{path}: conv receptive field/stride {geometry} samples at {sample_rate} Hz; units need "
                f"({WINDOW}, {HOP}) at {SAMPLE_RATE} Hz (50 Hz frames)"
            )
        if max_chunk < WINDOW:
            raise ValueError(f"max_chunk must be at least {WINDOW} samples, got {max_chunk}")
        self.trunk = trunk(self.model, layer, path)
        self.layer = layer
        self.device = torch.device(device)
        self.model.to(self.device)
        self.chunk_frames = num_frames(max_chunk)  # frames per chunk of long audio
        if self.device.type == "cuda":
            dtype = dtype or "fp16"  # the SSL models were trained in fp16
            self.autocast = None if dtype == "fp32" else {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        else:
            if dtype not in (None, "fp32"):
                logger.warning("--dtype %s is for CUDA; computing in fp32 on %s", dtype, self.device)
            self.autocast = None

    @classmethod
    def from_options(cls, checkpoint=None, layer=9, device="cpu", max_chunk=MAX_CHUNK, dtype=None):
        if checkpoint is None:
            raise ValueError("--feature ssl (or hubert) needs --checkpoint: a fairseq .pt of HuBERT or wav2vec 2.0, "
                             "or a Hugging Face model directory")
        return cls(checkpoint, layer=layer, device=device, max_chunk=max_chunk, dtype=dtype)

    @cached_property
    def provenance(self) -> dict:
        return {"feature": self.name, "checkpoint_sha1": checkpoint_sha1(self.checkpoint), "layer": self.layer,
                "model_type": self.model_type, "format": self.format, "normalize": self.normalize}

    def _waveform(self, wav: np.ndarray) -> torch.Tensor:
        """``(N,)`` float32 on the device, normalised when the model's configuration says so."""
        if self.normalize and self.format == "transformers":
            from transformers import Wav2Vec2FeatureExtractor

            wav = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([np.asarray(wav, dtype=np.float32)], None)[0]
        x = torch.as_tensor(np.asarray(wav), dtype=torch.float32, device=self.device)
        if self.normalize and self.format == "fairseq":  # as fairseq's HuBERT/wav2vec 2.0 datasets
            x = F.layer_norm(x, x.shape)
        return x

    def _precision(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _encode(self, wavs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Layer outputs ``(T_i, D)`` of waveforms of at least 400 samples, as one padded batch."""
        lengths = [len(w) for w in wavs]
        x = nn.utils.rnn.pad_sequence(wavs, batch_first=True)  # B x N
        feats, frames = conv_features(self.blocks, x, lengths)  # B x C x T
        padding_mask = torch.arange(feats.size(2), device=self.device)[None, :] >= torch.tensor(
            frames, device=self.device)[:, None]  # B x T
        x = self.trunk(feats, padding_mask if padding_mask.any() else None)  # B x T x D
        return [x[i, :n].float() for i, n in enumerate(frames)]

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
            x = self._waveform(wav)
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


register_feature("hubert")(SslFeatures)  # the name of earlier releases: --feature hubert
HubertFeatures = SslFeatures


def build_features(feature: str, checkpoint: Optional[Path] = None, layer: int = 9, device: str = "cpu",
                   max_chunk: int = MAX_CHUNK, dtype: Optional[str] = None) -> FeatureBackend:
    """The back-end registered as ``feature`` (``ssl``/``hubert`` need ``checkpoint``)."""
    cls = FEATURES.get(feature)
    if cls is None:
        raise ValueError(f"unknown feature {feature!r}; choose from {', '.join(sorted(FEATURES))}")
    return cls.from_options(checkpoint=checkpoint, layer=layer, device=device, max_chunk=max_chunk, dtype=dtype)
