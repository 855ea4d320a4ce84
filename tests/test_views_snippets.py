"""The Flask and Bottle snippets of docs/views.md, run as the guide runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support import (
    ROOT,
    StreamClient,
    http_request,
    start_cli,
)

SNIPPETS = ROOT / "docs" / "snippets"


@pytest.fixture(params=["views_flask", "views_bottle"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """``python -m wsgi_sse views_<framework>:app`` in the snippets' directory."""
    proc, port = start_cli(f"{request.param}:app", cwd=SNIPPETS)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(15)
        assert proc.stdout is not None
        proc.stdout.close()


def test_job_progress_streams_then_ends_then_204(port: int) -> None:
    """A job page gets its progress, the stream ends with the job, a reconnect gets 204."""
    status, _, body = http_request(port, "POST", "/jobs")
    assert status == 202
    events_path = json.loads(body)["events"]
    with StreamClient(port, events_path) as client:
        assert client.status == 200
        client.read_to_end()
    init, *progress = client.events
    assert init.type == "init"
    assert progress and {e.type for e in progress} == {"progress"}
    percents = [json.loads(e.data)["progress"] for e in progress]
    assert percents == sorted(percents) and percents[-1] == 100
    assert http_request(port, "GET", events_path)[0] == 204
    assert http_request(port, "GET", "/jobs/999/events")[0] == 404
