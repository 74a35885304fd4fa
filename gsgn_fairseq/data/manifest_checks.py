"""Checks of a speech_to_text TSV and its zip references, before fairseq sees them.

fairseq reads a manifest with ``csv.DictReader`` and trusts it: a missing column becomes
"Cannot find dataset", a short row an ``AttributeError`` on ``None``, a bad ``n_frames`` an
``int()`` message, a wrong reference the features of another utterance. These checks name the
file, the line and the utterance, and say what to do.

``check_rows`` checks the columns and every row; ``check_zip_refs`` checks that each
``file.zip:offset:length`` reference points at the start of a stored member named after the
row's utterance id (``{id}.npy``, as the prep and ``extract_units`` write them) with that
length, so swapped references and truncated zips are caught when the dataset is built;
``check_n_frames`` compares each row's ``n_frames`` with the frame count in the header of
its FBank member, since batching (``--max-tokens``) and length filtering
(``--max-source-positions``) trust ``n_frames`` without reading the features.
"""
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .mustc import DataError
from .zip_store import ZipMember, read_npy_header, split_ref, zip_index

REQUIRED_COLUMNS = ("id", "audio", "n_frames", "tgt_text")


def check_rows(tsv: Path, rows: List[Dict[str, Optional[str]]], required: Sequence[str]) -> None:
    """Every row has every ``required`` column filled, no extra fields, a positive int ``n_frames``
    and a unique ``id``. Line numbers count the header as line 1."""
    if not rows:
        raise DataError(f"{tsv}: no utterances (only a header, or an empty file)")
    columns = [c for c in rows[0] if c is not None]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{tsv}: no {', '.join(repr(c) for c in missing)} column (columns: {' '.join(columns)}); "
            "the manifest needs the speech_to_text columns id audio n_frames tgt_text (+ units): "
            "rerun the prep (gsgn-prep-mustc, gsgn-extract-units)"
        )
    seen: Dict[str, int] = {}
    for i, row in enumerate(rows):
        line = i + 2
        uid = row.get("id") or f"(line {line})"
        if None in row:
            raise DataError(f"{tsv}:{line}: utterance {uid}: {len(columns) + len(row[None])} fields for "
                            f"{len(columns)} columns (a tab inside a field?)")
        empty = [c for c in required if row.get(c) is None]
        if empty:
            raise DataError(f"{tsv}:{line}: utterance {uid}: the row ends before column(s) "
                            f"{', '.join(empty)} ({sum(v is not None for v in row.values())} of {len(columns)} fields)")
        blank = [c for c in required if c not in ("tgt_text", "src_text") and not row[c].strip()]
        if blank:
            raise DataError(f"{tsv}:{line}: utterance {uid}: empty {', '.join(blank)}")
        n = row["n_frames"]
        if not n.strip().isdigit() or int(n) <= 0:
            raise DataError(f"{tsv}:{line}: utterance {uid}: n_frames must be a positive integer "
                            f"(the number of FBank frames), got {n!r}")
        if uid in seen:
            raise DataError(f"{tsv}:{line}: utterance id {uid} already on line {seen[uid]}")
        seen[uid] = line


def check_zip_refs(tsv: Path, rows: List[Dict[str, str]], column: str, paths: List[str]) -> List[ZipMember]:
    """The zip member behind each row's ``column`` reference (``paths``: the references resolved
    against their root); each must start a member named after the row's id, with that length.
    Non-zip references (plain ``.npy`` files) get None."""
    members: List[Optional[ZipMember]] = []
    for i, (row, path) in enumerate(zip(rows, paths)):
        try:
            file, offset, length = split_ref(path)
        except ValueError:
            members.append(None)  # a plain file: fairseq reads it whole
            continue
        uid, where = row["id"], f"{tsv}:{i + 2}: utterance {row['id']}"
        member = zip_index(Path(file)).get(offset)
        if member is None:
            raise DataError(f"{where}: {column} {row[column]} does not point at a member of {file}; "
                            f"the TSV and the zip do not belong together (rerun the stage that wrote {column})")
        if member.stem != uid:
            raise DataError(f"{where}: {column} {row[column]} points at {member.stem}.npy in {file}, not {uid}.npy; "
                            f"the {column} references are mixed up (rerun the stage that wrote them)")
        if member.length != length:
            raise DataError(f"{where}: {column} {row[column]} has length {length}, the member {uid}.npy has "
                            f"{member.length} bytes")
        members.append(member)
    return members


def check_n_frames(tsv: Path, rows: List[Dict[str, str]], paths: List[str],
                   members: List[Optional[ZipMember]]) -> None:
    """Each row's ``n_frames`` equals the first dimension of its FBank array, read from the
    ``.npy`` header of its zip member (``members``: :func:`check_zip_refs` of ``audio``;
    plain files, None there, are not checked)."""
    with ExitStack() as stack:
        handles = {}
        for i, (row, path, member) in enumerate(zip(rows, paths, members)):
            if member is None:
                continue
            file, offset, _ = split_ref(path)
            if file not in handles:
                handles[file] = stack.enter_context(open(file, "rb"))
            f = handles[file]
            f.seek(offset)
            where = f"{tsv}:{i + 2}: utterance {row['id']}"
            try:
                shape, _ = read_npy_header(f)
            except ValueError as err:
                raise DataError(f"{where}: audio {row['audio']} is not a .npy array ({err}); rerun the prep") from None
            frames = shape[0] if shape else 0
            if frames != int(row["n_frames"]):
                raise DataError(f"{where}: n_frames is {row['n_frames']} but its FBank features ({row['audio']}) "
                                f"have {frames} frames; batching and length filtering trust n_frames: "
                                "correct the column (or rerun the prep)")
