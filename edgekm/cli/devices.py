"""``edgekm devices``: register, list and revoke device keys."""

from edgekm.cli._common import add_db, add_json, open_aggregator, print_json, when
from edgekm.exceptions import DeviceExistsError, FrameError, UnknownDeviceError, UsageError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "devices",
        help="register, list and revoke device keys",
        description="Manage the devices allowed to upload frames to the aggregator.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a device and print its secret key",
                         description="Register a device and print its new secret key (hex). "
                         "The key is shown once; give it to the device.")
    add.add_argument("device_id", metavar="DEVICE_ID")
    lst = sub.add_parser("list", help="list the devices (never their keys)")
    rev = sub.add_parser("revoke", help="revoke a device (kept for audit)",
                         description="Revoke a device: its requests get 403 from now on. "
                         "The device stays listed, with its revocation time.")
    rev.add_argument("device_id", metavar="DEVICE_ID")
    add_db(add, create=True)
    for q in (lst, rev):
        add_db(q)
    for q in (add, lst, rev):
        add_json(q)
    p.set_defaults(handler=run)


def run(args):
    with open_aggregator(args.db, create=args.action == "add") as agg:
        try:
            if args.action == "add":
                key = agg.add_device(args.device_id)
                if args.json:
                    print_json({"device_id": args.device_id, "key": key}, args)
                else:
                    print(f"device {args.device_id} added; its key (shown once):\n{key}")
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


def _print_devices(devices):
    print(f"{'device':<24} {'status':<8} {'frames':>8}  {'created':<20} {'last frame':<20}")
    for d in devices:
        status = "revoked" if d["revoked"] is not None else "active"
        print(f"{d['device_id']:<24} {status:<8} {d['frames']:>8}  {when(d['created']):<20} "
              f"{when(d['last_received']):<20}")
