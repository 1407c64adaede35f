"""Who may use the dashboard, and which POSTs are real: the access token, the Host check and CSRF.

- Access: on a loopback address anyone on this machine may read (as they may read the store itself); any other
  address needs the token, given once as `?token=` (then kept in an HttpOnly SameSite=Strict cookie) or as
  `Authorization: Bearer`. Missing: 401; wrong: 403.
- Host: on loopback, a request whose Host header names another machine is refused (DNS rebinding).
- CSRF: a POST must carry the server's own secret (embedded in the page's forms) and, when the browser sends an
  Origin (or Referer), come from this very host. GET never changes anything.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["COOKIE", "LOOPBACK", "Guard", "is_loopback"]

COOKIE = "conveyor_token"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _hostname(host_header: str) -> str:
    """`example:8237` → `example`, `[::1]:8237` → `[::1]`."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


@dataclass
class Guard:
    """The rules of one server: `token` (None on loopback without --token) and the per-server CSRF secret."""

    bind_host: str
    token: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def host_allowed(self, host_header: str | None) -> bool:
        if not is_loopback(self.bind_host):
            return True  # reachable by other names (the token guards it)
        return bool(host_header) and is_loopback(_hostname(host_header or ""))

    def access(self, query_token: str | None, authorization: str | None, cookie: str | None) -> int:
        """200 when allowed, 401 when no token was given, 403 when a wrong one was."""
        if self.token is None:
            return 200
        given = query_token
        if given is None and authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if given is None:
            given = cookie
        if not given:
            return 401
        return 200 if secrets.compare_digest(given.encode(), self.token.encode()) else 403

    def post_allowed(self, form_csrf: str | None, host_header: str | None, origin: str | None,
                     referer: str | None) -> str | None:
        """None when the POST is genuine, else why it is refused."""
        if not form_csrf or not secrets.compare_digest(form_csrf.encode(), self.csrf.encode()):
            return "the form's CSRF token is missing or wrong: reload the page and try again"
        source = origin if origin and origin != "null" else referer
        if origin == "null":
            return "a request from an opaque origin is refused"
        if source and urlsplit(source).netloc != (host_header or ""):
            return f"a request from another site ({urlsplit(source).netloc}) is refused"
        return None
