"""Read k-means models without executing code from the file.

``joblib.load`` is a pickle load: any callable a file names runs while it loads. k-means
files come from the web (the released ``hubert_base_ls960_L9_km500.bin``), so
:func:`load_kmeans` unpickles with an allow list instead, in the spirit of torch's
``weights_only``:

- :class:`SafeKMeansUnpickler` subclasses joblib's own ``NumpyUnpickler``, so joblib's
  layout (array bytes stored beside the pickle stream as ``NumpyArrayWrapper``) and its
  compressed containers (``compress=...``: zlib, gzip, bz2, lzma, xz) load as before.
- scikit-learn's ``KMeans`` / ``MiniBatchKMeans`` (module ``sklearn.cluster._kmeans``, or
  ``sklearn.cluster.k_means_`` before scikit-learn 0.22) resolve to inert stand-ins that
  only keep the pickled state dict: no scikit-learn code runs, and scikit-learn need not be
  installed.
- numpy resolves only to what a fitted k-means holds: array, dtype and scalar
  reconstruction (numpy 1.x ``numpy.core`` and numpy 2.x ``numpy._core`` names); a pickled
  ``random_state`` (RandomState, MT19937, SeedSequence) becomes an inert stand-in too.
- Object-dtype arrays, which joblib reads with a plain ``pickle.load``, go through the same
  allow list.
- Any other global, a BUILD (state setting) on anything but the allowed objects and joblib's
  pre-0.10 multi-file format raise a ``DataError`` naming the file and what was refused.

A plain ``.npy`` of centroids (K x D, float; read with ``allow_pickle=False``) is accepted too.

Returns a :class:`KMeansCentroids`: ``cluster_centers_`` (K, D) and ``n_clusters`` K, the
two attributes callers used from the scikit-learn estimator.
"""
import _codecs
import contextlib
import copyreg
import inspect
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

try:  # joblib >= 1.5
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap
except ImportError:
    from joblib.numpy_pickle_utils import _read_fileobject

    _validate_fileobject_and_memmap = None

from ..data.mustc import DataError

NPY_MAGIC = b"\x93NUMPY"
KMEANS_MODULES = ("sklearn.cluster._kmeans", "sklearn.cluster.k_means_", "sklearn.cluster")
KMEANS_CLASSES = ("KMeans", "MiniBatchKMeans")
NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 1.x, 2.x
# joblib >= 1.5 passes the byte-order flag explicitly; older versions always make arrays native
_JOBLIB_BYTE_ORDER_ARG = "ensure_native_byte_order" in inspect.signature(NumpyUnpickler.__init__).parameters


class PickledObject:
    """An inert stand-in for an allow-listed pickled object: keeps what the pickle gives it
    (call arguments, state), runs nothing."""

    pickled_as = "object"  # the global it stands for

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class PickledKMeans(PickledObject):
    """Stands in for a scikit-learn k-means estimator; ``state`` is its attribute dict."""


def _stand_in(qualified: str, base: type = PickledObject) -> type:
    return type(f"Pickled{qualified.rsplit('.', 1)[1]}", (base,), {"pickled_as": qualified})


_KMEANS_STAND_INS = {name: _stand_in(f"sklearn.cluster.{name}", PickledKMeans) for name in KMEANS_CLASSES}
# A pickled random_state: a RandomState, its MT19937 and (numpy >= 2) its SeedSequence, made by
# numpy's pickling helpers. Unneeded for the centroids, and numpy 2 pickles them in a form numpy
# 1.x cannot read, so they become stand-ins too.
_NUMPY_RANDOM_STAND_INS = {
    (module, name): _stand_in(f"{module}.{name}")
    for module, name in (
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random", "__RandomState_ctor"),  # numpy < 1.17
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    )
}


