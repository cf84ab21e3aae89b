"""Named features on StreamingKMeans: DataFrames (scikit-learn's rules), dicts (river's
``learn_one``/``predict_one``), ``learn_many``/``predict_many``, ``set_output``,
``get_feature_names_out``, ``score_samples`` and the not-fitted error under scikit-learn."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import edgekm
from edgekm import StreamingKMeans

pd = pytest.importorskip("pandas")

NAMES = ["temp", "humidity", "pressure"]


def _frame(n=300, seed=0, columns=NAMES):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 0.2, size=(n // 3, len(columns))) for c in (0, 5, 10)])
    return pd.DataFrame(rng.permutation(X), columns=columns,
                        index=[f"row{i}" for i in range(len(X))])


def _model(**kw):
    return StreamingKMeans(3, random_state=0, **kw)


# ---------------------------------------------------------------- not fitted


def test_not_fitted_error_is_caught_as_sklearns():
    sklearn_exceptions = pytest.importorskip("sklearn.exceptions")
    X = np.zeros((2, 3))
    for call in (lambda m: m.predict(X), lambda m: m.transform(X),
                 lambda m: m.score_samples(X), lambda m: m.cluster_centers_,
                 lambda m: m.get_feature_names_out(), lambda m: m.predict_one(X[0])):
        with pytest.raises(sklearn_exceptions.NotFittedError) as info:
            call(_model())
        err = info.value
        assert isinstance(err, (edgekm.NotFittedError, ValueError, AttributeError,
                                edgekm.EdgekmError))
        assert "n_clusters=3" in str(err)
        again = pickle.loads(pickle.dumps(err))
        assert isinstance(again, sklearn_exceptions.NotFittedError)
        assert isinstance(again, edgekm.NotFittedError) and again.args == err.args
    # one subclass, created once
    assert type(edgekm.NotFittedError("a")) is type(edgekm.NotFittedError("b"))


def test_not_fitted_error_without_sklearn_imports_nothing():
    code = (
        "import sys, edgekm\n"
        "try:\n"
        "    edgekm.StreamingKMeans(2).predict([[0.0]])\n"
        "except edgekm.NotFittedError as err:\n"
        "    assert type(err) is edgekm.NotFittedError, type(err).__mro__\n"
        "assert not {'sklearn', 'pandas', 'river'} & set(sys.modules)\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ---------------------------------------------------------------- DataFrames


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_feature_names_in_from_a_dataframe(method):
    df = _frame()
    model = getattr(_model(), method)(df)
    assert model.n_features_in_ == 3
    assert isinstance(model.feature_names_in_, np.ndarray)
    assert model.feature_names_in_.dtype == object
    assert model.feature_names_in_.tolist() == NAMES
    np.testing.assert_array_equal(model.predict(df), _model().fit(df.to_numpy()).predict(df.to_numpy()))


def test_non_string_column_names_are_not_feature_names():
    model = _model().fit(pd.DataFrame(_frame().to_numpy()))     # columns 0, 1, 2
    assert not hasattr(model, "feature_names_in_")
    with pytest.raises(TypeError, match="only supported if all input features have string"):
        _model().fit(pd.DataFrame(_frame().to_numpy(), columns=["a", 1, "c"]))


@pytest.mark.parametrize("columns, message", [
    (NAMES[::-1], "Feature names must be in the same order as they were in fit."),
    (["temp", "humidity", "wind"], "Feature names unseen at fit time:\n- wind\n"
                                   "Feature names seen at fit time, yet now missing:\n- pressure\n"),
])
def test_a_dataframe_with_other_columns_is_refused(columns, message):
    df = _frame()
    model = _model().fit(df)
    before = model.cluster_centers_.copy(), model.n_seen_
    bad = df.set_axis(columns, axis=1)
    for method in ("predict", "transform", "score_samples", "score", "partial_fit"):
        with pytest.raises(ValueError, match="The feature names should match") as info:
            getattr(model, method)(bad)
        assert message in str(info.value)
    np.testing.assert_array_equal(model.cluster_centers_, before[0])
    assert model.n_seen_ == before[1]


def test_a_dataframe_with_missing_columns_is_refused():
    df = _frame()
    model = _model().fit(df)
    with pytest.raises(ValueError, match="yet now missing:\n- pressure\n"):
        model.predict(df[["temp", "humidity"]])


def test_arrays_and_dataframes_mixed_warn_as_in_sklearn():
    df = _frame()
    named = _model().fit(df)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but "
                                         "StreamingKMeans was fitted with feature names"):
        named.predict(df.to_numpy())
    plain = _model().fit(df.to_numpy())
    with pytest.warns(UserWarning, match="X has feature names, but StreamingKMeans was "
                                         "fitted without feature names"):
        plain.predict(df)
    # refitting on an array forgets the names
    assert not hasattr(named.fit(df.to_numpy()), "feature_names_in_")


def test_a_refused_first_batch_records_no_names():
    bad = _frame()
    bad.iloc[4, 1] = np.nan
    model = _model()
    with pytest.raises(ValueError, match="NaN"):
        model.partial_fit(bad)
    assert not hasattr(model, "feature_names_in_") and not hasattr(model, "n_features_in_")


# ---------------------------------------------------------------- outputs


def test_get_feature_names_out():
    df = _frame()
    model = _model().fit(df)
    expected = ["streamingkmeans0", "streamingkmeans1", "streamingkmeans2"]
    out = model.get_feature_names_out()
    assert out.dtype == object and out.tolist() == expected
    assert model.get_feature_names_out(NAMES).tolist() == expected
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        model.get_feature_names_out(["a", "b", "c"])
    plain = _model().fit(df.to_numpy())
    with pytest.raises(ValueError, match=r"length equal to number of features \(3\), got 2"):
        plain.get_feature_names_out(["a", "b"])


def test_set_output_pandas():
    df = _frame()
    model = _model().set_output(transform="pandas")
    Z = model.fit_transform(df)
    assert isinstance(Z, pd.DataFrame)
    assert Z.columns.tolist() == model.get_feature_names_out().tolist()
    assert Z.index.equals(df.index)
    np.testing.assert_array_equal(Z.to_numpy(), model.set_output(transform="default")
                                  .transform(df))
    # an array input gets a default index; None keeps the choice
    model.set_output(transform="pandas").set_output(transform=None)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        Z = model.transform(df.to_numpy()[:5])
    assert isinstance(Z, pd.DataFrame) and Z.index.tolist() == list(range(5))
    # predict and score_samples are not transforms
    assert isinstance(model.predict(df), np.ndarray)
    assert isinstance(model.score_samples(df), np.ndarray)


def test_set_output_refuses_an_unknown_container():
    with pytest.raises(ValueError, match="The 'transform' parameter must be one of "
                                         "'default', 'pandas', 'polars'; got 'arrow'"):
        _model().set_output(transform="arrow")


def test_set_output_in_a_sklearn_pipeline_and_clone():
    sklearn_base = pytest.importorskip("sklearn.base")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = _frame()
    pipe = make_pipeline(StandardScaler(), _model()).set_output(transform="pandas")
    Z = pipe.fit_transform(df)
    assert isinstance(Z, pd.DataFrame) and Z.index.equals(df.index)
    assert pipe[-1].feature_names_in_.tolist() == NAMES     # the scaler passes names on
    copy = sklearn_base.clone(pipe[-1])
    assert isinstance(copy.fit_transform(df), pd.DataFrame)


def test_global_transform_output_config():
    sklearn = pytest.importorskip("sklearn")
    df = _frame()
    model = _model().fit(df)
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(model.transform(df), pd.DataFrame)
        assert isinstance(model.set_output(transform="default").transform(df), np.ndarray)


# ---------------------------------------------------------------- score_samples


def test_score_samples_is_the_negative_squared_distance():
    df = _frame()
    model = _model(dtype=np.float64).fit(df)
    X = df.to_numpy()
    scores = model.score_samples(df)
    assert scores.shape == (len(X),) and scores.dtype == np.float64
    assert (scores <= 0).all()
    sq = ((X[:, None, :] - model.cluster_centers_[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(scores, -sq.min(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scores.sum(), model.score(df), rtol=1e-9)
    np.testing.assert_allclose(scores, -model.transform(df).min(axis=1) ** 2, rtol=1e-9,
                               atol=1e-12)


# ---------------------------------------------------------------- dicts (river's API)


def _rows(df):
    return df.to_dict(orient="records")


def test_learn_one_dict_takes_the_keys_sorted():
    df = _frame()
    by_dict, by_array = _model(), _model()
    for row in _rows(df):
        by_dict.learn_one(row)
    for x in df[sorted(NAMES)].to_numpy():
        by_array.learn_one(x)
    assert by_dict.feature_names_in_.tolist() == sorted(NAMES)
    np.testing.assert_array_equal(by_dict.cluster_centers_, by_array.cluster_centers_)
    for row, x in zip(_rows(df), df[sorted(NAMES)].to_numpy()):
        label = by_dict.predict_one(row)
        assert isinstance(label, int) and label == by_array.predict_one(x)


def test_learn_one_dict_order_does_not_matter():
    df = _frame()
    rng = np.random.default_rng(1)
    a, b = _model(), _model()
    for row in _rows(df):
        a.learn_one(row)
        keys = list(row)
        rng.shuffle(keys)
        b.learn_one({key: row[key] for key in keys})
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_dicts_follow_the_columns_of_a_dataframe():
    df = _frame()
    model = _model().fit(df)      # columns in NAMES order, not sorted
    row = _rows(df)[7]
    assert model.predict_one(row) == model.predict(df.iloc[[7]])[0]
    model.learn_one(row)
    assert model.n_seen_ == len(df) + 1


@pytest.mark.parametrize("row, message", [
    ({"temp": 1.0, "humidity": 2.0, "pressure": 3.0, "wind": 4.0}, r"new key\(s\) \['wind'\]"),
    ({"temp": 1.0, "humidity": 2.0}, r"missing key\(s\) \['pressure'\]"),
    ({"temp": 1.0, "humidity": 2.0, "wind": 4.0},
     r"new key\(s\) \['wind'\]; missing key\(s\) \['pressure'\]"),
])
def test_a_new_or_missing_key_is_a_clear_error(row, message):
    model = _model()
    for r in _rows(_frame())[:10]:
        model.learn_one(r)
    seen = model.n_seen_
    for method in ("learn_one", "predict_one"):
        with pytest.raises(ValueError, match=message) as info:
            getattr(model, method)(row)
        assert "cannot take emerging or disappearing features" in str(info.value)
        assert "['humidity', 'pressure', 'temp']" in str(info.value)
    assert model.n_seen_ == seen


def test_bad_dicts():
    model = _model()
    with pytest.raises(TypeError, match="comparable"):
        model.learn_one({"a": 1.0, 2: 3.0})
    with pytest.raises(ValueError, match="NaN"):
        model.learn_one({"a": float("nan"), "b": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        model.learn_one({"a": None, "b": 1.0})
    with pytest.raises(ValueError, match="numbers only"):
        model.learn_one({"a": "warm", "b": 1.0})
    assert not hasattr(model, "n_features_in_") and not hasattr(model, "feature_names_in_")
    plain = _model().fit(_frame().to_numpy())
    with pytest.raises(ValueError, match="fitted without feature names; pass a 1-D array"):
        plain.learn_one({"temp": 1.0, "humidity": 2.0, "pressure": 3.0})


def test_non_string_keys_map_columns_but_are_no_feature_names():
    model = _model()
    for x in _frame().to_numpy():
        model.learn_one({2: x[2], 0: x[0], 1: x[1]})
    assert model.n_features_in_ == 3 and not hasattr(model, "feature_names_in_")
    assert model.predict_one({0: 0.0, 1: 0.0, 2: 0.0}) == model.predict_one(np.zeros(3))


# ---------------------------------------------------------------- learn_many / predict_many


def test_learn_many_takes_columns_by_name():
    df = _frame()
    a, b = _model(), _model()
    for i, batch in enumerate(df.iloc[j:j + 60] for j in range(0, len(df), 60)):
        assert a.learn_many(batch) is None
        b.learn_many(batch if i == 0 else batch[NAMES[::-1]])   # the first fixes the order
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    labels = a.predict_many(df[["pressure", "temp", "humidity"]])
    assert isinstance(labels, pd.Series) and labels.index.equals(df.index)
    np.testing.assert_array_equal(labels.to_numpy(), a.predict(df))
    assert [a.predict_one(row) for row in _rows(df)] == labels.tolist()
    with pytest.raises(ValueError, match=r"X must have exactly .*new key\(s\) \['wind'\]"):
        a.learn_many(df.assign(wind=1.0))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['temp'\]"):
        a.predict_many(df[["humidity", "pressure"]])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        assert isinstance(a.predict_many(df.to_numpy()), np.ndarray)


def test_nothing_warns_on_the_river_path():
    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = _model()
        model.learn_many(df)
        for row in _rows(df)[:20]:
            model.learn_one(row)
            model.predict_one(row)
        model.predict_many(df)
