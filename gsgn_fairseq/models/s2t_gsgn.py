"""``s2t_gsgn``: speech translation from FBank and HuBERT units fused by GSGN.

Architecture (paper Section II, Fig. 2)::

    encoder.frontend (modules/multiview_frontend.py): both views, --fusion, branch choice
        -> x (B, T, D): x_fbank, x_unit or x_fusion per utterance (Eq. 3-4, 13)
    x * sqrt(D) + sinusoidal positions, dropout                  (as s2t_transformer)
    acoustic encoder: TransformerEncoderLayer x L_a  (encoder.acoustic_layers)
                      [+ LayerNorm]  -> optional CTC projection over the source vocabulary
    adapter (--adapter linear-ln): Linear(D, D) + LayerNorm + dropout; none: one residual stream
    textual encoder: TransformerEncoderLayer x L_t   (encoder.textual_layers) [+ LayerNorm]
    decoder: fairseq TransformerDecoder (as s2t_transformer builds it)

Choices (the paper leaves them open):

* Fusion before the embedding scale and positions: the subsamplers play the role of
  s2t_transformer's subsampler, so the fused features are scaled and get positions like its
  output.
* Adapter: ``LayerNorm(Linear(h_A))`` then dropout (SATE's adapter idea, without its
  CTC-weighted embedding mix), or none. No positions are added again.
* CTC: ``--use-ctc`` builds ``encoder.ctc_proj`` (Linear(D, |source dict|)) on the acoustic
  encoder output; it needs the task's source dictionary (``src_vocab_filename`` in the data
  config). The loss weight belongs to the criterion (``--ctc-weight``); blank is index 0.
* The view tensors (gates, views, branches, the reference layer's output, CTC logits) are
  returned when the model's ``forward`` runs (training, validation, analysis), not to beam
  search, which calls the encoder directly; ``reorder_encoder_out`` handles what
  s2t_transformer's does.

The encoder output dict follows docs/INTERFACES.md.
"""
import logging
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
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

from ..modules.branch_sampler import DEFAULT_MSD_SCHEDULE, GRANULARITIES
from ..modules.gated_fusion import GATE_ACTIVATIONS, UNIT_GATES
from ..modules.multiview_frontend import FUSIONS as FUSION_REGISTRY
from ..modules.multiview_frontend import INFERENCE_BRANCHES, MultiviewFrontend
from .pretrained import ACOUSTIC_ENCODER_MAP, DECODER_MAP, TEXT_ENCODER_MAP, load_pretrained_component

logger = logging.getLogger(__name__)

FUSIONS = tuple(FUSION_REGISTRY)  # registered in modules/multiview_frontend.py
TWO_VIEW_FUSIONS = tuple(n for n, c in FUSION_REGISTRY.items() if c.is_two_view())  # with three branches
ADAPTERS = ("linear-ln", "none")


