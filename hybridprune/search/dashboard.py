"""optuna-dashboard on the study's storage and artifact store, behind a token or a Host check.

The front is a small threaded WSGI server of our own: every connection has a read timeout and
their number is bounded (a client that opens connections and sends nothing cannot pin a thread
each forever). With a token, :class:`TokenGate` admits only requests that carry it; without one,
:class:`HostGate` refuses requests whose ``Host`` header is not loopback, an IP address or the
bound name, so a web page cannot reach the dashboard through DNS rebinding.
"""

from __future__ import annotations

import hmac
import os
import socket
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from hybridprune.errors import ConfigError
from hybridprune.evaluators.agent import host_allowed, is_loopback
from hybridprune.search.config import StudyConfig

TOKEN_ENV = "HYBRIDPRUNE_DASHBOARD_TOKEN"
COOKIE = "hybridprune_token"
READ_TIMEOUT_S = 30.0  # a connection that sends nothing for this long is closed
MAX_CONNECTIONS = 64  # connections served at once; more get 503 at once
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/", minus "%" (re-encoded) and "\"


def _wsgi_bytes(value: str) -> bytes:
    """A WSGI header/query string back as the bytes the client sent (PEP 3333: latin-1)."""
    return value.encode("latin-1", "replace")


def _cookies(header: str) -> Iterable[tuple[str, str]]:
    """(name, value) pairs of a Cookie header; malformed pieces (foreign cookies) are skipped."""
    for piece in header.split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name:
            yield name.strip(), value.strip()


def safe_location(environ: dict, query: str = "") -> str:
    """A same-site redirect target for this request's path: percent-encoded, one leading slash.

    ``PATH_INFO`` is decoded by the server, so CR/LF (header injection), ``//host`` and ``\\``
    (open redirects) are encoded or collapsed here.
    """
    raw = _wsgi_bytes(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/"))
    path = "/" + quote(raw, safe=_PATH_SAFE).lstrip("/")
    return path + (f"?{query}" if query else "")


def _text(start_response: Callable, status: str, message: str) -> list[bytes]:
    body = message.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class TokenGate:
    """WSGI middleware admitting requests that carry the token.

    Accepted: ``Authorization: Bearer TOKEN``, or the cookie set after a first visit with
    ``?token=TOKEN`` (that visit is redirected to the same URL without the token). Tokens are
    compared as UTF-8 bytes in constant time; the cookie holds the percent-encoded token, so
    spaces, ``;``, ``"`` and non-ASCII characters work. Anything else gets 401.

    Args:
        app: The WSGI application (optuna-dashboard).
        token: The shared secret.
    """

    def __init__(self, app: Callable, token: str) -> None:
        self.app = app
        self.token = token
        self._secret = token.encode("utf-8")

    def _ok(self, candidate: bytes | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self._secret)

    def _admitted(self, environ: dict) -> bool:
        auth = _wsgi_bytes(environ.get("HTTP_AUTHORIZATION", ""))
        if auth.startswith(b"Bearer ") and self._ok(auth[7:]):
            return True
        return any(name == COOKIE and self._ok(unquote_to_bytes(value))
                   for name, value in _cookies(environ.get("HTTP_COOKIE", "")))

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self._admitted(environ):
            return self.app(environ, start_response)
        # latin-1 both ways: every byte of the query survives, percent-decoded, as one character
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True, encoding="latin-1")
        given = query.pop("token", [None])[-1]
        if self._ok(None if given is None else _wsgi_bytes(given)):
            location = safe_location(environ, urlencode(query, doseq=True, encoding="latin-1"))
            start_response("303 See Other", [
                ("Location", location), ("Content-Length", "0"),
                ("Set-Cookie", f"{COOKIE}={quote(self.token, safe='')}; HttpOnly; SameSite=Strict; Path=/")])
            return [b""]
        return _text(start_response, "401 Unauthorized",
                     "unauthorized: open the dashboard with ?token=TOKEN or send 'Authorization: Bearer TOKEN'\n")


