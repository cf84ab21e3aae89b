"""On-device telemetry compression: a Raspberry-Pi-style agent reading a sensor CSV.

A smart-meter gateway reads one row a minute from a CSV file (four days of a
real household's electricity readings, shipped in ``examples/data``: see
``examples/data/README.md``), feeds each reading to an
:class:`edgekm.sync.DeviceAgent` and syncs twice a day.  The agent never
uploads the readings themselves:

1. Every sync uploads one *coreset frame*: a few dozen weighted points that
   summarise all the readings since the last sync (the aggregator merges the
   frames of every device and fits centroids on them).
2. After the first day the aggregator publishes a *centroid version*, the
   device pulls it, and from then on ``ingest`` also runs an
   :class:`edgekm.EdgeFilter`: each 3-hour window of readings is forwarded
   as a per-cluster summary (count, sum, sum of squares), its drift score,
   and the raw readings of the anomalies only (beyond their cluster's 99th
   percentile of distance).

At the end it prints the bytes uploaded against the bytes of the raw
readings, and checks that every reading is accounted for: the device's
acknowledged weight and the aggregator's merged weight both equal the number
of rows read.

Run it with no arguments; it starts a real aggregator (the Starlette app of
``edgekm.sync.cloud.http.app`` under uvicorn) on a free loopback port in this
process, in a temporary directory::

    python examples/device_telemetry.py

or point it at a running aggregator (``edgekm serve``), with a device
registered by ``edgekm devices add``::

    python examples/device_telemetry.py --server http://127.0.0.1:8750 \\
        --device pi-kitchen --key HEX [--admin-token TOKEN]

The admin token (default: the ``EDGEKM_ADMIN_TOKEN`` environment variable)
lets the example publish the centroid version and read the aggregator's
totals; without it the device uses whatever version the aggregator serves.
Needs the ``server`` extra (``pip install "edgekm[server]"``) for the
in-process aggregator only: the device side needs numpy and msgpack.
"""

import argparse
import contextlib
import csv
import datetime
import gzip
import os
import sys
import tempfile

import numpy as np

from edgekm.sync import DeviceAgent
from edgekm.exceptions import AnswerError
from edgekm.sync.device.client import SignedClient

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "data", "household_power_4days.csv.gz")
MODEL = "household-power"
N_CLUSTERS = 6
ROWS_PER_SYNC = 720                  # one reading a minute: a sync every 12 hours
COLD_START_ROWS = 1440               # the aggregator publishes centroids after one day
TELEMETRY_WINDOW_SECONDS = 3 * 3600  # one telemetry summary per 3 hours of readings


@contextlib.contextmanager
def local_aggregator(directory, admin_token):
    """An aggregator on a free loopback port, served by uvicorn in a thread.

    Yields ``(url, aggregator)``; stops the server and closes the database on exit.
    """
    from edgekm.sync import Aggregator
    from edgekm.sync.cloud.http import BackgroundServer, create_app

    with Aggregator(os.path.join(directory, "aggregator.db")) as aggregator:
        app = create_app(aggregator, admin_token=admin_token, policy_interval=None)
        with BackgroundServer(app) as server:
            yield server.url, aggregator


def admin(url, token, method, path, body=None):
    """Call an admin endpoint of the aggregator's HTTP API; returns the JSON answer."""
    return SignedClient(url, admin_token=token, timeout=30, proxies={}).call_json(
        method, path, body)


