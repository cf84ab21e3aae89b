"""Request signing (edgekm.sync.wire.auth): round trip, every tampered part, the clock
skew at 300 s and 301 s, header formats, the constant-time comparison, and the
worked example of sync/PROTOCOL.md section 8.2.
"""

import hashlib
import hmac
import re

import pytest

import edgekm
from edgekm.sync.wire import auth
from edgekm.sync.wire.auth import (H_DEVICE, H_NONCE, H_SIGNATURE, H_TIMESTAMP, AuthError, sign,
                              signed_headers, string_to_sign, verify)
from helpers import GOLDEN, PROTOCOL

BODY = (GOLDEN / "example_f4_n2_d3.msgpack").read_bytes()

# PROTOCOL.md section 8.2
KEY = bytes(range(32)).hex()
PATH = "/v1/models/demo/frames"
DEVICE = "dev-01"
TS = 1700000100
NONCE = "00112233445566778899aabbccddeeff"


def headers(**over):
    """Correctly signed headers for the example request; ``over`` replaces values after signing."""
    h = {H_DEVICE: DEVICE, H_TIMESTAMP: str(TS), H_NONCE: NONCE,
         H_SIGNATURE: sign(KEY, "POST", PATH, BODY, DEVICE, TS, NONCE)}
    h.update(over)
    return h


def check(h, *, method="POST", path=PATH, body=BODY, key=KEY, now=TS, **kw):
    return verify(key, method, path, body, h, now=now, **kw)


# ------------------------------------------------------------------ basics


def test_auth_error_is_permission_error_and_edgekm_error():
    assert issubclass(AuthError, PermissionError)
    assert issubclass(AuthError, edgekm.EdgekmError)


def test_round_trip_with_signed_headers():
    h = signed_headers(KEY, "POST", PATH, BODY, DEVICE, now=TS + 0.9)
    assert set(h) == {"x-edgekm-device", "x-edgekm-timestamp", "x-edgekm-nonce",
                      "x-edgekm-signature"}
    assert h[H_TIMESTAMP] == str(TS)                       # whole seconds
    assert re.fullmatch(r"[0-9a-f]{32}", h[H_NONCE])
    assert re.fullmatch(r"[0-9a-f]{64}", h[H_SIGNATURE])
    assert check(h) == (DEVICE, TS, h[H_NONCE])


def test_round_trip_with_the_real_clock():
    h = signed_headers(KEY, "POST", PATH, BODY, DEVICE)
    assert verify(KEY, "POST", PATH, BODY, h)[0] == DEVICE


def test_every_request_gets_a_fresh_nonce():
    nonces = {signed_headers(KEY, "POST", PATH, BODY, DEVICE, now=TS)[H_NONCE] for _ in range(50)}
    assert len(nonces) == 50


def test_new_key_is_256_bits_of_lowercase_hex():
    keys = {auth.new_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)


def test_string_to_sign_byte_by_byte():
    expected = (b"EDGEKM-HMAC-SHA256\nPOST\n/v1/models/demo/frames\n"
                + hashlib.sha256(BODY).hexdigest().encode()
                + b"\ndev-01\n1700000100\n00112233445566778899aabbccddeeff")
    assert string_to_sign("post", PATH, BODY, DEVICE, TS, NONCE).encode() == expected
    # the HMAC key is the 32 decoded bytes, not the 64 hex characters
    assert sign(KEY, "POST", PATH, BODY, DEVICE, TS, NONCE) == \
        hmac.new(bytes(range(32)), expected, hashlib.sha256).hexdigest()


def test_empty_body_signs_the_digest_of_nothing():
    s = string_to_sign("GET", "/healthz", b"", DEVICE, TS, NONCE)
    assert s.split("\n")[3] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_method_case_does_not_matter():
    h = headers(**{H_SIGNATURE: sign(KEY, "post", PATH, BODY, DEVICE, TS, NONCE)})
    assert check(h, method="POST") == check(h, method="post")


# ------------------------------------------------------------------ the worked example


def doc_block(marker):
    text = PROTOCOL.read_text(encoding="utf-8")
    start = text.index(f"<!-- example:{marker} -->")
    return re.compile(r"```[a-z]*\n(.*?)```", re.S).search(text, start).group(1)