class Adapter(nn.Module):
    """Between the acoustic and textual encoders: ``dropout(LayerNorm(Linear(x)))``, (..., D) -> (..., D)."""

    def __init__(self, embed_dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = LayerNorm(embed_dim)
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout_module(self.layer_norm(self.proj(x)))


class S2TGSGNEncoder(FairseqEncoder):
    """Multi-view front end, acoustic encoder, adapter and textual encoder.

    Args:
        args: model arguments (after the arch function).
        num_units: K, one for every unit view or one per view (``--unit-views``).
        src_dict: the task's transcript dictionary (needed with ``--use-ctc``).
    """

    time_first_layers = True  # the encoder layers see (T, B, D) (the gate criterion's per-utterance target reads it)

    def __init__(self, args, num_units, src_dict=None):
        super().__init__(None)
        D = args.encoder_embed_dim
        self.embed_dim = D
        self.num_units = num_units
        if args.acoustic_encoder_layers < 1:
            raise ValueError(f"--acoustic-encoder-layers must be >= 1 (the gate's reference layer), got {args.acoustic_encoder_layers}")
        if args.textual_encoder_layers < 0:
            raise ValueError(f"--textual-encoder-layers must be >= 0, got {args.textual_encoder_layers}")
        self.frontend = MultiviewFrontend(args, num_units)
        self.fusion_mode = args.fusion

        self.dropout_module = FairseqDropout(p=args.dropout, module_name=self.__class__.__name__)
        self.embed_scale = 1.0 if args.no_scale_embedding else math.sqrt(D)
        self.padding_idx = 1  # for the positional embedding of the padding mask, as in s2t_transformer
        self.embed_positions = PositionalEmbedding(args.max_source_positions, D, self.padding_idx)
        self.acoustic_layers = nn.ModuleList([TransformerEncoderLayer(args) for _ in range(args.acoustic_encoder_layers)])
        self.adapter_mode = getattr(args, "adapter", "none")
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

    def set_epoch(self, epoch: int) -> None:
        """Select the multi-stage dropout stage of ``epoch`` (1-based)."""
        self.frontend.branch_sampler.set_epoch(epoch)
        if self.frontend.msd_enabled:
            logger.info(f"multi-stage dropout: epoch {epoch}: {self.frontend.branch_sampler.describe()}")

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
        return_views: bool = False,
        src_units_more: Optional[Dict[str, Tensor]] = None,
        src_units_more_lengths: Optional[Dict[str, Tensor]] = None,
    ) -> Dict[str, List[Tensor]]:
        """
        Args:
            src_tokens: (B, T_fbank, C) FBank features, zero-padded; src_lengths: (B,).
            src_units: (B, T_unit) long unit ids padded with K (unless the fusion is FBank-only);
                src_units_lengths: (B,).
            force_branch: None | "fbank" | "unit" | "unit:NAME" | "fusion", the branch of every utterance.
            src_units_more, src_units_more_lengths: the further unit views' ids (B, T_unit) and
                lengths (B,), by view name (``--unit-views`` with more than one name).
            gate_injector: callable ``g_fbank -> g_fbank`` applied once before Eq. 4 by the gated fusions.
            return_all_hiddens: also return every encoder layer's output.
            utt_keys: (B,) utterance keys (``keyed_random.utterance_key``), for ``--inference-branch
                sample``, multi-stage dropout and the noise controls' noise.
            return_views: also return the ``gsgn_*`` / ``ctc_*`` entries of docs/INTERFACES.md
                (the model's ``forward`` asks for them; beam search does not carry them).
        """
        x, padding_mask, views = self.frontend(
            src_tokens, src_lengths, src_units, src_units_lengths, force_branch, utt_keys, gate_injector,
            src_units_more, src_units_more_lengths,
        )  # (B, T, D), (B, T)
        x = self.embed_scale * x  # scale and positions, as s2t_transformer after its subsampler
        x = x.transpose(0, 1) + self.embed_positions(padding_mask).transpose(0, 1)  # (T, B, D)
        x = self.dropout_module(x)

        encoder_states, ref_out = [], None
        for i, layer in enumerate(self.acoustic_layers):
            x = layer(x, padding_mask)  # (T, B, D)
            if i == 0:  # later layers read h_1 through ref_out, so a hook on ref_out sees dL/dh_1
                ref_out = x.transpose(0, 1)  # (B, T, D)
                x = ref_out.transpose(0, 1)
            if return_all_hiddens:
                encoder_states.append(x)
        acoustic = self.acoustic_layer_norm(x) if self.acoustic_layer_norm is not None else x
        ctc_logits = self.ctc_proj(acoustic) if self.ctc_proj is not None and return_views else None  # (T, B, V_src)
        if self.adapter is not None:
            x = self.adapter(acoustic)
        for layer in self.textual_layers:
            x = layer(x, padding_mask)  # (T, B, D)
            if return_all_hiddens:
                encoder_states.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)

        out = {
            "encoder_out": [x],  # T x B x C
            "encoder_padding_mask": [padding_mask] if padding_mask.any() else [],  # B x T
            "encoder_embedding": [],
            "encoder_states": encoder_states,  # List[T x B x C]
            "src_tokens": [],
            "src_lengths": [],
        }
        if return_views:
            listed = lambda t: [t] if t is not None else []  # noqa: E731
            out.update({
                "gsgn_g_fbank": listed(views["g_fbank"]),  # B x T x C
                "gsgn_g_unit": listed(views["g_unit"]),  # B x T x C
                "gsgn_branch": [views["branch"]],  # B
                "gsgn_x_fbank": listed(views["x_fbank"]),  # B x T x C
                "gsgn_x_unit": listed(views["x_unit"]),  # B x T x C
                "gsgn_x_units": list(views["x_units"] or []),  # every S-feature view, B x T x C each
                "gsgn_g_units": list(views["g_units"] or []),  # their gates, B x T x C each
                "gsgn_padding_mask": [padding_mask],  # B x T
                "gsgn_ref_out": [ref_out],  # B x T x C
                "ctc_logits": listed(ctc_logits),  # T x B x V_src
                "ctc_padding_mask": [padding_mask] if ctc_logits is not None else [],  # B x T
            })
        return out

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        """Beam search: re-index what s2t_transformer's encoder returns (no view tensors)."""
        def pick(key, dim):
            return [t.index_select(dim, new_order) for t in encoder_out.get(key, [])]

        return {
            "encoder_out": pick("encoder_out", 1),  # T x B x C
            "encoder_padding_mask": pick("encoder_padding_mask", 0),  # B x T
            "encoder_embedding": pick("encoder_embedding", 0),  # B x T x C
            "encoder_states": pick("encoder_states", 1),  # List[T x B x C]
            "src_tokens": [],
            "src_lengths": [],
        }


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
        parser.add_argument("--fusion", type=str, metavar="NAME",
                            help=f"input of the encoder, a registered fusion ({', '.join(FUSION_REGISTRY)}; "
                                 "modules/multiview_frontend.py): one view, GSGN, concatenation or a noise control")
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
        parser.add_argument("--inference-branch", type=str, metavar="BRANCH",
                            help="input at evaluation: fusion (default), fbank, unit (the one unit view), "
                                 "unit:NAME (one of --unit-views), or sample with the last schedule stage and "
                                 "--inference-seed (the paper's)")
        parser.add_argument("--inference-seed", type=int, metavar="N",
                            help="seed of --inference-branch sample and of noise-replace noise at evaluation")
        parser.add_argument("--adapter", type=str, choices=ADAPTERS,
                            help="between the acoustic and textual encoders: linear-ln (LayerNorm, Linear, "
                                 "LayerNorm, dropout) or none (one residual stream through both stacks)")
        parser.add_argument("--noise-range", type=str, metavar="MIN,MAX",
                            help="noise-sum / noise-replace: the uniform noise's range, that of the S-feature over "
                                 "the training set (gsgn-measure-unit-range measures it on a trained model)")
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
        num_units = getattr(task, "view_num_units", None) or task.num_units  # one K per unit view
        return S2TGSGNEncoder(args, num_units=num_units, src_dict=getattr(task, "transcript_dictionary", None))

    @classmethod
    def build_decoder(cls, args, task, embed_tokens):
        return TransformerDecoderScriptable(args, task.target_dictionary, embed_tokens)

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # make sure all arguments are present (older checkpoints too)
        check_msd_flags(args)
        tgt_dict = task.target_dictionary
        decoder_embed_tokens = Embedding(len(tgt_dict), args.decoder_embed_dim, tgt_dict.pad())
        encoder = cls.build_encoder(args, task)
        decoder = cls.build_decoder(args, task, decoder_embed_tokens)
        model = cls(encoder, decoder)
        if getattr(task, "building_from_checkpoint", False):
            return model  # weights come from the checkpoint being loaded
        for path, mapping, what, dictionary in (
            (args.load_pretrained_acoustic_encoder_from, ACOUSTIC_ENCODER_MAP, "acoustic encoder", None),
            (args.load_pretrained_text_encoder_from, TEXT_ENCODER_MAP, "text encoder", None),
            (args.load_pretrained_decoder_from, DECODER_MAP, "decoder", tgt_dict),
        ):
            if path:
                load_pretrained_component(model, path, mapping, what, dictionary)
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
        src_units_more: Optional[Dict[str, Tensor]] = None,
        src_units_more_lengths: Optional[Dict[str, Tensor]] = None,
    ):
        encoder_out = self.encoder(
            src_tokens=src_tokens,
            src_lengths=src_lengths,
            src_units=src_units,
            src_units_lengths=src_units_lengths,
            src_units_more=src_units_more,
            src_units_more_lengths=src_units_more_lengths,
            force_branch=force_branch,
            gate_injector=gate_injector,
            utt_keys=utt_keys,
            return_views=True,
        )
        return self.decoder(prev_output_tokens=prev_output_tokens, encoder_out=encoder_out)


