"""`pdd sweep dashboard`: optuna-dashboard on a sweep's Optuna journal, on loopback, behind a token made per start.

optuna-dashboard has no login: whoever reaches its port reads every study, and can edit them through its API. So
it listens on 127.0.0.1 unless told otherwise, and a WSGI gate in front of it lets a request through only with
this start's token: as the URL's `token` query parameter (the answer then sets an HttpOnly, SameSite=Strict
cookie, which carries it on the page's own requests), an `Authorization: Bearer` header, or that cookie. Loopback
alone would not do: every local user reaches it. The gate passes GET and HEAD only, since the journal is the
driver's to write and the dashboard is a view of it.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pdd.errors import SweepError

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class TokenGate:
    """WSGI middleware: the wrapped app sees only GET and HEAD requests that carry the token."""

    def __init__(self, app: WSGIApp, token: str):
        self.app = app
        self.token = token.encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        in_url = parse_qs(environ.get("QUERY_STRING", "")).get("token", [])[:1]
        header = environ.get("HTTP_AUTHORIZATION", "")
        bearer = [header.removeprefix("Bearer ")] if header.startswith("Bearer ") else []
        # A cookie belongs to the host, whatever its port: naming it by port keeps two dashboards from swapping tokens.
        name = f"pdd_dashboard_{environ['SERVER_PORT']}"
        offered = in_url + bearer + _from_cookie(environ.get("HTTP_COOKIE", ""), name)
        if not offered:
            return _deny(start_response, "401 Unauthorized", "this dashboard needs the token in the URL that "
                         "`pdd sweep dashboard` printed", [("WWW-Authenticate", "Bearer")])
        if not any(self._matches(value) for value in offered):
            return _deny(start_response, "403 Forbidden", "wrong token: each start of the dashboard makes a new one")
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _deny(start_response, "405 Method Not Allowed", "read-only: the sweep's driver writes the journal",
                         [("Allow", "GET, HEAD")])
        if not (in_url and self._matches(in_url[0])):
            return self.app(environ, start_response)

        def with_cookie(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            cookie = f"{name}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/"
            return start_response(status, [*headers, ("Set-Cookie", cookie)], exc_info)

        return self.app(environ, with_cookie)

    def _matches(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.token)


def _from_cookie(header: str, name: str) -> list[str]:
    try:
        morsel = SimpleCookie(header).get(name)
    except CookieError:
        return []
    return [morsel.value] if morsel is not None else []


def _deny(start_response: Callable[..., Any], status: str, message: str,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = f"{message}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(headers or [])])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a page's open requests do not hold up Ctrl-C


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a request line would print the token of every page that asks with it in its URL."""


def is_loopback(host: str) -> bool:
    """Whether every address host names is a loopback one."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    except socket.gaierror:
        raise SweepError(f"--host {host}: not an IPv4 address or a name this machine resolves") from None
    return all(ipaddress.ip_address(address).is_loopback for address in addresses)


def open_dashboard(journal: Path, host: str, port: int) -> tuple[WSGIServer, str]:
    """optuna-dashboard on the journal, listening on host:port (0: a free port) behind a fresh token; returns the
    server, not yet serving, and the URL that opens it."""
    import optuna_dashboard
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    token = secrets.token_urlsafe(32)
    app = TokenGate(optuna_dashboard.wsgi(JournalStorage(JournalFileBackend(str(journal)))), token)
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as error:
        raise SweepError(_bind_problem(error, host, port)) from None
    return server, f"http://{host}:{server.server_port}/?token={token}"


def _bind_problem(error: OSError, host: str, port: int) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is taken; choose another with --port"
    if error.errno == errno.EACCES:
        return f"port {port} needs privileges this user lacks; choose one above 1023 with --port"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine"
    return f"cannot listen on {host}:{port}: {error.strerror or error}"