def read_sensor_csv(path):
    """Yield ``(unix time, row text, readings)`` for each row of the meter's CSV."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="ascii", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if header[0] != "timestamp":
            raise SystemExit(f"{path}: the first column must be 'timestamp'")
        for row in reader:
            when = datetime.datetime.fromisoformat(row[0]).replace(tzinfo=datetime.timezone.utc)
            yield when.timestamp(), ",".join(row), np.array(row[1:], dtype=np.float32)


def run(url, device, key, admin_token, csv_path, state_dir):
    now = [0.0]                  # the time of the reading being processed (the meter's clock)
    totals = {"rows": 0, "csv_bytes": 0, "frames": 0, "frame_bytes": 0, "telemetry": 0}
    weight_before = None
    if admin_token:
        try:
            weight_before = admin(url, admin_token, "GET", f"/v1/models/{MODEL}")["total_weight"]
        except AnswerError as exc:
            if exc.status != 404:
                raise
            weight_before = 0.0                      # the model is created by the first frame

    agent = DeviceAgent(url, MODEL, device, key, state_dir, n_clusters=N_CLUSTERS,
                        coreset_size=50, telemetry_window_seconds=TELEMETRY_WINDOW_SECONDS,
                        clock=lambda: now[0], random_state=0)

    def sync(when):
        agent.flush()                # the window becomes one durable frame in the outbox
        frames = agent.outbox.pending()
        report = agent.sync()
        sent = frames[:report["uploaded"]]
        totals["frames"] += len(sent)
        totals["frame_bytes"] += sum(len(f.body) for f in sent)
        totals["telemetry"] += report["telemetry_uploaded"]
        stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        print(f"  {stamp:%Y-%m-%d %H:%M}  sync: {report['uploaded']} frame(s) "
              f"({sum(len(f.body) for f in sent):,} bytes), "
              f"{report['telemetry_uploaded']} telemetry summaries, "
              f"{report['pending']} pending, version {report['version']}"
              + (f", error: {report['error']}" if report["error"] else ""))

    with agent:
        for when, text, readings in read_sensor_csv(csv_path):
            now[0] = when
            agent.ingest(readings)               # one reading: fixed memory, no network
            totals["rows"] += 1
            totals["csv_bytes"] += len(text) + 1
            if totals["rows"] % ROWS_PER_SYNC == 0:
                sync(when)
            if totals["rows"] == COLD_START_ROWS:
                if admin_token:
                    info = admin(url, admin_token, "POST", f"/v1/models/{MODEL}/versions",
                                 {"n_clusters": N_CLUSTERS, "random_state": 0})
                    print(f"aggregator: published version {info['version']} ({info['status']}, "
                          f"k={info['k']}) from {info['training_weight']:.0f} readings")
                version = agent.pull()
                print(f"device: pulled centroid version {version}; the edge filter is "
                      f"{'on' if agent.filter is not None else 'off (no version yet)'}")
        if totals["rows"] % ROWS_PER_SYNC:
            sync(now[0])
        stats = agent.stats()

    n, d = totals["rows"], readings.shape[0]
    raw = n * d * np.dtype(np.float32).itemsize
    print()
    print(f"rows read: {n:,} ({d} readings each): {totals['csv_bytes']:,} bytes of CSV, "
          f"{raw:,} bytes as float32")
    print(f"coreset frames uploaded: {totals['frames']} ({totals['frame_bytes']:,} bytes)")
    uploaded = totals["frame_bytes"]
    if admin_token:
        report = admin(url, admin_token, "GET", f"/v1/models/{MODEL}/drift")
        tel = report["telemetry"]
        uploaded += tel["forwarded_bytes"]
        print(f"telemetry summaries: {tel['summaries']} ({tel['forwarded_bytes']:,} bytes for "
              f"{tel['points']:,} readings), {tel['anomalies']} anomalous readings "
              f"forwarded raw")
        devices = report["devices"]
        if devices["reporting"]:
            print(f"drift score of the device's latest window: {devices['max_drift_score']:.2f} "
                  f"(1 or more means drift)\n  version 1 was fitted on the first day alone; "
                  f"`edgekm versions publish` fits a new one on all the data merged since")
        print(f"uploaded in all: {uploaded:,} bytes = {uploaded / raw:.1%} of the float32 "
              f"readings, {uploaded / totals['csv_bytes']:.1%} of the CSV "
              f"(request bodies; HTTP headers not counted)")
    else:
        print(f"telemetry summaries uploaded: {totals['telemetry']} (pass --admin-token for "
              f"their bytes)")
        print(f"frames: {uploaded / raw:.1%} of the float32 readings")

    print(f"device accounting: ingested {stats['weight_ingested']:.0f}, acknowledged "
          f"{stats['weight_acked']:.0f}, pending {stats['pending_weight']:.0f}, rejected "
          f"{stats['rejected_weight']:.0f}")
    ok = stats["weight_acked"] == stats["weight_ingested"] == n
    if weight_before is not None:
        merged = admin(url, admin_token, "GET", f"/v1/models/{MODEL}")["total_weight"]
        print(f"aggregator: merged weight {merged - weight_before:.0f} from this run "
              f"(one per reading)")
        ok = ok and merged - weight_before == n
    print("every reading accounted for: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", metavar="URL",
                        help="a running aggregator (default: start one in this process)")
    parser.add_argument("--device", default="pi-kitchen", help="the device id (default "
                        "pi-kitchen)")
    parser.add_argument("--key", help="the device's key (hex), with --server")
    parser.add_argument("--admin-token", default=os.environ.get("EDGEKM_ADMIN_TOKEN"),
                        help="the aggregator's admin token, with --server (default: "
                        "$EDGEKM_ADMIN_TOKEN)")
    parser.add_argument("--csv", default=DEFAULT_CSV, help="the sensor CSV: a 'timestamp' "
                        "column then the readings (default: the bundled meter data)")
    args = parser.parse_args(argv)
    if args.server and not args.key:
        parser.error("--server needs --key (the hex key printed by 'edgekm devices add')")

    with tempfile.TemporaryDirectory() as tmp:
        state_dir = os.path.join(tmp, "device-state")    # survives reboots on a real device
        if args.server:
            print(f"aggregator: {args.server}")
            return run(args.server, args.device, args.key, args.admin_token, args.csv,
                       state_dir)
        token = "example-admin-token"
        with local_aggregator(tmp, token) as (url, aggregator):
            key = aggregator.add_device(args.device)   # what `edgekm devices add` does
            print(f"aggregator: started in this process at {url}")
            print(f"device {args.device} registered; reading {os.path.basename(args.csv)}")
            return run(url, args.device, key, token, args.csv, state_dir)


if __name__ == "__main__":
    sys.exit(main())
