"""``gsgn-translate``: translate audio files with a trained model, no corpus preparation.

    gsgn-translate --path exp/gsgn_drop/checkpoint_avg10.pt talk1.wav talk2.flac clips/ > out.tsv
    gsgn-translate --path CKPT --data DATA/en-de --json clips/          # + timings

Each file (wav/flac, or every such file under a directory, sorted) is read as mono 16 kHz
(another rate is resampled, several channels averaged, each with a warning). Its FBank view
is computed as the preparation computes it, its unit view with the feature back-end, SSL
checkpoint, layer and k-means model the model was trained with: the checkpoint records
them (the units provenance in its task state, with the paths; ``--ssl-checkpoint`` and
``--km-model`` point elsewhere). The SSL checkpoint (a fairseq ``.pt`` or a Hugging Face model
directory) is hashed as ``gsgn-extract-units`` hashed it (``ssl_features.checkpoint_sha1``), the
k-means file by its bytes; one whose hash differs from the recorded one is an error naming both. Both views then go through the task's own pipeline: they are written to
a temporary split (zips, TSV and ``units.json``), loaded by the task's dataset (CMVN and
the other feature transforms of the data config, the views' checks), batched by fairseq and
decoded by fairseq's ``SequenceGenerator`` (``--beam 5 --lenpen 1.0`` by default, the
paper's), and detokenized as ``fairseq-generate`` prints its ``D-`` lines. The utterance id
of a file is its name without the extension, so ``--inference-branch sample`` draws the
branch a TSV row of that id would get.

A model of several unit sets (``--unit-views``) gets every set's units made from that set's
recorded provenance; ``--ssl-checkpoint NAME=PATH`` and ``--km-model NAME=PATH`` point one set
elsewhere (a bare path applies to every set).

Output: one line per file, ``path<TAB>translation``, in the order given; ``--json`` prints
one JSON object with the translations and the time spent reading audio, computing the
views and decoding.
"""
import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.mustc import SAMPLE_RATE, DataError, read_wav
from ..fileio import sha1_file
from ..console import console_entry

logger = logging.getLogger("gsgn_fairseq.translate")
AUDIO_SUFFIXES = (".wav", ".flac")
SPLIT = "translate"


def list_audio(inputs: Sequence[str]) -> List[Path]:
    """The audio files named (directories: their wav/flac files, recursively, sorted)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"{path}: no {'/'.join(AUDIO_SUFFIXES)} files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"audio not found: {path}")
    stems: Dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(f"{f} and {stems[f.stem]} have the same name; the name is the utterance id, "
                            "so translate them in separate runs or rename one")
        stems[f.stem] = f
    return files


def _checked_path(kind: str, given: Optional[str], recorded: Optional[str], sha1: Optional[str], flag: str,
                  digest: Callable[[Path], str] = sha1_file, directory_ok: bool = False) -> Path:
    """The path to use for ``kind``: ``given``, else the recorded path; its ``digest`` (the hash
    the extraction recorded) must match. ``directory_ok``: a model directory counts too."""
    path = Path(given) if given else (Path(recorded) if recorded else None)
    if path is None:
        raise DataError(f"the checkpoint does not record where its {kind} was; pass {flag}")
    if not (path.exists() if directory_ok else path.is_file()):
        raise FileNotFoundError(f"{kind} not found: {path} ({'given with ' + flag if given else 'recorded in the checkpoint'}; "
                                f"pass {flag} to point elsewhere)")
    found = digest(path) if sha1 is not None else None
    if found != sha1:
        raise DataError(f"{path}: this {kind} is not the one the model's units were made with "
                        f"(sha1 {found}, the checkpoint records {sha1}); pass {flag} with that one")
    return path


class UnitMaker:
    """The unit view of waveforms, made as the model's units were (its recorded provenance)."""

    def __init__(self, prov: dict, device: str, ssl_checkpoint: Optional[str] = None,
                 km_model: Optional[str] = None):
        from ..prep.ssl_features import checkpoint_sha1
        from ..prep.units import KMeansAssigner, build_features

        feature = prov.get("feature")
        if feature in (None, "km-files", "synthetic"):
            raise DataError(f"the model's units came from {feature!r} (imported labels or made by hand): "
                            "gsgn-translate cannot make such units from audio")
        checkpoint = None
        if prov.get("checkpoint_sha1") is not None:
            # a checkpoint file or a Hugging Face model directory, hashed as the extraction hashed it
            checkpoint = _checked_path("SSL checkpoint", ssl_checkpoint, prov.get("checkpoint"),
                                       prov["checkpoint_sha1"], "--ssl-checkpoint", checkpoint_sha1, directory_ok=True)
        km = _checked_path("k-means model", km_model, prov.get("km_model"), prov.get("km_model_sha1"), "--km-model")
        self.provenance = dict(prov, checkpoint=str(checkpoint.resolve()) if checkpoint else None,
                               km_model=str(km.resolve()))
        self.features = build_features(feature, checkpoint, prov.get("layer") or 9, device)
        self.assigner = KMeansAssigner.from_file(km, device=device)
        self.assigner.check_dim(self.features.dim, feature)
        if self.assigner.n_clusters != prov.get("n_clusters"):
            raise DataError(f"{km}: {self.assigner.n_clusters} clusters, the model's units have {prov.get('n_clusters')}")

    def __call__(self, wavs: Sequence[np.ndarray]) -> List[np.ndarray]:
        feats = self.features(list(wavs))
        return [self.assigner(f).cpu().numpy().astype(np.int16) for f in feats]


