"""``edgekm device``: a device agent over a file or standard input."""

import argparse
import random
import sys

from edgekm.cli._common import (PROG, Failure, add_input_options, add_json, add_seed,
                                non_negative_int, note_skipped, open_input, positive_float,
                                positive_int, print_json)
from edgekm.exceptions import AgentLockedError, DataError, OutboxError, UsageError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "device",
        help="run a device agent over a file or standard input, syncing to an aggregator",
        description=(
            "Run a DeviceAgent: stream the rows of a .npy, .csv, .csv.gz or .parquet file, or "
            "CSV lines from standard input (-, the default), into the device's model, sync "
            "the coreset frames to the aggregator every N points and at the end, and print a "
            "summary. The centroid version meant for this device is pulled at the start and "
            "after every sync; once there is one, every point is scored against it (anomalies, "
            "drift) and the telemetry goes up with the frames. Frames are kept in --state-dir "
            "until the aggregator acknowledges them; frames it refused for good (a wrong key, "
            "an unknown device) are kept aside, and --requeue-rejected sends them again. "
            "Exits 0 only if every frame was acknowledged; otherwise 1, and the frames that "
            "are still pending stay in the outbox for the next run."
        ),
    )
    p.add_argument("--server", required=True, metavar="URL", action=_Repeated,
                   help="base URL of the aggregator, e.g. http://127.0.0.1:8750; repeat it "
                        "for replicas on one database: the agent fails over between them")
    p.add_argument("--model", required=True, metavar="M", help="the model")
    p.add_argument("--device-id", required=True, metavar="ID", help="this device's id")
    p.add_argument("--key", required=True, metavar="KEY",
                   help="the device's secret key (hex, from 'edgekm devices add'); better "
                   "given as the EDGEKM_DEVICE_KEY environment variable, out of the process list")
    p.add_argument("--state-dir", required=True, metavar="DIR",
                   help="the agent's outbox and lock; survives restarts")
    p.add_argument("--input", default="-", metavar="FILE",
                   help="a .npy, .csv, .csv.gz or .parquet file, or - for CSV lines on "
                   "standard input (default -)")
    p.add_argument("--sync-every", type=positive_int, default=10000, metavar="N",
                   help="sync after every N points (default 10000); and always at the end")
    p.add_argument("--k", type=positive_int, default=8,
                   help="clusters of the device's local model (default 8)")
    p.add_argument("--coreset-size", type=positive_int, default=200, metavar="M",
                   help="points per frame (default 200)")
    p.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                   help="seconds per HTTP request (default 10)")
    p.add_argument("--max-retries", type=non_negative_int, default=3, metavar="N",
                   help="retries of a frame within one sync, with backoff (default 3)")
    add_seed(p)
    p.add_argument("--requeue-rejected", action="store_true",
                   help="put the frames the aggregator refused in an earlier run (kept aside in "
                   "--state-dir) back in the queue before syncing, e.g. after fixing the key")
    add_input_options(p)
    add_json(p, "the summary")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=run)


def _pending_bytes(agent):
    """{seq: bytes} of the frames waiting in the agent's outbox."""
    return {p.seq: len(p.body) for p in agent.outbox.pending()}


class _Repeated(argparse.Action):
    """A repeatable option whose values gather in a list (given once: a list of one)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (current if isinstance(current, list) else []) + [values])


def _servers(server):
    """``--server`` as DeviceAgent takes it: one URL, or the list of the replicas'."""
    servers = server if isinstance(server, list) else [server]
    return servers[0] if len(servers) == 1 else servers


def _start_agent(args):
    """The DeviceAgent of the command's arguments; a bad setting is a usage error."""
    from edgekm.sync.device.agent import DeviceAgent

    try:
        return DeviceAgent(_servers(args.server), args.model, args.device_id, args.key, args.state_dir,
                           n_clusters=args.k, coreset_size=args.coreset_size,
                           timeout=args.timeout, max_retries=args.max_retries,
                           backoff_max=min(30.0, 4 * args.timeout), random_state=args.seed,
                           # the retry jitter is never seeded: a fleet run with the one
                           # default seed must not retry in lockstep
                           rng=random.Random())
    except AgentLockedError as exc:
        raise Failure(str(exc)) from None
    except (ValueError, OutboxError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot use the state directory {args.state_dir!r}: "
                         f"{exc.strerror or exc}") from None


class _Scores:
    """Adds up the telemetry windows the agent's filter closed: points scored, anomalies,
    the largest drift score."""

    def __init__(self):
        self.windows = 0
        self.points = 0
        self.anomalies = 0
        self.max_drift = None
        self._last = None

    def __call__(self, agent):
        f = agent.filter
        stats = None if f is None else f.last_stats
        if stats is None or stats is self._last:
            return
        self._last = stats
        self.windows += 1
        self.points += stats["n_points"]
        self.anomalies += stats["anomalies"] + stats["anomalies_dropped"]
        drift = float(stats["drift_score"])
        self.max_drift = drift if self.max_drift is None else max(self.max_drift, drift)


