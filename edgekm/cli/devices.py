"""``edgekm devices``: register, list, rotate and revoke device keys."""

from edgekm.cli._common import add_db, add_json, open_aggregator, print_json, when
from edgekm.exceptions import DeviceExistsError, FrameError, UnknownDeviceError, UsageError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "devices",
        help="register, list, rotate and revoke device keys",
        description="Manage the devices allowed to upload frames to the aggregator.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a device and print its secret key",
                         description="Register a device and print its new secret key (hex). "
                         "The key is shown once; give it to the device.")
    add.add_argument("device_id", metavar="DEVICE_ID",
                     help="the new device's id (letters, digits, '.', '_', '-')")
    lst = sub.add_parser("list", help="list the devices (never their keys)")
    rot = sub.add_parser("rotate", help="give a device a new key (the old one stops working)",
                         description="Rotate a device's key: print a new secret key (hex), "
                         "shown once. Requests signed with the old key get 401 from now on; "
                         "frames the device could not send wait in its outbox.")
    rot.add_argument("device_id", metavar="DEVICE_ID", help="the device's id")
    rev = sub.add_parser("revoke", help="revoke a device (kept for audit)",
                         description="Revoke a device: its requests get 403 from now on. "
                         "The device stays listed, with its revocation time.")
    rev.add_argument("device_id", metavar="DEVICE_ID", help="the device's id")
    add_db(add, create=True)
    for q in (lst, rev, rot):
        add_db(q)
    for q in (add, lst, rev, rot):
        add_json(q)
    p.set_defaults(handler=run)


def run(args):
    with open_aggregator(args.db, create=args.action == "add") as agg:
        try:
            if args.action in ("add", "rotate"):
                key = (_add(agg, args.device_id) if args.action == "add"
                       else agg.rotate_device_key(args.device_id))
                done = "added" if args.action == "add" else "has a new key"
                if args.json:
                    print_json({"device_id": args.device_id, "key": key}, args)
                else:
                    print(f"device {args.device_id} {done}; its key (shown once):\n{key}")
            elif args.action == "revoke":
                agg.revoke_device(args.device_id)
                if args.json:
                    print_json({"device_id": args.device_id, "revoked": True}, args)
                else:
                    print(f"device {args.device_id} revoked")
            else:
                devices = agg.list_devices()
                if args.json:
                    print_json(devices, args)
                else:
                    _print_devices(devices)
        except (DeviceExistsError, UnknownDeviceError, FrameError) as exc:
            raise UsageError(str(exc)) from None
    return 0


def _add(agg, device_id):
    """``add_device``; a taken id says whether it is active (rotate) or revoked (a new id)."""
    try:
        return agg.add_device(device_id)
    except DeviceExistsError:
        known = {d["device_id"]: d for d in agg.list_devices()}.get(device_id)
        if known is not None and known["revoked"] is not None:
            raise UsageError(f"device {device_id!r} was revoked at {when(known['revoked'])}; a "
                             "revoked id stays taken (kept for audit): register the device "
                             "under a new id") from None
        raise UsageError(f"device {device_id!r} already exists; 'edgekm devices rotate "
                         f"{device_id}' gives it a new key") from None


def _print_devices(devices):
    print(f"{'device':<24} {'status':<8} {'frames':>8}  {'created':<20} {'last frame':<20}")
    for d in devices:
        status = "revoked" if d["revoked"] is not None else "active"
        print(f"{d['device_id']:<24} {status:<8} {d['frames']:>8}  {when(d['created']):<20} "
              f"{when(d['last_received']):<20}")
