"""``edgekm demo``: a whole fleet on one machine, devices to cloud and back, in well under a minute.

:func:`run_fleet_demo` runs the real pieces, not stand-ins:

1. an :class:`~edgekm.sync.cloud.aggregator.Aggregator` on a temporary SQLite
   database, served by the Starlette app of :mod:`edgekm.sync.cloud.http.app` under
   uvicorn in a background thread, on a free loopback port;
2. ``n_devices`` devices registered with their own HMAC keys, each a
   :class:`~edgekm.sync.device.agent.DeviceAgent` with its own outbox, uploading
   signed coreset frames and telemetry over HTTP;
3. a stream cut into :data:`ROUNDS` sync rounds; in each round every device
   ingests a disjoint, contiguous piece of the round's points (so the fleet
   sees the stream in order and drift shows over time) and then syncs;
4. centroid versions through the admin HTTP API: v1 after round
   :data:`PUBLISH_V1`, v2 after round :data:`PUBLISH_V2` rolled out as a
   canary to about half the fleet, checked, then promoted after round
   :data:`PROMOTE_V2`, and v3 at the end, promoted at once; devices pull
   each version (signed, conditional GETs) and their
   :class:`~edgekm.EdgeFilter` then flags anomalies and scores drift;
5. the aggregator is stopped and every device labels its latest points
   offline with its :class:`~edgekm.Assigner`.

What the report measures:

- **bytes uploaded**: the HTTP/1.1 bytes (request line, headers and body)
  of every frame and telemetry upload the aggregator received, counted by
  a pass-through ASGI middleware around the real app; **raw bytes** is
  ``points x features x 4`` (the float32 points the devices did not send);
- **cost ratio**: the k-means cost on *all* the points of the fleet's final
  active version (fitted by the aggregator on its merged coresets) divided
  by the cost of batch k-means on all the points (the project's solver,
  :meth:`edgekm.Coreset.fit_centers`: exact weighted k-means++ seeding and
  Lloyd, best of :data:`BATCH_N_INIT`, on every point with weight 1);
- per round, for the HTML plots: the same ratio on the points seen so far
  (fresh fit on the aggregate, via ``POST /fit``), the active version's
  cost on the round's new points against batch k-means on those points, and
  the devices' mean drift score;
- **anomalies flagged**: points whose anomaly score exceeded 1 on a device
  (beyond their cluster's 99th percentile), forwarded raw or, over the
  per-window cap, only counted (read from the telemetry uploads).

Anything that goes wrong is collected in ``failures``: an upload rejected or
left pending, a device without the version it should have, merged weight
different from the points ingested, a non-finite cost ratio, an offline label
that is not the nearest centre, an HTTP error.  Bad input raises
:class:`FleetDemoError` before anything starts.
"""

import contextlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time

import numpy

from edgekm._progress import Progress
from edgekm.coreset import Coreset
from edgekm._validation import check_int
from edgekm.demo._settings import (ROUNDS, PUBLISH_V1, PUBLISH_V2, PROMOTE_V2, DEFAULT_POINTS,
                                   DEFAULT_FEATURES, DRIFT_TRAVEL, CORESET_SIZE, BATCH_N_INIT,
                                   ROUND_N_INIT, ROUND_SAMPLE, PUBLISH_N_INIT, CANARY_SHARE,
                                   PROJECTION_POINTS, CALIBRATION_LIMIT, MAX_DEVICES, MAX_CLUSTERS,
                                   MODEL)
from edgekm.demo._traffic import TrafficMeter
from edgekm.exceptions import AnswerError, DemoStepError, FleetDemoError
from edgekm.sync.device.client import SignedClient

__all__ = ["FleetDemoError", "run_fleet_demo", "ROUNDS", "DEFAULT_POINTS", "DEFAULT_FEATURES"]


# ---------------------------------------------------------------- input


def _check_int(name, value, minimum, maximum=None, allow_none=False):
    return check_int(name, value, minimum, maximum, allow_none=allow_none, error=FleetDemoError)


