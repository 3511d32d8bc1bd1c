"""--web.config.file: TLS, mutual TLS and basic auth with real HTTPS clients."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from exporter import webconfig
from exporter.exchange import Request, Response
from exporter.priority import Gate
from tests.certs import Certs, make_certs
from tests.conftest import ROOT, Exporter, Simulator, exporter_config, wait_until

PASSWORD = "s3cret-pass"  # noqa: S105 - a throwaway password for the test server


def _web_config(tmp: Path, certs: Certs, **tls: str) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    path = tmp / "web.yml"
    path.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(certs.server_cert),
                              "key_file": str(certs.server_key), **tls},
        "basic_auth_users": {"prometheus": hashed},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
    }))
    return path


def _start_https(simulator: Simulator, start: Callable[..., Exporter], web: Path,
                 ) -> Exporter:
    exporter = start(exporter_config(simulator), wait_ready=False,
                     extra_args=["--web.config.file", str(web)])
    exporter.url = f"https://127.0.0.1:{exporter.port}"
    return exporter


@pytest.mark.e2e
def test_tls_and_basic_auth_with_a_real_client(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path) -> None:
    """Right credentials over verified TLS get metrics; missing or wrong ones get 401 Basic."""
    certs = make_certs(tmp_path / "pki")
    exporter = _start_https(simulator, start_exporter, _web_config(tmp_path, certs))
    with httpx.Client(verify=ssl.create_default_context(cafile=str(certs.ca)),
                      timeout=10) as client:
        url = f"{exporter.url}/metrics"
        good = wait_until(lambda: client.get(url, auth=("prometheus", PASSWORD)),
                          what="HTTPS metrics")
        assert good.status_code == 200
        assert "reflexdb_exporter_build_info" in good.text
        assert good.headers["x-frame-options"] == "deny"
        for auth in (None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("", "")):
            denied = client.get(url, auth=auth)
            assert denied.status_code == 401, auth
            assert denied.headers["www-authenticate"].startswith("Basic ")
            assert "reflexdb_" not in denied.text
        assert client.get(f"{exporter.url}/", auth=("prometheus", "x")).status_code == 401
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).raise_for_status()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{exporter.url}/metrics", timeout=5)  # our CA is not in the system store


@pytest.mark.e2e
def test_idle_connections_do_not_stall_scrapes(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path) -> None:
    """Clients that connect and never send a ClientHello do not delay anyone else's scrape."""
    certs = make_certs(tmp_path / "pki")
    exporter = _start_https(simulator, start_exporter, _web_config(tmp_path, certs))
    context = ssl.create_default_context(cafile=str(certs.ca))
    with httpx.Client(verify=context, timeout=10, auth=("prometheus", PASSWORD)) as client:
        wait_until(lambda: client.get(f"{exporter.url}/-/healthy").status_code == 200)
    idle = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(5)]
    try:
        time.sleep(0.5)
        for _ in range(3):
            started = time.monotonic()
            with httpx.Client(verify=context, timeout=5, auth=("prometheus", PASSWORD)) as fresh:
                assert fresh.get(f"{exporter.url}/metrics").status_code == 200
            assert time.monotonic() - started < 3
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.e2e
def test_mutual_tls_requires_a_client_certificate(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path) -> None:
    """With client_ca_file a client without a certificate is refused and one with it served."""
    certs = make_certs(tmp_path / "pki")
    web = _web_config(tmp_path, certs, client_ca_file=str(certs.ca),
                      client_auth_type="RequireAndVerifyClientCert")
    exporter = _start_https(simulator, start_exporter, web)
    with_cert = ssl.create_default_context(cafile=str(certs.ca))
    with_cert.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    with httpx.Client(verify=with_cert, timeout=10, auth=("prometheus", PASSWORD)) as client:
        response = wait_until(lambda: client.get(f"{exporter.url}/metrics"), what="mTLS scrape")
        assert response.status_code == 200
    without = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=without, timeout=5) as client:
        client.get(f"{exporter.url}/metrics", auth=("prometheus", PASSWORD))


