"""Task ``speech_to_text_multiview``: fairseq's speech_to_text with a HuBERT-unit view.

Everything of ``speech_to_text`` stays (data config, target dictionary and tokenizers,
feature transforms, batching by FBank length, ``fairseq-generate``/``fairseq-validate``);
on top:

* ``--num-units K`` (default 500): unit ids are in ``[0, K)``, K pads ``src_units``
  (``task.unit_pad``).
* ``--unit-views NAME[,NAME...]`` (default ``units``): the unit sets read, each from its own
  TSV column (``units`` for the default set, ``units_NAME`` otherwise), zip and provenance
  record; ``--num-units`` then takes one K for all or a comma list, one per set. The first set
  is ``src_units``; the others come as ``src_units_more`` / ``src_units_more_lengths``, dicts by
  set name. Every check below applies to every set, and its errors name the set.
* Optional transcript dictionary for CTC over the source text (``task.transcript_dictionary``;
  ``task.source_dictionary`` stays None as in speech_to_text), from ``config_st.yaml`` keys
  ``src_vocab_filename`` (a fairseq dictionary under the data dir) and the optional
  ``src_bpe_tokenizer`` / ``src_pre_tokenizer`` (same format as ``bpe_tokenizer``). When
  present, samples carry ``sample["source_text"]`` and ``sample["source_text_lengths"]``
  (see ``data/multiview_dataset.py`` and docs/INTERFACES.md).
* ``--unit-length-tolerance`` (default 2): how many frames, after subsampling, the two views
  of an utterance may differ; the subsampling comes from the model (its front end's FBank
  conv layers), set when the model is built.
* The units' provenance (feature back-end, checkpoint hash, layer, k-means hash, K: the
  ``units.json`` beside ``units.zip``, ``data/provenance.py``) is recorded in the checkpoint's
  task state when training starts; every split loaded later, in training, resumed training,
  ``fairseq-validate`` and ``fairseq-generate``, must agree with it (an error naming both),
  and its K with ``--num-units``. A split or checkpoint without a record is logged as
  unchecked; ``--require-provenance`` makes it an error.
* ``train_step`` calls ``criterion.set_num_updates(update_num)`` when the criterion has it.
* ``begin_epoch(epoch, model)`` calls ``model.encoder.set_epoch(epoch)``, which selects the
  multi-stage dropout stage; fairseq calls it at every epoch start, resumed runs included.
* Validation BLEU, as fairseq's ``translation`` task does for text: ``--eval-bleu`` decodes
  every validation batch with a sequence generator built from ``--eval-bleu-args`` (JSON
  generation args, e.g. ``'{"beam": 1}'``; it runs the model's normal forward, so its
  ``--inference-branch``) and logs ``bleu`` (sacrebleu, 13a) per validation, usable as
  ``--best-checkpoint-metric bleu --maximize-best-checkpoint-metric``. Hypotheses are
  detokenized as ``fairseq-generate`` prints its ``D-`` lines (target dictionary, then the
  config's ``bpe_tokenizer`` and ``pre_tokenizer`` decoding, once); references are the
  original ``tgt_text`` of the TSV (``sample["target_text"]``), as in test scoring
  (``gsgn_fairseq/scoring.py``). BLEU goes
  through n-gram counts/totals, so it is the corpus BLEU over all batches and workers.
  ``--eval-bleu-print-samples`` logs one hypothesis/reference pair per batch.
  ``--eval-bleu-branches B[,B...]`` decodes the validation sets once more per named inference
  branch (``fusion``, ``fbank``, ``unit``, ``sample``) and logs each as ``bleu_<branch>``, so that a
  multi-stage-dropout model's dev BLEU can be read with the test protocol (``sample``) beside
  the fusion input that ``bleu`` uses.
"""
import json
import logging
from argparse import Namespace
from pathlib import Path
from typing import Dict, Sequence

from fairseq import utils
from fairseq.data import Dictionary, encoders
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDataset
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.speech_to_text import SpeechToTextTask

from ..data.multiview_dataset import (
    DEFAULT_LENGTH_TOLERANCE,
    SpeechToTextMultiviewDatasetCreator,
    ViewAlignment,
    dataset_parts,
)
from ..data.manifest import DEFAULT_UNIT_VIEW, parse_num_units, parse_unit_views, unit_view_column
from ..data.mustc import DataError
from ..data.provenance import check_same_provenance, describe
from ..modules.gate_targets import unwrap
from ..scoring import BLEU_ORDER, bleu_from_statistics, bleu_statistics

