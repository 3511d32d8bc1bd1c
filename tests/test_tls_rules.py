"""The web config's TLS rules: client certificate modes, TLS versions, paths relative to the
file, and a client that never finishes its handshake. Unit tests of the SSL context, then
the real exporter with real TLS clients."""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter import webconfig
from exporter.webconfig import TLSServerConfig, server_ssl_context
from tests.certs import Certs, make_certs
from tests.conftest import Exporter, Simulator, exporter_config, wait_until


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """One throwaway CA with a server and a client certificate, for the whole module."""
    return make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Another CA, whose client certificate the exporter's client_ca_file does not trust."""
    return make_certs(tmp_path_factory.mktemp("stranger"))


def _tls(pki: Certs, **fields: Any) -> TLSServerConfig:
    return TLSServerConfig(cert_file=pki.server_cert, key_file=pki.server_key, **fields)


@pytest.mark.parametrize(("fields", "mode"), [
    ({}, ssl.CERT_NONE),
    ({"client_ca_file": "CA"}, ssl.CERT_REQUIRED),
    ({"client_ca_file": "CA", "client_auth_type": "RequireAndVerifyClientCert"},
     ssl.CERT_REQUIRED),
    ({"client_ca_file": "CA", "client_auth_type": "VerifyClientCertIfGiven"}, ssl.CERT_OPTIONAL),
    ({"client_ca_file": "CA", "client_auth_type": "NoClientCert"}, ssl.CERT_NONE),
    ({"client_auth_type": "NoClientCert"}, ssl.CERT_NONE),
])
def test_client_auth_type_sets_the_verify_mode(pki: Certs, fields: dict[str, Any],
                                               mode: ssl.VerifyMode) -> None:
    """RequireAndVerifyClientCert is the default once client_ca_file is set, NoClientCert
    without it; an explicit client_auth_type always wins."""
    fields = {k: (pki.ca if v == "CA" else v) for k, v in fields.items()}
    context = server_ssl_context(_tls(pki, **fields), Path("/"))
    assert context.verify_mode == mode
    assert len(context.get_ca_certs()) == (1 if "client_ca_file" in fields else 0)


# Python warns when a context allows TLS 1.0 or 1.1, as these configs ask for.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize(("low", "high"), [("TLS10", "TLS13"), ("TLS11", "TLS12"),
                                           ("TLS12", "TLS12"), ("TLS13", "TLS13")])
def test_min_and_max_version_bound_the_context(pki: Certs, low: str, high: str) -> None:
    """min_version and max_version become the context's bounds, TLS12 to TLS13 by default."""
    context = server_ssl_context(_tls(pki, min_version=low, max_version=high), Path("/"))
    names = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
    assert (context.minimum_version, context.maximum_version) == (names[low], names[high])
    default = server_ssl_context(_tls(pki), Path("/"))
    assert (default.minimum_version, default.maximum_version) == (
        ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert names == webconfig.TLS_VERSIONS


def test_relative_paths_are_taken_from_the_config_folder(pki: Certs, tmp_path: Path) -> None:
    """cert_file, key_file and client_ca_file given relative are read from ``base``."""
    folder = tmp_path / "web"
    (folder / "tls").mkdir(parents=True)
    for source, name in ((pki.server_cert, "s.crt"), (pki.server_key, "s.key"),
                         (pki.ca, "ca.crt")):
        shutil.copy(source, folder / "tls" / name)
    tls = TLSServerConfig(cert_file=Path("tls/s.crt"), key_file=Path("tls/s.key"),
                          client_ca_file=Path("tls/ca.crt"))
    context = server_ssl_context(tls, folder)
    assert len(context.get_ca_certs()) == 1
    with pytest.raises(FileNotFoundError):
        server_ssl_context(tls, tmp_path)


# --- the real exporter -------------------------------------------------------------------

def _https_exporter(simulator: Simulator, start_exporter: Callable[..., Exporter], web: Path,
                    *extra: str) -> Exporter:
    exporter = start_exporter(exporter_config(simulator), wait_ready=False,
                              extra_args=["--web.config.file", str(web), *extra])
    exporter.url = f"https://127.0.0.1:{exporter.port}"

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", exporter.port)) == 0
    wait_until(listening, timeout=20, what="the exporter to listen")
    return exporter


def _write_web(path: Path, pki: Certs, **tls: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **tls}}))
    return path


def _client(pki: Certs, cert: Certs | None = None, **bounds: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert.client_cert), str(cert.client_key))
    for name, version in bounds.items():
        setattr(context, name, version)
    return context


