"""``sync/openapi.json`` is the one OpenAPI description of the HTTP API: it names exactly
the server's routes, it is what ``GET /openapi.json`` serves, and schemathesis run from it
against a real ``edgekm serve`` sees only documented statuses, never a 5xx."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from edgekm.sync.cloud.http.errors import ERRORS  # noqa: E402
from edgekm.sync.cloud.http.routes import ROUTES, openapi_document  # noqa: E402
from helpers import fakes  # noqa: E402
from helpers.serve import start_serve, stop_serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "sync" / "openapi.json").read_text())
METHODS = {"get", "post", "put", "delete", "patch"}
#: bounds of the schemathesis run: examples per operation and seconds in all
MAX_EXAMPLES = 15
MAX_SECONDS = 45


def declared():
    return {(path, method.upper()) for path, item in DOCUMENT["paths"].items()
            for method in item if method in METHODS}


def test_the_document_names_exactly_the_routes_of_the_server():
    routes = {(r.path, m) for r in ROUTES for m in r.methods if m != "HEAD"}
    assert declared() == routes


def test_the_server_serves_the_document():
    assert json.loads(openapi_document()) == DOCUMENT


def test_every_status_of_the_error_table_is_declared():
    statuses = {int(code) for item in DOCUMENT["paths"].values() for method, op in item.items()
                if method in METHODS for code in op["responses"]}
    assert {status for status, _ in ERRORS.values()} <= statuses
    assert not {s for s in statuses if s >= 500} - {503}


def test_every_operation_declares_its_security_and_responses():
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                assert "security" in op and "200" in op["responses"], (path, method)
                if op["security"]:
                    assert "401" in op["responses"] and "403" in op["responses"], (path, method)


def populate(db):
    """A model with data, a device and a version, so that the run gets past the 404s."""
    from edgekm.sync.cloud.aggregator import Aggregator
    agg = Aggregator(db, random_state=0)
    try:
        agg.add_model("demo", 3)
        agg.add_device("dev-01")
        for seq in range(4):
            agg.accept("demo", "dev-01", fakes.make_frame(device="dev-01", model="demo",
                                                           seq=seq, n=20,
                                                           created=time.time()))
        agg.publish("demo", 2)
    finally:
        agg.close()


@pytest.mark.skipif(shutil.which("schemathesis", path=os.path.dirname(sys.executable)) is None,
                    reason="schemathesis is not installed (pip install schemathesis)")
def test_schemathesis_against_a_real_edgekm_serve(tmp_path):
    db = tmp_path / "st.db"
    populate(db)
    proc, url = start_serve(db, "--admin-token", "st-admin")
    try:
        with urllib.request.urlopen(url + "/openapi.json", timeout=10) as r:
            assert json.loads(r.read()) == DOCUMENT
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "helpers.schemathesis_hooks",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"),
                                              os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run",
             url + "/openapi.json",
             "--checks", "not_a_server_error,status_code_conformance,"
                         "content_type_conformance,response_schema_conformance",
             "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS),
             "--seed", "0", "--no-shrink", "--workers", "1",
             "--header", "authorization: Bearer st-admin"],
            capture_output=True, text=True, timeout=MAX_SECONDS + 60, env=env, cwd=tmp_path)
    finally:
        err = stop_serve(proc)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
