"""The HTTP API v1 (Starlette app over the aggregator), `edgekm serve` and the admin CLI."""

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
from helpers.serve import start_serve, stop_serve

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    # Starlette >= 1.x prefers the httpx2 fork for its TestClient and warns when it
    # falls back to httpx; the test extra installs httpx, which works unchanged.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient  # noqa: E402

from edgekm.cli import main as cli_main  # noqa: E402
from edgekm.sync.wire import auth
from edgekm.sync.cloud.aggregator import Aggregator  # noqa: E402
from edgekm.sync.cloud.http.app import create_app  # noqa: E402
from helpers import fakes  # noqa: E402

ADMIN = "s3cret-admin-token"


def make_frame(**kw):
    """The shared frame factory, stamped with the wall clock as a device would."""
    return fakes.make_frame(created=time.time(), **kw)


def post_frame(client, key, body, device="dev-a", model="m", path=None, now=None, **extra):
    path = f"/v1/models/{model}/frames" if path is None else path
    headers = auth.signed_headers(key, "POST", path, body, device, now=now)
    headers["content-type"] = "application/msgpack"
    headers.update(extra)
    return client.post(path, content=body, headers=headers)


@pytest.fixture
def agg(tmp_path):
    a = Aggregator(tmp_path / "srv.db", random_state=0, max_frame_bytes=4096)
    yield a
    a.close()


@pytest.fixture
def key(agg):
    return agg.add_device("dev-a")


@pytest.fixture
def client(agg):
    with TestClient(create_app(agg, admin_token=ADMIN)) as c:
        yield c


def check_error(response, status, reason):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["reason"] == reason and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    return body


# ---------------------------------------------------------------- 200


def test_accepted_then_duplicate(client, key, agg):
    body = make_frame()
    r = post_frame(client, key, body)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["status"] == "accepted" and first["frame_id"] == ["m", "dev-a", 1, 0]
    assert first["total_weight"] == first["weight"] == agg.total_weight("m")
    r = post_frame(client, key, body)                      # a retry with a new nonce
    assert r.status_code == 200
    assert r.json() == dict(first, status="duplicate")
    assert agg.frame_count("m") == 1


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "db": "ok"}


# ---------------------------------------------------------------- 4xx


def test_400_bad_frame(client, key):
    body = check_error(post_frame(client, key, b"\x93\x01\x02\x03"), 400, "bad_frame")
    assert "map" in body["error"]


def test_401_unauthorized(client, key, agg):
    body = make_frame()
    path = "/v1/models/m/frames"
    check_error(client.post(path, content=body), 401, "unauthorized")
    h = auth.signed_headers(key, "POST", path, body, "dev-a")
    h[auth.H_SIGNATURE] = "00" * 32
    check_error(client.post(path, content=body, headers=h), 401, "unauthorized")
    stale = check_error(post_frame(client, key, body, now=time.time() - 3600), 401,
                        "unauthorized")
    assert "skew" in stale["error"] and abs(stale["server_time"] - time.time()) < 60
    check_error(post_frame(client, auth.new_key(), make_frame(device="ghost"), device="ghost"),
                401, "unauthorized")
    h = auth.signed_headers(key, "POST", path, body, "dev-a")
    assert client.post(path, content=body, headers=h).status_code == 200
    reused = check_error(client.post(path, content=body, headers=h), 401, "unauthorized")
    assert "nonce" in reused["error"]
    assert agg.frame_count("m") == 1


def test_403_forbidden(client, key, agg):
    check_error(post_frame(client, key, make_frame(model="other"), model="m"), 403, "forbidden")
    agg.add_device("dev-b")
    check_error(post_frame(client, key, make_frame(device="dev-b")), 403, "forbidden")
    agg.revoke_device("dev-a")
    body = check_error(post_frame(client, key, make_frame()), 403, "forbidden")
    assert "revoked" in body["error"]


def test_404_unknown_model_and_route(tmp_path):
    agg = Aggregator(tmp_path / "a.db", auto_create_models=False)
    key = agg.add_device("dev-a")
    with TestClient(create_app(agg)) as client:
        check_error(post_frame(client, key, make_frame()), 404, "unknown_model")
        check_error(client.get("/nope"), 404, "not_found")
        check_error(client.get("/v1/models/m/frames"), 405, "method_not_allowed")
        agg.add_model("m", 3)
        assert post_frame(client, key, make_frame()).status_code == 200
    agg.close()


def test_409_conflict(client, key):
    assert post_frame(client, key, make_frame(seq=4)).status_code == 200
    check_error(post_frame(client, key, make_frame(seq=4, seed=77)), 409, "conflict")