def test_example_web_config_passes_promtool(tmp_path: Path) -> None:
    """promtool check web-config accepts the shipped example, certificates in place."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    make_certs(tmp_path / "tls")  # writes tls/server.crt and tls/server.key, as the example names
    shutil.copy(ROOT / "examples" / "web-config.yml", tmp_path / "web-config.yml")
    result = subprocess.run([promtool, "check", "web-config", str(tmp_path / "web-config.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = webconfig.parse_web_config((ROOT / "examples" / "web-config.yml").read_text())
    assert parsed.basic_auth_users


def _config_check(tmp_path: Path, web_text: str) -> subprocess.CompletedProcess[str]:
    """Run --config.check with a valid config and the given web config."""
    web = tmp_path / "web.yml"
    web.write_text(web_text)
    config = tmp_path / "config.yaml"
    config.write_text("connections:\n  - id: 2489E9AD-2EE2-8E00-8EC9-32D5F69181C0\n")
    return subprocess.run([sys.executable, "-m", "exporter", "--config.check", "--config.file",
                           str(config), "--web.config.file", str(web)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


@pytest.mark.parametrize(("text", "problem"), [
    ("basic_auth_users:\n  u: plain-text\n", "basic_auth_users.u: not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: a\n", "tls_server_config.key_file: required key"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequestClientCert\n",
     "tls_server_config.client_auth_type: "),
    ("bogus: 1\n", "bogus: unknown key"),
])
def test_bad_web_config_names_the_key(tmp_path: Path, text: str, problem: str) -> None:
    """A bad --web.config.file exits 1 naming the key by its path, with no traceback."""
    result = _config_check(tmp_path, text)
    assert result.returncode == 1
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_certificate_is_a_clear_error(tmp_path: Path) -> None:
    """A TLS certificate that cannot be read stops startup with a message, not a traceback."""
    result = _config_check(tmp_path, "tls_server_config:\n  cert_file: nope.crt\n"
                                     "  key_file: nope.key\n")
    assert result.returncode == 1
    assert "tls_server_config: cannot load the certificate" in result.stderr


def test_unknown_users_cost_one_bcrypt_check_of_the_same_cost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user is checked against a hash of the known users' cost; a hit is cached."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(5)).decode()  # cheap, yet not the default
    auth = webconfig.BasicAuth({"alice": hashed})
    seen: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, stored: bytes) -> Any:
        seen.append(stored)
        return real(password, stored)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", spy)

    def header(user: str, password: str) -> str:
        import base64  # noqa: PLC0415
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert not asyncio.run(auth.check(header("mallory", "pw")))
    assert len(seen) == 1
    assert seen[0][:7] == hashed.encode()[:7]  # $2b$05$: the same algorithm and cost
    assert not asyncio.run(auth.check(header("alice", "wrong")))
    assert asyncio.run(auth.check(header("alice", "pw")))
    assert asyncio.run(auth.check(header("alice", "pw")))
    assert len(seen) == 3  # the second good login came from the cache
    assert not asyncio.run(auth.check("Bearer abc"))
    assert not asyncio.run(auth.check("Basic !!!"))


def _basic(user: str, password: str | bytes) -> str:
    import base64  # noqa: PLC0415
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


@pytest.mark.e2e
def test_basic_auth_over_plain_http_refuses_long_passwords_calmly(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path) -> None:
    """A password over bcrypt's 72 bytes is a 401 with nothing logged as an error; the right
    password still works and wrong ones are 401."""
    web = tmp_path / "auth.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    exporter = start_exporter(exporter_config(simulator), wait_ready=False,
                              extra_args=["--web.config.file", str(web)])
    wait_until(lambda: exporter.http.get("/-/ready", auth=("prometheus", PASSWORD)
                                         ).status_code == 200, what="readiness")
    for password in ("x" * 73, PASSWORD + "y" * 80, "wrong"):
        answer = exporter.http.get("/metrics", headers={"Authorization": _basic(
            "prometheus", password)})
        assert answer.status_code == 401
    assert exporter.http.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    exporter.assert_calm()


def test_decoy_hash_is_as_costly_as_the_costliest_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user is checked against a hash of the highest configured cost."""
    cheap = bcrypt.hashpw(b"a", bcrypt.gensalt(4)).decode()
    dear = bcrypt.hashpw(b"b", bcrypt.gensalt(6)).decode()
    auth = webconfig.BasicAuth({"cheap": cheap, "dear": dear})
    seen: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw",
                        lambda password, stored: seen.append(stored) or real(password, stored))
    assert not asyncio.run(auth.check(_basic("mallory", "b")))
    assert seen[0].startswith(b"$2b$06$")


