"""edgekm.dask: offline fitting on a Dask cluster (two worker processes on this machine)."""

import doctest
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")

import dask.array as da  # noqa: E402

import edgekm.dask as edask  # noqa: E402
from edgekm.dask import DaskFitResult, data_cost, fit_coreset, publish, push_seed  # noqa: E402

K = 6


@pytest.fixture(scope="module")
def client():
    # Worker processes, so that every task's arguments and results are pickled
    # as on a real cluster.  The scheduler's HTTP server binds a free loopback
    # port: with dashboard_address=None it still tries 8787 and warns (an error
    # here) when another cluster holds it.  Quiet logs.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(7)
    means = rng.uniform(-20, 20, size=(K, 4))
    X = np.concatenate([rng.normal(m, 1.5, size=(5000 + 700 * i, 4))
                        for i, m in enumerate(means)])
    return X[rng.permutation(len(X))]


@pytest.fixture(scope="module")
def fitted(client, blobs):
    X = da.from_array(blobs, chunks=(4000, 4))
    return fit_coreset(X, K, random_state=3, split_every=3, client=client)


def batch_cost(X, k):
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=0).fit(X).inertia_


def exact_cost(X, centers):
    d2 = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    return float(d2.min(axis=1).sum())


# ---------------------------------------------------------------- the fit


def test_weight_is_exact_and_cost_is_near_batch_kmeans(fitted, blobs, client):
    r = fitted
    assert isinstance(r, DaskFitResult)
    n = len(blobs)
    assert r.n_samples == n and r.total_weight == float(n)
    assert np.sum(r.coreset.weights) == n and r.cluster_weights.sum() == pytest.approx(n)
    assert r.n_partitions == -(-n // 4000) and r.centers.shape == (K, 4)
    assert len(r.coreset) <= 40 * K and r.coreset.level >= 2      # reduced on the way up
    cost = exact_cost(blobs, r.centers)
    assert data_cost(da.from_array(blobs, chunks=(5000, 4)), r.centers,
                     client=client) == pytest.approx(cost, rel=1e-9)
    # the bound: within 5% of scikit-learn's KMeans(n_init=10) on all the data
    # (measured 1.003-1.006 over random_state 0-4)
    assert cost <= 1.05 * batch_cost(blobs, K)
    # the coreset's cost estimates the data's (StreamKM++ underestimates)
    assert 0.5 * cost <= r.inertia <= 1.05 * cost


def test_same_seed_and_partitioning_give_identical_centers(fitted, blobs, client):
    X = da.from_array(blobs, chunks=(4000, 4))
    again = fit_coreset(X, K, random_state=3, split_every=3, client=client)
    assert np.array_equal(again.centers, fitted.centers)
    assert again.coreset == fitted.coreset
    # the threaded scheduler of this process computes the same tree
    local = fit_coreset(X, K, random_state=3, split_every=3)
    assert np.array_equal(local.centers, fitted.centers)
    other = fit_coreset(X, K, random_state=4, split_every=3, client=client)
    assert not np.array_equal(other.centers, fitted.centers)
    assert other.total_weight == fitted.total_weight


@pytest.mark.parametrize("algorithm", ["cc", "rcc"])
def test_other_structures_and_a_single_partition(client, blobs, algorithm):
    r = fit_coreset(da.from_array(blobs, chunks=(len(blobs), 4)), K, algorithm=algorithm,
                    random_state=0, client=client)
    assert r.n_partitions == 1 and r.total_weight == len(blobs)
    assert exact_cost(blobs, r.centers) <= 1.05 * batch_cost(blobs, K)


def test_numpy_input_and_float32(client, blobs):
    X32 = blobs.astype(np.float32)
    r = fit_coreset(X32, K, coreset_size=100, random_state=0, client=client)
    assert r.coreset.dtype == np.float32 and len(r.coreset) <= 100
    assert r.n_partitions >= 2 and r.total_weight == len(blobs)
    r64 = fit_coreset(X32, K, coreset_size=100, random_state=0, client=client, dtype=np.float64)
    assert r64.coreset.dtype == np.float64


def test_coreset_pickles_cheaply(fitted):
    c = fitted.coreset
    assert len(pickle.dumps(c)) < c.points.nbytes + c.weights.nbytes + c.spread.nbytes + 500
    assert pickle.loads(pickle.dumps(c)) == c


# ---------------------------------------------------------------- dataframes


def frame(blobs):
    df = pd.DataFrame(blobs, columns=list("abcd"))
    df["b"] = df["b"].astype(np.float32)
    df["n"] = np.arange(len(df)) % 3            # an int column is numeric
    return df


def test_dataframe_input(client, blobs):
    ddf = dd.from_pandas(frame(blobs), npartitions=7)
    r = fit_coreset(ddf, K, random_state=0, client=client)
    assert r.n_partitions == 7 and r.n_samples == len(blobs) == r.total_weight
    assert r.centers.shape == (K, 5)
    # partitions that a filter empties contribute nothing, and break nothing
    some = ddf[ddf["a"] > 0]
    expected = int((blobs[:, 0] > 0).sum())
    assert fit_coreset(some, K, random_state=0, client=client).total_weight == expected
    # a pandas frame is split like a NumPy array
    assert fit_coreset(frame(blobs), K, random_state=0).total_weight == len(blobs)


def test_dataframe_errors_name_the_columns_and_the_partition(client, blobs):
    df = frame(blobs[:2000])
    df["label"] = "x"
    df["when"] = pd.Timestamp("2024-01-01")
    with pytest.raises(TypeError, match=r"non-numeric columns: 'label' .*'when'"):
        fit_coreset(dd.from_pandas(df, npartitions=2), K, client=client)
    df = frame(blobs[:2000])
    df.loc[1500, "c"] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity: partition 1, row 500 of the "
                                         r"partition"):
        fit_coreset(dd.from_pandas(df, npartitions=2), K, client=client)
    with pytest.raises(TypeError, match="Series"):
        fit_coreset(dd.from_pandas(df, npartitions=2)["a"], K, client=client)