def test_protocol_example_string_to_sign_is_what_the_code_produces():
    assert doc_block("string-to-sign") == string_to_sign("POST", PATH, BODY, DEVICE, TS, NONCE) + "\n"


def test_protocol_example_headers_are_what_the_code_produces():
    lines = dict(line.split(": ", 1) for line in doc_block("headers").splitlines())
    assert lines["content-type"] == "application/msgpack"
    assert int(lines["content-length"]) == len(BODY)
    doc_headers = {k: v for k, v in lines.items() if k.startswith("x-edgekm-")}
    assert doc_headers == headers()
    assert check(doc_headers) == (DEVICE, TS, NONCE)
    text = PROTOCOL.read_text(encoding="utf-8")
    assert KEY in text
    # the documented acceptance window
    window = f"between {TS - auth.MAX_SKEW_SECONDS} and {TS + auth.MAX_SKEW_SECONDS} inclusive"
    assert window in " ".join(text.split())


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize("name", [H_DEVICE, H_TIMESTAMP, H_NONCE, H_SIGNATURE])
def test_each_missing_header(name):
    h = headers()
    del h[name]
    with pytest.raises(AuthError, match=f"missing header {name}"):
        check(h)


def test_no_headers_at_all():
    with pytest.raises(AuthError, match="missing header"):
        check({})


TAMPERED = {
    "method": dict(method="PUT"),
    "path": dict(path="/v1/models/demo/frames/"),
    "other model in path": dict(path="/v1/models/demo2/frames"),
    "query string added": dict(path=PATH + "?x=1"),
    "body, one byte changed": dict(body=BODY[:-1] + bytes([BODY[-1] ^ 1])),
    "body, one byte appended": dict(body=BODY + b"\x00"),
    "body empty": dict(body=b""),
    "wrong key": dict(key="ff" * 32),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_request_is_rejected(case):
    with pytest.raises(AuthError, match="signature does not match"):
        check(headers(), **TAMPERED[case])


def test_signing_with_the_hex_text_as_key_is_rejected():
    # a client that feeds the 64 ASCII characters to HMAC instead of the 32 bytes they encode
    msg = string_to_sign("POST", PATH, BODY, DEVICE, TS, NONCE).encode()
    wrong = hmac.new(KEY.encode(), msg, hashlib.sha256).hexdigest()
    with pytest.raises(AuthError, match="signature does not match"):
        check(headers(**{H_SIGNATURE: wrong}))


@pytest.mark.parametrize("name, value", [
    (H_DEVICE, "dev-02"),
    (H_DEVICE, "DEV-01"),
    (H_TIMESTAMP, str(TS + 1)),
    (H_TIMESTAMP, str(TS - 1)),
    (H_NONCE, "00112233445566778899aabbccddeef0"),
    (H_NONCE, NONCE[:-2]),
])
def test_tampered_header_is_rejected(name, value):
    with pytest.raises(AuthError, match="signature does not match"):
        check(headers(**{name: value}))


@pytest.mark.parametrize("signature", [
    "",
    "0" * 64,
    sign(KEY, "POST", PATH, BODY, DEVICE, TS, NONCE).upper(),          # hex must be lowercase
    sign(KEY, "POST", PATH, BODY, DEVICE, TS, NONCE)[:-1],             # one character short
    sign(KEY, "POST", PATH, BODY, DEVICE, TS, NONCE) + "0",            # one character long
    sign(KEY, "POST", PATH, BODY, DEVICE, TS, NONCE) * 3,              # long: cut to 128 bytes
    "\u00e9" * 64,
], ids=["empty", "zeros", "upper-case", "short", "long", "tripled", "non-ascii"])
def test_bad_signature_value(signature):
    with pytest.raises(AuthError, match="signature does not match"):
        check(headers(**{H_SIGNATURE: signature}))


# ------------------------------------------------------------------ clock skew


@pytest.mark.parametrize("delta, ok", [
    (0, True), (300, True), (-300, True), (301, False), (-301, False),
    # whole seconds: the aggregator's clock is truncated like the device's timestamp
    (300.5, True), (300.999, True), (-299.5, True), (-300.5, False), (299.99, True),
    (10**6, False),
])
def test_skew_300_seconds_passes_and_301_fails(delta, ok):
    if ok:
        assert check(headers(), now=TS + delta) == (DEVICE, TS, NONCE)
    else:
        with pytest.raises(AuthError, match="clock skew of ±300 s"):
            check(headers(), now=TS + delta)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.999])