def _min_points(n_devices, n_clusters):
    # every device gets a non-empty piece in every round, and v1 (after PUBLISH_V1
    # rounds) is fitted on at least 2 k points
    return max(ROUNDS * n_devices, -(-2 * n_clusters * ROUNDS // PUBLISH_V1))


def _load(data, n_points, n_clusters, n_devices, seed, shuffle):
    """Return (X float32 C-contiguous finite, description dict)."""
    need = _min_points(n_devices, n_clusters)
    if data is None:
        from edgekm.datasets import make_rbf_drift

        n = DEFAULT_POINTS if n_points is None else n_points
        if n < need:
            raise FleetDemoError(f"n_points must be >= {need} for {n_devices} devices and "
                                 f"k = {n_clusters} ({ROUNDS} sync rounds); got {n}")
        speed = DRIFT_TRAVEL / max(n - 1, 1)
        X = make_rbf_drift(n, n_features=DEFAULT_FEATURES, n_centers=n_clusters, speed=speed,
                           seed=seed)
        info = {"name": "RBF drift generator", "kind": "generator",
                "description": (f"{n_clusters} centres drifting {DRIFT_TRAVEL} (cube side 1) "
                                f"over the stream, MOA RandomRBFGeneratorDrift model"),
                "n_centers": n_clusters, "speed": speed, "travel": DRIFT_TRAVEL}
    else:
        from edgekm.datasets import load_array

        try:
            X = load_array(data)
        except ValueError as exc:
            raise FleetDemoError(str(exc)) from None
        info = {"name": os.fspath(data), "kind": "file",
                "description": f"{os.fspath(data)}, {'shuffled' if shuffle else 'file order'}"}
        if not numpy.isfinite(X).all():
            raise FleetDemoError(f"{os.fspath(data)}: the data contains NaN or infinite values")
        if n_points is not None:
            if n_points > X.shape[0]:
                raise FleetDemoError(f"n_points={n_points} but {os.fspath(data)} has only "
                                     f"{X.shape[0]} rows")
        if (n_points or X.shape[0]) < need:
            raise FleetDemoError(f"{os.fspath(data)}: {n_points or X.shape[0]} rows; the demo "
                                 f"needs >= {need} for {n_devices} devices and k = "
                                 f"{n_clusters} ({ROUNDS} sync rounds)")
    if shuffle:
        X = X[numpy.random.default_rng(seed).permutation(X.shape[0])]
    if n_points is not None:
        X = X[:n_points]
    info["shuffled"] = bool(shuffle)
    return numpy.ascontiguousarray(X, dtype=numpy.float32), info


def _check_numbers(n_devices, n_clusters, n_points, seed, shuffle):
    n_devices = _check_int("n_devices", n_devices, 1, MAX_DEVICES)
    n_clusters = _check_int("n_clusters", n_clusters, 1, MAX_CLUSTERS)
    n_points = _check_int("n_points", n_points, 1, allow_none=True)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    if shuffle is not None and not isinstance(shuffle, (bool, numpy.bool_)):
        raise FleetDemoError(f"shuffle must be None, True or False; got {shuffle!r}")
    return n_devices, n_clusters, n_points, seed


def _check_report_path(report):
    if report is None:
        return None
    path = os.path.abspath(os.fspath(report))
    if os.path.isdir(path):
        raise FleetDemoError(f"report: {path} is a directory")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FleetDemoError(f"report: the directory {parent} does not exist")
    return path


def _check_workdir(workdir):
    if workdir is None:
        return None
    path = os.path.abspath(os.fspath(workdir))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise FleetDemoError(f"workdir: {path} is not a directory")
        if os.listdir(path):
            raise FleetDemoError(f"workdir: {path} is not empty; give a new or empty "
                                 "directory")
    return path


def _server_modules():
    try:
        import uvicorn  # noqa: F401 - BackgroundServer imports it; fail early with a hint

        from edgekm.sync.cloud import http as server
    except ImportError as exc:
        raise FleetDemoError(
            f"the demo runs the aggregator, which needs the server extra ({exc.name} is "
            "missing): pip install 'edgekm[server]'") from None
    return server


# ---------------------------------------------------------------- the admin HTTP client


class _Admin:
    """The admin HTTP API (bearer token) through the device room's one client,
    :class:`edgekm.sync.device.client.SignedClient` in admin-token mode.

    ``call(method, path, payload)`` returns the decoded JSON answer; no answer,
    a non-2xx answer or a body that is not JSON raises :class:`DemoStepError`.
    """

    def __init__(self, url, token):
        # no proxy: the aggregator is on loopback whatever the environment says
        self._client = SignedClient(url, admin_token=token, timeout=120, proxies={})

    def call(self, method, path, payload=None):
        try:
            return self._client.call_json(method, path, payload)
        except AnswerError as exc:
            raise DemoStepError(str(exc)) from None


# ---------------------------------------------------------------- numbers


def _cost(X, centers):
    """Sum of squared distances of X to the nearest of ``centers`` (the compiled kernel)."""
    return Coreset(X, numpy.ones(X.shape[0])).cost(numpy.asarray(centers, dtype=numpy.float64))


def _batch(X, k, n_init, seed, sample=None):
    """Batch k-means (k-means++ and Lloyd, best of n_init): (centers, cost on all of X).

    With ``sample``, the centres are fitted on a uniform sample of that many
    rows (when X has more) and the cost is still that of all of X.
    """
    k = min(k, X.shape[0])
    fit_on = X
    if sample is not None and X.shape[0] > sample:
        rng = numpy.random.default_rng(seed)
        fit_on = X[numpy.sort(rng.choice(X.shape[0], sample, replace=False))]
    centers, _, cost = Coreset(fit_on, numpy.ones(fit_on.shape[0])).fit_centers(
        k, n_init=n_init, random_state=seed)
    if fit_on is not X:
        cost = _cost(X, centers)
    return centers, float(cost)


def _ratio(cost, reference):
    if reference > 0:
        return cost / reference
    return 1.0 if cost == 0 else math.inf


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


def _canary_percent(buckets):
    """The percent whose cohort holds ceil(n * CANARY_SHARE) of the devices' buckets."""
    ordered = sorted(buckets)
    take = max(1, math.ceil(len(ordered) * CANARY_SHARE))
    return (ordered[take - 1] + 1) / 100.0


def _projection(points, weights, centers_by_version, seed):
    """PCA (NumPy SVD) of a sample of coreset points and every version's centres."""
    rng = numpy.random.default_rng(seed)
    if points.shape[0] > PROJECTION_POINTS:
        keep = numpy.sort(rng.choice(points.shape[0], PROJECTION_POINTS, replace=False))
        points, weights = points[keep], weights[keep]
    stack = [numpy.asarray(points, dtype=numpy.float64)]
    stack += [numpy.asarray(c, dtype=numpy.float64) for c in centers_by_version.values()]
    allp = numpy.concatenate(stack)
    mean = allp.mean(axis=0)
    _, s, vt = numpy.linalg.svd(allp - mean, full_matrices=False)
    basis = numpy.zeros((allp.shape[1], 2))
    m = min(2, vt.shape[0])
    basis[:, :m] = vt[:m].T                     # one feature: the second axis stays 0
    var = s ** 2
    explained = (var[:2].sum() / var.sum()) if var.sum() > 0 else 1.0
    project = lambda a: ((numpy.asarray(a, dtype=numpy.float64) - mean) @ basis)  # noqa: E731
    return {"points": numpy.round(project(points), 5).tolist(),
            "weights": numpy.asarray(weights, dtype=numpy.float64).tolist(),
            "centers": {str(v): numpy.round(project(c), 5).tolist()
                        for v, c in centers_by_version.items()},
            "explained": float(explained)}


# ---------------------------------------------------------------- the demo


def run_fleet_demo(*, data=None, n_devices=8, n_points=None, n_clusters=8, seed=0,
                   report=None, progress=True, out=sys.stdout, workdir=None, shuffle=None):
    """Run a fleet of devices against a real aggregator and report what happened.

    Parameters
    ----------
    data : None or str or os.PathLike, default=None
        None generates the stream (:func:`edgekm.datasets.make_rbf_drift`,
        :data:`DEFAULT_FEATURES` features, ``n_clusters`` centres that each
        travel :data:`DRIFT_TRAVEL` over the stream).  A path to a ``.npy``,
        ``.csv`` or ``.csv.gz`` file is read with
        :func:`edgekm.datasets.load_array`.
    n_devices : int, default=8
        Devices in the fleet (1 to :data:`MAX_DEVICES`).
    n_points : int or None, default=None
        Points streamed through the fleet in all.  None: :data:`DEFAULT_POINTS`
        for the generator, every row of ``data``.
    n_clusters : int, default=8
        k of the devices' models and of the published versions (1 to
        :data:`MAX_CLUSTERS`).
    seed : int, default=0
        Seeds the generator, the shuffle, the devices, the aggregator and the fits.
    report : None or path, default=None
        Also write the report as one self-contained HTML page there.
    progress : bool, default=True
        Progress bar on stderr (drawn only when stderr is a terminal).
    out : text stream or None, default=sys.stdout
        Where the text report goes; None prints nothing.
    workdir : None or path, default=None
        None: a temporary directory, removed at the end.  Else a new or empty
        directory that keeps the aggregator's database and the devices' state.
    shuffle : bool or None, default=None
        Shuffle the rows (with ``seed``) before streaming.  None keeps the
        stream order, which is what shows drift.

    Returns
    -------
    dict
        JSON-serialisable: ``ok``, ``failures`` (list of str), ``points``,
        ``bytes_uploaded``, ``bytes_raw``, ``cost_ratio``, ``versions`` (dicts
        with ``version``, ``status``, ``drift`` and more), ``anomalies``,
        ``seconds``, ``report``, and the details the reports are drawn from.

    Raises
    ------
    FleetDemoError
        Bad input, or the server extra is not installed; raised before
        anything starts.
    """
    t_start = time.perf_counter()
    n_devices, n_clusters, n_points, seed = _check_numbers(n_devices, n_clusters, n_points,
                                                           seed, shuffle)
    report_path = _check_report_path(report)
    work = _check_workdir(workdir)
    server_mod = _server_modules()
    X, data_info = _load(data, n_points, n_clusters, n_devices, seed, bool(shuffle))

    result = {
        "ok": False, "failures": [], "points": int(X.shape[0]), "n_features": int(X.shape[1]),
        "n_devices": n_devices, "n_clusters": n_clusters, "seed": seed, "rounds": ROUNDS,
        "data": data_info, "bytes_uploaded": 0, "bytes_raw": int(X.size * 4),
        "bytes_downloaded": 0, "traffic": {}, "cost_ratio": None, "batch_cost": None,
        "fleet_cost": None, "merged_weight": None, "versions": [], "anomalies": 0,
        "anomalies_forwarded": 0, "events": [], "series": {}, "offline": None, "warnings": [],
        "aggregator": None, "workdir": work, "seconds": None, "report": None,
    }
    failures = result["failures"]
    own_dir = work is None
    root = tempfile.mkdtemp(prefix="edgekm-demo-") if own_dir else work
    try:
        os.makedirs(root, exist_ok=True)
        _run(X, result, root, server_mod, progress, out)
    except DemoStepError as exc:
        failures.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported as a failure, the CLI exits 1
        failures.append(f"unexpected {type(exc).__name__}: {exc}")
    finally:
        if own_dir:
            try:
                shutil.rmtree(root)
            except OSError as exc:
                failures.append(f"cannot remove the temporary directory {root}: {exc}")
    result["seconds"] = time.perf_counter() - t_start
    result["ok"] = not failures
    _write_reports(result, report_path, out)
    return result


def _write_reports(result, report_path, out):
    """The HTML report (when asked for) and the text report (unless ``out`` is None)."""
    if report_path is not None:
        from edgekm.demo.html_report import write_html

        try:
            write_html(result, report_path)
            result["report"] = report_path
        except OSError as exc:
            result["failures"].append(f"cannot write the report {report_path}: {exc}")
            result["ok"] = False
    if out is not None:
        from edgekm.demo.text_report import format_text

        out.write(format_text(result))
        out.flush()


def _run(X, result, root, server_mod, progress, out):
    """The demo proper; fills ``result``.  Closes everything it opened, whatever happens."""
    demo = _Demo(X, result, root)
    with contextlib.ExitStack() as stack:
        demo.start_aggregator(stack, server_mod)
        demo.announce(out)
        demo.start_devices(stack)
        demo.stream_rounds(progress)
        final = demo.final_state()
        demo.stop_server()
        result["offline"] = _assign_offline(demo.agents, demo.last_piece,
                                            demo.centers[demo.active], demo.failures, X)
    demo.warn_if_miscalibrated()
    _figures(demo, *final)


class _Demo:
    """One run of the demo: the aggregator behind its server, the devices, the versions.

    The methods are the steps, in the order :func:`_run` calls them; a step
    that fails raises :class:`DemoStepError` or adds to ``failures``.
    """

    def __init__(self, X, result, root):
        self.X, self.result, self.root = X, result, root
        self.n, self.d = X.shape
        self.k, self.n_devices, self.seed = (result["n_clusters"], result["n_devices"],
                                             result["seed"])
        self.failures = result["failures"]
        self.events = result["events"]
        width = max(2, len(str(self.n_devices - 1)))
        self.names = [f"dev-{i:0{width}d}" for i in range(self.n_devices)]
        self.bounds = numpy.linspace(0, self.n, ROUNDS + 1).round().astype(numpy.int64)
        self.base = f"/v1/models/{MODEL}"
        self.agents = {}
        self.rounds = []
        self.versions = {}       # version -> bookkeeping for the report
        self.centers = {}        # version -> centres (k, d)
        self.active = None
        self.canary = None       # the version in canary
        self.last_piece = {}
        self._stopped = False

    # ------------------------------------------------------------ start

    def start_aggregator(self, stack, server_mod):
        """The aggregator on its database, devices registered, served on a free port."""
        from edgekm.sync.cloud.aggregator import Aggregator

        db = os.path.join(self.root, "aggregator.db")
        self.aggregator = Aggregator(db, coreset_size=CORESET_SIZE, random_state=self.seed)
        stack.callback(self.aggregator.close)
        self.aggregator.add_model(MODEL, self.d, dtype="float32")
        self.keys = {name: self.aggregator.add_device(name) for name in self.names}   # HMAC
        token = secrets.token_hex(16)
        self.meter = TrafficMeter(server_mod.create_app(self.aggregator, admin_token=token,
                                                         policy_interval=None))
        self.server = server_mod.BackgroundServer(self.meter, name="edgekm-demo-aggregator")
        stack.callback(self.stop_server)
        try:
            self.server.start()
        except RuntimeError as exc:
            raise DemoStepError(str(exc)) from None
        self.result["aggregator"] = {"url": self.server.url, "database": "temporary"
                                     if self.result["workdir"] is None else db}
        self.admin = _Admin(self.server.url, token)

    def stop_server(self):
        if not self._stopped:
            self._stopped = True
            if not self.server.stop():
                self.failures.append("the aggregator's server thread did not stop")

    def announce(self, out):
        if out is not None:
            info = self.result["data"]
            out.write(f"edgekm fleet demo: {self.n_devices} devices, {self.n:,} points x "
                      f"{self.d} features ({info['name']}), k = {self.k}; aggregator on "
                      f"{self.server.url}\n")
            out.flush()

    def start_devices(self, stack):
        """One DeviceAgent per device, each with its own outbox and seed."""
        from edgekm.sync.device.agent import DeviceAgent

        for i, name in enumerate(self.names):
            agent = DeviceAgent(self.server.url, MODEL, name, self.keys[name],
                                os.path.join(self.root, "devices", name), n_clusters=self.k,
                                coreset_size=CORESET_SIZE, max_retries=3, backoff_base=0.05,
                                backoff_max=1.0, timeout=60.0, random_state=self.seed + 1 + i,
                                telemetry_window_seconds=3600.0)
            stack.callback(agent.close)
            self.agents[name] = agent

    # ------------------------------------------------------------ the rounds

    def stream_rounds(self, progress):
        """Every round: ingest and sync, measure, then the rollout step of that round."""
        with Progress(self.n, "fleet demo", enabled=progress) as bar:
            for r in range(ROUNDS):
                lo, hi = int(self.bounds[r]), int(self.bounds[r + 1])
                self.ingest_and_sync(r + 1, lo, hi, bar)
                if self.failures:
                    raise DemoStepError(f"stopped after round {r + 1}")
                self.rounds.append(_measure_round(
                    self.X, lo, hi, r + 1, self.admin, self.base, self.k, self.seed, self.meter,
                    self.centers.get(self.active), self.active, self.agents))
                self.rollout(r + 1, hi)
                if self.failures:
                    raise DemoStepError(f"stopped after round {r + 1}")

    def ingest_and_sync(self, round_no, lo, hi, bar):
        """Each device ingests its contiguous piece of the round's points, then syncs."""
        pieces = numpy.array_split(numpy.arange(lo, hi), self.n_devices)
        for name, idx in zip(self.names, pieces):
            piece = self.X[idx[0]:idx[-1] + 1]
            self.agents[name].ingest(piece)
            self.last_piece[name] = piece
        for name, agent in self.agents.items():
            rep = agent.sync()
            bar.update(self.last_piece[name].shape[0])        # points ingested and synced
            if rep["rejected"]:
                self.failures.append(f"{name}: {rep['rejected']} upload(s) rejected in "
                                     f"round {round_no}: {rep['error']}")
            if rep["pending"] or rep["telemetry_pending"]:
                self.failures.append(f"{name}: uploads still pending after round {round_no} "
                                     f"({rep['pending']} frames, {rep['telemetry_pending']} "
                                     f"telemetry): {rep['error']}")

    # ------------------------------------------------------------ rollout

    def rollout(self, round_no, hi):
        """v1 after PUBLISH_V1, v2 as a canary after PUBLISH_V2, promoted after PROMOTE_V2,
        v3 published and promoted after the last round."""
        if round_no == PUBLISH_V1:
            v1 = self.publish(round_no)
            self.pull_all({name: v1 for name in self.names})
        elif round_no == PUBLISH_V2:
            self.canary = self.publish(round_no)
            cohort = self.start_canary(self.canary, round_no, hi)
            self.pull_all({nm: (self.canary if nm in cohort else self.active)
                           for nm in self.names})
        elif round_no == PROMOTE_V2:
            self.promote(self.canary, round_no, hi, f"v{self.canary} promoted")
        elif round_no == ROUNDS:
            self.promote(self.publish(round_no), round_no, hi, "promoted")

    def publish(self, round_no):
        info = self.admin.call("POST", f"{self.base}/versions",
                               {"n_clusters": self.k, "n_init": PUBLISH_N_INIT,
                                "random_state": self.seed})
        v = info["version"]
        doc = self.admin.call("GET", f"{self.base}/versions/{v}")
        self.centers[v] = numpy.asarray(doc["centers"], dtype=numpy.float64)
        self.versions[v] = {"published_round": round_no, "canary_percent": None,
                            "canary_devices": None, "promoted_round": None}
        if info["status"] == "active":
            self.active = v
        self.events.append({"round": round_no, "points": int(self.bounds[round_no]),
                            "text": f"v{v} published ({info['status']})",
                            "short": f"v{v} {'active' if self.active == v else 'published'}"})
        return v

    def start_canary(self, v, round_no, hi):
        """Roll ``v`` out to about CANARY_SHARE of the fleet; returns the cohort's names."""
        from edgekm.sync.cloud.versions import cohort_bucket

        names, n_devices = self.names, self.n_devices
        percent = _canary_percent([cohort_bucket(MODEL, nm) for nm in names])
        self.admin.call("POST", f"{self.base}/versions/{v}/canary", {"percent": percent})
        cohort = [nm for nm in names if cohort_bucket(MODEL, nm) < round(percent * 100)]
        self.versions[v].update(canary_percent=percent, canary_devices=len(cohort),
                                fleet_size=n_devices)
        self.events.append({"round": round_no, "points": hi,
                            "text": f"v{v} canary to {percent:g} % "
                                    f"({len(cohort)}/{n_devices} devices)",
                            "short": f"canary {len(cohort)}/{n_devices}"})
        return cohort

    def promote(self, v, round_no, hi, short):
        self.admin.call("POST", f"{self.base}/versions/{v}/promote", {})
        self.versions[v]["promoted_round"] = round_no
        self.active = v
        self.events.append({"round": round_no, "points": hi,
                            "text": f"v{v} promoted", "short": short})
        self.pull_all({nm: v for nm in self.names})

    def pull_all(self, expect):
        for name, agent in self.agents.items():
            got = agent.pull()
            error = (agent.last_pull or {}).get("error")
            if error:
                self.failures.append(f"{name}: pull failed: {error}")
            if got != expect[name]:
                self.failures.append(f"{name} uses version {got}, expected {expect[name]}")

    # ------------------------------------------------------------ checks

    def final_state(self):
        """Check the merged weight and the stored anomalies; return (listing, drift, aggregate)."""
        listing = self.admin.call("GET", f"{self.base}/versions")
        drift = self.admin.call("GET", f"{self.base}/drift")
        info = self.admin.call("GET", self.base)
        n = self.n
        self.result["merged_weight"] = float(info["total_weight"])
        acked = sum(a.stats()["weight_acked"] for a in self.agents.values())
        if self.result["merged_weight"] != float(n) or acked != float(n):
            self.failures.append(f"merged weight {self.result['merged_weight']:g} and "
                                 f"acknowledged weight {acked:g} should both equal the {n} "
                                 "points ingested")
        traffic = self.meter.snapshot()
        stored_anomalies = int(drift["telemetry"]["anomalies"] or 0)
        if stored_anomalies != traffic["anomalies_forwarded"]:
            self.failures.append(f"the aggregator stored {stored_anomalies} anomalies; the "
                                 f"devices forwarded {traffic['anomalies_forwarded']}")
        return listing, drift, self.aggregator.aggregate(MODEL)

    def warn_if_miscalibrated(self):
        off = self.result["offline"]
        if (off and off["beyond_p99_all"] is not None
                and off["beyond_p99_all"] > CALIBRATION_LIMIT):
            self.result["warnings"].append(
                f"{100 * off['beyond_p99_all']:.1f} % of all the points score above 1 (beyond "
                f"their cluster's 99th percentile) under v{self.active}, which was fitted on "
                "all of them, where about 1 % is expected: the version's per-cluster distance "
                "quantiles (the anomaly thresholds) look too low, so the anomaly counts and "
                "drift scores are inflated")


# ---------------------------------------------------------------- figures


def _version_rows(listing, drift, versions, centers, X, batch_cost):
    """One dict per version for the report: status, drift, shares, cost ratio, rollout."""
    by_version = {v["version"]: v for v in drift["versions"]}
    out_versions = []
    for row in listing["versions"]:
        v = row["version"]
        extra = by_version.get(v, {})
        out_versions.append({
            "version": v, "status": row["status"], "drift": _finite(row["shift"]),
            "share_change": extra.get("share_change"), "parent": row["parent"],
            "cost_per_point": row["cost"] / row["training_weight"]
            if row["training_weight"] else None,
            "training_weight": row["training_weight"],
            "cluster_weights": extra.get("shares"),
            "observed_shares": extra.get("observed_shares"),
            "cost_ratio_all_data": _ratio(_cost(X, centers[v]), batch_cost),
            **versions.get(v, {})})
    return out_versions


def _movement(centers, out_versions):
    """Per version, how far each centre moved from its parent's."""
    movement = {}
    for v, c in centers.items():
        parent = next((o["parent"] for o in out_versions if o["version"] == v), None)
        if parent in centers:
            movement[str(v)] = numpy.linalg.norm(c - centers[parent], axis=1).round(6).tolist()
    return movement


def _figures(demo, listing, drift, aggregate):
    """The report's figures: cost against batch k-means, versions, traffic, plots."""
    X, result, centers = demo.X, demo.result, demo.centers
    batch_centers, batch_cost = _batch(X, demo.k, BATCH_N_INIT, demo.seed)
    fleet_cost = _cost(X, centers[demo.active])
    ratio = _ratio(fleet_cost, batch_cost)
    if not math.isfinite(ratio):
        demo.failures.append(f"the cost ratio is {ratio!r}")
    out_versions = _version_rows(listing, drift, demo.versions, centers, X, batch_cost)
    traffic = demo.meter.snapshot()
    req = traffic["requests"]
    result.update(
        bytes_uploaded=int(traffic["bytes_uploaded"]),
        bytes_downloaded=int(req.get("centroids", [0, 0, 0])[2]),
        traffic={kind: {"requests": v[0], "request_bytes": v[1], "response_bytes": v[2]}
                 for kind, v in sorted(req.items())},
        cost_ratio=_finite(ratio), batch_cost=batch_cost, fleet_cost=fleet_cost,
        versions=out_versions, anomalies=int(traffic["anomalies"]),
        anomalies_forwarded=int(traffic["anomalies_forwarded"]),
        points_checked=int(traffic["points_checked"]),
        drift_devices=drift["devices"],
        series={"rounds": demo.rounds, "movement": _movement(centers, out_versions),
                "projection": _projection(aggregate.points, aggregate.weights,
                                          {**centers, "batch": batch_centers}, demo.seed)})


def _measure_round(X, lo, hi, round_no, admin, base, k, seed, meter, active_centers,
                   active_version, agents):
    """The per-round figures behind the plots."""
    seen, new = X[:hi], X[lo:hi]
    fit = admin.call("POST", f"{base}/fit",
                     {"n_clusters": k, "n_init": ROUND_N_INIT, "random_state": seed})
    fleet = numpy.asarray(fit["centers"], dtype=numpy.float64)
    _, batch_seen = _batch(seen, k, ROUND_N_INIT, seed, sample=ROUND_SAMPLE)
    row = {"round": round_no, "points": int(hi),
           "fleet_vs_batch": _finite(_ratio(_cost(seen, fleet), batch_seen)),
           "active_version": active_version, "active_vs_batch_new": None,
           "drift_mean": None, "drift_max": None,
           "versions_in_use": sorted({a.version for a in agents.values() if a.version})}
    if active_centers is not None:
        _, batch_new = _batch(new, k, ROUND_N_INIT, seed, sample=ROUND_SAMPLE)
        row["active_vs_batch_new"] = _finite(_ratio(_cost(new, active_centers), batch_new))
        drift = admin.call("GET", f"{base}/drift")["devices"]
        row["drift_mean"], row["drift_max"] = drift["mean_drift_score"], drift["max_drift_score"]
    snap = meter.snapshot()
    row["bytes_uploaded"] = int(snap["bytes_uploaded"])
    row["anomalies"] = int(snap["anomalies"])
    return row


def _assign_offline(agents, last_piece, centers, failures, X):
    """With the server stopped, each device labels its latest points with its Assigner.

    Also the share of all the points whose anomaly score under the final version
    exceeds 1: that version was fitted on all of them, so about 1 % is expected.
    """
    from edgekm.solve import squared_distances

    total, seconds, mismatches, counts, beyond = 0, 0.0, 0, None, 0
    versions = set()
    for name, agent in agents.items():
        if agent.assigner is None:
            failures.append(f"{name} has no version to assign offline with")
            continue
        piece = last_piece[name]
        t0 = time.perf_counter()
        res = agent.assigner.assign(piece)
        seconds += time.perf_counter() - t0
        versions.add(res.version)
        total += piece.shape[0]
        _, best = squared_distances(piece, centers)
        # a label is right when its centre is the nearest one (up to float32 rounding)
        mine = ((piece.astype(numpy.float64) - centers[res.labels]) ** 2).sum(axis=1)
        mismatches += int((mine > best * (1 + 1e-5) + 1e-12).sum())
        beyond += int((res.scores > 1.0).sum())
        c = numpy.bincount(res.labels, minlength=centers.shape[0])
        counts = c if counts is None else counts + c
    if mismatches:
        failures.append(f"offline assignment: {mismatches} of {total} labels are not the "
                        "nearest centre")
    assigner = next((a.assigner for a in agents.values() if a.assigner is not None), None)
    beyond_all = (None if assigner is None else
                  float((assigner.assign(X).scores > 1.0).mean()))
    return {"points": total, "seconds": seconds, "versions": sorted(versions),
            "mismatches": mismatches, "beyond_p99": beyond, "beyond_p99_all": beyond_all,
            "label_counts": None if counts is None else counts.tolist()}
