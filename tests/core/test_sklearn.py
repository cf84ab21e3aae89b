"""scikit-learn compatibility: the common estimator checks, pipelines and clone().

``StreamingKMeans`` does not inherit from scikit-learn (scikit-learn is not a
runtime dependency); it implements the protocol (get_params, set_params,
``__sklearn_tags__``, ``__sklearn_is_fitted__``) itself.  The checks below run
for every algorithm.
"""

import warnings
from functools import partial

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone, is_clusterer  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import estimator_checks  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from edgekm import StreamingKMeans  # noqa: E402

ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")

ESTIMATORS = [StreamingKMeans(algorithm=a, random_state=0) for a in ALGORITHMS]

#: Checks that fail for every algorithm, each with the reason it cannot apply.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "Inapplicable by design: the check draws weights in 0..4 and emulates weight 0 by "
        "dropping rows, and StreamingKMeans refuses zero weights (every weight must be "
        "finite and > 0). Beyond that, a seeded k-means on shuffled weighted rows is not "
        "expected to find the same local optimum as on repeated rows: scikit-learn xfails "
        "this check for its own KMeans, MiniBatchKMeans and BisectingKMeans for that "
        "reason; sequential k-means also seeds from the first n_clusters rows, which "
        "repetition changes."),
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


with warnings.catch_warnings():
    # Collecting the checks warns that the estimator does not inherit from
    # BaseEstimator, which is deliberate (no runtime dependency on scikit-learn).
    warnings.filterwarnings("ignore", message="Estimator StreamingKMeans does not inherit",
                            category=UserWarning)
    _CHECKS = parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks,
                                      xfail_strict=True)


@_CHECKS
def test_sklearn_common_checks(estimator, check):
    check(estimator)


# The clustering checks are only collected for ClusterMixin subclasses; run them
# explicitly, since StreamingKMeans is a clusterer without inheriting the mixin.
CLUSTERING_CHECKS = {
    "check_clusterer_compute_labels_predict":
        estimator_checks.check_clusterer_compute_labels_predict,
    "check_clustering": estimator_checks.check_clustering,
    "check_clustering_readonly_memmap": partial(estimator_checks.check_clustering,
                                                readonly_memmap=True),
    "check_estimators_partial_fit_n_features":
        estimator_checks.check_estimators_partial_fit_n_features,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("check_name", sorted(CLUSTERING_CHECKS))
def test_sklearn_clustering_checks(algorithm, check_name):
    CLUSTERING_CHECKS[check_name]("StreamingKMeans",
                                  StreamingKMeans(algorithm=algorithm, random_state=0))


# scikit-learn runs its feature-name and output-container checks only in its own
# test suite (check_estimator does not yield them): run them here.  The polars
# variants skip themselves when polars is not installed.
FEATURE_NAME_CHECKS = {name: getattr(estimator_checks, name) for name in (
    "check_dataframe_column_names_consistency",
    "check_get_feature_names_out_error",
    "check_transformer_get_feature_names_out",
    "check_transformer_get_feature_names_out_pandas",
    "check_set_output_transform",
    "check_set_output_transform_pandas",
    "check_global_output_transform_pandas",
    "check_set_output_transform_polars",
    "check_global_set_output_transform_polars",
)}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("check_name", sorted(FEATURE_NAME_CHECKS))
def test_sklearn_feature_name_and_output_checks(algorithm, check_name):
    with warnings.catch_warnings():
        # The output checks fit on a DataFrame and transform an array (and the
        # reverse), where scikit-learn's own KMeans warns the same way.
        warnings.filterwarnings("ignore", category=UserWarning,
                                message="X (does not have valid|has) feature names")
        FEATURE_NAME_CHECKS[check_name]("StreamingKMeans",
                                        StreamingKMeans(algorithm=algorithm, random_state=0))


def test_is_a_clusterer_for_sklearn():
    assert is_clusterer(StreamingKMeans())


# ---------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=600, centers=[[0, 0, 0], [40, 40, 40], [-40, 40, 0]],
                      cluster_std=[1.0, 2.0, 3.0], random_state=0)
    X = X * np.array([1.0, 100.0, 0.01])       # very different feature scales
    return X, y


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pipeline_with_standard_scaler(blobs, algorithm):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), StreamingKMeans(3, algorithm=algorithm,
                                                           random_state=0))
    assert pipe.fit(X) is pipe
    labels = pipe.predict(X)
    assert labels.shape == (len(X),) and labels.dtype == np.int32
    # The pipeline is exactly "scale, then cluster".
    Z = StandardScaler().fit_transform(X)
    alone = StreamingKMeans(3, algorithm=algorithm, random_state=0).fit(Z)
    np.testing.assert_array_equal(pipe[-1].cluster_centers_, alone.cluster_centers_)
    np.testing.assert_array_equal(labels, alone.predict(Z))
    np.testing.assert_array_equal(pipe[-1].labels_, alone.labels_)
    if algorithm != "sequential":      # sequential k-means has no quality guarantee
        assert adjusted_rand_score(y, labels) == 1.0
    assert pipe.transform(X).shape == (len(X), 3)
    assert pipe.score(X) <= 0.0


def test_pipeline_set_params_and_clone(blobs):
    X, _ = blobs
    pipe = Pipeline([("scale", StandardScaler()),
                     ("km", StreamingKMeans(3, algorithm="cc", random_state=0))])
    pipe.set_params(km__n_clusters=4, km__algorithm="ct")
    assert pipe.named_steps["km"].get_params()["n_clusters"] == 4
    fitted = pipe.fit(X)
    assert fitted["km"].cluster_centers_.shape == (4, 3)
    copy = clone(pipe)
    assert not hasattr(copy["km"], "n_features_in_")
    np.testing.assert_array_equal(copy.fit(X).predict(X), pipe.predict(X))


def test_pipeline_partial_fit_of_last_step(blobs):
    X, _ = blobs
    scaler = StandardScaler().fit(X)
    model = StreamingKMeans(3, random_state=0)
    for batch in np.array_split(X, 6):
        model.partial_fit(scaler.transform(batch))
    assert model.n_seen_ == len(X)
    assert model.n_features_in_ == 3


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clone(blobs, algorithm):
    X, _ = blobs
    rs = np.random.RandomState(3)
    model = StreamingKMeans(5, algorithm=algorithm, coreset_size=60, merge_degree=3,
                            nesting_depth=2, switch_threshold=1.5, n_init=2, max_iter=7,
                            max_levels=9, dtype=np.float64, random_state=rs)
    model.fit(X)
    copy = clone(model)
    assert type(copy) is StreamingKMeans
    params, copy_params = model.get_params(), copy.get_params()
    assert params.keys() == copy_params.keys()
    for name, value in params.items():
        if name == "random_state":
            # clone deep-copies a RandomState: same state, different object
            assert copy_params[name] is not value
            assert isinstance(copy_params[name], np.random.RandomState)
        else:
            assert copy_params[name] == value, name
    # the clone is unfitted
    assert not hasattr(copy, "n_features_in_")
    assert not hasattr(copy, "labels_")
    assert copy.memory_bytes == 0
    assert not hasattr(copy, "cluster_centers_")


def test_clone_with_int_seed_gives_the_same_model(blobs):
    X, _ = blobs
    model = StreamingKMeans(3, algorithm="rcc", random_state=11).fit(X)
    copy = clone(model).fit(X)
    np.testing.assert_array_equal(model.cluster_centers_, copy.cluster_centers_)
    np.testing.assert_array_equal(model.labels_, copy.labels_)
