"""k-means model files load without executing code: real scikit-learn dumps (plain and
compressed, KMeans and MiniBatchKMeans, older module paths), ``.npy`` centroids, and files
that would run code or that hold no centroids."""
import pickle
import re
import sys
import types

import joblib
import numpy as np
import pytest
import torch
from joblib.numpy_pickle import NumpyArrayWrapper
from sklearn.cluster import KMeans, MiniBatchKMeans

from gsgn_fairseq.prep.kmeans_io import load_kmeans
from gsgn_fairseq.data.mustc import DataError
from gsgn_fairseq.prep.units import KMeansAssigner


def features(n=400, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) + 3 * rng.standard_normal((5, dim))[rng.integers(5, size=n)]).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def minibatch():
    return MiniBatchKMeans(n_clusters=5, n_init=2, batch_size=64, compute_labels=False, random_state=0).fit(features())


class Payload:
    """Unpickling this runs ``exec``: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def refused(path, name):
    return pytest.raises(DataError, match=rf"^{re.escape(str(path))}: refused to load the global {re.escape(name)}:")


# ---------------------------------------------------------------- files that would run code


@pytest.mark.parametrize("compress", [0, 3])
def test_payload_is_refused_and_never_runs(tmp_path, compress):
    marker = tmp_path / "marker"
    path = tmp_path / "km.bin"
    joblib.dump(Payload(marker), path, compress=compress)
    with refused(path, "builtins.exec"):
        load_kmeans(path)
    assert not marker.exists()
    with pytest.raises(DataError, match=r"save its centroids as a \.npy"):  # says what to do
        KMeansAssigner.from_file(path)
    assert not marker.exists()


def test_payload_inside_a_fitted_model_is_refused(tmp_path, minibatch):
    """A real k-means file with one extra attribute that runs code, in an object array too."""
    marker = tmp_path / "marker"
    for name, evil in (("attr", Payload(marker)), ("objarray", np.array([Payload(marker)], dtype=object))):
        km = pickle.loads(pickle.dumps(minibatch))
        km.extra_ = evil
        path = tmp_path / f"{name}.bin"
        joblib.dump(km, path)
        with refused(path, "builtins.exec"):
            load_kmeans(path)
        assert not marker.exists()


def test_build_on_a_class_is_refused(tmp_path):
    """BUILD with slot state on an allowed class would setattr on it (here: replace joblib's
    array reader for the whole process)."""
    stream = (b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n"  # the class
              b"N}X\x04\x00\x00\x00readNs\x86b.")  # BUILD (None, {'read': None})
    path = tmp_path / "km.bin"
    path.write_bytes(stream)
    read = NumpyArrayWrapper.read
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: refused to load a BUILD on type"):
        load_kmeans(path)
    assert NumpyArrayWrapper.read is read


# ---------------------------------------------------------------- real k-means files


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 3)])
def test_minibatch_kmeans_loads_with_identical_centers(tmp_path, minibatch, compress):
    path = tmp_path / "km.bin"
    joblib.dump(minibatch, path, compress=compress)
    km = load_kmeans(path)
    assert km.cluster_centers_.dtype == minibatch.cluster_centers_.dtype
    np.testing.assert_array_equal(km.cluster_centers_, minibatch.cluster_centers_)
    assert (km.n_clusters, km.kind) == (5, "sklearn.cluster.MiniBatchKMeans")
    import sklearn

    assert km.sklearn_version == sklearn.__version__
    x = features(seed=1)
    np.testing.assert_array_equal(KMeansAssigner.from_file(path)(torch.from_numpy(x)).numpy(), minibatch.predict(x))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_kmeans_loads_with_identical_centers(tmp_path, protocol):
    # random_state as a RandomState object: numpy's RandomState pickle helpers are allowed
    ref = KMeans(n_clusters=4, n_init=1, random_state=np.random.RandomState(0)).fit(features())
    ref.feature_names_in_ = np.array([f"f{i}" for i in range(6)], dtype=object)  # joblib's object-array path
    ref.empty_ = np.zeros(0)  # protocol 2 writes its empty bytes as bytes()
    path = tmp_path / "km.bin"
    joblib.dump(ref, path, compress=3, protocol=protocol)
    km = load_kmeans(path)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert (km.n_clusters, km.kind) == (4, "sklearn.cluster.KMeans")
    plain = tmp_path / "km.pkl"  # a plain pickle (numpy's own array reconstruction)
    plain.write_bytes(pickle.dumps(ref, protocol=protocol))
    np.testing.assert_array_equal(load_kmeans(plain).cluster_centers_, ref.cluster_centers_)


def test_partial_fit_model_with_the_global_random_state(tmp_path):
    """partial_fit keeps ``check_random_state(None)``, numpy's global RandomState (pickled with
    its SeedSequence by numpy >= 2)."""
    ref = MiniBatchKMeans(n_clusters=3, batch_size=64, random_state=None).partial_fit(features())
    path = tmp_path / "km.bin"
    joblib.dump(ref, path)
    np.testing.assert_array_equal(load_kmeans(path).cluster_centers_, ref.cluster_centers_)


def test_npy_centroids(tmp_path):
    centers = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    path = tmp_path / "centroids.npy"
    np.save(path, centers)
    km = load_kmeans(path)
    np.testing.assert_array_equal(km.cluster_centers_, centers)
    assert (km.n_clusters, km.kind) == (7, "npy")
    assert KMeansAssigner.from_file(path).dim == 3
    np.save(tmp_path / "flat.npy", centers.ravel())
    with pytest.raises(DataError, match=r"flat\.npy: a npy array, not a fitted k-means model \(no 2-D cluster_centers_\)"):
        load_kmeans(tmp_path / "flat.npy")
    np.save(tmp_path / "ints.npy", np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(DataError, match=r"ints\.npy: k-means centroids of dtype int64, expected float"):
        load_kmeans(tmp_path / "ints.npy")
    np.save(tmp_path / "objects.npy", np.array([[Payload(tmp_path / "marker")]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"objects\.npy: cannot read a \.npy of k-means centroids"):
        load_kmeans(tmp_path / "objects.npy")
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------- files without centroids


def test_no_2d_cluster_centers(tmp_path, minibatch):
    unfitted = tmp_path / "unfitted.bin"
    joblib.dump(MiniBatchKMeans(n_clusters=5), unfitted)
    with pytest.raises(DataError, match=rf"^{re.escape(str(unfitted))}: a sklearn.cluster.MiniBatchKMeans, "
                                        r"not a fitted k-means model \(no 2-D cluster_centers_\)"):
        load_kmeans(unfitted)
    flat = pickle.loads(pickle.dumps(minibatch))
    flat.cluster_centers_ = flat.cluster_centers_.ravel()
    joblib.dump(flat, tmp_path / "flat.bin")
    with pytest.raises(DataError, match=r"flat\.bin: a sklearn.cluster.MiniBatchKMeans, not a fitted k-means model"):
        load_kmeans(tmp_path / "flat.bin")
    joblib.dump({"cluster_centers_": minibatch.cluster_centers_}, tmp_path / "dict.bin")
    with pytest.raises(DataError, match=r"dict\.bin: a dict, not a fitted k-means model"):
        load_kmeans(tmp_path / "dict.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"junk\.bin: cannot load a joblib k-means model"):
        load_kmeans(tmp_path / "junk.bin")
    with pytest.raises(FileNotFoundError, match="k-means model not found"):
        load_kmeans(tmp_path / "missing.bin")


# ---------------------------------------------------------------- the released file's era


def old_minibatch_state(centers):
    """The attributes of a MiniBatchKMeans that scikit-learn 0.24 ``fit`` leaves, as fairseq's
    learn_kmeans.py configures it, plus a ``random_state_`` (set by ``partial_fit``)."""
    k, d = centers.shape
    return dict(
        n_clusters=k, init="k-means++", max_iter=100, batch_size=10000, verbose=1, compute_labels=False,
        random_state=None, tol=0.0, max_no_improvement=100, init_size=None, n_init=20, reassignment_ratio=0.0,
        precompute_distances="deprecated", n_jobs="deprecated", copy_x=True, algorithm="auto",
        n_features_in_=d, cluster_centers_=centers, counts_=np.arange(k, dtype=np.int32), init_size_=3 * k,
        n_iter_=7, inertia_=np.float64(12.5), random_state_=np.random.RandomState(3), _sklearn_version="0.24.2",
    )


@pytest.mark.parametrize("module", ["sklearn.cluster.k_means_", "sklearn.cluster._kmeans"])
@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_older_scikit_learn_layout(tmp_path, monkeypatch, module, protocol):
    """A class pickled under an older module path with a 0.24-era state (written here by a
    stand-in class registered under that path, so no old scikit-learn is needed)."""
    cls = type("MiniBatchKMeans", (), {"__module__": module, "__getstate__": lambda self: self.__dict__})
    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(MiniBatchKMeans=cls))
    centers = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    old = cls()
    old.__dict__.update(old_minibatch_state(centers))
    path = tmp_path / "hubert_base_ls960_L9_km500.bin"
    joblib.dump(old, path, protocol=protocol)
    monkeypatch.delitem(sys.modules, module)
    km = load_kmeans(path)
    np.testing.assert_array_equal(km.cluster_centers_, centers)
    assert (km.n_clusters, km.kind, km.sklearn_version) == (500, "sklearn.cluster.MiniBatchKMeans", "0.24.2")


def test_module_paths_rewritten_in_a_real_pickle(tmp_path, minibatch):
    """A protocol-2 pickle of a real model with its class moved to ``sklearn.cluster.k_means_``
    and numpy's helpers to the other numpy major version's names (``numpy.core`` in 1.x,
    ``numpy._core`` in 2.x)."""
    ref = KMeans(n_clusters=3, n_init=1, random_state=0).fit(features())  # holds a numpy scalar (inertia_)
    stream = pickle.dumps(ref, protocol=2)
    ours, other = (b"numpy.core", b"numpy._core") if int(np.__version__.split(".")[0]) < 2 else (b"numpy._core", b"numpy.core")
    assert b"csklearn.cluster._kmeans\nKMeans\n" in stream and b"c" + ours + b".multiarray\n" in stream
    stream = stream.replace(b"csklearn.cluster._kmeans\n", b"csklearn.cluster.k_means_\n")
    stream = stream.replace(b"c" + ours + b".multiarray\n", b"c" + other + b".multiarray\n")
    path = tmp_path / "km.pkl"
    path.write_bytes(stream)
    km = load_kmeans(path)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.kind == "sklearn.cluster.KMeans"
