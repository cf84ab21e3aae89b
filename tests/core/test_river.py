"""The river API: ``edgekm.river.StreamingKMeans`` passes river's own checks and works
in a river pipeline.

river's ``check_estimator`` yields its dataset checks (learn_one purity, pickling,
shuffled features, seeding, memory growth, ...) only for the kinds of model it has
datasets for, and clusterers are not among them.  So after ``check_estimator``, the
dataset checks run here explicitly on a numeric stream, skipping only what
``_unit_test_skips`` declares, as ``check_estimator`` does.
"""

import copy
import itertools

import numpy as np
import pytest

river = pytest.importorskip("river")

from river import checks, compose, datasets, preprocessing  # noqa: E402
from river.checks import common  # noqa: E402

import edgekm  # noqa: E402
from edgekm.river import StreamingKMeans  # noqa: E402

PARAMS = list(StreamingKMeans._unit_test_params())

#: river's dataset checks, in the order river's yield_checks lists them
DATASET_CHECKS = [
    common.check_learn_one, common.check_pickling, common.check_shuffle_features_no_impact,
    common.check_emerging_features, common.check_disappearing_features,
    common.check_radically_disappearing_features, common.check_predict_one_pure,
    common.check_predict_one_before_any_learn, common.check_no_state_aliasing_with_input,
    common.check_clone_is_independent, common.check_seeding_is_idempotent,
    common.check_bounded_memory_growth,
]


def _stream(n=200):
    """TrumpApproval's numeric features, the stream river's checks use for regressors."""
    return list(itertools.islice(datasets.TrumpApproval(), n))


@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_river_check_estimator(params):
    checks.check_estimator(StreamingKMeans(**params))


@pytest.mark.parametrize("params", PARAMS, ids=str)
@pytest.mark.parametrize("check", DATASET_CHECKS, ids=lambda c: c.__name__)
def test_river_dataset_checks(params, check):
    model = StreamingKMeans(**params)
    if check.__name__ in model._unit_test_skips():
        pytest.skip("declared in _unit_test_skips: a fixed-dimension structure")
    check(model.clone(), _stream())


@pytest.mark.parametrize("check", [common.check_emerging_features,
                                   common.check_disappearing_features,
                                   common.check_radically_disappearing_features],
                         ids=lambda c: c.__name__)
def test_skipped_checks_fail_with_the_clear_error(check):
    """What the skips stand for: the structure refuses a dict whose keys changed."""
    with pytest.raises(ValueError, match="cannot take emerging or disappearing features"):
        check(StreamingKMeans(n_clusters=3, seed=0), _stream())


def test_skips_are_exactly_the_feature_set_checks():
    assert StreamingKMeans()._unit_test_skips() == {
        "check_emerging_features", "check_disappearing_features",
        "check_radically_disappearing_features"}


def test_in_a_river_pipeline_matches_the_core_estimator():
    stream = _stream()
    pipe = preprocessing.StandardScaler() | StreamingKMeans(n_clusters=3, seed=5)
    assert isinstance(pipe, compose.Pipeline)
    scaler, core = preprocessing.StandardScaler(), edgekm.StreamingKMeans(3, random_state=5)
    for x, _ in stream:
        assert pipe.predict_one(x) == (core.predict_one(scaler.transform_one(x))
                                       if getattr(core, "n_features_in_", 0)
                                       and core.n_seen_ >= 3 else 0)
        pipe.learn_one(x)
        scaler.learn_one(x)
        core.learn_one(scaler.transform_one(x))
    adapter = pipe["StreamingKMeans"]
    np.testing.assert_array_equal(adapter.model_.cluster_centers_, core.cluster_centers_)
    assert adapter.model_.feature_names_in_.tolist() == sorted(stream[0][0])
    centers = adapter.centers
    assert sorted(centers) == [0, 1, 2]
    assert list(centers[0]) == sorted(stream[0][0])
    np.testing.assert_array_equal([list(c.values()) for c in centers.values()],
                                  core.cluster_centers_.astype(float))


def test_predict_one_answers_zero_until_there_are_centres():
    model = StreamingKMeans(n_clusters=3, seed=0)
    x = {"a": 1.0, "b": 2.0}
    assert model.predict_one(x) == 0 and model.model_ is not None
    for i in range(3):
        model.learn_one({"a": float(i), "b": float(-i)})
    assert model.predict_one({"a": 2.0, "b": -2.0}) == model.model_.predict_one(np.array([2.0, -2.0]))


def test_learn_many_and_predict_many():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame([x for x, _ in _stream()])
    many, one = StreamingKMeans(n_clusters=3, seed=1), StreamingKMeans(n_clusters=3, seed=1)
    assert (many.predict_many(X) == 0).all()
    many.learn_many(X[sorted(X.columns)])
    for x in X.to_dict(orient="records"):
        one.learn_one(x)
    labels = many.predict_many(X)                    # columns by name, any order
    assert isinstance(labels, pd.Series) and labels.index.equals(X.index)
    assert labels.tolist() == [many.predict_one(x) for x in X.to_dict(orient="records")]
    assert set(labels) == {0, 1, 2}
    assert one.model_.n_seen_ == many.model_.n_seen_ == len(X)


def test_parameters_are_honoured_and_validated_on_first_learn():
    model = StreamingKMeans(n_clusters=4, algorithm="rcc", coreset_size=50, merge_degree=3,
                            nesting_depth=2, switch_threshold=1.5, n_init=2, max_iter=7,
                            max_levels=9, dtype=np.float64, seed=3)
    model.learn_one({"a": 1.0})
    params = model.model_.get_params()
    assert params.pop("random_state") == 3
    assert params == {k: v for k, v in model._get_params().items() if k != "seed"}
    bad = StreamingKMeans(n_clusters=0)
    assert bad.n_clusters == 0                       # stored as given
    with pytest.raises(ValueError, match="The 'n_clusters' parameter must be an int >= 1"):
        bad.learn_one({"a": 1.0})


def test_learn_one_does_not_keep_the_dict():
    model = StreamingKMeans(n_clusters=2, seed=0)
    x = {"a": 1.0, "b": 2.0}
    model.learn_one(x)
    x["a"] = 1e9
    model.learn_one({"a": 3.0, "b": 4.0})
    assert copy.deepcopy(model).model_.cluster_centers_.max() < 10