def write_split(out_dir: Path, ids: Sequence[str], fbanks: Sequence[np.ndarray], units, provenance) -> Path:
    """The views as a speech_to_text split the task's dataset reads (absolute zip paths).
    ``units`` and ``provenance``: one unit set's, or dicts of them by set name (several sets)."""
    from ..data.manifest import DEFAULT_UNIT_VIEW, S2T_COLUMNS, unit_view_column, write_tsv
    from ..data.provenance import write_units_meta
    from ..data.zip_store import write_npy_zip, zip_manifest

    if not isinstance(units, dict):
        units, provenance = {DEFAULT_UNIT_VIEW: units}, {DEFAULT_UNIT_VIEW: provenance}
    fbank_zip = out_dir / "fbank80.zip"
    write_npy_zip(fbank_zip, zip(ids, fbanks))
    fb = zip_manifest(fbank_zip, str(fbank_zip.resolve()))
    rows = [{"id": uid, "audio": fb[uid], "n_frames": len(f), "tgt_text": "", "speaker": "", "src_text": ""}
            for uid, f in zip(ids, fbanks)]
    columns = list(S2T_COLUMNS)
    for name, set_units in units.items():
        column = unit_view_column(name)
        units_zip = out_dir / f"{column}.zip"
        write_npy_zip(units_zip, zip(ids, set_units))
        write_units_meta(units_zip, provenance[name])  # the model's provenance, this zip's fingerprint
        un = zip_manifest(units_zip, str(units_zip.resolve()))
        for row in rows:
            row[column] = un[row["id"]]
        columns.append(column)
    write_tsv(out_dir / f"{SPLIT}.tsv", rows, columns)
    return out_dir


def per_set(value, names: Sequence[str], flag: str) -> Dict[str, Optional[str]]:
    """``--ssl-checkpoint``/``--km-model`` values by unit set: ``NAME=PATH`` entries, or one bare
    path for every set."""
    values = [value] if isinstance(value, str) else list(value or [])
    out: Dict[str, Optional[str]] = {n: None for n in names}
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name in out:
            out[name] = path
        elif sep and not Path(v).exists():
            raise ValueError(f"{flag} {v}: the model has no unit set {name!r} (its sets: {', '.join(names)})")
        else:
            out = {n: (out[n] or v) for n in names}
    return out