def test_413_too_large(client, key, agg):
    big = make_frame(n=200)
    assert len(big) > agg.max_frame_bytes
    check_error(post_frame(client, key, big), 413, "too_large")

    def chunks():                    # no content-length: stopped while reading
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]
    path = "/v1/models/m/frames"
    h = auth.signed_headers(key, "POST", path, big, "dev-a")
    r = client.post(path, content=chunks(), headers=h)
    check_error(r, 413, "too_large")
    assert agg.frame_count() == 0


def test_413_limit_and_limit_plus_one(tmp_path):
    body = make_frame()
    for limit, status in ((len(body), 200), (len(body) - 1, 413)):
        agg = Aggregator(tmp_path / f"l{limit}.db", max_frame_bytes=limit)
        key = agg.add_device("dev-a")
        with TestClient(create_app(agg)) as client:
            assert post_frame(client, key, body).status_code == status
        agg.close()


def test_422_wrong_dimension(client, key):
    assert post_frame(client, key, make_frame(seq=0)).status_code == 200
    check_error(post_frame(client, key, make_frame(seq=1, d=5)), 422, "wrong_dimension")


def test_bad_model_name_in_url(client, key):
    check_error(post_frame(client, key, make_frame(), path="/v1/models/.bad/frames"), 404,
                "unknown_model")


# ---------------------------------------------------------------- 5xx


def test_503_when_unavailable(tmp_path):
    agg = Aggregator(tmp_path / "u.db")
    key = agg.add_device("dev-a")
    app = create_app(agg)
    with TestClient(app) as client:
        agg.close()
        r = post_frame(client, key, make_frame())
        check_error(r, 503, "unavailable")
        assert r.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 503


def test_503_when_shutting_down(agg, key):
    app = create_app(agg)
    with TestClient(app) as client:
        app.state.committer.stopping = True
        check_error(post_frame(client, key, make_frame()), 503, "unavailable")
        app.state.committer.stopping = False
        assert post_frame(client, key, make_frame()).status_code == 200


def test_500_never_leaks_a_traceback(agg, key, monkeypatch):
    def broken(uploads):
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(agg, "accept_signed", broken)
    with TestClient(create_app(agg)) as client:
        r = post_frame(client, key, make_frame())
        check_error(r, 500, "internal")
        assert "secret" not in r.text


# ---------------------------------------------------------------- admin endpoints


def _fill(client, key, n_frames=6):
    total = 0.0
    for seq in range(n_frames):
        r = post_frame(client, key, make_frame(seq=seq, n=30))
        assert r.status_code == 200
        total += r.json()["weight"]
    return total


def test_fit_endpoint_with_admin_token(client, key):
    total = _fill(client, key)
    auth_header = {"authorization": f"Bearer {ADMIN}"}
    r = client.post("/v1/models/m/fit", json={"n_clusters": 3}, headers=auth_header)
    assert r.status_code == 200, r.text
    out = r.json()
    assert np.asarray(out["centers"]).shape == (3, 3)
    assert sum(out["cluster_weights"]) == pytest.approx(total)
    assert out["total_weight"] == total and out["windows"] is None and out["cost"] >= 0
    again = client.post("/v1/models/m/fit", json={"n_clusters": 3}, headers=auth_header).json()
    assert again["centers"] == out["centers"]                # random_state 0 by default
    r = client.post("/v1/models/m/fit", json={"n_clusters": 2, "windows": 1, "n_init": 2,
                                              "random_state": 5}, headers=auth_header)
    assert r.status_code == 200 and r.json()["windows"] == 1
    info = client.get("/v1/models/m", headers=auth_header).json()
    assert info["total_weight"] == total and info["frames"] == 6 and info["devices"] == 1
    assert info["n_features"] == 3 and len(info["windows"]) == 1


