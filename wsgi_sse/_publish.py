"""
The HTTP publish endpoint: events from programs that are not Python (cron
jobs, shell scripts, other services), authenticated by a shared secret.

Off unless asked for (C{publish_path=} and C{publish_secret=} of
L{make_application<wsgi_sse.make_application>}).  All methods: call in the
reactor thread (twisted.web does).
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ._backplane import Published
from ._hub import DEFAULT_CHANNEL
from ._names import CONTROL_CHARACTERS

if TYPE_CHECKING:
    from twisted.web.server import Request

    from ._broadcast import Broadcaster
    from ._options import StreamOptions

__all__ = ["MIN_SECRET_LENGTH", "PUBLISH_SECRET_ENV", "PublishResource"]

PUBLISH_SECRET_ENV = "WSGI_SSE_PUBLISH_SECRET"  # noqa: S105 - a variable name
"""The environment variable read for the secret when none is passed."""

MIN_SECRET_LENGTH = 16
"""Characters a publish secret must have at least."""

_FIELDS = frozenset({"channel", "event", "data"})


class _Answer(Exception):  # noqa: N818 - not an error: an answer
    def __init__(self, code: int, message: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


class PublishResource(Resource):
    """
    Publish one event per C{POST}, for callers that hold a shared secret.

    The request carries C{Authorization: Bearer <secret>} and a body that is
    either JSON (C{{"channel": "news", "event": "price", "data": {...}}};
    C{data} may be any JSON value) or form-encoded
    (C{channel=news&event=price&data=text}; C{data} is then sent as text).
    C{channel} defaults to the default channel, C{event} to none (a plain
    C{message}); C{data} is required.

    Answers, always in JSON: C{200} with C{{"delivered": n, "id": "..."}}
    (C{id} when the publisher is a L{Hub}); C{401} without credentials,
    C{403} with a wrong secret, C{400} for bad fields or a body that is not
    UTF-8 JSON (arrays and objects nested deeper than L{MAX_JSON_DEPTH},
    C{NaN}, infinities and integers of more than 4,300 digits included)
    or that names a field twice (a JSON key or a form field),
    C{413} for a body over C{max_body} bytes, C{415} for other content
    types, C{405} for other methods, C{503} if the publisher failed.

    @param broadcaster: validates and encodes events, and publishes them.
    @param secret: the shared secret, compared in constant time.
    @param options: the stream's L{StreamOptions}: channel names must be
        ones a client could subscribe to.
    @param max_body: the largest request body accepted, in bytes.
    @raise ValueError: if the secret is missing, shorter than
        L{MIN_SECRET_LENGTH} characters, or one no header can carry
        (whitespace around it, control characters in it).
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        broadcaster: Broadcaster,
        *,
        secret: str,
        options: StreamOptions,
        max_body: int = 64 * 1024,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the publish endpoint needs a secret of at least {MIN_SECRET_LENGTH} "
                f"characters (publish_secret= or ${PUBLISH_SECRET_ENV})"
            )
        if secret != secret.strip() or CONTROL_CHARACTERS.search(secret):
            # An Authorization header can carry neither (its value is
            # trimmed): no request could ever be let in.
            raise ValueError(
                "the publish secret must not start or end with whitespace nor hold control "
                "characters (a newline read from a file?): no request could send it"
            )
        if max_body < 1:
            raise ValueError("max_body must be at least 1")
        self.broadcaster = broadcaster
        self.options = options
        self.max_body = max_body
        self._secret = secret.encode("utf-8")
        self.requests: Counter[int] = Counter()
        self.published = 0

    def snapshot(self) -> dict[str, Any]:
        """Return the endpoint's counters as a JSON-ready dict."""
        return {
            "published": self.published,
            "requests": {str(code): n for code, n in sorted(self.requests.items())},
        }

    def render(self, request: Request) -> bytes | int:
        """Check, parse and publish one event (see the class docstring)."""
        try:
            if request.method != b"POST":
                raise _Answer(405, "the publish endpoint only answers POST", {b"Allow": b"POST"})
            self._authenticate(request)
            channel, event, data = self._fields(request)
            try:
                name, body = self.broadcaster.prepare(data, event=event, channel=channel)
            except (TypeError, ValueError) as e:
                raise _Answer(400, str(e)) from None
        except _Answer as answer:
            return self._answer(request, answer.code, {"error": answer.message}, answer.headers)
        except Exception:  # noqa: BLE001 - a bug: still answer in JSON
            self.log.failure("publish request failed")
            return self._answer(request, 500, {"error": "internal error"})

        publisher = self.broadcaster.publisher
        peer = getattr(request.getClientAddress(), "host", "unix")

        def published(outcome: Published) -> None:
            self.published += 1
            count = outcome.delivered
            result: dict[str, Any] = {"delivered": count, "id": outcome.id}
            self.log.info(
                "published {event!r} on {channel} for {peer}: {delivered} deliveries",
                channel=name,
                event=event,
                peer=peer,
                delivered=count,
            )
            self._finish(request, 200, result)

        def failed(failure: Failure) -> None:
            self.log.failure("publishing on {channel} failed", failure, channel=name)
            self._finish(request, 503, {"error": "publishing failed"})

        # In-process: at once; a shared backplane answers later.
        maybeDeferred(publisher.publish_event, name, body).addCallbacks(published, failed)
        return NOT_DONE_YET

    # -- checks ----------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        header = request.getHeader(b"authorization")
        challenge = {b"WWW-Authenticate": b'Bearer realm="wsgi-sse publish"'}
        if header is None:
            raise _Answer(401, "missing Authorization: Bearer <secret>", challenge)
        raw = header.encode("latin-1") if isinstance(header, str) else header
        scheme, _, token = raw.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise _Answer(401, "use Authorization: Bearer <secret>", challenge)
        if not hmac.compare_digest(token.strip(), self._secret):
            raise _Answer(403, "wrong secret")

    def _fields(self, request: Request) -> tuple[str, str | None, object]:
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _Answer(413, f"body larger than {self.max_body} bytes")
        content = request.content
        raw = content.read(self.max_body + 1) if content is not None else b""
        if len(raw) > self.max_body:
            raise _Answer(413, f"body larger than {self.max_body} bytes")
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype == b"application/json":
            fields = _json_fields(raw)
        elif ctype == b"application/x-www-form-urlencoded":
            fields = _form_fields(raw)
        else:
            raise _Answer(415, "send application/json or application/x-www-form-urlencoded")
        unknown = sorted(set(fields) - _FIELDS)
        if unknown:
            # (Quoted: names reach the log, control characters escaped.)
            raise _Answer(400, f"unknown field(s): {', '.join(map(repr, unknown))}")
        if "data" not in fields:
            raise _Answer(400, "missing field: data")
        channel = fields.get("channel", DEFAULT_CHANNEL)
        if not isinstance(channel, str):
            raise _Answer(400, "channel must be a string")
        try:
            self.options.check_channel(channel)
        except ValueError as e:
            raise _Answer(400, str(e)) from None
        event = fields.get("event")
        if event is not None and not isinstance(event, str):
            raise _Answer(400, "event must be a string")
        return channel, event or None, fields["data"]

    # -- answers -----------------------------------------------------------------

    def _answer(
        self,
        request: Request,
        code: int,
        result: dict[str, Any],
        headers: dict[bytes, bytes] | None = None,
    ) -> bytes:
        self.requests[code] += 1
        if code >= 400:
            self.log.info(
                "publish refused: {code} {error}",
                code=code,
                error=result.get("error"),
            )
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        return json.dumps(result).encode("utf-8") + b"\n"

    def _finish(self, request: Request, code: int, result: dict[str, Any]) -> None:
        body = self._answer(request, code, result)
        if getattr(request, "_disconnected", False):
            return
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        request.write(body)
        request.finish()