logger = logging.getLogger(__name__)

DEFAULT_NUM_UNITS = 500


def num_units_arg(value: str):
    """``--num-units``: K (an int, as always) or ``K1,K2,...`` (kept as the string), one per unit set."""
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else value


BLEU_STAT_KEYS = ["sys_len", "ref_len"] + [f"{k}_{i}" for k in ("counts", "totals") for i in range(BLEU_ORDER)]


def bleu_logging_output(hyps: Sequence[str], refs: Sequence[str], prefix: str = "_bleu") -> Dict[str, int]:
    """sacreBLEU's (13a) sufficient statistics of ``hyps`` against ``refs`` as the ``{prefix}_*``
    logging-output entries that ``reduce_metrics`` sums up (separate entries, so fairseq's
    fast stat sync sums them across workers)."""
    return {f"{prefix}_{k}": v for k, v in bleu_statistics(hyps, refs).items()}


def _bleu_deriver(prefix: str):
    """Corpus BLEU from the summed ``{prefix}_*`` statistics, as ``scoring.bleu_from_statistics``."""
    def compute(meters) -> float:
        return bleu_from_statistics({k: int(meters[f"{prefix}_{k}"].sum) for k in BLEU_STAT_KEYS})
    return compute


def check_ctc_head_is_trained(model, criterion) -> None:
    """A CTC head (``--use-ctc``) needs a CTC loss (``--ctc-weight`` > 0): otherwise its
    parameters get no gradient, which c10d DDP refuses ("Expected to have finished reduction")."""
    encoder = getattr(unwrap(model), "encoder", None)
    if getattr(encoder, "ctc_proj", None) is None:
        return
    weight = getattr(criterion, "ctc_weight", None)
    if not (weight is not None and weight > 0):
        got = f"--ctc-weight {weight}" if weight is not None else f"criterion {type(criterion).__name__} has no --ctc-weight"
        raise ValueError(f"--use-ctc builds a CTC head that only a CTC loss trains, but {got}: set --ctc-weight > 0 "
                         f"(criterion label_smoothed_cross_entropy_with_gate) or drop --use-ctc")