def test_fit_endpoint_errors(client, key):
    _fill(client, key, 1)
    good = {"authorization": f"Bearer {ADMIN}"}
    check_error(client.post("/v1/models/m/fit", json={"n_clusters": 3}), 401, "unauthorized")
    check_error(client.post("/v1/models/m/fit", json={"n_clusters": 3},
                            headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
    check_error(client.get("/v1/models/m"), 401, "unauthorized")
    for bad in ({}, {"n_clusters": 0}, {"n_clusters": "3"}, {"n_clusters": 3, "windows": 0},
                {"n_clusters": 3, "extra": 1}, [3]):
        check_error(client.post("/v1/models/m/fit", json=bad, headers=good), 400, "bad_request")
    check_error(client.post("/v1/models/m/fit", content=b"{not json", headers=good), 400,
                "bad_request")
    check_error(client.post("/v1/models/nope/fit", json={"n_clusters": 3}, headers=good), 404,
                "unknown_model")
    check_error(client.post("/v1/models/m/fit", json={"n_clusters": 500}, headers=good), 422,
                "not_enough_data")


def test_admin_endpoints_are_disabled_without_a_token(agg, key):
    with TestClient(create_app(agg)) as client:
        _fill(client, key, 1)
        check_error(client.post("/v1/models/m/fit", json={"n_clusters": 2},
                                headers={"authorization": f"Bearer {ADMIN}"}), 403, "forbidden")
        check_error(client.get("/v1/models/m"), 403, "forbidden")


def test_concurrent_uploads_are_group_committed(agg):
    """Many uploads at once: every one is answered after its commit, none is lost."""
    import concurrent.futures

    keys = {f"dev-{i}": agg.add_device(f"dev-{i}") for i in range(8)}
    with TestClient(create_app(agg)) as client:
        def send(args):
            device, seq = args
            return post_frame(client, keys[device], make_frame(device=device, seq=seq),
                              device=device)
        jobs = [(d, s) for d in keys for s in range(6)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, jobs))
    assert [r.status_code for r in responses] == [200] * len(jobs), responses[0].text
    assert agg.frame_count("m") == len(jobs)
    assert agg.total_weight("m") == sum(r.json()["weight"] for r in responses)


# ---------------------------------------------------------------- command line


def test_cli_devices_and_models(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    assert cli_main(["devices", "add", "dev-1", "--db", db, "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["device_id"] == "dev-1" and len(bytes.fromhex(added["key"])) == 32
    assert cli_main(["devices", "add", "dev-1", "--db", db]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["devices", "add", "bad id", "--db", db]) == 2
    capsys.readouterr()
    assert cli_main(["devices", "add", "dev-2", "--db", db]) == 0
    assert "dev-2" in capsys.readouterr().out
    assert cli_main(["devices", "revoke", "dev-2", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"device_id": "dev-2", "revoked": True}
    assert cli_main(["devices", "revoke", "nobody", "--db", db]) == 2
    assert "edgekm: error: no device" in capsys.readouterr().err
    assert cli_main(["devices", "list", "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["device_id"], d["revoked"] is None) for d in listed] == [("dev-1", True),
                                                                      ("dev-2", False)]
    assert "key" not in capsys.readouterr().out
    assert cli_main(["devices", "list", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "revoked" in text and added["key"] not in text
    assert cli_main(["models", "add", "m1", "--n-features", "4", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_features"] == 4
    assert cli_main(["models", "add", "m1", "--n-features", "5", "--db", db]) == 2
    capsys.readouterr()
    assert cli_main(["models", "list", "--db", db, "--json"]) == 0
    assert [m["model"] for m in json.loads(capsys.readouterr().out)] == ["m1"]
    assert cli_main(["devices"]) == 2
    assert cli_main(["serve", "--db", db, "--port", "70000"]) == 2
    assert cli_main(["serve", "--db", db, "--merge-degree", "1"]) == 2
    capsys.readouterr()
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert cli_main(["devices", "list", "--db", str(foreign)]) == 2
    assert "not an edgekm" in capsys.readouterr().err


# ---------------------------------------------------------------- a real server


def _request(url, body=None, headers=None, method=None):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_real_uvicorn_server_and_sigterm(tmp_path):
    db = str(tmp_path / "real.db")
    env = dict(os.environ, EDGEKM_ADMIN_TOKEN=ADMIN)
    added = subprocess.run([sys.executable, "-m", "edgekm", "devices", "add", "dev-a", "--db", db,
                            "--json"], capture_output=True, text=True, check=True, env=env)
    key = json.loads(added.stdout)["key"]
    server, base = start_serve(db, "--host", "127.0.0.1", env=env)
    try:
        assert _request(base + "/healthz") == (200, {"status": "ok", "db": "ok"})
        total = 0.0
        for seq in range(5):
            body = make_frame(seq=seq)
            path = "/v1/models/m/frames"
            headers = auth.signed_headers(key, "POST", path, body, "dev-a")
            headers["content-type"] = "application/msgpack"
            status, out = _request(base + path, body, headers, "POST")
            assert status == 200 and out["status"] == "accepted", out
            total += out["weight"]
        status, out = _request(base + "/v1/models/m/frames", make_frame(seq=9), {
            "content-type": "application/msgpack"}, "POST")
        assert status == 401 and out["reason"] == "unauthorized"
        status, out = _request(base + "/v1/models/m/fit", json.dumps({"n_clusters": 2}).encode(),
                               {"authorization": f"Bearer {ADMIN}",
                                "content-type": "application/json"}, "POST")
        assert status == 200 and out["total_weight"] == total
    finally:
        err = stop_serve(server)
    assert server.returncode == 0, err
    assert "Traceback" not in err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM frames").fetchone()[0] == 5
    conn.close()
    with Aggregator(db) as agg:
        assert agg.total_weight("m") == total == agg.aggregate("m").total_weight


# ---------------------------------------------------------------- issue 15: spec points


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.999])
@pytest.mark.parametrize("offset, ok", [(-300, True), (300, True), (-301, False), (301, False)])
def test_skew_boundary_with_whole_second_timestamps(tmp_path, fraction, offset, ok):
    """A device sending int(time()) exactly 300 s off passes at any fraction of the
    aggregator's second (PROTOCOL.md §5.4 step 3)."""
    server_second = 1_700_000_000
    agg = Aggregator(tmp_path / "skew.db", clock=fakes.FakeClock(server_second + fraction))
    try:
        key = agg.add_device("dev-a")
        with TestClient(create_app(agg, policy_interval=None)) as client:
            r = post_frame(client, key, make_frame(), now=server_second + offset)
            if ok:
                assert r.status_code == 200, r.text
            else:
                check_error(r, 401, "unauthorized")
    finally:
        agg.close()


@pytest.mark.parametrize("route", [
    ("GET", "/v1/models/m"), ("POST", "/v1/models/m/fit"), ("POST", "/v1/models/m/versions"),
    ("GET", "/v1/models/m/versions"), ("GET", "/v1/models/m/versions/1"),
    ("POST", "/v1/models/m/versions/1/canary"), ("POST", "/v1/models/m/versions/1/promote"),
    ("POST", "/v1/models/m/rollback"), ("POST", "/v1/models/m/canary/abort"),
    ("POST", "/v1/models/m/pins"), ("GET", "/v1/models/m/drift"),
    ("GET", "/v1/models/m/events"), ("GET", "/v1/models/m/policy"),
    ("POST", "/v1/models/m/policy"), ("POST", "/v1/admin/compact"),
])
def test_admin_token_guards_every_admin_endpoint(agg, route):
    """PROTOCOL.md §1: no token configured is 403; a missing, wrong or non-bearer token
    is 401 with server_time; the token check comes first (the model need not exist)."""
    method, path = route
    with TestClient(create_app(agg, policy_interval=None)) as client:
        check_error(client.request(method, path, headers={"authorization": f"Bearer {ADMIN}"}),
                    403, "forbidden")
    with TestClient(create_app(agg, admin_token=ADMIN, policy_interval=None)) as client:
        for header in (None, "Bearer wrong", f"Basic {ADMIN}", ADMIN):
            headers = {} if header is None else {"authorization": header}
            body = check_error(client.request(method, path, headers=headers), 401,
                               "unauthorized")
            assert abs(body["server_time"] - time.time()) < 60
        r = client.request(method, path, headers={"authorization": f"bearer {ADMIN}"})
        assert r.status_code != 401


def test_the_first_frame_fixes_n_features_and_dtype_and_f4_f8_mix(agg, key, client):
    """PROTOCOL.md §6.5: an auto-created model takes d and dtype from its first frame;
    frames of the other dtype are converted, another d is 422."""
    assert post_frame(client, key, make_frame(seq=0, dtype=np.float64)).status_code == 200
    info = agg.model_info("m")
    assert info["n_features"] == 3 and info["dtype"] == "float64"
    r = post_frame(client, key, make_frame(seq=1, dtype=np.float32))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    check_error(post_frame(client, key, make_frame(seq=2, d=4)), 422, "wrong_dimension")
    assert agg.model_info("m")["dtype"] == "float64" and agg.frame_count("m") == 2
    # and an f4 model rounds f8 points to float32, weight exact
    k2 = agg.add_device("dev-b")
    body = make_frame(device="dev-b", model="m4", seq=0, dtype=np.float32, weights=np.ones(10))
    assert post_frame(client, k2, body, device="dev-b", model="m4").status_code == 200
    body = make_frame(device="dev-b", model="m4", seq=1, dtype=np.float64,
                      weights=np.full(10, 2.0))
    assert post_frame(client, k2, body, device="dev-b", model="m4").status_code == 200
    assert agg.model_info("m4")["dtype"] == "float32"
    assert agg.total_weight("m4") == 30.0


def _raw_request(url, raw):
    """Send raw bytes to a real server; returns (status, headers, body)."""
    import socket
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("length", [b"abc", b"-5", b"188\r\nContent-Length: 189",
                                    b"9" * 30, b"1 2"])
def test_a_malformed_content_length_is_json_bad_request(agg, length):
    """uvicorn's own 400 (before any route) is the JSON bad_request of PROTOCOL.md §6."""
    from edgekm.sync.cloud.http import BackgroundServer
    with BackgroundServer(create_app(agg, policy_interval=None)) as server:
        raw = (b"POST /v1/models/m/frames HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/msgpack\r\nContent-Length: " + length +
               b"\r\n\r\n" + b"\x00" * 188)
        status, headers, body = _raw_request(server.url, raw)
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["reason"] == "bad_request"
