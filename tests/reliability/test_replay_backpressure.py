"""Replays go out as fast as the reader takes them: non-reading resumers copy no history."""

from __future__ import annotations

import json
import socket
import time

from relkit import MB, Crowd, child_server, dechunk
from support import SpecParser, StreamClient, http_request

CHANNELS = [f"c{i}" for i in range(16)]
PER_CHANNEL = 1000
SIZE = 400
RESUMERS = 30
MAX_BUFFER = 256 * 1024
PATH = "/sse?" + "&".join(f"channel={c}" for c in CHANNELS)


def pump(port: int, channel: str, n: int) -> None:
    """Have the server broadcast C{n} numbered events to C{channel}."""
    status, _, _ = http_request(port, "POST", f"/pump?n={n}&size={SIZE}&channel={channel}")
    assert status == 202


def test_non_reading_resumers_stay_within_their_caps() -> None:
    """30 non-readers resuming 16 full channels grow RSS by less than 30 x max_buffer + slack."""
    options = {"max_buffer": MAX_BUFFER, "heartbeat": 60.0}
    with child_server(options, {"history_size": PER_CHANNEL, "history_age": 3600}) as server:
        port = server.port
        with StreamClient(port, "/sse?channel=c0") as first:
            pump(port, "c0", 1)
            (start,) = first.wait_events(1)
        for channel in CHANNELS:
            pump(port, channel, PER_CHANNEL)
        total = 1 + len(CHANNELS) * PER_CHANNEL
        server.wait_state(lambda s: s["published"] == total, 60)
        history_bytes = len(CHANNELS) * PER_CHANNEL * SIZE
        baseline = server.reset_peak()["rss"]

        crowd = Crowd(port, path=PATH)
        resumers = crowd.open(
            RESUMERS, headers={"Last-Event-ID": start.last_event_id}, rcvbuf=1024, read=False
        )
        state = server.wait_state(lambda s: s["connects"] == 1 + RESUMERS)
        time.sleep(0.5)  # let the server write what the sockets take
        state = server.state()
        growth = state["peak_rss"] - baseline
        print(
            f"\nreplay to non-readers: {RESUMERS} resumers x {len(CHANNELS)} channels, "
            f"{history_bytes / MB:.1f} MB of history each, max_buffer {MAX_BUFFER // 1024} KiB: "
            f"rss baseline {baseline / MB:.1f} MB, peak +{growth / MB:.1f} MB "
            f"(bound {(RESUMERS * MAX_BUFFER + 8 * MB) / MB:.1f} MB), "
            f"dropped {state['dropped_by_reason']}"
        )
        assert growth <= RESUMERS * MAX_BUFFER + 8 * MB
        assert state["clients"] == RESUMERS and state["dropped_slow"] == 0
        # Live events queue behind the replay and count toward max_buffer:
        # past it, each non-reader is dropped.
        pump(port, "c0", 2 * MAX_BUFFER // SIZE)
        state = server.wait_state(lambda s: s["dropped_slow"] == RESUMERS)
        assert state["dropped_by_reason"] == {"buffer": RESUMERS}
        assert len(resumers) == RESUMERS
        crowd.close_all()
        server.wait_state(lambda s: s["clients"] == 0)


def test_resuming_reader_gets_every_event_once_in_order() -> None:
    """A slow reader resuming 16 channels gets the replay, then live events, once each, in order."""
    options = {"max_buffer": MAX_BUFFER}
    with child_server(options, {"history_size": PER_CHANNEL, "history_age": 3600}) as server:
        port = server.port
        with StreamClient(port, "/sse?channel=c0") as first:
            pump(port, "c0", 1)
            (start,) = first.wait_events(1)
        for channel in CHANNELS:
            pump(port, channel, PER_CHANNEL)
        replayed = len(CHANNELS) * PER_CHANNEL
        server.wait_state(lambda s: s["published"] == 1 + replayed, 60)
        expected = replayed + 50

        # A small receive window: most of the replay is still waiting in the
        # server when the live events are published.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Last-Event-ID: {start.last_event_id}\r\n\r\n".encode()
        )
        server.wait_state(lambda s: s["clients"] == 1)
        pump(port, "c3", 50)
        server.wait_state(lambda s: s["published"] == 1 + expected)
        # Now read at full speed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        chunks, seen, tail = [], 0, b""
        sock.settimeout(10)
        with sock:
            # Until every event has arrived and the last HTTP chunk is
            # complete (its events end with a blank line, then CRLF).
            while seen < expected or not tail.endswith(b"\n\r\n"):
                data = sock.recv(262144)
                assert data, "stream ended"
                chunks.append(data)
                seen += (tail + data).count(b"data: ")
                tail = (tail + data)[-5:]  # a "data: " split between two reads
        raw = b"".join(chunks)
        text = dechunk(raw.split(b"\r\n\r\n", 1)[1]).decode()
        parser = SpecParser()
        for at in range(0, len(text), 16384):  # fed in pieces, as a reader would
            parser.feed(text[at : at + 16384])
        events = parser.events
        assert len(events) == expected
        seqs = [int(e.last_event_id.rsplit("-", 1)[1]) for e in events]
        assert seqs == sorted(set(seqs))  # in order, none twice
        numbers: dict[str, list[int]] = {}
        for event in events:
            value = json.loads(event.data)
            numbers.setdefault(value["channel"], []).append(value["i"])
        assert numbers == {
            c: list(range(PER_CHANNEL)) + (list(range(50)) if c == "c3" else []) for c in CHANNELS
        }
        assert server.state()["dropped_slow"] == 0
