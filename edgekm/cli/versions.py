"""``edgekm versions``: publish centroid versions and roll them out."""

import os
import sys

from edgekm.cli._common import (add_db, add_json, add_output, add_seed, check_output_path,
                                chosen_version, open_aggregator, percent, positive_float,
                                positive_int, print_json, version_id, when)
from edgekm.exceptions import (EdgekmError, FrameError, NotFittedError, RolloutError,
                               UnknownDeviceError, UnknownModelError, UnknownVersionError,
                               UsageError)

#: errors of a versions action that are the user's: exit 2 with the message
_USAGE_ERRORS = (UnknownModelError, UnknownVersionError, UnknownDeviceError, RolloutError,
                 FrameError, NotFittedError)


def _pin_version(text):
    return None if text.lower() == "none" else version_id(text)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "versions",
        help="publish centroid versions and roll them out (canary, promote, rollback, abort, pin)",
        description="Publish versioned centroids fitted on a model's aggregate and control "
        "which devices get which version. Every change is recorded in the event log "
        "('versions events').",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="list the versions with their status")
    pub = sub.add_parser("publish", help="fit centres on the aggregate and store a new version",
                         description="Fit centres on the aggregate (all time, or the last N "
                         "windows) and store an immutable version whose labels are matched to "
                         "the active version's. The first version becomes active; later ones "
                         "start as candidates.")
    pub.add_argument("--k", type=positive_int, required=True, help="number of clusters")
    pub.add_argument("--windows", type=positive_int, metavar="N",
                     help="fit on the last N time windows (default: all time)")
    pub.add_argument("--n-init", type=positive_int, default=10, metavar="N",
                     help="k-means restarts (default 10)")
    add_seed(pub)
    can = sub.add_parser("canary", help="send a version to a percentage of the devices")
    can.add_argument("version", type=version_id, metavar="V", help="the version id")
    can.add_argument("--percent", type=percent, required=True, metavar="P",
                     help="percentage of devices, in (0, 100]; devices stay in as it grows")
    can.add_argument("--auto-abort", action="store_true",
                     help="withdraw the canary automatically when its cohort behaves worse "
                          "than the control cohort (thresholds: versions drift)")
    can.add_argument("--auto-promote-after", type=positive_int, default=None, metavar="N",
                     help="promote the canary once its cohort streamed N points with no "
                          "regression")
    pro = sub.add_parser("promote", help="make a version active (the previous one is retired)")
    pro.add_argument("version", type=version_id, metavar="V", help="the version id")
    rb = sub.add_parser("rollback", help="retire the active version and restore the previous one")
    ab = sub.add_parser("abort", help="withdraw the canary (back to candidate); the active "
                        "version stays")
    pin = sub.add_parser("pin", help="pin a device to a version ('none' unpins it)")
    pin.add_argument("device_id", metavar="DEVICE", help="the device's id")
    pin.add_argument("version", type=_pin_version, metavar="V",
                     help="the version id, or 'none' to unpin")
    drift = sub.add_parser("drift", help="the drift report: centre movement, cluster sizes, "
                           "device drift, compression")
    ev = sub.add_parser("events", help="the event log of the versions")
    exp = sub.add_parser("export", help="write a version document to a file",
                         description="Write the exact version document that devices download "
                         "(msgpack, digest included) to a file, for 'edgekm assign --version "
                         "FILE' or a device without network.")
    exp.add_argument("--version-id", type=version_id, metavar="V",
                     help="the version (default: the active version)")
    add_output(exp, "the file to write", default_help="default: standard output, unless it "
               "is a terminal")
    auto = sub.add_parser("auto", help="publish automatically (a policy the server runs)",
                          description="Set the model's automatic publishing: the server "
                          "publishes a new version every S seconds, after W points of new "
                          "data, or when the devices' mean drift score reaches D, whichever "
                          "comes first, and only when data arrived since the last version. "
                          "With none of the three, show the policy; --off removes it.")
    auto.add_argument("--every-seconds", type=positive_float, metavar="S",
                      help="publish at most every S seconds")
    auto.add_argument("--every-weight", type=positive_float, metavar="W",
                      help="publish after W new points (merged weight)")
    auto.add_argument("--drift-threshold", type=positive_float, metavar="D",
                      help="publish when the devices' mean drift score reaches D")
    auto.add_argument("--k", type=positive_int,
                      help="number of clusters (default: the k of the latest version)")
    auto.add_argument("--windows", type=positive_int, metavar="N",
                      help="fit on the last N time windows (default: all time)")
    auto.add_argument("--off", action="store_true", help="remove the policy")
    for q in (lst, pub, can, pro, rb, ab, pin, drift, ev, exp, auto):
        add_db(q)
        q.add_argument("--model", required=True, metavar="M", help="the model")
        add_json(q)
    p.set_defaults(handler=run)


