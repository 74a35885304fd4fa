"""fairseq speech_to_text TSV manifests: read and write without pandas, atomically.

Same dialect as fairseq's ``load_df_from_tsv``/``save_df_to_tsv``: tab-separated, a header
row, no quoting (fields must not contain tabs or newlines). A UTF-8 byte-order mark (which
some editors and spreadsheet exports put first) is read past: ``utf-8-sig`` here, and
:func:`strip_bom` for rows that fairseq's own reader returned with the mark in the first
column name.
"""
import csv
from pathlib import Path
from typing import Dict, List, Sequence, TypeVar

from ..fileio import atomic_path

S2T_COLUMNS = ["id", "audio", "n_frames", "tgt_text", "speaker", "src_text"]
UNITS_COLUMN = "units"
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
