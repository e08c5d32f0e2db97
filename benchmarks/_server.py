"""A minimal static aiohttp server for benchmarks, run in its own process.

It serves pre-serialised bodies, so the client side is what gets measured. The base URL's
path prefix picks the body and the latency: ``/{small|large}/{latency_ms}/v2/...``.
Run: ``python -m benchmarks._server PORT`` (prints ``ready`` once listening).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from ._bodies import large_body, small_body


def make_app() -> web.Application:
    bodies = {"small": small_body(), "large": large_body()}

    async def task(request: web.Request) -> web.Response:
        latency = int(request.match_info["latency"])
        if latency:
            await asyncio.sleep(latency / 1000)
        body = bodies[request.match_info["size"]]
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{size}/{latency}/v2/{team}/project/{project}/task/{task}", task)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve(int(sys.argv[1])))
    except ImportError:
        asyncio.run(serve(int(sys.argv[1])))
