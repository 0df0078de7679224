#!/usr/bin/env python3
"""A WebSocket app server for the integration tests (Debian's python3-websockets).

Echoes every message back as it came (text as text, binary as binary). Special
text messages: "close-me" makes the server close the connection (code 4000),
"headers" answers with the opening request's headers as JSON, "stats" with the
number of open connections. Writes "ready\n" to stdout once listening, and one
line per closed connection ("closed CODE") to stdout.
"""

import argparse
import asyncio
import json
import resource
import signal
import sys

import websockets
import websockets.server


OPEN = set()


async def handler(ws):
    OPEN.add(ws)
    try:
        async for message in ws:
            if message == "close-me":
                await ws.close(code=4000, reason="asked to")
                break
            if message == "headers":
                await ws.send(json.dumps([[k, v] for k, v in ws.request_headers.raw_items()]))
                continue
            if message == "stats":
                await ws.send(json.dumps({"open": len(OPEN)}))
                continue
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        OPEN.discard(ws)
        print(f"closed {ws.close_code}", flush=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    async with websockets.server.serve(handler, args.host, args.port, max_size=16 * 1024 * 1024,
                                       ping_interval=None, backlog=2048):
        stop = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        print("ready", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
