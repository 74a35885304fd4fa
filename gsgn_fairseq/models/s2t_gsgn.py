"""``s2t_gsgn``: speech translation from FBank and HuBERT units fused by GSGN.

Architecture (paper Section II, Fig. 2), all sequences batch-first until the encoder layers::

    fbank (B, T_fbank, 80) --MaskedConv1dSubsampler, n layers (2^n x)--> x_fbank (B, T, D)
    units (B, T_unit)      --Embedding(K+1, D) + n-1 conv layers-------> x_unit  (B, T', D)
                              x_unit trimmed / zero-padded to T (views agree within 2 frames)
    fusion (--fusion):  fbank | unit | gsgn (Eq. 3-4) | concat | noise-sum | noise-replace
    multi-stage dropout (Eq. 13): per utterance (or batch) one of x_fbank, x_unit, x_fusion
    x * sqrt(D) + sinusoidal positions, dropout                  (as s2t_transformer)
    acoustic encoder: TransformerEncoderLayer x L_a  (encoder.acoustic_layers)
                      [+ LayerNorm]  -> optional CTC projection over the source vocabulary
    adapter: Linear(D, D) + LayerNorm + dropout
    textual encoder: TransformerEncoderLayer x L_t   (encoder.textual_layers) [+ LayerNorm]
    decoder: fairseq TransformerDecoder (as s2t_transformer builds it)

Choices (the paper leaves them open):

* Unit downsampling: fairseq's conv subsampler on the unit embeddings with ``n - 1`` layers
  (see ``modules/unit_frontend.py``): learnable like the FBank branch and the same length
  formula, so the views align up to a frame or two.
* Fusion before the embedding scale and positions: the subsamplers play the role of
  s2t_transformer's subsampler, so the fused features are scaled and get positions like its
  output.
* Adapter: ``LayerNorm(Linear(h_A))`` then dropout. The linear map lets the textual encoder see
  a re-projected acoustic representation (SATE's adapter idea, without its CTC-weighted
  embedding mix); the LayerNorm puts it on the unit-variance scale a (pretrained) MT encoder
  sees at its input (scaled embeddings). No positions are added again: the acoustic encoder
  already carries them.
* CTC: ``--use-ctc`` builds ``encoder.ctc_proj`` (Linear(D, |source dict|)) on the acoustic
  encoder output; it needs the task's source dictionary (``src_vocab_filename`` in the data
  config). The loss weight belongs to the criterion (``--ctc-weight``); blank is index 0
  (``<s>``, never a target), as in fairseq's CTC criteria.
* Noise modes: see ``modules/noise.py`` (range of an initial unit embedding table; noise-sum
  in training only, noise-replace always).
* Branches: 0 = fbank, 1 = unit, 2 = fusion. Training with ``--multi-stage-dropout`` samples
  them by the schedule stage of the current epoch; otherwise (and in evaluation with
  ``--inference-branch fusion``) every utterance takes the mode's own input. ``force_branch``
  overrides both. Every branch's input is computed for every utterance and selected with
  ``torch.where``, so all parameters stay in the graph (DDP needs no unused-parameter search).
* Padding never changes real frames: masked subsamplers, masked views, key-padding masks.

The encoder output dict follows docs/INTERFACES.md.
"""
import logging
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.models import (
    FairseqEncoder,
    FairseqEncoderDecoderModel,
    register_model,
    register_model_architecture,
)
from fairseq.models.speech_to_text.s2t_transformer import TransformerDecoderScriptable
from fairseq.models.transformer import Embedding
from fairseq.modules import FairseqDropout, LayerNorm, PositionalEmbedding, TransformerEncoderLayer
from torch import Tensor

from ..modules.branch_sampler import (
    BRANCH_NAMES,
    DEFAULT_MSD_SCHEDULE,
    FBANK,
    FUSION,
    GRANULARITIES,
    UNIT,
    BranchSampler,
)
from ..modules.gated_fusion import GATE_ACTIVATIONS, UNIT_GATES, GatedFusion
from ..modules.noise import embedding_range, uniform_noise_like
from ..modules.unit_frontend import (
    MaskedConv1dSubsampler,
    UnitFrontend,
    frames_padding_mask,
    parse_kernel_sizes,
    subsampled_length,
    subsampled_lengths,
)
from .pretrained import ACOUSTIC_ENCODER_MAP, DECODER_MAP, TEXT_ENCODER_MAP, load_pretrained_component

logger = logging.getLogger(__name__)