def test_a_whole_second_timestamp_300_s_old_passes_at_any_fraction(fraction):
    # a device that sends int(time.time()) 300 s before the aggregator's clock, whatever
    # the aggregator's sub-second part (issue 15: it used to get 401)
    now = TS + 300 + fraction
    assert check(headers(), now=now) == (DEVICE, TS, NONCE)
    with pytest.raises(AuthError, match="clock skew"):
        check(headers(), now=now + 1)


def test_skew_parameter():
    assert check(headers(), now=TS + 10, max_skew=10)
    with pytest.raises(AuthError, match="clock skew of ±10 s"):
        check(headers(), now=TS + 11, max_skew=10)


def test_skew_is_checked_before_the_signature():
    # a stale request is refused for its timestamp even when the signature is wrong too
    with pytest.raises(AuthError, match="clock skew"):
        check(headers(**{H_SIGNATURE: "0" * 64}), now=TS + 301)


# ------------------------------------------------------------------ header formats


def resigned(ts=TS, nonce=NONCE):
    """Headers whose signature is right for the given timestamp text and nonce."""
    return {H_DEVICE: DEVICE, H_TIMESTAMP: str(ts), H_NONCE: nonce,
            H_SIGNATURE: sign(KEY, "POST", PATH, BODY, DEVICE, ts, nonce)}


@pytest.mark.parametrize("nonce", [
    "", "0" * 7, "0" * 65, NONCE.upper(), "0123456789ABCDEF", "g" * 16, "0123 4567",
    "01234567\n", "0x01234567", "-1234567", "\u0660" * 8, "\uff10" * 8,
])
def test_bad_nonce_formats(nonce):
    with pytest.raises(AuthError, match="bad nonce header"):
        check(resigned(nonce=nonce))


@pytest.mark.parametrize("nonce", ["0" * 8, "f" * 64, "0123456789abcdef"])
def test_nonce_lengths_8_to_64_pass(nonce):
    assert check(resigned(nonce=nonce))[2] == nonce


@pytest.mark.parametrize("ts", [
    "", "-1700000100", "+1700000100", "1700000100.0", " 1700000100", "1700000100 ",
    "1.7e9", "0x6553f124", "1" * 13, "１７００００００x",
])
def test_bad_timestamp_formats(ts):
    h = headers(**{H_TIMESTAMP: ts})
    with pytest.raises(AuthError, match="bad timestamp header"):
        check(h)


def test_timestamp_of_12_digits_is_read():
    big = 999_999_999_999
    assert check(resigned(ts=big), now=big)[1] == big


def test_superscript_digit_timestamp_is_an_auth_error():
    with pytest.raises(AuthError):
        check(headers(**{H_TIMESTAMP: "\u00b2"}))


def test_non_ascii_digit_timestamp_is_refused():
    fullwidth = str(TS).translate({ord(c): 0xFF10 + int(c) for c in "0123456789"})
    with pytest.raises(AuthError, match="bad timestamp header"):
        check(headers(**{H_TIMESTAMP: fullwidth}))


# ------------------------------------------------------------------ constant-time comparison


def test_verify_compares_with_hmac_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    good = headers()
    check(good)
    assert calls == [(good[H_SIGNATURE].encode(), good[H_SIGNATURE].encode())]

    calls.clear()
    with pytest.raises(AuthError):
        check(headers(**{H_SIGNATURE: "0" * 64}))
    assert len(calls) == 1 and calls[0][1] == b"0" * 64


def test_verify_obeys_compare_digest(monkeypatch):
    # the decision is compare_digest's: no other comparison short-cuts it
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: False)
    with pytest.raises(AuthError, match="signature does not match"):
        check(headers())
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: True)
    assert check(headers(**{H_SIGNATURE: "0" * 64}))[0] == DEVICE


def test_received_signature_is_cut_to_128_bytes_before_comparing(monkeypatch):
    seen = []
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: seen.append(len(b)) or False)
    with pytest.raises(AuthError):
        check(headers(**{H_SIGNATURE: "a" * 100_000}))
    assert seen == [128]
