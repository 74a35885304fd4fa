"""Uncompressed zip stores of numpy arrays, addressed as fairseq's ``file.zip:offset:length``.

fairseq's ``audio_utils.get_features_or_waveform`` reads ``path.zip:offset:length`` by
seeking into the raw zip file, so members must be STORED (not deflated) and the offset must
point at the member's bytes, past its local header.
"""
import hashlib
import io
import math
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Dict, Iterable, NamedTuple, Tuple, Union

import numpy as np

from ..fileio import atomic_path

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, PKZIP local file header


def array_to_npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_shape(data: bytes) -> Tuple[Tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the header of ``.npy`` bytes (numpy's header reader), without
    reading the array."""
    return read_npy_header(io.BytesIO(data))


def read_npy_header(f: BinaryIO) -> Tuple[Tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of the ``.npy`` array starting at ``f``'s position: reads the header
    only (about 128 bytes), so that a whole manifest can be checked against its zip cheaply.
    ValueError when the bytes are not a ``.npy`` header."""
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype


def write_npy_zip(path: Path, items: Iterable[Tuple[str, Union[np.ndarray, bytes]]]) -> None:
    """Write ``{name}.npy`` members (stored) to ``path`` atomically (tmp file + rename).

    An item may be an array or the ``.npy`` bytes of one (copied as they are, e.g. from a
    cache written with ``np.savez``: the same bytes ``np.save`` gives)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, array in items:
            # fixed timestamp and mode: the same items give the same bytes on every run
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, array if isinstance(array, bytes) else array_to_npy_bytes(array))


def zip_manifest(path: Path, prefix: str = None) -> Dict[str, str]:
    """Map each member's stem to ``"{prefix}:{offset}:{length}"``.

    ``prefix`` defaults to the zip's file name (paths in the TSVs are relative to the data
    root). Offsets are read from each member's local header, so they are right even when a
    writer put extra fields there.
    """
    path = Path(path)
    prefix = path.name if prefix is None else prefix
    manifest = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{path}: member {info.filename} is compressed; fairseq needs stored members"
                )
            f.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            name_len, extra_len = fields[-2], fields[-1]
            offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            stem = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
            manifest[stem] = f"{prefix}:{offset}:{info.file_size}"
    return manifest


def read_npy_ref(root: Path, ref: str) -> np.ndarray:
    """Read the array behind a ``file.zip:offset:length`` reference relative to ``root``."""
    file, offset, length = ref.rsplit(":", 2)
    with open(Path(root) / file, "rb") as f:
        f.seek(int(offset))
        data = f.read(int(length))
    if len(data) != int(length):
        raise ValueError(f"{ref}: expected {length} bytes, read {len(data)} (truncated zip?)")
    return np.load(io.BytesIO(data), allow_pickle=False)


class ZipMember(NamedTuple):
    stem: str  # member name without ``.npy``
    length: int
    crc: int  # CRC-32 of the member's bytes, from the zip's central directory


_INDEX_CACHE: Dict[Tuple[str, float, int], Dict[int, ZipMember]] = {}
_INDEX_CACHE_SIZE = 4  # the fbank and units zips of a run (and of a copied data dir)


def zip_index(path: Path) -> Dict[int, ZipMember]:
    """``{data offset: ZipMember}`` of a stored zip (cached per file, size and mtime).

    A truncated or damaged zip is a DataError naming it (not an IndexError at the first read)."""
    from .mustc import DataError

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key in _INDEX_CACHE:
        return _INDEX_CACHE[key]
    index = {}
    try:
        with zipfile.ZipFile(path) as z, open(path, "rb") as f:
            for info in z.infolist():
                f.seek(info.header_offset)
                header = f.read(_LOCAL_HEADER.size)
                if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"no local header for member {info.filename}")
                fields = _LOCAL_HEADER.unpack(header)
                offset = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
                if offset + info.file_size > st.st_size:
                    raise zipfile.BadZipFile(f"member {info.filename} runs past the end of the file")
                stem = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
                index[offset] = ZipMember(stem, info.file_size, info.CRC)
    except (zipfile.BadZipFile, OSError, struct.error) as err:
        raise DataError(f"{path}: damaged or truncated zip ({err}); rebuild it (rerun the stage that wrote it)") from None
    while len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:  # bounded: drop the oldest
        _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
    _INDEX_CACHE[key] = index
    return index


def zip_fingerprint(path: Path) -> str:
    """SHA-1 of a zip's member names and CRC-32s, in member order: what the zip holds, read
    from its central directory (through :func:`zip_index`) without reading any member."""
    h = hashlib.sha1()
    for member in zip_index(path).values():
        h.update(f"{member.stem}\t{member.crc:08x}\n".encode())
    return h.hexdigest()


def split_ref(ref: str) -> Tuple[str, int, int]:
    """``("file.zip", offset, length)`` of a ``file.zip:offset:length`` reference (ValueError if not one)."""
    parts = ref.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"not a file.zip:offset:length reference: {ref!r}")
    return parts[0], int(parts[1]), int(parts[2])


def read_member_checked(path: str, offset: int, length: int, crc: int) -> bytearray:
    """The bytes at ``offset`` of ``path``, checked against the member's CRC-32 (a writable
    buffer, so that :func:`npy_from_bytes` gives a writable array without a copy)."""
    from .mustc import DataError

    data = bytearray(length)
    with open(path, "rb") as f:
        f.seek(offset)
        n = f.readinto(data)
    if n != length:
        raise DataError(f"{path}:{offset}:{length}: read {n} bytes (truncated zip?)")
    if zlib.crc32(data) != crc:
        raise DataError(f"{path}:{offset}:{length}: CRC mismatch, the stored bytes are damaged; rebuild the zip")
    return data


# the header np.save writes for a C-ordered array of a plain dtype (padding after the dict)
_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \}")


def npy_from_bytes(data: bytearray) -> np.ndarray:
    """The array of ``.npy`` bytes, as ``np.load`` reads it, over ``data`` itself (no copy).

    ``np.load`` parses the header with ``ast.literal_eval``, some 60 us an array, as much as
    reading an utterance's FBank member from the page cache. The headers ``np.save`` writes for
    C-ordered arrays of plain dtypes are matched here instead; anything else (Fortran order,
    structured dtypes, a size that disagrees with the shape) goes to ``np.load``, which reads it
    or raises its own error."""
    if data[:6] == b"\x93NUMPY" and len(data) >= 12:
        major = data[6]
        start = 10 if major == 1 else 12 if major in (2, 3) else None
        if start is not None:
            hlen = int.from_bytes(data[8:start], "little")
            m = _NPY_HEADER.match(data, start, start + hlen)
            if m:
                dtype = np.dtype(m.group(1).decode("ascii"))
                shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
                count = math.prod(shape)
                if not dtype.hasobject and start + hlen + count * dtype.itemsize == len(data):
                    return np.frombuffer(data, dtype, count, offset=start + hlen).reshape(shape)
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