def _latin1_bytes(text, encoding):
    """``_codecs.encode`` as protocol 2 writes non-empty bytes (``encode(str, 'latin1')``) only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return _codecs.encode(text, encoding)


def _empty_bytes(*args):
    """``bytes()``, as protocol 2 writes empty bytes, and nothing else (no allocation by size)."""
    if args:
        raise pickle.UnpicklingError(f"bytes called with {len(args)} arguments")
    return b""


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 pickles) for our stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, PickledObject)) or base is not object:
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} from {base!r}")
    return copyreg._reconstructor(cls, base, state)


def _allowed_globals() -> Dict[Tuple[str, str], object]:
    # the functions numpy's own __reduce__ returns, so the installed numpy's implementation
    reconstruct = np.ndarray(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 pickles of contiguous arrays
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("joblib.numpy_pickle", "NumpyArrayWrapper"): NumpyArrayWrapper,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("_codecs", "encode"): _latin1_bytes,  # how protocol 2 writes bytes
        ("builtins", "bytes"): _empty_bytes,
        **_NUMPY_RANDOM_STAND_INS,
    }
    for core in NUMPY_CORE:
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    for module in KMEANS_MODULES:
        for name in KMEANS_CLASSES:
            allowed[(module, name)] = _KMEANS_STAND_INS[name]
    return allowed


ALLOWED_GLOBALS = _allowed_globals()
# what BUILD may set state on: stand-ins and joblib's wrappers (their __dict__), numpy's arrays and
# dtypes (their __setstate__)
_BUILD_TYPES = (PickledObject, NumpyArrayWrapper, np.ndarray, np.dtype)


class SafeKMeansUnpickler(NumpyUnpickler):
    """joblib's unpickler with :data:`ALLOWED_GLOBALS` as the only globals (module docstring)."""

    dispatch = NumpyUnpickler.dispatch.copy()

    def __init__(self, filename: str, file_handle):
        if _JOBLIB_BYTE_ORDER_ARG:
            super().__init__(filename, file_handle, True, mmap_mode=None)
        else:
            super().__init__(filename, file_handle, mmap_mode=None)

    def _refuse(self, what: str) -> DataError:
        return DataError(
            f"{self.filename}: refused to load {what}: a fitted scikit-learn k-means model does not need it, "
            "and loading it could run code from the file. If you trust the file, save its centroids as a .npy "
            f"and pass that instead: python -c \"import joblib, numpy; numpy.save('centroids.npy', "
            f"joblib.load('{self.filename}').cluster_centers_)\""
        )

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle's own find_class maps them
            import _compat_pickle

            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise self._refuse(f"the global {module}.{name}") from None

    def load_build(self):
        inst = self.stack[-2]
        if isinstance(inst, type) or not isinstance(inst, _BUILD_TYPES):
            raise self._refuse(f"a BUILD on {type(inst).__name__} {inst!r:.80}")
        pickle._Unpickler.load_build(self)
        wrapper = self.stack[-1]
        if isinstance(wrapper, NumpyArrayWrapper):
            self.stack[-1] = self._read_array(wrapper)

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, wrapper: NumpyArrayWrapper) -> np.ndarray:
        """The array a joblib ``NumpyArrayWrapper`` stands for; object arrays through this
        unpickler too (joblib reads them with plain ``pickle.load``)."""
        dtype, shape = getattr(wrapper, "dtype", None), getattr(wrapper, "shape", None)
        if (getattr(wrapper, "subclass", None) is not np.ndarray or not isinstance(dtype, np.dtype)
                or not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape)
                or getattr(wrapper, "order", None) not in ("C", "F")):
            raise self._refuse(f"a joblib array wrapper with state {vars(wrapper)!r:.200}")
        if dtype.hasobject:
            array = SafeKMeansUnpickler(self.filename, self.file_handle).load()
            if not isinstance(array, np.ndarray) or array.shape != shape:
                raise self._refuse(f"an object array that unpickled to {type(array).__name__}")
            return array
        return wrapper.read(self, True) if _JOBLIB_BYTE_ORDER_ARG else wrapper.read(self)


@contextlib.contextmanager
def _joblib_stream(f, filename: str):
    """The pickle stream of a joblib file, decompressed by joblib's own helper (renamed in
    joblib 1.5); a str (the file name) for joblib's pre-0.10 multi-file format."""
    if _validate_fileobject_and_memmap is not None:
        with _validate_fileobject_and_memmap(f, filename, None) as (fobj, _):
            yield fobj
    else:
        with _read_fileobject(f, filename, None) as fobj:
            yield fobj


@dataclass
class KMeansCentroids:
    """A k-means model as the unit extraction uses it.

    Attributes:
        cluster_centers_: (K, D) float centroids, as scikit-learn names them.
        source: the file.
        kind: ``sklearn.cluster.MiniBatchKMeans``, ``sklearn.cluster.KMeans`` or ``npy``.
        sklearn_version: the scikit-learn version that pickled the model, when it recorded one.
    """

    cluster_centers_: np.ndarray
    source: str
    kind: str
    sklearn_version: Optional[str] = None

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_centers_.shape[0])


def _check_centers(path: Path, kind: str, centers) -> np.ndarray:
    if not isinstance(centers, np.ndarray) or centers.ndim != 2:
        raise DataError(f"{path}: a {kind}, not a fitted k-means model (no 2-D cluster_centers_)")
    if not np.issubdtype(centers.dtype, np.floating):
        raise DataError(f"{path}: k-means centroids of dtype {centers.dtype}, expected float (K x D)")
    if centers.shape[0] == 0 or centers.shape[1] == 0:
        raise DataError(f"{path}: k-means centroids of shape {centers.shape}, expected K x D with K, D > 0")
    if not np.isfinite(centers).all():
        raise DataError(f"{path}: k-means centroids contain NaN or infinite values")
    return centers


def _load_npy(path: Path) -> KMeansCentroids:
    try:
        centers = np.load(path, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{path}: cannot read a .npy of k-means centroids ({type(err).__name__}: {err})") from None
    return KMeansCentroids(_check_centers(path, "npy array", centers), str(path), "npy")


def _load_joblib(path: Path) -> KMeansCentroids:
    try:
        with open(path, "rb") as f, _joblib_stream(f, str(path)) as fobj:
            if isinstance(fobj, str):  # joblib < 0.10: arrays in companion files, read with pickle
                raise DataError(f"{path}: a joblib file of the pre-0.10 format, which cannot be loaded safely; "
                                "re-save it with a current joblib, or save its centroids as a .npy")
            obj = SafeKMeansUnpickler(str(path), fobj).load()
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot load a joblib k-means model ({type(err).__name__}: {err})") from None
    if not isinstance(obj, PickledKMeans):
        raise DataError(f"{path}: a {type(obj).__name__}, not a fitted k-means model (no 2-D cluster_centers_)")
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        raise DataError(f"{path}: a {obj.pickled_as} whose pickled state is a {type(state).__name__}, not a dict")
    centers = _check_centers(path, obj.pickled_as, state.get("cluster_centers_"))
    k = state.get("n_clusters")
    if isinstance(k, (int, np.integer)) and k != centers.shape[0]:
        raise DataError(f"{path}: n_clusters={k} but cluster_centers_ has {centers.shape[0]} rows")
    version = state.get("_sklearn_version")
    return KMeansCentroids(centers, str(path), obj.pickled_as, version if isinstance(version, str) else None)


def load_kmeans(path: Path) -> KMeansCentroids:
    """The centroids of a joblib-dumped scikit-learn k-means model or of a ``.npy``
    (K x D float), read without executing code from the file (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"k-means model not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(len(NPY_MAGIC))
    return _load_npy(path) if magic == NPY_MAGIC else _load_joblib(path)
