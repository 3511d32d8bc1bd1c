"""The speed of light for a scrape: fixed bytes served from memory by a plain threaded server.

The benchmark saves one body of our exporter's /metrics (after every poll landed) and a copy
gzipped at level 9, as one would pre-compress a static asset. This process reads both files
once and answers every GET with them: the gzipped copy, with ``Content-Encoding: gzip``, when
the request's Accept-Encoding mentions gzip, the plain bytes otherwise. The server is the
standard library's ``http.server.ThreadingHTTPServer`` speaking HTTP/1.1 with a
Content-Length; the handler writes the whole body with one ``sendall`` and does no other work,
so a scrape costs the HTTP round trip and the copy of the bytes to the socket, nothing more.

    python -m benchmarks.static_server --plain body.txt --gzip body.txt.gz \\
        --web.listen-address 127.0.0.1:9001
"""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StaticServer(ThreadingHTTPServer):
    """A threaded HTTP server that holds the two bodies it serves."""

    daemon_threads = True
    plain: bytes = b""
    gzipped: bytes = b""


class Handler(BaseHTTPRequestHandler):
    """Answers any GET with the stored body; nothing is computed per request."""

    protocol_version = "HTTP/1.1"
    server: StaticServer

    def do_GET(self) -> None:
        """Send the plain or the pre-gzipped body."""
        gzip = "gzip" in self.headers.get("Accept-Encoding", "").lower()
        body = self.server.gzipped if gzip else self.server.plain
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: logging every request would be work the other servers do not do."""


def main(argv: list[str] | None = None) -> int:
    """Serve the two files until SIGTERM."""
    parser = argparse.ArgumentParser(prog="static-server", description=__doc__.split("\n")[0])
    parser.add_argument("--plain", type=Path, required=True, help="the body as served")
    parser.add_argument("--gzip", type=Path, required=True, help="the same body, gzipped")
    parser.add_argument("--web.listen-address", dest="listen_address", default="127.0.0.1:9001")
    args = parser.parse_args(argv)
    host, _, port = args.listen_address.rpartition(":")
    server = StaticServer((host or "127.0.0.1", int(port)), Handler)
    server.plain = args.plain.read_bytes()
    server.gzipped = args.gzip.read_bytes()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