FUSIONS = ("fbank", "unit", "gsgn", "concat", "noise-sum", "noise-replace")
TWO_VIEW_FUSIONS = ("gsgn", "concat", "noise-replace")  # the ones with three branches
INFERENCE_BRANCHES = ("fusion", "fbank", "unit", "sample")
ADAPTERS = ("linear-ln", "none")
# The branch each mode's own input counts as.
NATURAL_BRANCH = {"fbank": FBANK, "noise-sum": FBANK, "unit": UNIT, "gsgn": FUSION, "concat": FUSION, "noise-replace": FUSION}


class Adapter(nn.Module):
    """Between the acoustic and textual encoders: ``dropout(LayerNorm(Linear(x)))``, (..., D) -> (..., D)."""

    def __init__(self, embed_dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = LayerNorm(embed_dim)
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout_module(self.layer_norm(self.proj(x)))


def _align_time(x: Tensor, length: int) -> Tensor:
    """Trim or zero-pad (B, T', D) along time to (B, length, D)."""
    if x.size(1) >= length:
        return x[:, :length]
    return F.pad(x, (0, 0, 0, length - x.size(1)))  # pad the time axis at the end


class S2TGSGNEncoder(FairseqEncoder):
    """Two-view front end, fusion, acoustic encoder, adapter and textual encoder.

    Args:
        args: model arguments (after the arch function).
        num_units: K.
        src_dict: the task's transcript dictionary (needed with ``--use-ctc``).
    """

    def __init__(self, args, num_units: int, src_dict=None):
        super().__init__(None)
        D = args.encoder_embed_dim
        self.embed_dim = D
        self.num_units = num_units
        self.fusion_mode = args.fusion
        if self.fusion_mode not in FUSIONS:
            raise ValueError(f"--fusion must be one of {FUSIONS}, got {self.fusion_mode!r}")
        if args.acoustic_encoder_layers < 1:
            raise ValueError(f"--acoustic-encoder-layers must be >= 1 (the gate's reference layer), got {args.acoustic_encoder_layers}")
        if args.textual_encoder_layers < 0:
            raise ValueError(f"--textual-encoder-layers must be >= 0, got {args.textual_encoder_layers}")

        # ---- front ends
        fbank_kernels = parse_kernel_sizes(args.conv_kernel_sizes, "--conv-kernel-sizes")
        if len(fbank_kernels) < 1:
            raise ValueError(f"--conv-kernel-sizes needs at least one layer, got {args.conv_kernel_sizes!r}")
        self.n_fbank_conv = len(fbank_kernels)
        if getattr(args, "unit_conv_kernel_sizes", None):
            unit_kernels = parse_kernel_sizes(args.unit_conv_kernel_sizes, "--unit-conv-kernel-sizes")
        else:
            unit_kernels = fbank_kernels[1:]
        if len(unit_kernels) != self.n_fbank_conv - 1:
            raise ValueError(
                f"--unit-conv-kernel-sizes {args.unit_conv_kernel_sizes!r} has {len(unit_kernels)} layers; units (20 ms) "
                f"need one fewer than the {self.n_fbank_conv} FBank layers of --conv-kernel-sizes {args.conv_kernel_sizes!r}"
            )
        self.subsample = None
        if self.fusion_mode != "unit":
            self.subsample = MaskedConv1dSubsampler(
                args.input_feat_per_channel * args.input_channels, args.conv_channels, D, fbank_kernels
            )
        self.unit_frontend = None
        if self.fusion_mode in ("unit", "gsgn", "concat"):
            self.unit_frontend = UnitFrontend(num_units, D, args.conv_channels, unit_kernels)
        if self.fusion_mode in ("noise-sum", "noise-replace"):
            low, high = embedding_range(Embedding(num_units + 1, D, num_units).weight, num_units)
            self.register_buffer("noise_range", torch.tensor([low, high]))
        else:
            self.noise_range = None

        # ---- fusion
        self.fusion = None
        self.concat_proj = None
        if self.fusion_mode in ("gsgn", "noise-replace"):
            self.fusion = GatedFusion(D, args.gate_activation, args.unit_gate)
        elif self.fusion_mode == "concat":
            self.concat_proj = nn.Linear(2 * D, D)  # [x_fbank; x_unit] (2D) -> D, Table III
            nn.init.xavier_uniform_(self.concat_proj.weight)
            nn.init.zeros_(self.concat_proj.bias)

        # ---- branches (Eq. 13) and inference branch
        self.available_branches = (
            (FBANK, UNIT, FUSION) if self.fusion_mode in TWO_VIEW_FUSIONS else (NATURAL_BRANCH[self.fusion_mode],)
        )
        self.msd_enabled = bool(args.multi_stage_dropout)
        if self.msd_enabled and self.fusion_mode not in TWO_VIEW_FUSIONS:
            raise ValueError(
                f"--multi-stage-dropout needs a fusion with both views {TWO_VIEW_FUSIONS}, got --fusion {self.fusion_mode}"
            )
        self.branch_sampler = BranchSampler(args.msd_schedule, args.msd_granularity)
        self.inference_branch = args.inference_branch
        if self.inference_branch not in INFERENCE_BRANCHES:
            raise ValueError(f"--inference-branch must be one of {INFERENCE_BRANCHES}, got {self.inference_branch!r}")
        if self.inference_branch != "fusion" and self.fusion_mode not in TWO_VIEW_FUSIONS:
            if not (self.inference_branch in BRANCH_NAMES and BRANCH_NAMES.index(self.inference_branch) in self.available_branches):
                raise ValueError(
                    f"--inference-branch {self.inference_branch} needs both views; --fusion {self.fusion_mode} has "
                    f"only {[BRANCH_NAMES[b] for b in self.available_branches]}"
                )
        self.inference_seed = args.inference_seed
        self._generators: Dict[str, torch.Generator] = {}  # eval-mode generators, reset on train()/eval()

        # ---- encoder stacks
        self.dropout_module = FairseqDropout(p=args.dropout, module_name=self.__class__.__name__)
        self.embed_scale = 1.0 if args.no_scale_embedding else math.sqrt(D)
        self.padding_idx = 1  # for the positional embedding of the padding mask, as in s2t_transformer
        self.embed_positions = PositionalEmbedding(args.max_source_positions, D, self.padding_idx)
        self.acoustic_layers = nn.ModuleList([TransformerEncoderLayer(args) for _ in range(args.acoustic_encoder_layers)])
        self.adapter_mode = getattr(args, "adapter", "linear-ln")
        if self.adapter_mode not in ADAPTERS:
            raise ValueError(f"--adapter must be one of {ADAPTERS}, got {self.adapter_mode!r}")
        # the acoustic stack's own final LayerNorm feeds the adapter (and CTC); without an
        # adapter the residual stream runs on into the textual layers, and only CTC reads it
        needs_acoustic_norm = self.adapter_mode != "none" or args.use_ctc
        self.acoustic_layer_norm = LayerNorm(D) if args.encoder_normalize_before and needs_acoustic_norm else None
        self.ctc_proj = None
        if args.use_ctc:
            if src_dict is None:
                raise ValueError(
                    "--use-ctc needs a source dictionary: set src_vocab_filename (and src_bpe_tokenizer) in the data config"
                )
            self.ctc_proj = nn.Linear(D, len(src_dict))
        self.adapter = Adapter(D, args.dropout) if self.adapter_mode == "linear-ln" else None
        self.textual_layers = nn.ModuleList([TransformerEncoderLayer(args) for _ in range(args.textual_encoder_layers)])
        self.layer_norm = LayerNorm(D) if args.encoder_normalize_before else None

    # ------------------------------------------------------------------ epoch / mode
    def set_epoch(self, epoch: int) -> None:
        """Select the multi-stage dropout stage of ``epoch`` (1-based)."""
        self.branch_sampler.set_epoch(epoch)
        if self.msd_enabled:
            logger.info(f"multi-stage dropout: epoch {epoch}: {self.branch_sampler.describe()}")

    def train(self, mode: bool = True):
        self._generators = {}  # noise-replace's evaluation noise starts from --inference-seed again
        return super().train(mode)

    def _eval_generator(self, device: torch.device, offset: int) -> torch.Generator:
        key = f"{device}:{offset}"
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.inference_seed + offset)
            self._generators[key] = g
        return self._generators[key]

    # ------------------------------------------------------------------ branches
    def select_branches(
        self, bsz: int, device: torch.device, force_branch: Optional[str] = None, utt_keys: Optional[Tensor] = None
    ) -> Tensor:
        """(B,) long branch per utterance (0 fbank, 1 unit, 2 fusion)."""
        if force_branch is not None:
            if force_branch not in BRANCH_NAMES:
                raise ValueError(f"force_branch must be None or one of {BRANCH_NAMES}, got {force_branch!r}")
            branch = BRANCH_NAMES.index(force_branch)
            if branch not in self.available_branches:
                raise ValueError(f"force_branch={force_branch!r} is not available with --fusion {self.fusion_mode}")
            return torch.full((bsz,), branch, dtype=torch.long, device=device)
        if self.fusion_mode not in TWO_VIEW_FUSIONS:
            return torch.full((bsz,), NATURAL_BRANCH[self.fusion_mode], dtype=torch.long, device=device)
        if self.training:
            if self.msd_enabled:
                return self.branch_sampler.sample(bsz, device)
            return torch.full((bsz,), FUSION, dtype=torch.long, device=device)
        if self.inference_branch == "sample":
            if utt_keys is None:
                raise ValueError(
                    "--inference-branch sample draws each utterance's branch from (--inference-seed, utterance id): "
                    "net_input needs utt_keys (B,), which the multiview dataset's collater adds"
                )
            return self.branch_sampler.sample_keyed(utt_keys, self.inference_seed, device)
        return torch.full((bsz,), BRANCH_NAMES.index(self.inference_branch), dtype=torch.long, device=device)

    def _noise_like(self, x: Tensor) -> Tensor:
        low, high = self.noise_range.float()  # 0-d tensors on x's device: no host sync
        generator = None if self.training else self._eval_generator(x.device, 1)
        return uniform_noise_like(x, low, high, generator=generator)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor,
        src_units: Optional[Tensor] = None,
        src_units_lengths: Optional[Tensor] = None,
        force_branch: Optional[str] = None,
        gate_injector: Optional[Callable[[Tensor], Tensor]] = None,
        return_all_hiddens: bool = False,
        utt_keys: Optional[Tensor] = None,
    ) -> Dict[str, List[Tensor]]:
        """
        Args:
            src_tokens: (B, T_fbank, C) FBank features, zero-padded.
            src_lengths: (B,) FBank frames.
            src_units: (B, T_unit) long unit ids padded with K (needed unless the fusion is
                fbank-only: fbank, noise-sum, noise-replace).
            src_units_lengths: (B,) units per utterance.
            force_branch: None | "fbank" | "unit" | "fusion", the branch of every utterance.
            gate_injector: callable ``g_fbank -> g_fbank`` applied once before Eq. 4 by the
                gated fusions (gsgn, noise-replace); the other fusions ignore it.
            return_all_hiddens: also return every encoder layer's output.
            utt_keys: (B,) long utterance keys (``branch_sampler.utterance_key``); needed by
                ``--inference-branch sample`` at evaluation.

        Returns:
            fairseq's encoder-output dict plus the ``gsgn_*`` / ``ctc_*`` entries of
            docs/INTERFACES.md.
        """
        bsz = src_tokens.size(0)
        needs_units = self.unit_frontend is not None
        if needs_units and (src_units is None or src_units_lengths is None):
            raise ValueError(f"--fusion {self.fusion_mode} needs src_units and src_units_lengths in net_input")

        # ---- views, (B, T, D) each, T = FBank frames after subsampling
        if self.subsample is not None:
            x_fbank, lengths = self.subsample(src_tokens, src_lengths)  # (B, T_fbank, C) -> (B, T, D)
            max_len = x_fbank.size(1)
        else:
            x_fbank = None
            lengths = subsampled_lengths(src_lengths, self.n_fbank_conv)  # (B,), no FBank conv needed
            max_len = subsampled_length(src_tokens.size(1), self.n_fbank_conv)
        padding_mask = frames_padding_mask(lengths, max_len)  # (B, T), True at padding
        pad3 = padding_mask.unsqueeze(-1)  # (B, T, 1)

        x_unit = None
        if self.unit_frontend is not None:
            x_unit, _ = self.unit_frontend(src_units, src_units_lengths)  # (B, T_unit) -> (B, T', D)
            x_unit = _align_time(x_unit, max_len).masked_fill(pad3, 0.0)  # (B, T', D) -> (B, T, D)
            if x_fbank is not None:
                x_unit = x_unit.to(x_fbank.dtype)
        elif self.fusion_mode == "noise-replace":
            x_unit = self._noise_like(x_fbank).masked_fill(pad3, 0.0)  # (B, T, D), the unit view is noise

        # ---- fusion and branch selection
        branch = self.select_branches(bsz, src_tokens.device, force_branch, utt_keys)  # (B,)
        g_fbank = g_unit = None
        if self.fusion_mode == "fbank":
            x = x_fbank
        elif self.fusion_mode == "noise-sum":
            x = (x_fbank + self._noise_like(x_fbank)) if self.training else x_fbank  # masked below
        elif self.fusion_mode == "unit":
            x = x_unit
        else:
            if self.fusion is not None:
                x_fusion, g_fbank, g_unit = self.fusion(x_fbank, x_unit, padding_mask, gate_injector)  # (B, T, D) x3
            else:
                x_fusion = self.concat_proj(torch.cat([x_fbank, x_unit], dim=-1))  # (B, T, 2D) -> (B, T, D)
            b = branch.view(bsz, 1, 1)  # (B,) -> (B, 1, 1)
            x = torch.where(b == FBANK, x_fbank, torch.where(b == UNIT, x_unit, x_fusion))  # (B, T, D)
        x = x.masked_fill(pad3, 0.0)

        # ---- scale, positions (as s2t_transformer after its subsampler)
        x = self.embed_scale * x
        x = x.transpose(0, 1)  # (B, T, D) -> (T, B, D)
        x = x + self.embed_positions(padding_mask).transpose(0, 1)  # positions (B, T, D) -> (T, B, D)
        x = self.dropout_module(x)

        # ---- acoustic encoder
        encoder_states = []
        ref_out = None
        for i, layer in enumerate(self.acoustic_layers):
            x = layer(x, padding_mask)  # (T, B, D)
            if i == 0:
                # Later layers read h_1 through ref_out, so a hook on ref_out sees dL/dh_1.
                ref_out = x.transpose(0, 1)  # (T, B, D) -> (B, T, D)
                x = ref_out.transpose(0, 1)  # (B, T, D) -> (T, B, D)
            if return_all_hiddens:
                encoder_states.append(x)
        acoustic = self.acoustic_layer_norm(x) if self.acoustic_layer_norm is not None else x
        ctc_logits = self.ctc_proj(acoustic) if self.ctc_proj is not None else None  # (T, B, V_src)

        # ---- adapter + textual encoder
        if self.adapter is not None:
            x = self.adapter(acoustic)  # (T, B, D)
        for layer in self.textual_layers:
            x = layer(x, padding_mask)  # (T, B, D)
            if return_all_hiddens:
                encoder_states.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)

        return {
            "encoder_out": [x],  # T x B x C
            "encoder_padding_mask": [padding_mask] if padding_mask.any() else [],  # B x T
            "encoder_embedding": [],  # B x T x C
            "encoder_states": encoder_states,  # List[T x B x C]
            "src_tokens": [],
            "src_lengths": [],
            "gsgn_g_fbank": [g_fbank] if g_fbank is not None else [],  # B x T x C
            "gsgn_g_unit": [g_unit] if g_unit is not None else [],  # B x T x C
            "gsgn_branch": [branch],  # B
            "gsgn_x_fbank": [x_fbank] if x_fbank is not None else [],  # B x T x C
            "gsgn_x_unit": [x_unit] if x_unit is not None else [],  # B x T x C
            "gsgn_padding_mask": [padding_mask],  # B x T
            "gsgn_ref_out": [ref_out],  # B x T x C
            "ctc_logits": [ctc_logits] if ctc_logits is not None else [],  # T x B x V_src
            "ctc_padding_mask": [padding_mask] if ctc_logits is not None else [],  # B x T
        }

    # Keys by the axis that indexes the batch.
    _TIME_FIRST_KEYS = ("encoder_out", "encoder_states", "ctc_logits")
    _BATCH_FIRST_KEYS = (
        "encoder_padding_mask",
        "encoder_embedding",
        "src_tokens",
        "src_lengths",
        "gsgn_g_fbank",
        "gsgn_g_unit",
        "gsgn_branch",
        "gsgn_x_fbank",
        "gsgn_x_unit",
        "gsgn_padding_mask",
        "gsgn_ref_out",
        "ctc_padding_mask",
    )

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        """Re-index every returned tensor by ``new_order`` (beam search)."""
        out = {}
        for key, tensors in encoder_out.items():
            if key in self._TIME_FIRST_KEYS:
                out[key] = [t.index_select(1, new_order) for t in tensors]
            elif key in self._BATCH_FIRST_KEYS:
                out[key] = [t.index_select(0, new_order) for t in tensors]
            else:
                raise KeyError(f"reorder_encoder_out: unknown encoder output {key!r}")
        return out