MAX_JSON_DEPTH = 64
"""How deeply arrays and objects may nest in a JSON body (the body itself is level 1)."""

# A string, or an unterminated one to the end of the text: a match never
# fails once begun, so the text is scanned once (a pattern that required
# the closing quote would, on a string never closed, be tried again from
# each quote inside it: quadratic, 20 s for 64 KiB of escaped quotes).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BRACKETS_ONLY = {ord(c): None for c in map(chr, range(0x80)) if c not in "[]{}"}


def _json_depth(text: str) -> int:
    """How deeply arrays and objects nest in C{text} (strings skipped)."""
    brackets = _JSON_STRING.sub("", text).translate(_BRACKETS_ONLY)
    depth = deepest = 0
    for c in brackets:
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c in "]}":
            depth -= 1
    return deepest


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _json_fields(raw: bytes) -> dict[str, object]:
    try:
        # JSON on the wire is UTF-8 (RFC 8259): no guessing at UTF-16/32.
        text = raw.decode("utf-8")
        if _json_depth(text) > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        # The body's own object is the last one parsed: its pairs are kept.
        last: list[list[tuple[str, object]]] = [[]]

        def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
            last[0] = pairs
            return dict(pairs)

        fields = json.loads(
            text,
            parse_float=_finite,
            parse_constant=_no_constant,
            object_pairs_hook=pairs_hook,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Answer(400, f"body is not valid JSON: {e}") from None
    if not isinstance(fields, dict):
        raise _Answer(400, "the JSON body must be an object")
    if len(fields) != len(last[0]):
        # As for a form: which one counts is for no parser to guess (a
        # proxy that checks the first "channel" would let the last through).
        seen: set[str] = set()
        for key, _ in last[0]:
            if key in seen:
                raise _Answer(400, f"field {key!r} given more than once")
            seen.add(key)
    return fields


def _form_fields(raw: bytes) -> dict[str, object]:
    try:
        text = raw.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (UnicodeDecodeError, ValueError) as e:
        raise _Answer(400, f"body is not valid form data: {e}") from None
    fields: dict[str, object] = {}
    for name, values in parsed.items():
        if len(values) > 1:
            raise _Answer(400, f"field {name!r} given more than once")
        fields[name] = values[0]
    return fields
