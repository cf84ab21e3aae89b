"""Cloud-side merging: several devices upload coresets, the aggregator merges them.

Four devices each see a disjoint part of the bundled Shuttle data set (49,097
points, 9 features, cut in file order, so the devices see different mixes of
the data).  Each device summarises its points in fixed memory and uploads a
coreset frame every 4,000 points; the aggregator merges the frames of all
devices.  This is Observation 1 of Zhang, Tangwongsan and Tirthapura: the
union of coresets of disjoint sets is a coreset of the union, so the merged
aggregate stands for every point of every device, in bounded space.

The example then checks and shows:

- the aggregator's total weight equals the number of points the devices
  ingested, exactly (every frame merged once, retries deduplicated);
- the aggregate stays small (a few hundred weighted points for 49,097);
- a centroid version published from the aggregate costs, on the full data,
  about what the centres of one machine that saw all the data cost
  (its own coreset, and batch k-means on all points).

Run it with no arguments; it starts a real aggregator (``edgekm.sync.cloud.http.app``
under uvicorn) on a free loopback port in this process::

    python examples/cloud_merge.py

or use a running aggregator (``edgekm serve``, with an admin token) and
devices registered by ``edgekm devices add``::

    python examples/cloud_merge.py --server http://127.0.0.1:8750 --admin-token TOKEN \\
        --device dev-a:KEY_A --device dev-b:KEY_B

Needs the ``server`` extra (``pip install "edgekm[server]"``) for the
in-process aggregator.
"""

import argparse
import contextlib
import os
import sys
import tempfile

import numpy as np

import edgekm
from edgekm.datasets import load_shuttle
from edgekm.sync import DeviceAgent
from edgekm.exceptions import AnswerError
from edgekm.sync.device.client import SignedClient

MODEL = "shuttle"
N_DEVICES = 4
N_CLUSTERS = 10
BATCH = 1000                 # points a device reads at a time
SYNC_EVERY = 4000            # points between two uploads of a device


@contextlib.contextmanager
def local_aggregator(directory, admin_token):
    """An aggregator on a free loopback port, served by uvicorn in a thread.

    Yields ``(url, aggregator)``; stops the server and closes the database on exit.
    """
    from edgekm.sync import Aggregator
    from edgekm.sync.cloud.http import BackgroundServer, create_app

    with Aggregator(os.path.join(directory, "aggregator.db"), random_state=0) as aggregator:
        app = create_app(aggregator, admin_token=admin_token, policy_interval=None)
        with BackgroundServer(app) as server:
            yield server.url, aggregator


def admin(url, token, method, path, body=None):
    """Call an admin endpoint of the aggregator's HTTP API; returns the JSON answer."""
    return SignedClient(url, admin_token=token, timeout=30, proxies={}).call_json(
        method, path, body)


def model_weight(url, token):
    try:
        return admin(url, token, "GET", f"/v1/models/{MODEL}")["total_weight"]
    except AnswerError as exc:
        if exc.status == 404:
            return 0.0                           # created by the first frame
        raise


