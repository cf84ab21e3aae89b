"""``edgekm models``: register and list models."""

from edgekm.cli._common import (add_db, add_json, open_aggregator, positive_float, positive_int,
                               print_json)
from edgekm.exceptions import FrameError, UsageError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "models",
        help="register and list models",
        description="Manage the models of the aggregator (needed when the server runs with "
        "--no-auto-create-models).",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a model")
    add.add_argument("model", metavar="MODEL", help="the model's name")
    add.add_argument("--n-features", type=positive_int, required=True, metavar="D",
                     help="number of features of the model's points")
    add.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="storage type of the aggregate's points (default float32)")
    add.add_argument("--window-seconds", type=positive_float, metavar="S",
                     help="length of the model's time windows (default 3600)")
    lst = sub.add_parser("list", help="list the models with their weights and frame counts")
    for q in (add, lst):
        add_db(q)
        add_json(q)
    p.set_defaults(handler=run)


def run(args):
    with open_aggregator(args.db) as agg:
        try:
            if args.action == "add":
                agg.add_model(args.model, args.n_features, dtype=args.dtype,
                              window_seconds=args.window_seconds)
                info = agg.model_info(args.model, with_windows=False)
                if args.json:
                    print_json(info, args)
                else:
                    print(f"model {args.model} ({info['n_features']} features, "
                          f"{info['dtype']}) registered")
            else:
                models = agg.list_models()
                if args.json:
                    print_json(models, args)
                else:
                    print(f"{'model':<24} {'features':>8} {'frames':>10} {'devices':>8} "
                          f"{'total weight':>16}")
                    for m in models:
                        print(f"{m['model']:<24} {m['n_features']:>8} {m['frames']:>10} "
                              f"{m['devices']:>8} {m['total_weight']:>16.0f}")
        except (ValueError, FrameError) as exc:
            raise UsageError(str(exc)) from None
    return 0