def load_model(path: str, data: Optional[str], overrides: dict, device: str):
    """The model(s), config and task of a checkpoint, with ``overrides`` as fairseq-generate's
    ``--model-overrides`` and the task's data directory (dictionaries, data config)."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.utils import overwrite_args_by_name

    import gsgn_fairseq  # noqa: F401  (registers the task and model; weights_only allow-list)

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    if state.get("cfg") is None:
        raise DataError(f"{path}: no configuration in the checkpoint (not a fairseq >= 0.10 checkpoint)")
    task_cfg = state["cfg"]["task"]
    data = data or (task_cfg.get("data") if hasattr(task_cfg, "get") else getattr(task_cfg, "data", None))
    if not data or not Path(data).is_dir():
        raise FileNotFoundError(f"data directory {data!r} (dictionaries and config_st.yaml) not found; pass --data")
    overwrite_args_by_name(state["cfg"], dict(overrides, data=str(data)))
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], state=state)
    for model in models:
        model.to(device).eval()
    return models, cfg, task


def build_generator(task, models, beam: int, lenpen: float, max_len_a: float, max_len_b: int):
    from fairseq.dataclass.configs import GenerationConfig
    from omegaconf import OmegaConf

    # fairseq-generate's generation defaults, as the DictConfig it hands to build_generator
    gen = OmegaConf.structured(GenerationConfig)
    gen.beam, gen.lenpen, gen.max_len_a, gen.max_len_b = beam, lenpen, max_len_a, max_len_b
    return task.build_generator(models, gen)


def decode_fn(task, generator):
    """Target ids -> text, as fairseq-generate's ``D-`` lines (no --post-process)."""
    from fairseq import utils

    bpe, tokenizer = task.build_bpe(task.args), task.build_tokenizer(task.args)
    strip = getattr(generator, "symbols_to_strip_from_output", {generator.eos})

    def decode(tokens: torch.Tensor) -> str:
        text = task.target_dictionary.string(utils.strip_pad(tokens, task.target_dictionary.pad()).int().cpu(),
                                             None, extra_symbols_to_ignore=strip)
        if bpe is not None:
            text = bpe.decode(text)
        if tokenizer is not None:
            text = tokenizer.decode(text)
        return text

    return decode