# ---------------------------------------------------------------- bad input


def test_bad_input(client, blobs):
    with pytest.raises(ValueError, match="Expected 2-D data, got 1-D"):
        fit_coreset(blobs[:, 0], K)
    with pytest.raises(ValueError, match="Expected 2-D data, got 3-D"):
        fit_coreset(da.zeros((10, 2, 2), chunks=5), K)
    bad = blobs[:9000].copy()
    bad[8500, 2] = np.inf
    with pytest.raises(ValueError, match=r"partition 2, row 500 of the partition \(row 8500 "
                                         r"of the data\)"):
        fit_coreset(da.from_array(bad, chunks=(4000, 4)), K, client=client)
    with pytest.raises(ValueError, match="n_samples=5 should be >= n_clusters=6"):
        fit_coreset(blobs[:5], K)
    few = dd.from_pandas(pd.DataFrame(blobs[:5]), npartitions=2)   # counted on the cluster
    with pytest.raises(ValueError, match="n_samples=5 should be >= n_clusters=6"):
        fit_coreset(few, K, client=client)
    with pytest.raises(TypeError, match="numbers only"):
        fit_coreset(np.array([["a", "b"], ["c", "d"]]), 1)
    with pytest.raises(ValueError, match="'algorithm'.*sequential"):
        fit_coreset(blobs, K, algorithm="sequential")
    with pytest.raises(ValueError, match="'split_every'"):
        fit_coreset(blobs, K, split_every=1)
    with pytest.raises(ValueError, match="'coreset_size'"):
        fit_coreset(blobs, K, coreset_size=K - 1)
    with pytest.raises(ValueError, match="'n_clusters'"):
        fit_coreset(blobs, 0)
    with pytest.raises(ValueError, match="'dtype'"):
        fit_coreset(blobs, K, dtype=np.int32)


# ---------------------------------------------------------------- the aggregator

ADMIN = "dask-test-admin"


