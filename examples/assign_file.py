"""Offline assignment of a file to a published centroid version, with anomaly scores.

A centroid version is what the aggregator publishes and devices download: the
centres, the weight of each cluster and, per cluster, the 50th, 95th and 99th
percentiles of the squared distance of its points (the anomaly thresholds).
Once a device or an analyst has the version document, assignment needs no
network and no aggregator: :class:`edgekm.Assigner` gives each point its
label, its squared distance to the centre and its anomaly score (the squared
distance over the cluster's 99th percentile: above 1 is unusual).

The example:

1. fits a :class:`edgekm.StreamingKMeans` on 40,000 points of the bundled
   Shuttle data set and publishes its coreset as version 1 on an aggregator
   database in a temporary directory (no server: :class:`edgekm.sync.Aggregator`
   alone), then writes the version document, byte for byte what devices
   download, to ``version.msgpack``;
2. writes the other 9,097 points to ``readings.csv``, as a file that arrived
   later;
3. decodes the version file, assigns ``readings.csv`` batch by batch with
   :class:`edgekm.Assigner`, and writes ``assigned.csv`` with the columns
   label, sqdist, score and version;
4. compares the points it flags (score > 1) with Shuttle's anomaly labels,
   which the assignment never saw, and checks that ``edgekm assign`` (the
   command line) writes the same file.

Run it with no arguments (``--keep DIR`` keeps the files in DIR)::

    python examples/assign_file.py

The aggregator database needs the ``server`` extra (scipy, for the stable
labels of published versions); the assignment itself needs only numpy and
msgpack.
"""

import argparse
import csv
import filecmp
import os
import sys
import tempfile
import time

import numpy as np

import edgekm
from edgekm.cli import main as edgekm_cli
from edgekm.datasets import load_array, load_shuttle
from edgekm.sync import Aggregator, encode_frame
from edgekm.sync.wire.version import decode_version

N_CLUSTERS = 10
N_TRAIN = 40_000
BATCH = 4096


def publish_version(X_train, directory):
    """Fit on X_train, publish the fit as version 1 and return the version document (bytes)."""
    est = edgekm.StreamingKMeans(N_CLUSTERS, random_state=0)
    for start in range(0, len(X_train), 1000):
        est.partial_fit(X_train[start:start + 1000])
    summary = est.coreset()          # the weighted points a query solves on
    print(f"fitted StreamingKMeans on {est.n_seen_:,.0f} points; its coreset has "
          f"{len(summary)} weighted points")
    with Aggregator(os.path.join(directory, "aggregator.db"), random_state=0) as agg:
        agg.add_device("trainer")
        body = encode_frame(model="shuttle", device="trainer", boot=1, seq=0,
                            span=(0, len(X_train) - 1), points=summary.points,
                            weights=summary.weights, level=summary.level, created=time.time())
        agg.accept("shuttle", "trainer", body)
        version = agg.publish("shuttle", N_CLUSTERS, random_state=0)
        document, digest = agg.version_body("shuttle", version)
    print(f"published version {version} (digest {digest[:12]}...)")
    return document


def assign_file(version_path, csv_path, out_path):
    """Assign every row of csv_path to the version in version_path; write out_path."""
    with open(version_path, "rb") as fh:
        version = decode_version(fh.read())        # checks the digest inside
    assigner = edgekm.Assigner(version)
    X = load_array(csv_path, dtype=version.centers.dtype.type)   # the header line is skipped
    counts = np.zeros(version.n_clusters, dtype=np.int64)
    scores = np.empty(len(X))
    with open(out_path, "w", encoding="ascii", newline="") as out:
        out.write("label,sqdist,score,version\n")
        for start in range(0, len(X), BATCH):
            r = assigner.assign(X[start:start + BATCH])
            counts += np.bincount(r.labels, minlength=version.n_clusters)
            scores[start:start + len(r.labels)] = r.scores
            out.writelines(f"{label},{d!r},{s!r},{r.version}\n" for label, d, s in
                           zip(r.labels.tolist(), r.distances.tolist(), r.scores.tolist()))
    return version, counts, scores


def run(directory):
    X, y = load_shuttle(return_labels=True)
    order = np.random.default_rng(0).permutation(len(X))
    train, later = order[:N_TRAIN], order[N_TRAIN:]

    version_path = os.path.join(directory, "version.msgpack")
    with open(version_path, "wb") as fh:
        fh.write(publish_version(X[train], directory))

    csv_path = os.path.join(directory, "readings.csv")
    with open(csv_path, "w", encoding="ascii", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"x{j}" for j in range(X.shape[1])])
        writer.writerows(X[later].tolist())

    out_path = os.path.join(directory, "assigned.csv")
    version, counts, scores = assign_file(version_path, csv_path, out_path)
    print(f"assigned {len(later):,} rows of readings.csv to version {version.version} "
          f"-> {out_path}")
    print("points per cluster: " + " ".join(f"{c}:{n}" for c, n in enumerate(counts.tolist())))

    flagged = scores > 1.0
    truth = y[later] == 1
    hits = int((flagged & truth).sum())
    print(f"score > 1 (beyond the cluster's 99th percentile): {int(flagged.sum())} points; "
          f"{hits} of them are Shuttle anomalies (precision {hits / max(1, flagged.sum()):.2f}, "
          f"recall {hits / max(1, truth.sum()):.2f} of {int(truth.sum())})")
    with open(out_path, encoding="ascii") as fh:
        print("first rows of assigned.csv:\n  " + "  ".join(fh.readline() for _ in range(4)),
              end="")

    cli_out = os.path.join(directory, "assigned_by_cli.csv")
    status = edgekm_cli(["assign", "--version", version_path, csv_path, "-o", cli_out,
                         "--no-progress"])
    same = status == 0 and filecmp.cmp(out_path, cli_out, shallow=False)
    print(f"`edgekm assign --version version.msgpack readings.csv -o ...` wrote the same file: "
          f"{same}")
    return 0 if same else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="write the files to DIR and keep them")
    args = parser.parse_args(argv)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        return run(args.keep)
    with tempfile.TemporaryDirectory() as tmp:
        return run(tmp)


if __name__ == "__main__":
    sys.exit(main())
