"""Write the golden v1 frames in this folder, the v2 frames in ``v2/``, and their ``expected.json``.

Run once, when a frame version is introduced::

    python tests/golden/make_golden.py            # writes missing files only
    python tests/golden/make_golden.py --check    # regenerate in memory, compare

The committed ``*.msgpack`` files are the point: they stand for frames that
devices in the field have already sent, and ``tests/wire/test_frame.py`` decodes
them in every run.  They must never be regenerated to make a test pass.  The
script therefore refuses to overwrite a file whose content would change
unless ``--force`` is given (and a forced rewrite of a released version's
frames is a format break).

Content is fixed and independent of NumPy's random generators: values come
from a small integer hash (splitmix64) below, so a rerun on any platform
gives the same bytes.  ``expected.json`` is computed from the *inputs*, not by
decoding the output, so the tests compare the decoder with an independent
statement of what each frame holds.
"""

import argparse
import hashlib
import json
import zlib
import sys
from pathlib import Path

import numpy as np

from edgekm.sync.wire.frame import encode_frame

HERE = Path(__file__).resolve().parent
MASK = (1 << 64) - 1


def splitmix64(seed, count):
    """``count`` unsigned 64-bit integers from a splitmix64 stream."""
    out, x = [], seed & MASK
    for _ in range(count):
        x = (x + 0x9E3779B97F4A7C15) & MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def uniform(seed, count, lo, hi):
    """Doubles in [lo, hi) from the top 53 bits of splitmix64."""
    return [lo + (hi - lo) * ((u >> 11) / 2.0**53) for u in splitmix64(seed, count)]


def pts(seed, n, d, dtype):
    return np.array(uniform(seed, n * d, -50.0, 50.0), dtype=np.float64).reshape(n, d).astype(dtype)


def int_weights(seed, n, hi):
    return np.array([1 + u % hi for u in splitmix64(seed, n)], dtype=np.float64)


def frac_weights(seed, n):
    return np.array(uniform(seed, n, 0.25, 40.0), dtype=np.float64)


def specs():
    """name -> (description, encode_frame keyword arguments)."""
    return {
        "example_f4_n2_d3": (
            "The worked example of sync/PROTOCOL.md (hex dump and signature).",
            dict(model="demo", device="dev-01", boot=7, seq=42, span=[100, 101],
                 points=np.array([[0.5, -1.0, 2.0], [3.25, 0.0, -0.125]], dtype=np.float32),
                 weights=np.array([1.0, 2.5]), level=0, created=1700000000.25)),
        "f4_n1_d1_int_l0": (
            "Smallest frame: one float32 point, d=1, one integer weight, level 0.",
            dict(model="m", device="d", boot=0, seq=0, span=[0, 0],
                 points=np.array([[1.5]], dtype=np.float32), weights=np.array([1.0]),
                 level=0, created=0.0)),
        "f8_n1_d16_frac_l5": (
            "One float64 point, d=16, fractional weight, level 5.",
            dict(model="shuttle", device="sensor-0001", boot=3, seq=17, span=[4096, 8191],
                 points=pts(11, 1, 16, np.float64), weights=np.array([4096.375]),
                 level=5, created=1767225600.5)),
        "f4_n200_d16_frac_l5": (
            "A typical device frame: 200 float32 points, d=16, fractional weights, level 5.",
            dict(model="shuttle", device="sensor-0001", boot=3, seq=18, span=[8192, 65535],
                 points=pts(12, 200, 16, np.float32), weights=frac_weights(13, 200),
                 level=5, created=1767229200.125)),
        "f8_n200_d1_int_l0": (
            "200 float64 points, d=1, integer weights, level 0.",
            dict(model="line.v2", device="edge_7", boot=1, seq=1, span=[0, 199],
                 points=pts(14, 200, 1, np.float64), weights=int_weights(15, 200, 9),
                 level=0, created=1700000001.0)),
        "f8_n200_d16_int_l5": (
            "200 float64 points, d=16, large integer weights (total near 2**48), level 5.",
            dict(model="Fleet-A", device="GW.17", boot=2**32 + 5, seq=123456789, span=[10, 2**40],
                 points=pts(16, 200, 16, np.float64), weights=int_weights(17, 200, 2**40),
                 level=5, created=1800000000.0)),
        "f4_n2_d2_extremes": (
            "Edge values: 64-character ids, boot 2**64-1, seq and span end 2**63-1, level 1024, "
            "created just below 2**40, points -0.0 / smallest subnormal / float32 max, "
            "total exactly 2**52.",
            dict(model="M" * 64, device="0" + "d" * 63, boot=2**64 - 1, seq=2**63 - 1,
                 span=[2**63 - 2, 2**63 - 1],
                 points=np.array([[-0.0, np.float32(1e-45)],
                                  [np.finfo(np.float32).max, -np.finfo(np.float32).max]],
                                 dtype=np.float32),
                 weights=np.array([2.0**52 - 1, 1.0]), level=1024,
                 created=float(np.nextafter(2.0**40, 0)))),
    }