def test_bcrypt_checks_run_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent logins never run two bcrypt checks at once, and a queue past its bound is
    told to come back (None) at once instead of waiting."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = webconfig.BasicAuth({"alice": hashed})
    running = peak = 0
    real = bcrypt.checkpw

    def counting(password: bytes, stored: bytes) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        time.sleep(0.02)
        running -= 1
        return bool(real(password, stored))

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)

    async def flood(count: int) -> list[bool | None]:
        return await asyncio.gather(*(auth.check(_basic("alice", f"wrong{i}"))
                                      for i in range(count)))

    results = asyncio.run(flood(webconfig.MAX_WAITING_CHECKS + 10))
    assert peak == 1
    assert results.count(False) == webconfig.MAX_WAITING_CHECKS
    assert results.count(None) == 10
    assert asyncio.run(auth.check(_basic("alice", "pw"))) is True


# --- protect() and the pieces of basic auth, as units -------------------------------------

def _request(authorization: str | None = None) -> Request:
    headers = {} if authorization is None else {"authorization": authorization}
    return Request("GET", "/metrics", {}, headers)


def _guarded(users: dict[str, str], headers: dict[str, str] | None = None,
             gate: Gate | None = None) -> tuple[Callable[[Request], Any], list[Request]]:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"metrics", headers=[("X-Own", "1")])
    web = webconfig.WebConfig.model_validate({
        "basic_auth_users": users, "http_server_config": {"headers": headers or {}}})
    return webconfig.protect(handler, web, gate), seen


def test_protect_passes_good_logins_and_adds_the_headers() -> None:
    """The right password reaches the handler; its answer gets the configured headers after
    its own."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    guarded, seen = _guarded({"alice": hashed}, {"X-Frame-Options": "deny"})
    response = asyncio.run(guarded(_request(_basic("alice", "pw"))))
    assert response.status == 200
    assert response.body == b"metrics"
    assert response.headers == [("X-Own", "1"), ("X-Frame-Options", "deny")]
    assert len(seen) == 1


@pytest.mark.parametrize("header", [None, "", "Basic", "Bearer abc", "Basic !!!",
                                    _basic("alice", "wrong"), _basic("bob", "pw"),
                                    "Basic " + "YWxpY2U=",  # "alice" with no colon
                                    _basic("alice", "x" * 73)])
def test_protect_refuses_anything_else_with_401_basic(header: str | None) -> None:
    """Missing, malformed, wrong or over-long credentials get 401 with the realm, the
    configured headers, and never reach the handler."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    guarded, seen = _guarded({"alice": hashed}, {"X-Frame-Options": "deny"})
    response = asyncio.run(guarded(_request(header)))
    assert response.status == 401
    assert response.body == b"Unauthorized\n"
    assert response.headers == [("WWW-Authenticate", webconfig.REALM),
                                ("X-Frame-Options", "deny")]
    assert webconfig.REALM == 'Basic realm="reflexdb-exporter", charset="UTF-8"'
    assert seen == []


def test_protect_without_users_only_adds_headers() -> None:
    """No basic_auth_users: every request reaches the handler."""
    guarded, seen = _guarded({}, {"X-A": "b"})
    response = asyncio.run(guarded(_request()))
    assert (response.status, response.headers) == (200, [("X-Own", "1"), ("X-A", "b")])
    assert len(seen) == 1


def test_protect_answers_503_when_too_many_checks_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_WAITING_CHECKS a login gets 503 with Retry-After: 1 at once."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    guarded, _ = _guarded({"alice": hashed})
    monkeypatch.setattr(webconfig, "MAX_WAITING_CHECKS", 0)
    response = asyncio.run(guarded(_request(_basic("alice", "wrong"))))
    assert response.status == 503
    assert response.body == b"Too many logins being checked; try again.\n"
    assert response.headers == [("Retry-After", "1")]


