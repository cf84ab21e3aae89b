"""Fuzz the decoders of untrusted bytes with atheris (libFuzzer).

Targets: ``frame`` (:func:`edgekm.sync.wire.frame.decode_frame`, the aggregator's
input), ``telemetry`` (:func:`edgekm.sync.wire.telemetry.decode_telemetry`) and
``version`` (:func:`edgekm.sync.wire.version.decode_version`, the device's input).
Each input is decoded as it is and once more with its crc32 (frames) or
digest (versions: the input is then the payload) made right, so that the
fuzzer reaches the validation behind them.  Each may raise only its
documented error (``FrameError``,
``TelemetryError``, ``VersionError``); any other exception is a crash,
and libFuzzer writes the input to ``tests/fuzz_corpus/crashers/``, where
``tests/wire/test_fuzz.py`` replays it in every run.  libFuzzer also fails an
input that runs longer than ``-timeout`` seconds (1) or a process above
``-rss_limit_mb`` (1024) or one allocation above ``-malloc_limit_mb`` (256).

The seed corpus is ``tests/fuzz_corpus/<target>/``: the golden frames of
``tests/golden/`` and valid telemetry summaries and versions
(``--write-seeds`` regenerates the latter).  New inputs that libFuzzer
finds go to a scratch directory, not into the repository.

Needs the ``fuzz`` extra (``pip install 'edgekm[fuzz]'``)::

    python tools/fuzz_frame.py frame --seconds 300
    python tools/fuzz_frame.py --write-seeds

Prints the number of inputs tried (libFuzzer's last ``#N``).
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, "tests", "fuzz_corpus")
CRASHERS = os.path.join(CORPUS, "crashers")
TARGETS = ("frame", "telemetry", "version")


def decoders():
    """``{target: (decode, documented error)}``."""
    from edgekm.sync.wire.frame import FrameError, decode_frame
    from edgekm.sync.wire.telemetry import TelemetryError, decode_telemetry
    from edgekm.sync.wire.version import VersionError, decode_version

    return {"frame": (decode_frame, FrameError),
            "telemetry": (decode_telemetry, TelemetryError),
            "version": (decode_version, VersionError)}


def seed_inputs():
    """``{target: {name: bytes}}``: valid inputs to start from."""
    import numpy as np

    from edgekm.sync.wire.telemetry import TelemetrySummary, encode_telemetry
    from edgekm.sync.wire.version import CentroidVersion, encode_version

    golden = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "*.msgpack"))):
        with open(path, "rb") as fh:
            golden[os.path.basename(path)] = fh.read()
    rng = np.random.default_rng(0)
    summary = TelemetrySummary(
        model="m", device="dev-1", boot=7, seq=3, window=(1.0, 61.0), version=2,
        counts=np.array([3.0, 1.0]), sums=rng.normal(size=(2, 3)),
        sumsq=rng.random((2, 3)), n_points=4, raw_bytes=48, forwarded_bytes=40,
        anomalies=rng.normal(size=(1, 3)).astype(np.float32),
        anomaly_labels=np.array([1], dtype=np.int32), anomaly_scores=np.array([2.5]), psi=0.1,
        dist_quantiles=np.array([0.1, 0.5, 0.9]), drift_score=0.2, assign_latency_us=3.0,
        anomalies_dropped=0)
    version = CentroidVersion(
        model="m", version=3, parent=2, created=1.0e9, centers=rng.normal(size=(2, 3)),
        cluster_weights=np.array([5.0, 7.0]), quantiles=np.array([[0.1, 0.2, 0.3]] * 2),
        training_weight=12.0, cost=1.5, shift=0.25, windows=4, new_clusters=(1,),
        vanished_clusters=())
    import msgpack

    body = encode_version(version)[0]
    return {"frame": golden,
            "telemetry": {"summary.msgpack": encode_telemetry(summary)},
            "version": {"version.msgpack": body,
                        "payload.msgpack": msgpack.unpackb(body)["payload"]}}


def write_seeds():
    """Write the seed corpus into ``tests/fuzz_corpus/<target>/``."""
    for target, files in seed_inputs().items():
        os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(CORPUS, target, name), "wb") as fh:
                fh.write(data)


def fix_up(target, data):
    """``data`` with its checksum or digest made right, so that the fuzzer gets past it
    to the validation behind (None when ``data`` is not a msgpack map)."""
    import hashlib
    import zlib

    import msgpack

    if target == "version":         # data is the payload: wrap it with its digest
        return msgpack.packb({"digest": hashlib.sha256(data).hexdigest(), "payload": data},
                             use_bin_type=True)
    if target != "frame":
        return None
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False, max_ext_len=0)
    except Exception:               # noqa: BLE001 - any undecodable input: no fix-up
        return None
    if not (isinstance(body, dict) and isinstance(body.get("points"), bytes)
            and isinstance(body.get("weights"), bytes)):
        return None
    body["crc32"] = zlib.crc32(body["weights"], zlib.crc32(body["points"]))
    try:
        return msgpack.packb(body, use_bin_type=True)
    except Exception:               # noqa: BLE001 - unpackable keys: no fix-up
        return None


def one_input(target):
    """The libFuzzer callback of ``target``: the documented error is fine, anything else is not."""
    decode, documented = decoders()[target]

    def test_one(data):
        for candidate in (data, fix_up(target, data)):
            if candidate is None:
                continue
            try:
                decode(candidate)
            except documented:
                pass
    return test_one


def child(target, argv):
    import atheris

    with atheris.instrument_imports():
        import edgekm.sync.wire.frame  # noqa: F401
        import edgekm.sync.wire.telemetry  # noqa: F401
        import edgekm.sync.wire.version  # noqa: F401
    atheris.Setup([sys.argv[0]] + argv, one_input(target))
    atheris.Fuzz()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("target", nargs="?", choices=TARGETS)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--write-seeds", action="store_true")
    args = p.parse_args(argv)
    if args.write_seeds:
        write_seeds()
        return 0
    if args.target is None:
        p.error("a target is required")
    os.makedirs(CRASHERS, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f"edgekm-fuzz-{args.target}-")
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", args.target, scratch,
               os.path.join(CORPUS, args.target), f"-max_total_time={args.seconds}",
               "-timeout=1", "-rss_limit_mb=1024", "-malloc_limit_mb=256",
               f"-artifact_prefix={CRASHERS}/{args.target}-", "-print_final_stats=1"]
        proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        tried = None
        for line in proc.stderr.splitlines():
            if line.startswith("stat::number_of_executed_units:"):
                tried = int(line.split(":")[-1])
        print(proc.stderr[-3000:], file=sys.stderr)
        print(f"target={args.target} seconds={args.seconds} inputs_tried={tried} "
              f"exit={proc.returncode} corpus_found={len(os.listdir(scratch))}")
        return proc.returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
