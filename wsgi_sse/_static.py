# mypy: disable-error-code="no-untyped-call"
# (twisted.web.static.File is not annotated.)
"""
Static files served by Twisted, hardened for the open internet.

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

import errno
import warnings
from typing import TYPE_CHECKING, Any, Sequence

from twisted.logger import Logger
from twisted.web import http
from twisted.web.pages import notFound
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET

from ._browser import etag_listed, none_match
from ._client import cut_response

with warnings.catch_warnings():
    # twisted.web.static builds a deprecated resource at import time.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"twisted\.web\.")
    from twisted.web.static import File, StaticProducer, getTypeAndEncoding

if TYPE_CHECKING:
    from twisted.web.http_headers import Headers
    from twisted.web.server import Request

__all__ = ["DEFAULT_MAX_RANGES", "StaticFiles"]

DEFAULT_MAX_RANGES = 16
"""Distinct byte ranges one request may ask for (after merging overlapping ones)."""

DEFAULT_TYPE = "application/octet-stream"
"""The C{Content-Type} of a file whose name tells none (C{File} says C{text/html})."""

_NOT_FOUND = notFound()
"""The one 404 page: a missing, hidden or unnamable file, or a directory, look the same."""


class StaticFiles(File):
    """
    Serve the files under a directory: C{twisted.web.static.File} without
    its weak spots.

    - No directory listings: a directory answers C{404}.
    - A file whose extension maps to no type (none, C{.map}, C{.env}, an
      unknown one) is C{application/octet-stream}, never C{text/html}
      (C{File}'s default): an uploaded C{evil.xyz} holding a C{<script>}
      is not a page of the site.
    - Hidden files are not served: a path segment that begins with a dot
      (C{.env}, C{.git/config}, C{sub/.htpasswd}, C{%2eenv} alike) answers
      the C{404} of a missing file, so the answer does not tell whether the
      file exists; C{hidden=True} serves them (the directory given as
      C{path} may itself be a hidden one, such as C{.well-known}).
    - A path segment that is not UTF-8 or holds a NUL byte answers C{404}
      (C{File} answers C{500}, or logs a traceback); C{..} and encoded
      slashes never leave the directory (as with C{File}).
    - Byte ranges are sorted and overlapping or adjacent ones merged, so an
      answer is never larger than the file plus a few part headers (C{File}
      sends C{bytes=0-,0-,...} as that many copies); more than
      C{max_ranges} distinct ranges answer C{416}.  A C{Range} on an empty
      file is ignored (C{200}, as nginx answers): RFC 9110 calls a suffix
      range of it satisfiable, but no C{206} can describe one.
    - A file that changes while it is sent never breaks the connection's
      framing: exactly the announced C{Content-Length} is sent (the bytes
      a growing file gains after the answer began are not), and a file
      that became shorter cuts the response (the connection closes, or an
      HTTP/2 stream is reset) instead of leaving it unfinished or, with
      several ranges, spinning the reactor forever (as C{File} does).
    - Each file answer has an C{ETag} made of the file's modification time
      (in nanoseconds) and size, as nginx's is, beside C{Last-Modified}
      (C{File} sends no C{ETag}). An C{If-None-Match} naming it (or C{*};
      C{W/} tags compare weakly) answers C{304}, and takes precedence over
      C{If-Modified-Since} (RFC 9110, 13.2.2).
    - C{If-Match} and C{If-Unmodified-Since} are checked first: an
      C{If-Match} that names neither C{*} nor the file's C{ETag} (compared
      strongly), or, without one, a file modified after the
      C{If-Unmodified-Since} date answers C{412} (C{File} ignores both).
    - A Range with an C{If-Range} that names neither the file's C{ETag}
      (compared strongly: a C{W/} tag never matches) nor its
      C{Last-Modified} date exactly gets the whole file, as RFC 9110
      requires (C{File} ignores C{If-Range} and sends a range of the new
      file).
    - An C{If-Modified-Since} that is not a date is ignored (C{File}
      answers C{500} for some).

    Mount it with C{resources={"/static": StaticFiles("/srv/app/static")}}
    (L{make_application<wsgi_sse.make_application>}).  Files are read in the
    reactor thread, in 64 KiB pieces as the client takes them: fine for the
    CSS, scripts and images of a site; put a CDN or a reverse proxy in front
    for large downloads.

    @param path: the directory (or a single file) to serve.
    @param defaultType: the C{Content-Type} of files whose name tells none.
    @param ignoredExts: as for C{File}.
    @param registry: as for C{File}.
    @param hidden: whether to serve files and directories whose name begins
        with a dot.
    @cvar max_ranges: distinct byte ranges one request may ask for.
    """

    max_ranges = DEFAULT_MAX_RANGES
    childNotFound = _NOT_FOUND  # type: ignore[assignment]  # any 404 page will do

    def __init__(
        self,
        path: str,
        defaultType: str = DEFAULT_TYPE,  # noqa: N803 - File's name
        ignoredExts: Sequence[str] = (),  # noqa: N803 - File's name
        registry: Any = None,
        *,
        hidden: bool = False,
    ) -> None:
        super().__init__(path, defaultType, ignoredExts, registry)
        self.hidden = hidden

    def directoryListing(self) -> IResource:
        """List nothing: a directory is not found."""
        return _NOT_FOUND

    def render_GET(self, request: Request) -> bytes | int:
        """
        Serve the file (C{GET} and C{HEAD}), conditions checked first.

        The steps of C{File.render_GET}, with the C{ETag} and the conditions
        on it added.
        """
        self.restat(False)
        if self.type is None:
            self.type, self.encoding = getTypeAndEncoding(
                self.basename(), self.contentTypes, self.contentEncodings, self.defaultType
            )
        if not self.exists():
            answer: bytes | int = self.childNotFound.render(request)
            return answer
        if self.isdir():
            redirect: bytes = self.redirect(request)
            return redirect
        request.setHeader(b"accept-ranges", b"bytes")
        try:
            file = self.openForReading()
        except OSError as e:
            if e.errno == errno.EACCES:
                forbidden: bytes = self.forbidden.render(request)
                return forbidden
            raise
        etag = self._etag()
        request.setHeader(b"etag", etag)
        headers = request.requestHeaders
        if not _preconditions_hold(headers, etag, self.getModificationTime()):
            file.close()
            request.setResponseCode(http.PRECONDITION_FAILED)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"" if request.method == b"HEAD" else b"Precondition Failed\n"
        matches = headers.getRawHeaders(b"if-none-match")
        since = headers.getRawHeaders(b"if-modified-since")
        if since and (matches or not _valid_since(since)):
            # RFC 9110: If-None-Match takes precedence (13.2.2); a value
            # that is not a date is ignored (13.1.3; File answers 500 for some).
            headers.removeHeader(b"if-modified-since")
        cached = request.setLastModified(self.getModificationTime()) is http.CACHED
        if matches and none_match(matches, etag):
            request.setResponseCode(http.NOT_MODIFIED)
            cached = True
        if cached:
            file.close()
            return b""
        if request.method == b"HEAD":
            self._setContentHeaders(request)
            file.close()
            return b""
        self.makeProducer(request, file).start()
        return NOT_DONE_YET

    render_HEAD = render_GET

    def _etag(self) -> bytes:
        """
        The C{ETag} of the file as last stat'ed (call once C{exists()} held):
        its modification time in nanoseconds and its size, in hexadecimal.
        """
        stat = self._statinfo  # FilePath's os.stat result, as restat() left it
        assert stat is not None
        return b'"%x-%x"' % (stat.st_mtime_ns, stat.st_size)

    def getChild(self, path: bytes | str, request: Request) -> IResource:
        """
        Return the file for one path segment, or a 404 for names no file can
        have and, unless C{hidden}, for names that begin with a dot.
        """
        if isinstance(path, bytes):
            try:
                path = path.decode("utf-8")
            except UnicodeDecodeError:
                return _NOT_FOUND
        if "\x00" in path:
            return _NOT_FOUND
        if path.startswith(".") and not self.hidden:
            # Hidden (and `.`, `..`): as if it did not exist.
            child_not_found: IResource = self.childNotFound
            return child_not_found
        child: IResource = super().getChild(path, request)
        return child

    def createSimilarFile(self, path: str) -> StaticFiles:
        """Build the resource of a file below this one, with the same settings."""
        similar: StaticFiles = super().createSimilarFile(path)
        similar.max_ranges = self.max_ranges
        similar.hidden = self.hidden
        return similar

    def makeProducer(self, request: Request, file: Any) -> StaticProducer:
        """Answer a plain or range request; ranges merged and counted first."""
        size = self.getFileSize()
        header = request.getHeader(b"range")
        parsed = None
        if header is not None and (size == 0 or not _if_range_holds(request, self._etag())):
            # The whole file: RFC 9110, 13.1.5: the file changed since the
            # client's copy (or the validator is one it never had), not a
            # range of it to splice onto that copy; 14.1.2: of an empty
            # file, a suffix range (bytes=-5) is satisfiable, yet no
            # Content-Range can name a part of it, and any other range is
            # not (a server may ignore Range, 14.2; nginx does).
            request.requestHeaders.removeHeader(b"range")
            header = None
        if header is not None:
            try:
                parsed = self._parseRangeHeader(header)
            except ValueError:
                # As File does: a malformed Range is ignored (the whole file).
                request.requestHeaders.removeHeader(b"range")
        if parsed is None:
            request.setResponseCode(http.OK)
            self._setContentHeaders(request, size)
            return _ExactProducer(request, file, [(b"", 0, size)], self.path)
        merged = self._merge(parsed)
        if not merged or len(merged) > self.max_ranges:
            request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            self._setContentHeaders(request, 0)
            return _ExactProducer(request, file, [], self.path)
        if len(merged) == 1:
            offset, length = merged[0]
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-range", self._contentRange(offset, length))
            self._setContentHeaders(request, length)
            return _ExactProducer(request, file, [(b"", offset, length)], self.path)
        # Twisted's multipart answer (headers, boundaries), from the merged ranges.
        parts = self._doMultipleRangeRequest(request, [(o, o + n - 1) for o, n in merged])
        return _ExactProducer(request, file, parts, self.path)

    def _merge(self, ranges: list[tuple[int | None, int | None]]) -> list[tuple[int, int]]:
        """Satisfiable ranges as sorted C{(offset, size)}, overlapping and adjacent ones joined."""
        length = self.getFileSize()
        spans = []
        for start, end in ranges:
            if start is None:  # the last `end` bytes
                begin, stop = max(0, length - (end or 0)), length
            else:
                begin, stop = start, length if end is None else min(end + 1, length)
            if begin < stop:
                spans.append((begin, stop))
        spans.sort()
        merged: list[list[int]] = []
        for begin, stop in spans:
            if merged and begin <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([begin, stop])
        return [(begin, stop - begin) for begin, stop in merged]


def _preconditions_hold(headers: Headers, etag: bytes, modified: float) -> bool:
    """
    Whether C{If-Match} and C{If-Unmodified-Since} hold for a file with
    C{etag}, last modified at C{modified} (seconds since the epoch), as
    RFC 9110 evaluates them (13.2.2): C{If-Match} names C{*} or C{etag}
    (strong comparison: a C{W/} tag never matches); without it, an
    C{If-Unmodified-Since} that is one valid date is not before the
    modification time (to the second, as C{Last-Modified} gives it); one
    that is not a date is ignored.
    """
    values = headers.getRawHeaders(b"if-match")
    if values:
        return etag_listed(values, etag, weak=False)
    since = headers.getRawHeaders(b"if-unmodified-since")
    if not since or not _valid_since(since):
        return True
    limit: int = http.stringToDatetime(since[0].split(b";", 1)[0])
    return int(modified) <= limit


def _valid_since(values: Sequence[bytes]) -> bool:
    """Whether C{If-Modified-Since} C{values} are one date twisted.web can read."""
    if len(values) != 1:
        return False
    try:
        # (As Request.setLastModified reads it.)
        http.stringToDatetime(values[0].split(b";", 1)[0])
    except (ValueError, IndexError, KeyError):
        return False
    return True


def _if_range_holds(request: Request, etag: bytes) -> bool:
    """
    Whether a Range may be honoured: no C{If-Range}, or one naming C{etag}
    (strong comparison, RFC 9110 13.1.5: a weak tag never matches) or the
    C{Last-Modified} date of the answer (set before this).
    """
    values = request.requestHeaders.getRawHeaders(b"if-range")
    if not values:
        return True
    value = values[-1].strip()
    if len(values) > 1 or value.startswith(b"W/"):
        return False
    if value.startswith(b'"'):
        return value == etag
    try:
        when = http.stringToDatetime(value)
    except (ValueError, IndexError, KeyError):
        return False
    modified = getattr(request, "lastModified", None)
    return modified is not None and when == modified


class _ExactProducer(StaticProducer):
    """
    Write parts of a file, each after its separator, in pieces of at most
    C{bufferSize} bytes as the client takes them: exactly the bytes the
    answer's headers announced, or the response is cut short if the file
    no longer has them.

    @param parts: C{(separator, offset, size)} triples, in order.
    @param path: the file's path, for the log.
    """

    log = Logger()

    def __init__(
        self, request: Request, file: Any, parts: list[tuple[bytes, int, int]], path: str
    ) -> None:
        super().__init__(request, file)
        self._parts = list(reversed(parts))
        self._path = path
        self._left = 0

    def start(self) -> None:
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        request = self.request
        if not request:
            return
        pieces: list[bytes] = []
        room = self.bufferSize
        short = False
        while room > 0:
            if not self._left:
                if not self._parts:
                    break
                separator, offset, self._left = self._parts.pop()
                if separator:
                    pieces.append(separator)
                    room -= len(separator)
                self.fileObject.seek(offset)
                continue
            data = self.fileObject.read(min(room, self._left))
            if not data:
                short = True
                break
            pieces.append(data)
            room -= len(data)
            self._left -= len(data)
        done = short or (not self._left and not self._parts)
        if done:
            request.unregisterProducer()
            self.stopProducing()
        if pieces:
            # (May call resumeProducing again, before it returns.)
            request.write(b"".join(pieces))
        if short:
            self.log.warn(
                "{path} became shorter while it was sent; the response is cut short",
                path=self._path,
            )
            cut_response(request, "static file shorter than announced")
        elif done:
            request.finish()
