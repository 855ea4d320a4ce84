"""
The root resource: Twisted resources at their paths, everything else to WSGI.

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import IResource, Resource

if TYPE_CHECKING:
    from twisted.web.server import Request

__all__ = ["WSGIRoot", "split_path"]


def split_path(path: str) -> tuple[bytes, ...]:
    """
    Turn C{"/a/b"} into C{(b"a", b"b")}.

    @raise ValueError: if the path does not start with C{/}, names the root
        itself, or has empty segments.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be a str starting with '/', got {path!r}")
    segments = tuple(s.encode("utf-8") for s in path[1:].split("/"))
    if any(not s for s in segments):
        raise ValueError(f"path {path!r} must not be '/' nor contain empty segments")
    return segments


class WSGIRoot(Resource):
    """
    Serve mounted Twisted resources at their paths and hand every other
    request to a WSGI resource.

    C{twisted.web.wsgi.WSGIResource} is a leaf and cannot have children, so
    this root sits above it.  A mounted path matches whole segments only:
    with the stream at C{/sse}, C{/ssefoo} and C{/sse-old} go to the WSGI app.
    An I{exact} mount (the default, used for the event stream) also sends
    C{/sse/anything} to the WSGI app; a non-exact mount (a static directory)
    serves the whole subtree.  Requests that reach the WSGI app keep the
    C{SCRIPT_NAME} of C{""} and the full path in C{PATH_INFO}.

    @param wsgi_resource: the resource for everything not mounted.
    """

    def __init__(self, wsgi_resource: IResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wsgi_resource = wsgi_resource
        # (segments, resource, exact), longest path first.
        self._mounts: list[tuple[tuple[bytes, ...], IResource, bool]] = []

    def mount(self, path: str, resource: IResource, *, exact: bool = True) -> None:
        """
        Serve C{resource} at C{path} (C{"/sse"}, C{"/events/live"}).

        @raise ValueError: if C{path} is malformed or already mounted.
        """
        segments = split_path(path)
        if any(existing == segments for existing, _, _ in self._mounts):
            raise ValueError(f"{path!r} is already mounted")
        self._mounts.append((segments, resource, exact))
        self._mounts.sort(key=lambda m: -len(m[0]))

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        """Route one request: called by twisted.web with the first segment."""
        rest = request.postpath
        prepath = request.prepath
        assert rest is not None and prepath is not None
        for segments, resource, exact in self._mounts:
            n = len(segments)
            if segments[0] != path or segments[1:] != tuple(rest[: n - 1]):
                continue
            if exact and len(rest) != n - 1:
                continue
            # Consume the mount's segments: they become the resource's prepath.
            prepath.extend(rest[: n - 1])
            del rest[: n - 1]
            return resource
        # Not mounted: put the segment back so the WSGI app sees the whole path.
        rest.insert(0, prepath.pop())
        return self.wsgi_resource

    def render(self, request: Request) -> bytes | int:
        """Serve a request for the bare root (an empty path) with the WSGI app."""
        return self.wsgi_resource.render(request)  # type: ignore[no-any-return]