def run(url, token, devices, state_root):
    X = load_shuttle()
    shards = np.array_split(np.arange(len(X)), len(devices))
    weight_before = model_weight(url, token)

    agents = [DeviceAgent(url, MODEL, device, key, os.path.join(state_root, device),
                          n_clusters=N_CLUSTERS, random_state=i)
              for i, (device, key) in enumerate(devices)]
    uploaded = {device: 0 for device, _ in devices}
    try:
        # round robin: each device reads a batch in turn, as if they ran side by side
        for start in range(0, max(len(s) for s in shards), BATCH):
            for agent, shard in zip(agents, shards):
                rows = shard[start:start + BATCH]
                if len(rows):
                    agent.ingest(X[rows])
                    if (start + len(rows)) % SYNC_EVERY == 0 or start + BATCH >= len(shard):
                        report = agent.sync()
                        uploaded[agent.device_id] += report["uploaded"]
                        if report["error"]:
                            print(f"  {agent.device_id}: {report['error']}")
        for agent, shard in zip(agents, shards):
            s = agent.stats()
            print(f"device {agent.device_id}: {len(shard):,} points, {uploaded[agent.device_id]} "
                  f"frames uploaded, {s['weight_acked']:.0f} acknowledged, "
                  f"{s['pending']} pending")
    finally:
        for agent in agents:
            agent.close()

    info = admin(url, token, "GET", f"/v1/models/{MODEL}")
    merged = info["total_weight"] - weight_before
    print(f"\naggregator, model {MODEL!r}: {info['frames']} frames from {info['devices']} "
          f"devices merged into {info['buckets']} bucket(s) of at most 200 weighted points")
    print(f"total weight {merged:,.0f} == points ingested {len(X):,}: {merged == len(X)}")

    version = admin(url, token, "POST", f"/v1/models/{MODEL}/versions",
                    {"n_clusters": N_CLUSTERS, "random_state": 0})
    detail = admin(url, token, "GET", f"/v1/models/{MODEL}/versions/{version['version']}")
    print(f"published version {version['version']} ({version['status']}): k={version['k']}, "
          f"fitted on the merged aggregate of weight {version['training_weight']:,.0f}")
    fit = admin(url, token, "POST", f"/v1/models/{MODEL}/fit", {"n_clusters": N_CLUSTERS})
    print(f"the aggregate holds {fit['n_points']} weighted points standing for "
          f"{fit['total_weight']:,.0f}")

    # the same data on one machine: a streaming coreset, and batch k-means on every point
    everything = edgekm.Coreset(X)               # all points, weight 1: cost() is the true cost
    merged_cost = everything.cost(np.asarray(detail["centers"]))
    single = edgekm.StreamingKMeans(N_CLUSTERS, random_state=0).fit(X)
    single_centers, _, _ = single.coreset().fit_centers(N_CLUSTERS, random_state=0)
    single_cost = everything.cost(single_centers)
    batch_centers, _, batch_cost = everything.fit_centers(N_CLUSTERS, random_state=0)
    print("\nk-means cost on all 49,097 points (lower is better):")
    rows = [(f"merged from {len(devices)} devices (version {version['version']})", merged_cost),
            ("one machine, streaming coreset", single_cost),
            ("one machine, batch k-means (best of 10)", batch_cost)]
    for what, cost in rows:
        print(f"  {what:<42} {cost:.4g}  ({cost / batch_cost:.3f} x batch)")
    return 0 if merged == len(X) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", metavar="URL",
                        help="a running aggregator (default: start one in this process)")
    parser.add_argument("--admin-token", default=os.environ.get("EDGEKM_ADMIN_TOKEN"),
                        help="the aggregator's admin token, with --server (default: "
                        "$EDGEKM_ADMIN_TOKEN)")
    parser.add_argument("--device", action="append", metavar="ID:KEY", default=[],
                        help="a registered device and its hex key, with --server (repeat it)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.server:
            if not args.admin_token or not args.device:
                parser.error("--server needs --admin-token and at least one --device ID:KEY")
            devices = [tuple(d.split(":", 1)) for d in args.device]
            if any(len(d) != 2 for d in devices):
                parser.error("--device takes ID:KEY")
            print(f"aggregator: {args.server}")
            return run(args.server, args.admin_token, devices, tmp)
        token = "example-admin-token"
        with local_aggregator(tmp, token) as (url, aggregator):
            # what `edgekm devices add` does, once per device
            devices = [(f"dev-{i}", aggregator.add_device(f"dev-{i}")) for i in range(N_DEVICES)]
            print(f"aggregator: started in this process at {url}; {N_DEVICES} devices registered")
            return run(url, token, devices, tmp)


if __name__ == "__main__":
    sys.exit(main())
