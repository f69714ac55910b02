"""optuna-dashboard on the study's storage and artifact store, optionally behind a token."""

from __future__ import annotations

import hmac
import os
from http.cookies import SimpleCookie
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlencode

from hybridprune.errors import ConfigError
from hybridprune.search.config import StudyConfig

TOKEN_ENV = "HYBRIDPRUNE_DASHBOARD_TOKEN"
COOKIE = "hybridprune_token"


class TokenGate:
    """WSGI middleware admitting requests that carry the token.

    Accepted: ``Authorization: Bearer TOKEN``, the cookie set after a first visit with
    ``?token=TOKEN`` (that visit is redirected to the same URL without the token). Anything else
    gets 401.

    Args:
        app: The WSGI application (optuna-dashboard).
        token: The shared secret.
    """

    def __init__(self, app: Callable, token: str) -> None:
        self.app = app
        self.token = token

    def _ok(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        if self._ok(auth[7:] if auth.startswith("Bearer ") else None) or (
            COOKIE in cookie and self._ok(cookie[COOKIE].value)
        ):
            return self.app(environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if self._ok((query.pop("token", [None]) or [None])[0]):
            rest = urlencode(query, doseq=True)
            location = environ.get("PATH_INFO", "/") + (f"?{rest}" if rest else "")
            start_response("303 See Other", [("Location", location),
                                             ("Set-Cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/")])
            return [b""]
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"unauthorized: open the dashboard with ?token=TOKEN or send 'Authorization: Bearer TOKEN'\n"]


def serve_dashboard(cfg: StudyConfig, host: str = "127.0.0.1", port: int = 8080, storage: Any = None,
                    token: str | None = None) -> None:
    """Serve optuna-dashboard (blocks until interrupted).

    Args:
        cfg: The study; its storage and artifact directory are served.
        host: Bind address (loopback by default).
        port: TCP port.
        storage: Storage URL override.
        token: Require this token (default: ``$HYBRIDPRUNE_DASHBOARD_TOKEN`` when set); without a
            token, ``optuna_dashboard.run_server`` serves without authentication.

    Raises:
        ConfigError: for a bad port or an empty token.
    """
    import optuna_dashboard

    from hybridprune.search.storage import get_artifact_store
    from hybridprune.search.study import quiet_optuna, storage_for

    if not 0 < int(port) < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise ConfigError(f"the dashboard token must not be empty (--token or ${TOKEN_ENV})")
    quiet_optuna()
    store = get_artifact_store(cfg.artifact_dir)
    if token is None:
        optuna_dashboard.run_server(storage_for(cfg, storage), host=host, port=int(port), artifact_store=store)
        return
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    app = TokenGate(optuna_dashboard.wsgi(storage_for(cfg, storage), artifact_store=store), token)
    with make_server(host, int(port), app, server_class=Server, handler_class=QuietHandler) as httpd:
        httpd.serve_forever()