@register_model("s2t_gsgn")
class S2TGSGNModel(FairseqEncoderDecoderModel):
    """GSGN multi-view speech translation model (see the module docstring)."""

    @staticmethod
    def add_args(parser):
        # front ends
        parser.add_argument("--conv-kernel-sizes", type=str, metavar="STR",
                            help="odd kernel sizes of the FBank conv subsampler, one stride-2 layer each")
        parser.add_argument("--conv-channels", type=int, metavar="N",
                            help="channels inside the conv subsamplers (FBank and unit)")
        parser.add_argument("--unit-conv-kernel-sizes", type=str, metavar="STR",
                            help="kernel sizes of the unit downsampler; one fewer layer than the FBank one "
                                 "(default: the FBank kernels without the first)")
        # fusion
        parser.add_argument("--fusion", type=str, choices=FUSIONS,
                            help="input of the encoder: one view, GSGN fusion, concatenation or a noise control")
        parser.add_argument("--gate-activation", type=str, choices=GATE_ACTIVATIONS,
                            help="gate activation of Eq. 3: 2*sigmoid (range (0,2)) or sigmoid")
        parser.add_argument("--unit-gate", type=str, choices=UNIT_GATES,
                            help="the constant 1 (default: Eq. 10-11 are derived with g_unit = 1) or a "
                                 "learned unit gate as in Eq. 3 (a deviation: the target then no longer "
                                 "yields Eq. 10's corrected gradient)")
        parser.add_argument("--multi-stage-dropout", action="store_true",
                            help="sample the fbank/unit/fusion input per utterance during training (Eq. 13)")
        parser.add_argument("--msd-schedule", type=str, metavar="STR",
                            help=f"FROM_EPOCH:DELTA_FBANK,DELTA_UNIT;... (default {DEFAULT_MSD_SCHEDULE!r})")
        parser.add_argument("--msd-granularity", type=str, choices=GRANULARITIES,
                            help="one multi-stage dropout draw per utterance or per batch")
        parser.add_argument("--inference-branch", type=str, choices=INFERENCE_BRANCHES,
                            help="input at evaluation: fusion (default), fbank, unit, or sample with the last "
                                 "schedule stage and --inference-seed (the paper's)")
        parser.add_argument("--inference-seed", type=int, metavar="N",
                            help="seed of --inference-branch sample and of noise-replace noise at evaluation")
        parser.add_argument("--adapter", type=str, choices=ADAPTERS,
                            help="between the acoustic and textual encoders: linear-ln (LayerNorm, Linear, "
                                 "LayerNorm, dropout) or none (one residual stream through both stacks)")
        parser.add_argument("--use-ctc", action="store_true",
                            help="CTC projection over the source dictionary on the acoustic encoder output "
                                 "(weight: the criterion's --ctc-weight)")
        # transformer
        parser.add_argument("--activation-fn", type=str, choices=utils.get_available_activation_fns(),
                            help="activation function to use")
        parser.add_argument("--dropout", type=float, metavar="D", help="dropout probability (residual)")
        parser.add_argument("--attention-dropout", type=float, metavar="D",
                            help="dropout probability for attention weights")
        parser.add_argument("--activation-dropout", "--relu-dropout", type=float, metavar="D",
                            help="dropout probability after activation in FFN")
        parser.add_argument("--encoder-embed-dim", type=int, metavar="N", help="model dimension D")
        parser.add_argument("--encoder-ffn-embed-dim", type=int, metavar="N", help="encoder FFN dimension")
        parser.add_argument("--acoustic-encoder-layers", type=int, metavar="N", help="acoustic encoder layers")
        parser.add_argument("--textual-encoder-layers", type=int, metavar="N", help="textual encoder layers")
        parser.add_argument("--encoder-attention-heads", type=int, metavar="N", help="encoder attention heads")
        parser.add_argument("--encoder-normalize-before", action="store_true",
                            help="apply layernorm before each encoder block")
        parser.add_argument("--decoder-embed-dim", type=int, metavar="N", help="decoder embedding dimension")
        parser.add_argument("--decoder-ffn-embed-dim", type=int, metavar="N", help="decoder FFN dimension")
        parser.add_argument("--decoder-layers", type=int, metavar="N", help="decoder layers")
        parser.add_argument("--decoder-attention-heads", type=int, metavar="N", help="decoder attention heads")
        parser.add_argument("--decoder-normalize-before", action="store_true",
                            help="apply layernorm before each decoder block")
        parser.add_argument("--share-decoder-input-output-embed", action="store_true",
                            help="share decoder input and output embeddings")
        parser.add_argument("--layernorm-embedding", action="store_true", help="add layernorm to embedding")
        parser.add_argument("--no-scale-embedding", action="store_true", help="do not scale embeddings")
        # pretrained initialisation (paper Table IV)
        parser.add_argument("--load-pretrained-acoustic-encoder-from", type=str, metavar="STR",
                            help="fairseq s2t_transformer (ASR) checkpoint for the subsampler and acoustic encoder")
        parser.add_argument("--load-pretrained-text-encoder-from", type=str, metavar="STR",
                            help="fairseq transformer (MT) checkpoint whose encoder initialises the textual encoder")
        parser.add_argument("--load-pretrained-decoder-from", type=str, metavar="STR",
                            help="fairseq transformer (MT) checkpoint whose decoder initialises ours")

    @classmethod
    def build_encoder(cls, args, task):
        return S2TGSGNEncoder(args, num_units=task.num_units, src_dict=getattr(task, "transcript_dictionary", None))

    @classmethod
    def build_decoder(cls, args, task, embed_tokens):
        return TransformerDecoderScriptable(args, task.target_dictionary, embed_tokens)

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # make sure all arguments are present (older checkpoints too)
        tgt_dict = task.target_dictionary
        decoder_embed_tokens = Embedding(len(tgt_dict), args.decoder_embed_dim, tgt_dict.pad())
        encoder = cls.build_encoder(args, task)
        decoder = cls.build_decoder(args, task, decoder_embed_tokens)
        model = cls(encoder, decoder)
        if getattr(task, "building_from_checkpoint", False):
            return model  # weights come from the checkpoint being loaded
        for path, mapping, what in (
            (args.load_pretrained_acoustic_encoder_from, ACOUSTIC_ENCODER_MAP, "acoustic encoder"),
            (args.load_pretrained_text_encoder_from, TEXT_ENCODER_MAP, "text encoder"),
            (args.load_pretrained_decoder_from, DECODER_MAP, "decoder"),
        ):
            if path:
                load_pretrained_component(model, path, mapping, what)
        return model

    def get_normalized_probs(
        self,
        net_output: Tuple[Tensor, Optional[Dict[str, List[Optional[Tensor]]]]],
        log_probs: bool,
        sample: Optional[Dict[str, Tensor]] = None,
    ):
        lprobs = self.get_normalized_probs_scriptable(net_output, log_probs, sample)
        lprobs.batch_first = True
        return lprobs

    def get_ctc_output(self, net_output, sample=None) -> Tuple[Tensor, Tensor]:
        """(T, B, V_src) float log-probs and (B,) lengths of the CTC head (blank = 0)."""
        encoder_out = net_output[1]["encoder_out"]
        if not encoder_out["ctc_logits"]:
            raise ValueError("the model has no CTC head: train with --use-ctc (and a source dictionary)")
        lprobs = utils.log_softmax(encoder_out["ctc_logits"][0].float(), dim=-1)  # (T, B, V)
        lengths = (~encoder_out["ctc_padding_mask"][0]).long().sum(dim=-1)  # (B,)
        return lprobs, lengths

    def get_ctc_target(self, sample) -> Tuple[Tensor, Tensor]:
        """Source-transcript tokens (B, S) and lengths (B,) from ``sample["source_text"]``."""
        if "source_text" not in sample:
            raise ValueError("sample has no 'source_text': set src_vocab_filename in the data config for CTC")
        return sample["source_text"], sample["source_text_lengths"]

    def forward(
        self,
        src_tokens,
        src_lengths,
        prev_output_tokens,
        src_units=None,
        src_units_lengths=None,
        force_branch: Optional[str] = None,
        gate_injector: Optional[Callable[[Tensor], Tensor]] = None,
        utt_keys: Optional[Tensor] = None,
    ):
        encoder_out = self.encoder(
            src_tokens=src_tokens,
            src_lengths=src_lengths,
            src_units=src_units,
            src_units_lengths=src_units_lengths,
            force_branch=force_branch,
            gate_injector=gate_injector,
            utt_keys=utt_keys,
        )
        return self.decoder(prev_output_tokens=prev_output_tokens, encoder_out=encoder_out)


