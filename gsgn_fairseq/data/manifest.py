"""fairseq speech_to_text TSV manifests: read and write without pandas, atomically.

Same dialect as fairseq's ``load_df_from_tsv``/``save_df_to_tsv``: tab-separated, a header
row, no quoting (fields must not contain tabs or newlines). A UTF-8 byte-order mark (which
some editors and spreadsheet exports put first) is read past: ``utf-8-sig`` here, and
:func:`strip_bom` for rows that fairseq's own reader returned with the mark in the first
column name.
"""
import csv
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, TypeVar

from ..fileio import atomic_path

S2T_COLUMNS = ["id", "audio", "n_frames", "tgt_text", "speaker", "src_text"]
UNITS_COLUMN = "units"
DEFAULT_UNIT_VIEW = "units"  # the unit set of a data directory with one: units.zip, column units, units.json
_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def unit_view_column(name: str) -> str:
    """The TSV column of the unit set ``name``: ``units`` for the default set, else
    ``units_NAME`` (its zip ``units_NAME.zip`` and record ``units_NAME.json`` take the same
    stem)."""
    check_unit_view_name(name)
    return UNITS_COLUMN if name == DEFAULT_UNIT_VIEW else f"{UNITS_COLUMN}_{name}"


def check_unit_view_name(name: str, flag: str = "--unit-views") -> str:
    if not isinstance(name, str) or not _VIEW_NAME.match(name):
        raise ValueError(f"{flag}: a unit set name is letters, digits, '_' and '-' (starting with a letter or "
                         f"digit), got {name!r}")
    return name


def parse_unit_views(spec, flag: str = "--unit-views") -> Tuple[str, ...]:
    """``"hubert,wavlm"`` -> ``("hubert", "wavlm")``; None or empty: the default set alone."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return (DEFAULT_UNIT_VIEW,)
    names = tuple(n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec))
    for n in names:
        check_unit_view_name(n, flag)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{flag} {spec}: {', '.join(dupes)} named twice")
    return names


def parse_num_units(value, views: Sequence[str], flag: str = "--num-units") -> Tuple[int, ...]:
    """K per unit view: one value for every view, or a comma list matching ``views``."""
    parts = [value] if isinstance(value, int) else [p.strip() for p in str(value).split(",")]
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{flag} {value}: expected K or K1,K2,... (one per --unit-views entry)") from None
    if len(ks) == 1:
        ks = ks * len(views)
    if len(ks) != len(views):
        raise ValueError(f"{flag} {value}: {len(ks)} values for the {len(views)} unit views {','.join(views)} "
                         "(--unit-views); give one K, or one per view")
    bad = [k for k in ks if k <= 0]
    if bad:
        raise ValueError(f"{flag} must be positive, got {value}")
    return ks
BOM = "\ufeff"
Row = TypeVar("Row", bound=dict)


def strip_bom(rows: List[Row]) -> List[Row]:
    """``rows`` with a byte-order mark removed from the first column's name (``\ufeffid``
    becomes ``id``); other rows are returned as they are."""
    first = next(iter(rows[0]), "") if rows else ""
    if not first.startswith(BOM):
        return rows
    return [{(k[len(BOM):] if k == first else k): v for k, v in row.items()} for row in rows]


def read_tsv(path: Path) -> List[Dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t", quotechar=None, quoting=csv.QUOTE_NONE)
        return list(reader)


def write_tsv(path: Path, rows: Sequence[Dict[str, str]], columns: Sequence[str]) -> None:
    """Write rows to ``path`` atomically; every value is checked for tabs and newlines."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            values = [str(row[c]) for c in columns]
            for c, v in zip(columns, values):
                if "\t" in v or "\n" in v or "\r" in v:
                    raise ValueError(f"{path}: utterance {row.get('id')}: field {c!r} contains a tab or newline")
            f.write("\t".join(values) + "\n")
