"""StreamingKMeans in a scikit-learn pipeline: StandardScaler, then streaming k-means.

:class:`edgekm.StreamingKMeans` follows scikit-learn's estimator protocol
(``get_params``/``set_params``, ``fit``, ``predict``, ``transform``,
``score``) without depending on scikit-learn, so it works in a
:class:`~sklearn.pipeline.Pipeline`, with :func:`~sklearn.base.clone` and in
a grid search.  Here the Shuttle features, whose scales differ by orders of
magnitude, are standardised first, so that no single feature dominates the
distances.

The example fits ``make_pipeline(StandardScaler(), StreamingKMeans(...))`` on
40,000 points of the bundled Shuttle data set, predicts the clusters of the
other 9,097, and compares the clustering with scikit-learn's
:class:`~sklearn.cluster.KMeans` on the same pipeline (adjusted Rand index
and k-means cost in the scaled space).  Then it selects the number of
clusters with :class:`~sklearn.model_selection.GridSearchCV`, scored by the
pipeline's ``score`` (minus the k-means cost, as scikit-learn's KMeans).

scikit-learn is not a dependency of edgekm; install it to run this example::

    pip install scikit-learn
    python examples/sklearn_pipeline.py

Without scikit-learn it says so and exits with status 2.
"""

import sys

import numpy as np

from edgekm import StreamingKMeans
from edgekm.datasets import load_shuttle

try:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError:
    print("This example needs scikit-learn, which edgekm does not install:\n"
          "    pip install scikit-learn", file=sys.stderr)
    sys.exit(2)

N_CLUSTERS = 8


def main():
    X = load_shuttle()
    order = np.random.default_rng(0).permutation(len(X))
    X_train, X_new = X[order[:40_000]], X[order[40_000:]]

    pipe = make_pipeline(StandardScaler(),
                         StreamingKMeans(n_clusters=N_CLUSTERS, algorithm="cc", random_state=0))
    pipe.fit(X_train)
    labels = pipe.predict(X_new)
    est = pipe.named_steps["streamingkmeans"]
    print(pipe)
    print(f"fitted on {X_train.shape[0]:,} points in {est.memory_bytes:,} bytes of fixed memory; "
          f"predicted {len(labels):,} new points")
    print("new points per cluster:", np.bincount(labels, minlength=N_CLUSTERS).tolist())

    batch = make_pipeline(StandardScaler(), KMeans(n_clusters=N_CLUSTERS, n_init=10,
                                                   random_state=0))
    batch.fit(X_train)
    ari = adjusted_rand_score(batch.predict(X_new), labels)
    stream_cost, batch_cost = -pipe.score(X_new), -batch.score(X_new)
    print(f"k-means cost of the new points (scaled): StreamingKMeans {stream_cost:.1f}, "
          f"sklearn KMeans {batch_cost:.1f} ({stream_cost / batch_cost:.3f} x)")
    print(f"agreement with sklearn KMeans (adjusted Rand index, 1 = same partition): {ari:.3f}")

    # the k-means cost always falls as k grows, so the grid search picks the largest k:
    # this shows the protocol (clone, set_params, score), not a way to choose k
    search = GridSearchCV(pipe, {"streamingkmeans__n_clusters": [4, 8, 12]}, cv=3)
    search.fit(X_train)
    print("grid search over n_clusters (mean score = minus the cost of held-out folds):")
    for k, score in zip(search.cv_results_["param_streamingkmeans__n_clusters"],
                        search.cv_results_["mean_test_score"]):
        print(f"  n_clusters={k:>2}: {score:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