def check_data_config(path: Path) -> None:
    """The data config must be a YAML mapping (fairseq fails later with an AttributeError)."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"data config not found: {path} (--config-yaml)")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: the data config must be a YAML mapping of keys (input_channels, "
                        f"vocab_filename, feature_transforms, ...), got a {type(config).__name__}")


@register_task("speech_to_text_multiview")
class SpeechToTextMultiviewTask(SpeechToTextTask):
    restore_task_state_on_resume = True  # fairseq_patches/resume_task_state.py: the units' provenance

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument(
            "--num-units",
            type=num_units_arg,
            default=DEFAULT_NUM_UNITS,
            metavar="K",
            help="number of discrete unit clusters K; ids are in [0, K), K is the padding id; with several "
                 "--unit-views one K for all or K1,K2,... one per view",
        )
        parser.add_argument(
            "--unit-views",
            type=str,
            default=DEFAULT_UNIT_VIEW,
            metavar="NAME[,NAME...]",
            help="the S-feature unit sets read (and fused), each its own TSV column: 'units' (the default set: "
                 "units.zip, units.json) or units_NAME (gsgn-extract-units --name NAME)",
        )
        parser.add_argument(
            "--unit-length-tolerance",
            type=int,
            default=DEFAULT_LENGTH_TOLERANCE,
            metavar="N",
            help="max difference, in frames after subsampling, between the FBank and unit views of an utterance",
        )
        parser.add_argument(
            "--require-provenance",
            action="store_true",
            help="refuse units without a units.json and checkpoints without a units provenance record "
                 "(default: a warning, and the units are not checked)",
        )
        parser.add_argument(
            "--eval-bleu",
            action="store_true",
            help="decode the validation sets and log their BLEU (sacrebleu, 13a) as 'bleu'",
        )
        parser.add_argument(
            "--eval-bleu-args",
            type=str,
            default="{}",
            metavar="JSON",
            help='generation args for --eval-bleu, as a JSON string, e.g. \'{"beam": 4, "lenpen": 0.6}\'',
        )
        parser.add_argument(
            "--eval-bleu-print-samples",
            action="store_true",
            help="with --eval-bleu, log a hypothesis and its reference for every validation batch",
        )
        parser.add_argument(
            "--eval-bleu-branches",
            type=str,
            default="",
            metavar="B[,B...]",
            help="with --eval-bleu, also decode with each of these inference branches (fusion, fbank, unit, unit:NAME, "
                 "sample) and log bleu_<branch>; 'bleu' stays the model's own --inference-branch",
        )

    def __init__(self, args, tgt_dict, src_dict=None):
        super().__init__(args, tgt_dict)
        if self.multitask_tasks:
            raise NotImplementedError("--multitask-config-yaml is not supported by speech_to_text_multiview")
        self.src_dict = src_dict
        self._set_unit_views(getattr(args, "unit_views", None), args.num_units)
        self.alignment = ViewAlignment(None, args.unit_length_tolerance)  # n: set by build_model
        self._building_from_checkpoint = False
        self._ctc_checked = False  # check_ctc_head_is_trained, at the first train step
        self.eval_bleu = bool(getattr(args, "eval_bleu", False))
        self.eval_bleu_branches = [b for b in (getattr(args, "eval_bleu_branches", "") or "").split(",") if b]
        if self.eval_bleu_branches and not self.eval_bleu:
            raise ValueError(f"--eval-bleu-branches {args.eval_bleu_branches} needs --eval-bleu")
        self.sequence_generator = None  # set up by build_model with --eval-bleu
        # (provenance, where it was read) per unit set: of the loaded data, and of the model's checkpoint
        self.data_provenance: Dict[str, tuple] = {v: (None, None) for v in self.unit_views}
        self.model_provenance: Dict[str, tuple] = {v: (None, None) for v in self.unit_views}
        self._trains = False  # set once fairseq-train asks for the training batches
        self.require_provenance = bool(getattr(args, "require_provenance", False))

    def _set_unit_views(self, views, num_units) -> None:
        self.unit_views = parse_unit_views(views)
        self.view_num_units = parse_num_units(num_units, self.unit_views)  # K per unit set
        self.num_units = self.view_num_units[0]  # the first set's (src_units)

    @property
    def unit_pad(self) -> int:
        return self.num_units

    def _set_name(self, view: str) -> str:
        """How errors name a unit set: nothing with the one default set (as before)."""
        return "" if self.unit_views == (DEFAULT_UNIT_VIEW,) else f" of unit set {view}"

    # the first set's provenance, under the names of the one-set task
    @property
    def data_units_provenance(self):
        return self.data_provenance[self.unit_views[0]]

    @property
    def model_units_provenance(self):
        return self.model_provenance[self.unit_views[0]]

    @classmethod
    def setup_task(cls, args, **kwargs):
        check_data_config(Path(args.data) / args.config_yaml)
        task = super().setup_task(args, **kwargs)  # target dictionary, train-subset naming check
        src_vocab = task.data_cfg.config.get("src_vocab_filename")
        if src_vocab is not None:
            src_path = Path(args.data) / src_vocab
            if not src_path.is_file():
                raise FileNotFoundError(f"Source dict not found: {src_path.as_posix()} (config key src_vocab_filename)")
            task.src_dict = Dictionary.load(src_path.as_posix())
            logger.info(f"source dictionary size ({src_vocab}): {len(task.src_dict):,}")
        return task

    @property
    def source_dictionary(self):
        """None, as in fairseq's speech_to_text: the source is speech, and fairseq-generate
        would print ``src_tokens`` (FBank) through a source dictionary."""
        return None

    @property
    def transcript_dictionary(self):
        """The dictionary of ``src_text`` (CTC targets), or None without ``src_vocab_filename``."""
        return self.src_dict

    def _build_src_encoder(self, key: str, builder):
        spec = self.data_cfg.config.get(key)
        if spec is None:
            return None
        spec = self.data_cfg._auto_convert_to_abs_path(spec)
        logger.info(f"{key}: {spec}")
        return builder(Namespace(**spec))

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        is_train_split = split.startswith("train")
        dataset = SpeechToTextMultiviewDatasetCreator.from_tsv_multiview(
            root=self.args.data,
            cfg=self.data_cfg,
            splits=split,
            tgt_dict=self.tgt_dict,
            pre_tokenizer=self.build_tokenizer(self.args),
            bpe_tokenizer=self.build_bpe(self.args),
            is_train_split=is_train_split,
            epoch=epoch,
            seed=self.args.seed,
            num_units=self.view_num_units,
            unit_views=self.unit_views,
            alignment=self.alignment,
            src_dict=self.src_dict,
            src_pre_tokenizer=self._build_src_encoder("src_pre_tokenizer", encoders.build_tokenizer),
            src_bpe_tokenizer=self._build_src_encoder("src_bpe_tokenizer", encoders.build_bpe),
            speaker_to_id=self.speaker_to_id,
        )
        for part in dataset_parts(dataset):
            tsv = Path(self.args.data) / (part.split + ".tsv")
            records = [(self.unit_views[0], getattr(part, "units_provenance", None))]
            records += [(u.name, u.provenance) for u in getattr(part, "more_unit_sets", [])]
            for view, prov in records:
                column = unit_view_column(view)
                record = "units.json" if column == "units" else f"{column}.json"
                units = "units" if column == "units" else f"{column} units"
                self._note_data_provenance(view, prov, f"{tsv} ({record} beside its {units})")
        self.datasets[split] = dataset

    def get_batch_iterator(self, dataset, *args, **kwargs):
        # The over-long-utterance error names the flag that set max_tokens: fairseq-train batches
        # its validation sets by --max-tokens-valid; its training set, fairseq-validate and
        # fairseq-generate by --max-tokens. Only fairseq-train asks for the training subset's
        # batches (Trainer.get_train_iterator), and before its first (dry-run) validation.
        if dataset is self.datasets.get(getattr(self.args, "train_subset", "train")):
            self._trains = True
        for part in dataset_parts(dataset):
            if hasattr(part, "max_tokens_flag"):
                part.max_tokens_flag = "--max-tokens-valid" if self._trains and not part.is_train_split else "--max-tokens"
        return super().get_batch_iterator(dataset, *args, **kwargs)

    # ------------------------------------------------------------------ units provenance
    def _note_data_provenance(self, view: str, prov, where: str) -> None:
        record = "units.json" if unit_view_column(view) == "units" else f"{unit_view_column(view)}.json"
        if prov is None:
            if self.require_provenance:
                raise DataError(f"{where}: no {record} beside the units{self._set_name(view)} (written for their "
                                "zip), and --require-provenance asks for one (gsgn-extract-units writes it)")
            logger.warning(f"{where}: no {record} beside the units{self._set_name(view)} (written for their zip): "
                           "their provenance cannot be checked")
            return
        k = prov.get("n_clusters")
        want = self.view_num_units[self.unit_views.index(view)]
        if k is not None and k != want:
            hint = k if len(self.unit_views) == 1 else ",".join(
                str(k if v == view else n) for v, n in zip(self.unit_views, self.view_num_units))
            raise DataError(f"{where}: the units{self._set_name(view)} have K = {k} clusters but --num-units "
                            f"is {want}; pass --num-units {hint}")
        known, known_where = self.data_provenance[view]
        if known is None:
            self.data_provenance[view] = (prov, where)
        else:
            check_same_provenance(known, known_where, prov, where)
        self._check_units_provenance()

    def _check_units_provenance(self) -> None:
        for view in self.unit_views:
            (model, model_where), (data, data_where) = self.model_provenance[view], self.data_provenance[view]
            if model is not None and data is not None:
                check_same_provenance(model, model_where + self._set_name(view), data, data_where)

    def state_dict(self):
        """fairseq saves this in every checkpoint (``task_state``): the units' provenance of the
        model (the data it started training on): ``units_provenance`` the first unit set's (as
        with one set), ``unit_sets_provenance`` every set's by name."""
        state = dict(super().state_dict())
        per_view = {}
        for view in self.unit_views:
            model, _ = self.model_provenance[view]
            per_view[view] = model if model is not None else self.data_provenance[view][0]
        state["units_provenance"] = per_view[self.unit_views[0]]
        if self.unit_views != (DEFAULT_UNIT_VIEW,):
            state["unit_sets_provenance"] = per_view
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        prov = state_dict.pop("units_provenance", None)
        per_view = state_dict.pop("unit_sets_provenance", None) or {self.unit_views[0]: prov}
        super().load_state_dict(state_dict)
        # fairseq-generate/-validate set the task up from the command line and adopt the
        # checkpoint's unit sets in build_model, after this: every recorded set is kept
        for view in list(self.unit_views) + [v for v in per_view if v not in self.unit_views]:
            prov = per_view.get(view)
            if prov is None:
                if self.require_provenance:
                    raise DataError(f"the model's checkpoint records no units provenance{self._set_name(view)} "
                                    "(trained before it was recorded, or on data without units.json), and "
                                    "--require-provenance asks for one")
                logger.warning(f"the checkpoint records no units provenance{self._set_name(view)} (trained before it "
                               "was recorded, or on data without units.json): the units cannot be checked against "
                               "the model's")
                continue
            self.model_provenance[view] = (dict(prov), "the model's checkpoint")
            logger.info(f"units of the model{self._set_name(view) if len(per_view) > 1 else ''}: {describe(prov)}")
        self._check_units_provenance()

    def build_model(self, args, from_checkpoint=False):
        # A checkpoint's K and unit sets win over the command line's (fairseq-generate without
        # --num-units): datasets are loaded after the model there, so they pad with the model's K.
        saved_k = getattr(args, "num_units", None)
        saved_views = getattr(args, "unit_views", None) or DEFAULT_UNIT_VIEW
        if from_checkpoint and saved_k is not None:
            views = parse_unit_views(saved_views)
            if views != self.unit_views:
                logger.info(f"--unit-views: using the checkpoint's {','.join(views)} instead of "
                            f"{','.join(self.unit_views)}")
            if parse_num_units(saved_k, views) != self.view_num_units or views != self.unit_views:
                if parse_num_units(saved_k, views) != self.view_num_units:
                    logger.info(f"--num-units: using the checkpoint's {saved_k} instead of "
                                f"{','.join(map(str, self.view_num_units))}")
                self._set_unit_views(views, saved_k)
                self.data_provenance = {v: self.data_provenance.get(v, (None, None)) for v in self.unit_views}
                self.model_provenance = {v: self.model_provenance.get(v, (None, None)) for v in self.unit_views}
        args.num_units = self.num_units if len(self.unit_views) == 1 else ",".join(map(str, self.view_num_units))
        args.unit_views = ",".join(self.unit_views)
        self._building_from_checkpoint = from_checkpoint
        try:
            model = super().build_model(args, from_checkpoint)
        finally:
            self._building_from_checkpoint = False
        # the views' alignment rule comes from the model as built (its FBank subsampling);
        # a model without our front end (e.g. fairseq's s2t_transformer) reads no units
        frontend = getattr(getattr(model, "encoder", None), "frontend", None)
        if frontend is not None:
            self.alignment.fbank_conv_layers = frontend.fbank_subsampling_layers
            # a model without unit front ends (FBank-only, the noise controls) gets no units,
            # unless another model of the same task (an ensemble) reads them
            reads = bool(frontend.unit_frontends)
            self.alignment.reads_units = reads or bool(self.alignment.reads_units)
        if self.eval_bleu:
            self._setup_eval_bleu(model)
        return model

    def _check_eval_bleu_branches(self, model) -> None:
        frontend = getattr(getattr(model, "encoder", None), "frontend", None)
        if not self.eval_bleu_branches:
            return
        if frontend is None:
            raise ValueError(f"--eval-bleu-branches {','.join(self.eval_bleu_branches)} needs a model with the "
                             f"multiview front end (arch s2t_gsgn*)")
        for b in self.eval_bleu_branches:
            frontend.check_inference_branch(b, flag="--eval-bleu-branches")

    @property
    def building_from_checkpoint(self) -> bool:
        """True while ``build_model`` runs for a model whose weights come from a checkpoint
        (``fairseq-generate``/``-validate``): the model then skips pretrained initialisation."""
        return self._building_from_checkpoint

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        """fairseq's train step; first (once) refuses a CTC head without a CTC loss, and tells
        the criterion the update number and ``ignore_grad`` when it wants them (the gate criterion's ``--gate-target-interval`` and pooled targets,
        docs/INTERFACES.md)."""
        if not self._ctc_checked:
            check_ctc_head_is_trained(model, criterion)
            self._ctc_checked = True
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        if hasattr(criterion, "set_ignore_grad"):  # fairseq's stand-in batch on a rank out of data
            criterion.set_ignore_grad(ignore_grad)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    # ------------------------------------------------------------------ validation BLEU
    def _setup_eval_bleu(self, model) -> None:
        gen_args = json.loads(getattr(self.args, "eval_bleu_args", None) or "{}")
        if not isinstance(gen_args, dict):
            raise ValueError(f"--eval-bleu-args must be a JSON object, got {self.args.eval_bleu_args!r}")
        gen_args = Namespace(**gen_args)
        if self.data_cfg.prepend_tgt_lang_tag and getattr(gen_args, "prefix_size", None) is None:
            gen_args.prefix_size = 1  # the target language tag, as fairseq-generate needs it
        self.eval_bleu_prefix_size = getattr(gen_args, "prefix_size", 0) or 0
        self.sequence_generator = self.build_generator([model], gen_args)
        self.eval_bleu_bpe = self.build_bpe(self.args)
        self.eval_bleu_tokenizer = self.build_tokenizer(self.args)
        self.eval_bleu_lang_tags = {
            i for s, i in self.tgt_dict.indices.items() if SpeechToTextDataset.is_lang_tag(s)
        }
        self._check_eval_bleu_branches(model)

    def eval_bleu_decode(self, tokens) -> str:
        """Detokenized text of target ids (EOS, BOS, padding and language tags dropped),
        exactly as fairseq-generate prints its ``D-`` lines: dictionary symbols (``<unk>`` for
        unknowns), then the config's BPE and pre-tokenizer decoding, once."""
        tokens = utils.strip_pad(tokens, self.tgt_dict.pad()).int().cpu()
        text = self.tgt_dict.string(tokens, extra_symbols_to_ignore=self.eval_bleu_lang_tags)
        if self.eval_bleu_bpe is not None:
            text = self.eval_bleu_bpe.decode(text)
        if self.eval_bleu_tokenizer is not None:
            text = self.eval_bleu_tokenizer.decode(text)
        return text

    def _inference_with_bleu(self, generator, sample, model, prefix: str = "_bleu"):
        prefix_tokens = None
        if self.eval_bleu_prefix_size > 0:
            prefix_tokens = sample["target"][:, : self.eval_bleu_prefix_size]
        gen_out = self.inference_step(generator, [model], sample, prefix_tokens=prefix_tokens)
        hyps = [self.eval_bleu_decode(gen_out[i][0]["tokens"]) for i in range(len(gen_out))]
        refs = sample.get("target_text")  # the TSV's tgt_text, as test scoring uses
        if refs is None or len(refs) != len(hyps):
            raise ValueError(
                "--eval-bleu needs the original references in sample['target_text'] (the multiview "
                f"dataset's collater puts them there); got {None if refs is None else len(refs)} for {len(hyps)} hypotheses"
            )
        if getattr(self.args, "eval_bleu_print_samples", False) and hyps:
            logger.info("example hypothesis: " + hyps[0])
            logger.info("example reference: " + refs[0])
        return bleu_logging_output(hyps, refs, prefix)

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.eval_bleu and self.sequence_generator is not None:
            logging_output.update(self._inference_with_bleu(self.sequence_generator, sample, model))
            frontend = getattr(getattr(model, "encoder", None), "frontend", None)
            for branch in self.eval_bleu_branches:
                with frontend.inference_branch_as(branch):
                    logging_output.update(self._inference_with_bleu(
                        self.sequence_generator, sample, model, prefix=f"_bleu_{branch.replace(':', '_')}"))
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not any("_bleu_ref_len" in log for log in logging_outputs):
            return  # training, or validation without --eval-bleu

        def sum_logs(key) -> int:
            return int(round(float(utils.item(sum(log.get(key, 0) for log in logging_outputs)))))

        # One meter per statistic, summed over the batches of a validation. Plain ints (not
        # numpy arrays as in translation): the meters go into checkpoints, which torch's
        # weights_only loader must be able to read back.
        branches = [b.replace(":", "_") for b in self.eval_bleu_branches]  # unit:NAME is logged as bleu_unit_NAME
        for name, prefix in [("bleu", "_bleu")] + [(f"bleu_{b}", f"_bleu_{b}") for b in branches]:
            for key in BLEU_STAT_KEYS:
                metrics.log_scalar(f"{prefix}_{key}", sum_logs(f"{prefix}_{key}"))
            # logged even when nothing matches (0), so --best-checkpoint-metric bleu always finds it
            metrics.log_derived(name, _bleu_deriver(prefix))

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        encoder = getattr(model, "encoder", None)
        if encoder is not None and hasattr(encoder, "set_epoch"):
            encoder.set_epoch(epoch)

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        raise NotImplementedError("fairseq-interactive is not supported: the unit view cannot be read from stdin")

    def build_dataset_for_inference(self, src_tokens, src_lengths, **kwargs):
        raise NotImplementedError("build_dataset_for_inference is not supported: it has no unit view")