class HostGate:
    """WSGI middleware for a dashboard without a token: refuses foreign ``Host`` headers (403).

    Args:
        app: The WSGI application.
        bound_host: The address the server was bound to (also accepted as a Host name).
    """

    def __init__(self, app: Callable, bound_host: str) -> None:
        self.app = app
        self.bound_host = bound_host

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if host_allowed(environ.get("HTTP_HOST"), self.bound_host):
            return self.app(environ, start_response)
        return _text(start_response, "403 Forbidden",
                     "forbidden: this Host is not allowed without a token (DNS rebinding protection); "
                     "use a loopback or IP address, or start the dashboard with --token\n")


class _Handler(WSGIRequestHandler):
    """One request per connection, with the server's read timeout; quiet on timeouts."""

    def setup(self) -> None:
        self.timeout = self.server.read_timeout
        super().setup()

    def handle(self) -> None:
        try:
            super().handle()
        except (socket.timeout, ConnectionError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class DashboardServer(ThreadingMixIn, WSGIServer):
    """Threaded WSGI server with a read timeout and a bound on concurrent connections.

    Args:
        address: (host, port); port 0 picks a free one.
        app: The WSGI application (wrap it in :class:`TokenGate` or :class:`HostGate`).
        read_timeout: Seconds a connection may stay silent.
        max_connections: Connections served at once; one more is answered 503 and closed.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Callable, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        if read_timeout <= 0 or max_connections < 1:
            raise ConfigError("the dashboard needs read_timeout > 0 and max_connections >= 1")
        self.read_timeout = float(read_timeout)
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)
        self.set_app(app)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        sys.stderr.write(f"dashboard: error serving {client_address[0]}: {type(exc).__name__}: {exc}\n")


def make_dashboard_server(app: Callable, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
                          read_timeout: float = READ_TIMEOUT_S,
                          max_connections: int = MAX_CONNECTIONS) -> DashboardServer:
    """Bind the dashboard front: ``app`` behind :class:`TokenGate` (token) or :class:`HostGate`.

    Returns:
        The bound server; call ``serve_forever()`` (and ``server_close()`` when done).
    """
    gated = TokenGate(app, token) if token is not None else HostGate(app, host)
    return DashboardServer((host, int(port)), gated, read_timeout, max_connections)


def serve_dashboard(cfg: StudyConfig, host: str = "127.0.0.1", port: int = 8080, storage: Any = None,
                    token: str | None = None, say: Callable[[str], None] | None = None) -> None:
    """Serve optuna-dashboard (blocks until interrupted).

    Args:
        cfg: The study; its storage and artifact directory are served.
        host: Bind address (loopback by default).
        port: TCP port.
        storage: Storage URL override.
        token: Require this token (default: ``$HYBRIDPRUNE_DASHBOARD_TOKEN`` when set); without a
            token only the Host check guards the dashboard, and binding a non-loopback address
            prints a warning.
        say: Gets the line with the URL once the port is bound (default: printed).

    Raises:
        ConfigError: for a bad port, one that cannot be bound, or an empty token.
    """
    import optuna_dashboard

    from hybridprune.search.storage import get_artifact_store
    from hybridprune.search.study import quiet_optuna, storage_for

    if not 0 < int(port) < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise ConfigError(f"the dashboard token must not be empty (--token or ${TOKEN_ENV})")
    if token is None and not is_loopback(host):
        sys.stderr.write(f"warning: the dashboard listens on {host} without a token: anyone who can reach "
                         f"this port can read the study; start it with --token\n")
    quiet_optuna()
    store = get_artifact_store(cfg.artifact_dir)
    app = optuna_dashboard.wsgi(storage_for(cfg, storage), artifact_store=store)
    try:
        httpd = make_dashboard_server(app, host, port, token)
    except OSError as exc:  # port taken, address not on this machine, name unknown
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or "
                          f"--host") from None
    with httpd:
        line = f"optuna-dashboard for {cfg.name} on http://{host}:{httpd.server_address[1]} (Ctrl+C stops)"
        (say or (lambda text: print(text, flush=True)))(line)
        httpd.serve_forever()