def run(args):
    with open_aggregator(args.db) as agg:
        try:
            result = _run_versions(agg, args)
        except _USAGE_ERRORS as exc:
            raise UsageError(str(exc)) from None
        except EdgekmError:             # any other error of edgekm's is its own failure
            raise
        except ValueError as exc:       # a bad argument that the aggregator refused
            raise UsageError(str(exc)) from None
    # an exported document on standard output: the report goes to stderr
    stream = sys.stderr if args.action == "export" and args.output is None else None
    if args.json:
        print_json(result, args, stream=stream)
    else:
        _print_versions_result(args.action, result, stream)
    return 0


def _run_versions(agg, args):
    model, action = args.model, args.action
    if action == "list":
        return {"model": model, **agg.rollout_state(model),
                "versions": [_per_point(v) for v in agg.versions(model)]}
    if action == "publish":
        v = _publish(agg, args)
        return _per_point([i for i in agg.versions(model) if i["version"] == v][0])
    if action == "canary":
        return agg.canary(model, args.version, args.percent, actor="cli",
                          auto_abort=args.auto_abort,
                          auto_promote_after=args.auto_promote_after)
    if action == "promote":
        return agg.promote(model, args.version, actor="cli")
    if action == "rollback":
        return agg.rollback(model, actor="cli")
    if action == "abort":
        return agg.abort_canary(model, actor="cli")
    if action == "pin":
        return agg.pin(model, args.device_id, args.version, actor="cli")
    if action == "drift":
        return agg.drift(model)
    if action == "export":
        return _export(agg, args)
    if action == "auto":
        return _auto(agg, args)
    return agg.version_events(model)


def _per_point(v):
    """A version's dict with ``cost_per_point``: its cost over its training weight, which
    compares versions fitted on different amounts of data."""
    weight = v.get("training_weight") or 0
    return dict(v, cost_per_point=v["cost"] / weight if weight > 0 else None)


def _publish(agg, args):
    """``publish``; a k above what the aggregate holds is said in the user's terms."""
    try:
        return agg.publish(args.model, args.k, args.windows, n_init=args.n_init,
                           random_state=args.seed, actor="cli")
    except ValueError:
        summary = agg.aggregate(args.model, args.windows)
        if len(summary) >= args.k:
            raise
        where = "all time" if args.windows is None else f"the last {args.windows} window(s)"
        raise UsageError(
            f"cannot fit --k {args.k}: the aggregate of model {args.model!r} over {where} "
            f"holds {len(summary)} summary point(s), standing for {summary.total_weight:g} "
            f"device point(s); publish with --k {len(summary)} or less, or after more "
            "data has been synced") from None


def _auto(agg, args):
    """Set, show or remove the automatic publishing policy."""
    triggers = (args.every_seconds, args.every_weight, args.drift_threshold)
    if args.off and any(t is not None for t in triggers):
        raise UsageError("--off removes the policy; give it alone")
    if not args.off and all(t is None for t in triggers):
        return {"model": args.model, "policy": agg.publish_policy(args.model)}
    if not args.off and args.k is None and not agg.versions(args.model):
        raise UsageError(f"give --k: model {args.model!r} has no version yet to take k from")
    policy = agg.set_publish_policy(args.model, *triggers, n_clusters=args.k,
                                    windows=args.windows, actor="cli")
    return {"model": args.model, "policy": policy}


def _export(agg, args):
    """Write the version document to ``--output`` (atomically) or standard output."""
    if args.output is None and sys.stdout.isatty():
        raise UsageError("the version document is binary: give -o FILE, or redirect the output")
    if args.output is not None:
        check_output_path(args.output)
    v = chosen_version(agg, args.model, args.version_id)
    body, digest = agg.version_body(args.model, v)
    if args.output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    else:
        tmp = args.output + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, args.output)
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise UsageError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    return {"model": args.model, "version": v, "digest": digest, "bytes": len(body),
            "output": args.output}


