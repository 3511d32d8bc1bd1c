"""The HTTP server sends bytes that become ready only while the body is going out."""

from __future__ import annotations

import asyncio

import httpx

from exporter.server import Request, Response, serve


def test_late_bytes_follow_the_body_and_count_in_its_length() -> None:
    """A response's late bytes, computed while its body is sent, end the answer on the wire."""
    body = [b"a" * 300_000, b"b" * 10, b"c" * 5]

    async def handler(_: Request) -> Response:
        async def finish() -> bytes:
            await asyncio.sleep(0.05)
            return b"TRAILER!"
        return Response(200, body, late=asyncio.ensure_future(finish()), late_length=8)

    async def scenario() -> None:
        server = await serve(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(2):  # the connection stays usable after a late answer
                    got = await client.get(f"http://127.0.0.1:{port}/")
                    assert got.headers["content-length"] == str(300_015 + 8)
                    assert got.content == b"".join(body) + b"TRAILER!"
        finally:
            server.close()

    asyncio.run(scenario())