def check_msd_flags(args) -> None:
    """Multi-stage dropout settings that nothing would use are refused instead of ignored: the
    schedule serves ``--multi-stage-dropout`` and ``--inference-branch sample`` (its last stage),
    the granularity only ``--multi-stage-dropout``."""
    if getattr(args, "multi_stage_dropout", False):
        return
    unused = [("--msd-granularity", args.msd_granularity, "utterance")]
    if args.inference_branch != "sample":
        unused.append(("--msd-schedule", args.msd_schedule, DEFAULT_MSD_SCHEDULE))
    set_flags = [flag for flag, value, default in unused if value not in (None, default)]
    if set_flags:
        raise ValueError(f"{' and '.join(sorted(set_flags, reverse=True))} without --multi-stage-dropout would be "
                         "ignored; add --multi-stage-dropout, or drop them")


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
    args.unit_views = getattr(args, "unit_views", None) or "units"  # the task's --unit-views: the S-feature views
    args.gate_activation = getattr(args, "gate_activation", "2sigmoid")
    args.unit_gate = getattr(args, "unit_gate", "one")  # Eq. 10-11 are derived with g_unit = 1
    args.multi_stage_dropout = getattr(args, "multi_stage_dropout", False)
    args.msd_schedule = getattr(args, "msd_schedule", DEFAULT_MSD_SCHEDULE)
    args.msd_granularity = getattr(args, "msd_granularity", "utterance")
    args.inference_branch = getattr(args, "inference_branch", "fusion")
    args.inference_seed = getattr(args, "inference_seed", 1)
    args.use_ctc = getattr(args, "use_ctc", False)
    args.adapter = getattr(args, "adapter", "none")  # linear-ln stalled the FBank-only model without CTC (docs/RESULTS.md)
    args.noise_range = getattr(args, "noise_range", None)
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