def specs_v2():
    """name -> (description, encode_frame keyword arguments) of the v2 frames (with spread)."""
    v1 = specs()
    out = {}
    for name, spread in (("example_f4_n2_d3", np.array([0.0, 0.75])),
                         ("f4_n1_d1_int_l0", np.array([0.0])),
                         ("f4_n200_d16_frac_l5", frac_weights(21, 200) * 3.0),
                         ("f8_n200_d16_int_l5", np.array(uniform(22, 200, 0.0, 2.0**60)))):
        description, kw = v1[name]
        out[name] = (description + " Frame v2: with a spread per point.",
                     dict(kw, spread=spread))
    description, kw = v1["f4_n2_d2_extremes"]
    out["f4_n2_d2_extremes"] = (
        description + " Frame v2: spread 0 and the largest float64.",
        dict(kw, spread=np.array([0.0, np.finfo(np.float64).max])))
    return out


def expected_entry(description, kw, body):
    points = np.asarray(kw["points"])
    code = points.dtype.newbyteorder("<").str
    pb = np.ascontiguousarray(points, dtype=code).tobytes()
    weights = np.ascontiguousarray(kw["weights"], dtype="<f8")
    wb = weights.tobytes()
    total = 0.0
    for w in weights.tolist():          # sequential float64 sum, left to right
        total += w
    if "spread" in kw:
        sb = np.ascontiguousarray(kw["spread"], dtype="<f8").tobytes()
        entry = _entry(description, kw, body, code, points, pb, weights, wb, total)
        entry["fields"]["v"] = 2
        entry["fields"]["crc32"] = zlib.crc32(pb + wb + sb)
        entry["spread_sha256"] = hashlib.sha256(sb).hexdigest()
        return entry
    return _entry(description, kw, body, code, points, pb, weights, wb, total)


def _entry(description, kw, body, code, points, pb, weights, wb, total):
    return {
        "description": description,
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "fields": {
            "v": 1, "kind": "coreset", "model": kw["model"], "device": kw["device"],
            "boot": kw["boot"], "seq": kw["seq"], "span": list(kw["span"]),
            "n": points.shape[0], "d": points.shape[1], "dtype": code,
            "total": total, "level": kw["level"], "created": kw["created"],
            "crc32": zlib.crc32(pb + wb),
        },
        # checksums of the decoded arrays, taken over their little-endian bytes
        "points_sha256": hashlib.sha256(pb).hexdigest(),
        "weights_sha256": hashlib.sha256(wb).hexdigest(),
        "points_first_row": points[0].astype(np.float64).tolist(),
        "weights_first": float(weights[0]),
    }


def build():
    """file name -> bytes of every golden file: the v1 frames here, the v2 frames in v2/."""
    files = {}
    for folder, version, frames in (("", "v1", specs()), ("v2/", "v2", specs_v2())):
        expected = {}
        for name, (description, kw) in frames.items():
            body = encode_frame(**kw)
            files[f"{folder}{name}.msgpack"] = body
            expected[f"{name}.msgpack"] = expected_entry(description, kw, body)
        text = json.dumps({"format": f"edgekm coreset frame {version}", "frames": expected},
                          indent=2, sort_keys=False) + "\n"
        files[f"{folder}expected.json"] = text.encode()
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files; write nothing")
    parser.add_argument("--force", action="store_true",
                        help="overwrite files whose content changed (a format break)")
    args = parser.parse_args(argv)
    changed = []
    for name, data in build().items():
        path = HERE / name
        old = path.read_bytes() if path.exists() else None
        if old == data:
            continue
        if args.check or (old is not None and not args.force):
            changed.append(name)
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(HERE.parent.parent)} ({len(data)} bytes)")
    if changed:
        verb = "differs from" if args.check else "would overwrite"
        for name in changed:
            print(f"{name}: generator output {verb} the committed file", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