def _num(value):
    """A figure for the text output: ``-`` for None, 4 significant digits for a float, a
    list of them for a list."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_num(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _compression(ratio):
    """The telemetry's raw bytes over its forwarded bytes, said both ways round."""
    if not ratio:
        return "-"
    if ratio >= 1:
        return f"the telemetry is {ratio:.3g}x smaller than the raw data"
    return f"the telemetry is {1 / ratio:.3g}x more than the raw data (small windows)"


def _print_versions_result(action, result, stream=None):
    if action == "auto":
        policy = result["policy"]
        print(f"model {result['model']}: no automatic publishing" if policy is None else
              f"model {result['model']}: automatic publishing "
              + ", ".join(f"{k} {_num(v)}" for k, v in sorted(policy.items())
                          if v is not None and k != "model"), file=stream)
    elif action == "export":
        print(f"version {result['version']} of {result['model']!r} ({result['bytes']} bytes, "
              f"digest {result['digest'][:12]}...) -> {result['output'] or 'standard output'}",
              file=stream)
    elif action == "list":
        print(f"{'version':>7} {'status':<10} {'k':>4} {'parent':>6} {'shift':>10} "
              f"{'points':>10} {'cost/point':>12} {'created':<20}")
        for v in result["versions"]:
            status = v["status"] + (f" {v['canary_percent']:g}%" if v["status"] == "canary"
                                    else "")
            print(f"{v['version']:>7} {status:<10} {v['k']:>4} {v['parent'] or '-':>6} "
                  f"{_num(v['shift']):>10} {v['training_weight']:>10.0f} "
                  f"{_num(v['cost_per_point']):>12} {when(v['created']):<20}")
        for device, v in result["pins"].items():
            print(f"pinned: {device} -> {v}")
    elif action == "publish":
        print(f"version {result['version']} published ({result['status']}, k={result['k']}, "
              f"{result['training_weight']:.0f} points, cost per point "
              f"{_num(result['cost_per_point'])})")
    elif action == "canary":
        gate = (" (auto-abort)" if result.get("auto_abort") else "") + (
            f" (auto-promote after {result['auto_promote_after']:,} points)"
            if result.get("auto_promote_after") else "")
        print(f"version {result['version']} is the canary for {result['percent']:g}% of "
              f"devices{gate}")
    elif action in ("promote", "rollback"):
        retired = result["retired"]
        print(f"version {result['active']} is active"
              + (f"; version {retired} retired" if retired is not None else ""))
    elif action == "abort":
        active = result["active"]
        print(f"canary version {result['aborted']} withdrawn (candidate again); "
              + (f"version {active} is active" if active is not None else "no active version"))
    elif action == "pin":
        if result["version"] is None:
            print(f"device {result['device']} unpinned")
        else:
            print(f"device {result['device']} pinned to version {result['version']}")
    elif action == "drift":
        d = result["devices"]
        print(f"model {result['model']}: active {_num(result['active'])}, canary "
              f"{_num(result['canary'])}")
        for v in result["versions"]:
            print(f"  version {v['version']} ({v['status']}): shift {_num(v['shift'])}, share "
                  f"change {_num(v['share_change'])}, empty {_num(v['empty_clusters'])}, cost "
                  f"{_num(v['cost'])}")
        print(f"  devices reporting {d['reporting']}: mean drift "
              f"{_num(d['mean_drift_score'])}, max {_num(d['max_drift_score'])}, over "
              f"{_num(d['threshold'])}: {_num(d['over_threshold'])}")
        print(f"  compression: {_compression(result['telemetry']['compression_ratio'])}")
        g = result.get("canary_gate")
        if g is not None:
            t = g["thresholds"]
            print(f"  canary gate: min points {t['min_points']:,} per cohort, beyond-p99 margin "
                  f"{t['tail_margin']:g} (z > {t['z']:g}), cost margin {t['cost_margin']:.0%}; "
                  f"auto-abort {'on' if g['auto_abort'] else 'off'}, auto-promote after "
                  f"{g['auto_promote_after'] or '-'}")
            f = g["figures"]
            if f is not None:
                print(f"    canary {f['canary_points']:,} points vs control "
                      f"{f['control_points']:,}: {f['verdict']} {f['reasons'] or ''}")
    else:
        for e in result:
            print(f"{when(e['at'])} {e['actor']:<6} {e['action']:<9} v{e['version']} "
                  f"{e['old_status'] or '-'} -> {e['new_status'] or '-'} {e['detail'] or ''}")