@register_model_architecture(model_name="s2t_gsgn", arch_name="s2t_gsgn")
def base_architecture(args):
    """The paper's model: D=512, FFN 2048, 8 heads, 12 acoustic + 6 textual encoder layers,
    6 decoder layers, dropout 0.2 (residual) / 0.1 (attention), 2 conv layers (4x)."""
    # front ends
    args.input_channels = getattr(args, "input_channels", 1)
    args.input_feat_per_channel = getattr(args, "input_feat_per_channel", 80)
    args.conv_kernel_sizes = getattr(args, "conv_kernel_sizes", "5,5")  # 2 layers: 4x (40 ms)
    args.conv_channels = getattr(args, "conv_channels", 1024)
    args.unit_conv_kernel_sizes = getattr(args, "unit_conv_kernel_sizes", None)  # None: FBank kernels[1:]
    # fusion and branches
    args.fusion = getattr(args, "fusion", "gsgn")
    args.gate_activation = getattr(args, "gate_activation", "2sigmoid")
    args.unit_gate = getattr(args, "unit_gate", "one")  # Eq. 10-11 are derived with g_unit = 1
    args.multi_stage_dropout = getattr(args, "multi_stage_dropout", False)
    args.msd_schedule = getattr(args, "msd_schedule", DEFAULT_MSD_SCHEDULE)
    args.msd_granularity = getattr(args, "msd_granularity", "utterance")
    args.inference_branch = getattr(args, "inference_branch", "fusion")
    args.inference_seed = getattr(args, "inference_seed", 1)
    args.use_ctc = getattr(args, "use_ctc", False)
    args.adapter = getattr(args, "adapter", "linear-ln")
    # transformer
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 2048)
    args.acoustic_encoder_layers = getattr(args, "acoustic_encoder_layers", 12)
    args.textual_encoder_layers = getattr(args, "textual_encoder_layers", 6)
    args.encoder_layers = args.acoustic_encoder_layers + args.textual_encoder_layers  # for fairseq's bookkeeping
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", args.encoder_embed_dim)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", args.encoder_ffn_embed_dim)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", args.encoder_attention_heads)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", True)
    args.decoder_learned_pos = getattr(args, "decoder_learned_pos", False)
    args.dropout = getattr(args, "dropout", 0.2)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)
    args.activation_dropout = getattr(args, "activation_dropout", 0.1)
    args.activation_fn = getattr(args, "activation_fn", "relu")
    args.adaptive_softmax_cutoff = getattr(args, "adaptive_softmax_cutoff", None)
    args.adaptive_softmax_dropout = getattr(args, "adaptive_softmax_dropout", 0)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", False)
    args.no_token_positional_embeddings = getattr(args, "no_token_positional_embeddings", False)
    args.adaptive_input = getattr(args, "adaptive_input", False)
    args.decoder_layerdrop = getattr(args, "decoder_layerdrop", 0.0)
    args.decoder_output_dim = getattr(args, "decoder_output_dim", args.decoder_embed_dim)
    args.decoder_input_dim = getattr(args, "decoder_input_dim", args.decoder_embed_dim)
    args.no_scale_embedding = getattr(args, "no_scale_embedding", False)
    args.layernorm_embedding = getattr(args, "layernorm_embedding", False)
    args.quant_noise_pq = getattr(args, "quant_noise_pq", 0)
    args.max_source_positions = getattr(args, "max_source_positions", 6000)
    args.max_target_positions = getattr(args, "max_target_positions", 1024)
    # pretrained initialisation
    args.load_pretrained_acoustic_encoder_from = getattr(args, "load_pretrained_acoustic_encoder_from", None)
    args.load_pretrained_text_encoder_from = getattr(args, "load_pretrained_text_encoder_from", None)
    args.load_pretrained_decoder_from = getattr(args, "load_pretrained_decoder_from", None)


