"""Where the units came from, recorded with the data and with the trained model.

``extract_units`` writes ``units.json`` beside ``units.zip``; its provenance entries say how
the units were made::

    {"feature": "hubert", "checkpoint_sha1": "…", "layer": 9, "km_model_sha1": "…", "n_clusters": 500}

(``feature`` is the frame-feature back-end; ``checkpoint_sha1``/``layer`` are None for MFCC;
files written before ``feature`` existed call it ``source``), and where the files were
(``checkpoint``, ``km_model``: absolute paths, not compared, so that ``gsgn-translate`` can
find them again; their hashes are what must match). The task reads it for the data
it loads, records it in the checkpoint's task state when training starts, and refuses data
whose provenance differs from the model's: units from another k-means model or another SSL
layer index other clusters, and a model would read them without a word.

A data directory may hold several unit sets (``gsgn-extract-units --name NAME``): the set
``NAME`` is ``units_NAME.zip`` with its record ``units_NAME.json`` (:func:`units_meta_path`),
which names the set (``unit_set``, bookkeeping, not compared): a column that reads another
set's units is refused by the dataset.

A record is bound to its units by ``units_zip`` (the zip's file name) and
``units_fingerprint``, the zip's :func:`~gsgn_fairseq.data.zip_store.zip_fingerprint` (its
members' names and CRC-32s) when it was written (:func:`write_units_meta`). Every read
compares it with the zip read, so a ``units.json`` copied from another data set is refused;
another zip in the same directory has no record. It is not compared between a model
and its data: the units of one k-means model may be re-merged (another split added) and stay
the model's. Records written before the fingerprint are read with a warning.
"""
import json
import logging
from pathlib import Path
from typing import Dict, Optional

from ..fileio import write_json_atomic
from .mustc import DataError
from .zip_store import zip_fingerprint

logger = logging.getLogger(__name__)

UNITS_META = "units.json"
PROVENANCE_KEYS = ("feature", "checkpoint_sha1", "layer", "km_model_sha1", "n_clusters")
PATH_KEYS = ("checkpoint", "km_model")  # where the files were: bookkeeping, not compared
FINGERPRINT_KEY = "units_fingerprint"  # ties the record to one units.zip: checked on read
ZIP_KEY = "units_zip"  # the file name of that zip
SET_KEY = "unit_set"  # the unit set it belongs to (gsgn-extract-units --name; "units" by default)


def units_meta_path(units_zip: Path) -> Path:
    """The record of a units zip: ``units_NAME.json`` for ``units_NAME.zip``, else ``units.json``
    in its directory."""
    units_zip = Path(units_zip)
    stem = units_zip.stem
    return units_zip.with_name(f"{stem}.json" if stem.startswith("units_") else UNITS_META)


def provenance_of(meta: dict) -> Dict[str, object]:
    """The provenance entries (and file paths) of a ``units.json`` dict."""
    out = {k: meta.get(k) for k in PROVENANCE_KEYS + PATH_KEYS + (ZIP_KEY, FINGERPRINT_KEY)}
    if meta.get(SET_KEY) is not None:  # records written before unit sets had names have none
        out[SET_KEY] = meta[SET_KEY]
    if out["feature"] is None:
        out["feature"] = meta.get("source")
    return out


def write_units_meta(units_zip: Path, meta: dict) -> Path:
    """Write ``meta`` as the record beside ``units_zip`` (:func:`units_meta_path`), with the
    zip's fingerprint."""
    path = units_meta_path(units_zip)
    binding = {ZIP_KEY: Path(units_zip).name, FINGERPRINT_KEY: zip_fingerprint(units_zip)}
    write_json_atomic(path, dict(meta, **binding), indent=1, sort_keys=True)
    return path


def check_fingerprint(meta_path: Path, recorded: Optional[str], units_zip: Path) -> None:
    """The record's fingerprint must be that of the zip read (plain ``.npy`` units have none)."""
    if Path(units_zip).suffix != ".zip":
        return
    if recorded is None:
        logger.warning(f"{meta_path}: no {FINGERPRINT_KEY} (written by an older extract_units): whether it "
                       f"describes {units_zip} cannot be checked; rerun extract_units to record it")
        return
    actual = zip_fingerprint(units_zip)
    if recorded != actual:
        raise DataError(f"{meta_path} does not describe {units_zip}: its {FINGERPRINT_KEY} is {recorded}, the zip's "
                        f"is {actual} (SHA-1 of its members' names and CRC-32s). The record belongs to other units "
                        "(copied from another data set?) or the zip was rebuilt without it: rerun extract_units")


def read_units_provenance(units_zip: Path) -> Optional[Dict[str, object]]:
    """The provenance in the ``units.json`` beside ``units_zip``, or None when there is none
    (or it was written for another zip); its fingerprint is checked against ``units_zip``
    (:func:`check_fingerprint`)."""
    meta_path = units_meta_path(units_zip)
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{meta_path}: unreadable units metadata ({err}); rerun extract_units") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}; rerun extract_units")
    k = meta.get("n_clusters")
    if k is not None and (type(k) is not int or k <= 0):  # "500" or 500.0 would be compared as a K
        raise DataError(f"{meta_path}: n_clusters must be a positive integer (the number of k-means clusters K), "
                        f"got {k!r} ({type(k).__name__}); correct the record or rerun extract_units")
    prov = provenance_of(meta)
    if prov[ZIP_KEY] is not None and prov[ZIP_KEY] != Path(units_zip).name:
        logger.info(f"{meta_path} describes {prov[ZIP_KEY]}, not {Path(units_zip).name}")
        return None
    check_fingerprint(meta_path, prov[FINGERPRINT_KEY], Path(units_zip))
    return prov


def describe(prov: Optional[Dict[str, object]]) -> str:
    if prov is None:
        return "unknown (no units.json)"
    return ", ".join(f"{k}={prov.get(k)}" for k in PROVENANCE_KEYS)


def first_difference(a: Dict[str, object], b: Dict[str, object]) -> Optional[str]:
    """The first provenance key whose values differ, or None."""
    for key in PROVENANCE_KEYS:
        if a.get(key) != b.get(key):
            return key
    return None


def check_same_provenance(model: Optional[dict], model_where: str, data: Optional[dict], data_where: str) -> None:
    """Refuse units made differently from the model's (both named); a side without a record
    passes (its caller logs that), since the check needs both."""
    if model is None or data is None:
        return
    key = first_difference(model, data)
    if key is not None:
        raise DataError(
            f"the units of {data_where} were made differently from those the model was trained on "
            f"({model_where}): {key} is {data.get(key)!r} in the data but {model.get(key)!r} for the model.\n"
            f"  data:  {describe(data)}\n  model: {describe(model)}\n"
            "Extract the units with the model's feature back-end, checkpoint, layer and k-means model "
            "(extract_units --feature/--checkpoint/--layer/--km-model)."
        )
