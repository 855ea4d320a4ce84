"""
The ASGI peer: Starlette + sse-starlette on uvicorn (uvloop, httptools).

Every stream owns an asyncio.Queue; ``POST /knock`` puts the event on each
queue (the usual sse-starlette fan-out), ``GET /`` is a small page.

    uvicorn starlette_server:app --loop uvloop --http httptools --port 8007
"""

import asyncio
from urllib.parse import parse_qs

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

QUEUES: set[asyncio.Queue] = set()

INDEX = "<!doctype html><title>Knocks</title><p>Who's knocking?</p>"


def broadcast(data: str) -> int:
    for queue in QUEUES:
        queue.put_nowait(data)
    return len(QUEUES)


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(INDEX)


async def knock(request: Request) -> HTMLResponse:
    form = parse_qs((await request.body()).decode("utf-8"))
    name = (form.get("name", [""])[0]).strip() or "Someone"
    broadcast(f"{name} knocked")
    return HTMLResponse(f"<p>{name} knocked!</p>")


async def sse(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue = asyncio.Queue()
    QUEUES.add(queue)

    async def events():
        try:
            yield {"comment": "connected"}
            while True:
                yield {"data": await queue.get()}
        finally:
            QUEUES.discard(queue)

    return EventSourceResponse(events(), sep="\n")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/knock", knock, methods=["POST"]),
        Route("/sse", sse),
    ]
)