def _status(url: str, context: ssl.SSLContext) -> int | str:
    """The status of GET url, or the name of the error that stopped it."""
    try:
        return httpx.get(url, verify=context, timeout=10).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """The TLS version a bare handshake agreed on (after one request, so a refused client
    certificate, which TLS 1.3 reports late, shows too)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = tls.recv(100)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        return str(tls.version())


@pytest.mark.e2e
def test_client_certificate_modes_with_real_clients(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path,
        pki: Certs, stranger: Certs) -> None:
    """VerifyClientCertIfGiven serves clients without a certificate and with a trusted one,
    refuses an untrusted one; explicit NoClientCert serves all; client_ca_file alone
    requires a trusted certificate."""
    modes = {
        "if-given": {"client_ca_file": str(pki.ca), "client_auth_type": "VerifyClientCertIfGiven"},
        "none": {"client_ca_file": str(pki.ca), "client_auth_type": "NoClientCert"},
        "default": {"client_ca_file": str(pki.ca)},
    }
    expected = {  # without a certificate, with a trusted one, with an untrusted one
        "if-given": (200, 200, False), "none": (200, 200, True), "default": (False, 200, False),
    }
    for name, tls in modes.items():
        exporter = _https_exporter(simulator, start_exporter,
                                   _write_web(tmp_path / name / "web.yml", pki, **tls))
        url = f"{exporter.url}/-/healthy"
        got = tuple(_status(url, _client(pki, cert)) for cert in (None, pki, stranger))
        want = expected[name]
        for case, (result, wanted) in enumerate(zip(got, want, strict=True)):
            if wanted is True:
                assert result == 200, (name, case, got)
            elif wanted is False:
                assert result != 200, (name, case, got)
            else:
                assert result == wanted, (name, case, got)
        exporter.close()


@pytest.mark.e2e
def test_min_and_max_version_are_enforced(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path,
        pki: Certs) -> None:
    """min_version TLS13 refuses a TLS 1.2 client; max_version TLS12 serves TLS 1.2 only;
    the default serves both and prefers 1.3."""
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    only12 = _client(pki, maximum_version=v12, minimum_version=v12)
    only13 = _client(pki, minimum_version=v13)
    cases = {"default": {}, "min13": {"min_version": "TLS13"},
             "max12": {"max_version": "TLS12"}}
    for name, tls in cases.items():
        exporter = _https_exporter(simulator, start_exporter,
                                   _write_web(tmp_path / name / "web.yml", pki, **tls))
        if name == "default":
            assert _handshake(exporter.port, _client(pki)) == "TLSv1.3"
            assert _handshake(exporter.port, only12) == "TLSv1.2"
        elif name == "min13":
            assert _handshake(exporter.port, only13) == "TLSv1.3"
            with pytest.raises(ssl.SSLError):
                _handshake(exporter.port, only12)
        else:
            assert _handshake(exporter.port, _client(pki)) == "TLSv1.2"
            with pytest.raises(ssl.SSLError):
                _handshake(exporter.port, only13)
        exporter.close()


@pytest.mark.e2e
def test_relative_paths_in_the_web_config_are_read_from_its_folder(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path,
        pki: Certs) -> None:
    """A web config naming its certificates relative to its own folder works from any
    working directory (the exporter runs from the repository root here)."""
    folder = tmp_path / "elsewhere"
    (folder / "tls").mkdir(parents=True)
    for source, name in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key"),
                         (pki.ca, "ca.crt")):
        shutil.copy(source, folder / "tls" / name)
    web = folder / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": "tls/server.crt", "key_file": "tls/server.key",
        "client_ca_file": "tls/ca.crt"}}))
    exporter = _https_exporter(simulator, start_exporter, web)
    url = f"{exporter.url}/-/healthy"
    assert wait_until(lambda: _status(url, _client(pki, pki)) == 200, what="served") is True
    assert _status(url, _client(pki)) != 200  # the relative client_ca_file was read too


def _closed_after(port: int, send: bytes, limit: float) -> float:
    """Seconds until the exporter closes a connection that sent ``send`` and then nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        started = time.monotonic()
        if send:
            sock.sendall(send)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        return time.monotonic() - started


@pytest.mark.e2e
def test_a_silent_tls_client_is_dropped_after_the_read_timeout(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path,
        pki: Certs) -> None:
    """A client that connects and sends no ClientHello, or half of one, is closed once
    --web.read-timeout passes (2 s here), not before, while others are served."""
    exporter = _https_exporter(simulator, start_exporter,
                               _write_web(tmp_path / "web.yml", pki), "--web.read-timeout=2s")
    wait_until(lambda: _status(f"{exporter.url}/-/healthy", _client(pki)) == 200)
    silent = _closed_after(exporter.port, b"", limit=30)
    assert 1.8 <= silent < 5, silent  # 2 s plus up to a tenth, and a loaded machine
    # A TLS record header promising a ClientHello whose body never comes.
    half = _closed_after(exporter.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                         limit=30)
    assert 1.8 <= half < 5, half
    assert exporter.process.proc.poll() is None


@pytest.mark.e2e
def test_the_handshake_timeout_is_ten_seconds_by_default(
        simulator: Simulator, start_exporter: Callable[..., Exporter], tmp_path: Path,
        pki: Certs) -> None:
    """Without --web.read-timeout a silent TLS client is dropped after 10 s."""
    exporter = _https_exporter(simulator, start_exporter, _write_web(tmp_path / "web.yml", pki))
    wait_until(lambda: _status(f"{exporter.url}/-/healthy", _client(pki)) == 200)
    silent = _closed_after(exporter.port, b"", limit=60)
    assert 9.8 <= silent < 20, silent