@register_model_architecture("s2t_gsgn", "s2t_gsgn_s")
def s2t_gsgn_s(args):
    """Small: D=256, 4 heads, FFN 2048 (fairseq's s2t_transformer_s per-layer sizes, so its
    FBank-only run is comparable to fairseq's published s2t_transformer_s), 12/6/6 layers,
    dropout 0.1, 2 conv layers (4x)."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 256 * 8)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.dropout = getattr(args, "dropout", 0.1)
    base_architecture(args)


@register_model_architecture("s2t_gsgn", "s2t_gsgn_tiny")
def s2t_gsgn_tiny(args):
    """Tests and the toy corpus: D=128, FFN 512, 4 heads, 3 acoustic + 1 textual encoder
    layers, 2 decoder layers, 3 conv layers (8x FBank, 4x units), conv channels 256, dropout 0.1."""
    args.conv_kernel_sizes = getattr(args, "conv_kernel_sizes", "5,5,5")
    args.conv_channels = getattr(args, "conv_channels", 256)
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 128)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 512)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.acoustic_encoder_layers = getattr(args, "acoustic_encoder_layers", 3)
    args.textual_encoder_layers = getattr(args, "textual_encoder_layers", 1)
    args.decoder_layers = getattr(args, "decoder_layers", 2)
    args.dropout = getattr(args, "dropout", 0.1)
    base_architecture(args)