def translate(files: Sequence[Path], checkpoint: str, data: Optional[str] = None, beam: int = 5,
              lenpen: float = 1.0, max_len_a: float = 0.0, max_len_b: int = 200, max_tokens: int = 50000,
              batch_size: Optional[int] = None, device: Optional[str] = None, ssl_checkpoint: Optional[str] = None,
              km_model: Optional[str] = None, overrides: Optional[dict] = None) -> dict:
    """Translate ``files``; returns ``{"translations": [...], "timings": {...}}``."""
    from fairseq import utils
    from fairseq.data import encoders

    from ..data.multiview_dataset import SpeechToTextMultiviewDatasetCreator
    from ..prep.fbank import extract_fbank

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    models, _, task = load_model(checkpoint, data, overrides or {}, device)
    names = list(task.unit_views)
    ssl_of, km_of = per_set(ssl_checkpoint, names, "--ssl-checkpoint"), per_set(km_model, names, "--km-model")
    makers = {}
    for name in names:  # every unit set made as the model's was
        prov, _ = task.model_provenance[name]
        if prov is None:
            raise DataError(f"{checkpoint}: the checkpoint records no units provenance{task._set_name(name)}, so the "
                            "unit view cannot be made as in training (retrain with this version, or translate "
                            "prepared data with fairseq-generate)")
        makers[name] = UnitMaker(prov, device, ssl_of[name], km_of[name])
    t_load = time.perf_counter()
    wavs = [read_wav(f) for f in files]
    t_read = time.perf_counter()
    ids = [f.stem for f in files]
    fbanks = [extract_fbank(w) for w in wavs]
    units = {name: maker(wavs) for name, maker in makers.items()}
    for f, fb in zip(files, fbanks):
        if len(fb) == 0:
            raise DataError(f"{f}: shorter than one 25 ms frame; nothing to translate")
    t_views = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gsgn-translate-") as tmp:
        write_split(Path(tmp), ids, fbanks, units, {n: m.provenance for n, m in makers.items()})
        dataset = SpeechToTextMultiviewDatasetCreator.from_tsv_multiview(
            root=tmp, cfg=task.data_cfg, splits=SPLIT, tgt_dict=task.tgt_dict,
            pre_tokenizer=task.build_tokenizer(task.args), bpe_tokenizer=task.build_bpe(task.args),
            is_train_split=False, epoch=1, seed=task.args.seed, num_units=task.view_num_units,
            unit_views=task.unit_views, alignment=task.alignment, src_dict=task.src_dict,
            src_pre_tokenizer=task._build_src_encoder("src_pre_tokenizer", encoders.build_tokenizer),
            src_bpe_tokenizer=task._build_src_encoder("src_bpe_tokenizer", encoders.build_bpe),
            speaker_to_id=task.speaker_to_id,
        )
        sets = [(names[0], dataset.units_provenance)] + [(u.name, u.provenance) for u in dataset.more_unit_sets]
        for name, prov in sets:
            task._note_data_provenance(name, prov, "the units made for the audio")
        generator = build_generator(task, models, beam, lenpen, max_len_a, max_len_b)
        decode = decode_fn(task, generator)
        itr = task.get_batch_iterator(
            dataset=dataset, max_tokens=max_tokens, max_sentences=batch_size,
            max_positions=utils.resolve_max_positions(task.max_positions(), *[m.max_positions() for m in models]),
            required_batch_size_multiple=1, num_workers=0, data_buffer_size=0,
        ).next_epoch_itr(shuffle=False)
        hyps: Dict[int, str] = {}
        for sample in itr:
            sample = utils.move_to_cuda(sample) if device.startswith("cuda") else sample
            out = task.inference_step(generator, models, sample)
            for i, idx in enumerate(sample["id"].tolist()):
                hyps[idx] = decode(out[i][0]["tokens"])
    t_decode = time.perf_counter()
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    return {
        "translations": [{"path": str(f), "id": uid, "translation": hyps[i]} for i, (f, uid) in enumerate(zip(files, ids))],
        "timings": {"audio_seconds": round(audio_s, 3), "load_seconds": round(t_load - t0, 3),
                    "read_seconds": round(t_read - t_load, 3), "views_seconds": round(t_views - t_read, 3),
                    "decode_seconds": round(t_decode - t_views, 3),
                    "x_real_time": round(audio_s / max(t_decode - t_load, 1e-9), 2), "device": device},
    }


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gsgn-translate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", nargs="+", help="wav/flac files, or directories of them")
    p.add_argument("--path", required=True, help="a trained checkpoint (e.g. the averaged one)")
    p.add_argument("--data", help="the data directory with config_st.yaml and the dictionaries "
                                  "(default: the one the model was trained on)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--max-len-a", type=float, default=0.0)
    p.add_argument("--max-len-b", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=50000, help="FBank frames per batch")
    p.add_argument("--batch-size", type=int, help="files per batch (default: as many as --max-tokens allows)")
    p.add_argument("--ssl-checkpoint", action="append",
                   help="the SSL model the units were made with (default: the recorded path); NAME=PATH for the "
                        "unit set NAME of a model of several (repeat the flag)")
    p.add_argument("--km-model", action="append",
                   help="the k-means model the units were made with (default: the recorded path); NAME=PATH for "
                        "the unit set NAME (repeat the flag)")
    p.add_argument("--model-overrides", default="{}",
                   help="JSON dict of model options, e.g. '{\"inference_branch\": \"sample\"}'")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object with translations and timings")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stderr)
    a = get_parser().parse_args(argv)
    try:
        overrides = json.loads(a.model_overrides)
    except ValueError as err:
        raise SystemExit(f"--model-overrides must be a JSON object: {err}")
    result = translate(list_audio(a.audio), a.path, a.data, a.beam, a.lenpen, a.max_len_a, a.max_len_b,
                       a.max_tokens, a.batch_size, a.device, a.ssl_checkpoint, a.km_model, overrides)
    if a.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
    else:
        for t in result["translations"]:
            print(f"{t['path']}\t{t['translation']}")
    return result

cli = console_entry(main)  # gsgn-* console script


if __name__ == "__main__":
    cli()