@pytest.fixture
def server(tmp_path):
    """A real aggregator served by uvicorn on loopback, in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    from helpers.fake_aggregator import _free_port

    from edgekm.sync.cloud.aggregator import Aggregator
    from edgekm.sync.cloud.http.app import create_app

    agg = Aggregator(tmp_path / "agg.db", random_state=0)
    key = agg.add_device("offline-fit")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(agg, admin_token=ADMIN), host="127.0.0.1",
                                        port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if srv.started:
                break
            threading.Event().wait(0.05)
        assert srv.started
        yield agg, key, f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        agg.close()


def test_push_seed_to_a_real_aggregator(server, fitted, blobs):
    agg, key, url = server
    n = len(blobs)
    out = push_seed(fitted, url, "history", "offline-fit", key, max_points=50)
    frames = -(-len(fitted.coreset) // 50)
    assert out == {"frames": frames, "accepted": frames, "duplicate": 0,
                   "weight": float(n), "total_weight": float(n)}
    assert agg.total_weight("history") == n == agg.aggregate("history").total_weight
    # pushing the same result again is idempotent
    again = push_seed(fitted, url, "history", "offline-fit", key, max_points=50)
    assert again["duplicate"] == frames and again["accepted"] == 0
    assert agg.total_weight("history") == n
    with pytest.raises(edask.SeedUploadError, match="HTTP 401"):
        push_seed(fitted, url, "other", "offline-fit", "00" * 32)
    # publishing over HTTP: the seed, then the centres themselves
    with pytest.raises(edask.SeedUploadError, match="409 conflict"):   # split otherwise
        push_seed(fitted, url, "history", "offline-fit", key)
    assert agg.total_weight("history") == n
    info = publish(fitted, url, "history", device_id="offline-fit", key=key,
                   admin_token=ADMIN, max_points=50)
    assert info["version"] == 1 and info["status"] == "active" and info["k"] == K
    assert info["training_weight"] == n
    assert exact_cost(blobs, agg.version("history", 1).centers) <= 1.05 * batch_cost(blobs, K)
    order = np.lexsort(fitted.centers.T[::-1])           # first publish: lexicographic labels
    np.testing.assert_allclose(agg.version("history", 1).centers, fitted.centers[order],
                               rtol=1e-6)


def test_publish_the_centres_themselves_in_process(tmp_path, fitted, blobs):
    from edgekm.sync.cloud.aggregator import Aggregator

    with Aggregator(tmp_path / "p.db", random_state=0) as agg:
        info = publish(fitted, agg, "offline")
        assert info["version"] == 1 and info["status"] == "active"
        assert info["training_weight"] == len(blobs)
        stored = agg.version("offline", 1)
        order = np.lexsort(fitted.centers.T[::-1])       # first publish: lexicographic labels
        np.testing.assert_allclose(stored.centers, fitted.centers[order], rtol=1e-6)
        assert stored.cluster_weights.sum() == len(blobs)
        # a second offline fit becomes a candidate, labels matched to the first
        assert publish(fitted, agg, "offline")["status"] == "candidate"
        with pytest.raises(ValueError, match="features"):
            agg.publish_centers("offline", np.zeros((2, 3)))


def test_push_seed_in_process_and_frame_limits(tmp_path, fitted):
    from edgekm.sync.cloud.aggregator import Aggregator

    with Aggregator(tmp_path / "s.db", random_state=0) as agg:
        agg.add_device("offline-fit")
        # 4 features of float64 + a weight: 40 bytes a point
        out = push_seed(fitted, agg, "m", "offline-fit", max_frame_bytes=512 + 40 * 100)
        assert out["frames"] == -(-len(fitted.coreset) // 100) and out["accepted"] == out["frames"]
        assert agg.total_weight("m") == fitted.n_samples
    with pytest.raises(ValueError, match="cannot hold one point"):
        push_seed(fitted, agg, "m", "offline-fit", max_frame_bytes=520)
    with pytest.raises(ValueError, match="model"):
        push_seed(fitted, agg, "../m", "offline-fit")


# ---------------------------------------------------------------- imports and docs


def test_import_edgekm_does_not_import_dask():
    code = ("import sys, edgekm, edgekm.sync, edgekm.sync.device.agent; "
            "print(sorted(m for m in ('dask', 'distributed', 'pandas', 'edgekm.dask') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    # and edgekm.dask itself gets the real dask, not itself
    assert edask.dask.__name__ == "dask" and hasattr(edask.dask, "delayed")


def test_missing_dask_says_how_to_install():
    code = ("import sys; sys.modules['dask'] = None\n"
            "try:\n    import edgekm.dask\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "install edgekm[dask]" in out.stdout


def test_doctest():
    failed, attempted = doctest.testmod(edask, verbose=False, report=True)
    assert attempted > 0 and failed == 0