def test_a_login_check_steps_aside_from_scrape_priority() -> None:
    """While its bcrypt check runs, a request does not count as in flight for the gate."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    gate = Gate(patience=30)
    counted: list[int] = []
    real = webconfig.bcrypt.checkpw

    def spy(password: bytes, stored: bytes) -> bool:
        counted.append(gate.in_flight)
        return bool(real(password, stored))
    guarded, _ = _guarded({"alice": hashed}, gate=gate)

    async def scenario() -> int:
        with gate.serving():
            await guarded(_request(_basic("alice", "pw")))
            return gate.in_flight
    original = webconfig.bcrypt.checkpw
    webconfig.bcrypt.checkpw = spy
    try:
        after = asyncio.run(scenario())
    finally:
        webconfig.bcrypt.checkpw = original
    assert counted == [0]
    assert after == 1


@pytest.mark.parametrize("value", ["$2b$04$" + "a" * 53, "$2a$10$" + "b" * 53,
                                   "$2y$12$" + "c" * 53])
def test_bcrypt_hashes_are_accepted(value: str) -> None:
    """$2a$, $2b$ and $2y$ hashes of 60 characters are valid basic_auth_users values."""
    assert webconfig._bcrypt_hash(value) == value


@pytest.mark.parametrize("value", ["plain", "$2b$04$" + "a" * 52, "$2b$04$" + "a" * 54,
                                   "$1$04$" + "a" * 54, "$2x$04$" + "a" * 53])
def test_anything_else_is_not_a_bcrypt_hash(value: str) -> None:
    """A password in clear, a wrong length or another scheme is refused."""
    with pytest.raises(ValueError, match=r"^not a bcrypt hash$"):
        webconfig._bcrypt_hash(value)


def test_decode_reads_basic_credentials_only() -> None:
    """The scheme is case-insensitive; the password may hold colons; bad base64 is None."""
    import base64  # noqa: PLC0415
    encoded = base64.b64encode(b"al:ice:pw").decode()
    assert webconfig._decode(f"basic {encoded}") == ("al", b"ice:pw")
    assert webconfig._decode(f"BASIC  {encoded} ") == ("al", b"ice:pw")
    assert webconfig._decode(None) is None
    assert webconfig._decode("Basic a") is None
    assert webconfig._decode("Basic " + base64.b64encode(b"\xff:pw").decode()) is None


def test_the_login_cache_is_bounded_and_keyed_by_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Good logins are cached up to AUTH_CACHE_SIZE, oldest out first; a cached login with
    another password is checked again."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    users = {f"u{n}": hashed for n in range(4)}
    monkeypatch.setattr(webconfig, "AUTH_CACHE_SIZE", 2)
    auth = webconfig.BasicAuth(users)
    checks: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw",
                        lambda password, stored: checks.append(password) or real(password,
                                                                                  stored))

    def login(user: str, password: str = "pw") -> bool | None:  # noqa: S107 - test password
        return asyncio.run(auth.check(_basic(user, password)))
    assert login("u0")
    assert login("u1")
    assert login("u0")  # cached, and now the most recent
    assert len(checks) == 2
    assert login("u2")  # pushes out u1, the oldest
    assert login("u0")
    assert len(checks) == 3
    assert login("u1")
    assert len(checks) == 4
    assert login("u0", "wrong") is False
    assert len(checks) == 5


def test_a_password_of_exactly_72_bytes_is_checked() -> None:
    """bcrypt's limit is 72 bytes: a password of exactly 72 still logs in."""
    password = "p" * webconfig.BCRYPT_MAX_PASSWORD
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    auth = webconfig.BasicAuth({"alice": hashed})
    assert asyncio.run(auth.check(_basic("alice", password))) is True
    assert asyncio.run(auth.check(_basic("alice", password + "p"))) is False


def test_the_waiting_count_returns_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a check the waiting count is back where it was: with room for one waiting
    check, checks one after another all run, and of two at once one is turned away."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = webconfig.BasicAuth({"alice": hashed})
    monkeypatch.setattr(webconfig, "MAX_WAITING_CHECKS", 1)
    for attempt in range(3):
        assert asyncio.run(auth.check(_basic("alice", f"wrong{attempt}"))) is False

    async def pair() -> list[bool | None]:
        return await asyncio.gather(auth.check(_basic("alice", "w1")),
                                    auth.check(_basic("alice", "w2")))
    assert sorted(asyncio.run(pair()), key=str) == [False, None]


def test_the_decoy_cost_reads_two_digit_costs() -> None:
    """A cost-10 user makes a cost-10 decoy (both digits of the cost are read)."""
    dear = bcrypt.hashpw(b"b", bcrypt.gensalt(10)).decode()
    auth = webconfig.BasicAuth({"dear": dear})
    assert auth._decoy.startswith(b"$2b$10$")


def test_decode_refuses_what_strict_base64_refuses() -> None:
    """Junk inside the base64 is refused, not skipped; a user without a colon is None."""
    assert webconfig._decode("Basic YWxpY2U6!cHc=") is None
    assert webconfig._decode("Basic YWxpY2U6cHc=") == ("alice", b"pw")
    assert webconfig._decode("Basic YWxpY2U=") is None


def test_protect_hands_the_request_itself_to_the_handler() -> None:
    """The handler gets the very request that was checked."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    guarded, seen = _guarded({"alice": hashed})
    request = _request(_basic("alice", "pw"))
    asyncio.run(guarded(request))
    assert seen == [request]
    assert seen[0] is request