class _Syncs:
    """Syncs the agent, pulls its version after every sync, and adds up what every sync
    reported."""

    def __init__(self, agent):
        self.agent = agent
        self.totals = {"uploaded": 0, "accepted": 0, "duplicates": 0, "rejected": 0,
                       "failed_attempts": 0, "bytes_uploaded": 0, "syncs": 0}
        self.errors = []
        self.scores = _Scores()
        self.pull_errors = []
        self.requeued = 0

    def pull(self):
        self.agent.pull()
        error = (self.agent.last_pull or {}).get("error")
        if error:
            self.pull_errors.append(error)

    def __call__(self):
        agent, totals = self.agent, self.totals
        agent.flush()
        before = _pending_bytes(agent)
        report = agent.sync()
        # the frames that left the queue were acknowledged, or rejected (kept aside)
        gone = set(before) - set(_pending_bytes(agent))
        if report["rejected"]:
            gone -= {r.seq for r in agent.outbox.rejected()}
        totals["bytes_uploaded"] += sum(before[seq] for seq in gone)
        for key in ("uploaded", "accepted", "duplicates", "rejected", "failed_attempts"):
            totals[key] += report[key]
        totals["syncs"] += 1
        if report["error"]:
            self.errors.append(report["error"])
        self.scores(agent)
        self.pull()
        return report


def _stream(agent, reader, sync_every, sync, bar):
    """Ingest every row, syncing after every ``sync_every``; returns (points, last report).

    Raises UsageError for a bad row, naming how many points were kept before it.
    """
    points = 0
    since_sync = 0
    report = None
    try:
        for X, advance in reader:
            pos = 0
            while pos < X.shape[0]:
                take = X[pos:pos + sync_every - since_sync]
                agent.ingest(take)
                sync.scores(agent)
                pos += take.shape[0]
                points += take.shape[0]
                since_sync += take.shape[0]
                if since_sync == sync_every:
                    report = sync()
                    since_sync = 0
            bar.update(advance)
        if since_sync or report is None or agent.outbox.stats()["pending"]:
            report = sync()
    except DataError as exc:
        raise UsageError(f"{exc} (the {points} points before it were kept in the outbox)") \
            from None
    except ValueError as exc:            # a row of another width than the outbox's frames
        raise UsageError(str(exc)) from None
    return points, report


def _summary(args, reader, points, syncs, stats, report):
    totals, errors, scores = syncs.totals, syncs.errors, syncs.scores
    summary = {"server": _servers(args.server), "model": args.model, "device_id": args.device_id,
               "state_dir": args.state_dir, "input": reader.name, "points": points,
               "frames_sent": totals["uploaded"], "frames_accepted": totals["accepted"],
               "frames_duplicate": totals["duplicates"], "frames_rejected": totals["rejected"],
               "frames_pending": stats["pending"], "weight_pending": stats["pending_weight"],
               "weight_acked": stats["weight_acked"], "bytes_uploaded": totals["bytes_uploaded"],
               "syncs": totals["syncs"], "failed_attempts": totals["failed_attempts"],
               "last_error": errors[-1] if errors else None,
               "frames_requeued": syncs.requeued,
               "skipped_columns": list(reader.skipped),
               "points_scored": scores.points, "anomalies": scores.anomalies,
               "telemetry_windows": scores.windows, "max_drift_score": scores.max_drift,
               "last_pull_error": syncs.pull_errors[-1] if syncs.pull_errors else None,
               "ok": stats["pending"] == 0 and totals["rejected"] == 0}
    summary["version"] = report.get("version")
    return summary


def _print_summary(summary):
    print(f"device {summary['device_id']}: {summary['points']} points, "
          f"{summary['frames_sent']} frames sent ({summary['bytes_uploaded']} bytes), "
          f"{summary['frames_pending']} pending, {summary['frames_rejected']} rejected"
          + (f", {summary['frames_requeued']} requeued" if summary["frames_requeued"] else ""))
    if summary["version"] is None:
        why = summary["last_pull_error"] or "the aggregator has published none for it yet"
        print(f"  version: none, points not scored ({why})")
        return
    drift = summary["max_drift_score"]
    print(f"  version {summary['version']}: {summary['points_scored']} points scored, "
          f"{summary['anomalies']} anomalies, max drift score "
          + ("-" if drift is None else f"{drift:.3g}" + (" (drift)" if drift >= 1 else "")))


def _why_not_ok(args, summary, rejected):
    """The stderr line of a run that did not deliver every frame, with how to recover."""
    if not summary["frames_rejected"]:
        return (f"{summary['frames_pending']} frame(s) not acknowledged, kept in "
                f"{args.state_dir} for the next run: {summary['last_error']}")
    statuses = {r.status for r in rejected}
    why = (f"the aggregator refused {summary['frames_rejected']} frame(s): "
           f"{summary['last_error']}. They are kept aside in {args.state_dir}")
    if statuses & {401, 403}:
        fix = ("check --device-id and --key ('edgekm devices list' shows the device; "
               "'edgekm devices add' registers one and prints its key, a revoked device "
               "needs a new id)")
    elif 404 in statuses:
        fix = "create the model on the aggregator ('edgekm models add')"
    else:
        fix = "fix the cause"
    return f"{why}; {fix}, then rerun with --requeue-rejected to send them again"


def run(args):
    from edgekm._progress import Progress

    reader = open_input(args.input, min(args.sync_every, 65536), args=args)
    agent = _start_agent(args)
    syncs = _Syncs(agent)
    with agent:
        syncs.requeued = agent.outbox.requeue_rejected() if args.requeue_rejected else 0
        syncs.pull()
        with Progress(reader.total or 0, f"device ({reader.unit})",
                      enabled=not args.no_progress and reader.total is not None) as bar:
            points, report = _stream(agent, reader, args.sync_every, syncs, bar)
        stats = agent.stats()
        rejected = agent.outbox.rejected()
    note_skipped(reader)
    summary = _summary(args, reader, points, syncs, stats, report)
    if args.json:
        print_json(summary, args)
    else:
        _print_summary(summary)
    if summary["ok"]:
        return 0
    print(f"{PROG}: device: {_why_not_ok(args, summary, rejected)}", file=sys.stderr)
    return 1
