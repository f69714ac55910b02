"""The dashboard's front (token gate, Host check, bounded server) over real HTTP on loopback.

optuna-dashboard itself is exercised in test_dashboard.py; here a small WSGI app stands behind the
front so each test starts in milliseconds.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from urllib.parse import quote

import pytest

from hybridprune.search.dashboard import COOKIE, make_dashboard_server, safe_location

HANG_GUARD_S = 30  # only guards against a hang


def hello(environ, start_response):
    body = b"ok " + environ.get("PATH_INFO", "").encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def front(request):
    """Start a front with the test's parameters; yields a function making requests to it."""
    servers = []

    def start(token=None, **kwargs):
        server = make_dashboard_server(hello, "127.0.0.1", 0, token, **kwargs)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(port, path, headers=None):
    """(status, headers as a list of pairs, body) of one GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD_S)
    conn.putrequest("GET", path, skip_host="Host" in (headers or {}))
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    result = resp.status, resp.getheaders(), resp.read()
    conn.close()
    return result


def header(pairs, name):
    values = [v for k, v in pairs if k.lower() == name.lower()]
    assert len(values) <= 1, pairs
    return values[0] if values else None


@pytest.mark.parametrize("path, location", [
    ("/dashboard?token=T", "/dashboard"),
    ("/a%0d%0aSet-Cookie:%20evil=1?token=T", "/a%0D%0ASet-Cookie:%20evil=1"),  # no header injection
    ("///evil.example/x?token=T", "/evil.example/x"),  # not protocol-relative
    ("/%2F%2Fevil.example?token=T", "/evil.example"),
    ("/%5Cevil.example?token=T", "/%5Cevil.example"),  # "/\host" is "//host" to browsers
    ("/d?a=1&token=T&b=%0d%0a&c=%C3%BC", "/d?a=1&b=%0D%0A&c=%C3%BC"),
])
def test_login_redirect_location_is_safe(front, path, location):
    status, headers, _ = get(front("T"), path)
    assert status == 303
    assert header(headers, "Location") == location
    assert header(headers, "Set-Cookie").startswith(f"{COOKIE}=T;")
    assert not any("evil" in k.lower() for k, _ in headers)


def test_safe_location_never_leaves_the_site():
    for path in ["//evil.example", "/\\evil.example", "/\r\nX: y", "\\\\evil", "/../..//x"]:
        location = safe_location({"PATH_INFO": path})
        assert location.startswith("/") and not location.startswith("//")
        assert not set("\r\n\\ ") & set(location)


@pytest.mark.parametrize("token", ["two words", "semi;colon=x", 'quo"te', "ümlaut-秘密", "%41%%", "plain"])
def test_tokens_with_awkward_characters_log_in(front, token):
    port = front(token)
    status, headers, _ = get(port, "/page?token=" + quote(token, safe=""))
    assert status == 303 and header(headers, "Location") == "/page"
    cookie = header(headers, "Set-Cookie").split(";")[0]
    assert get(port, "/page", {"Cookie": cookie})[0] == 200
    assert get(port, "/page", {"Cookie": f'other="x; {cookie}; broken'})[0] == 200  # foreign malformed cookies
    assert get(port, "/page", {"Cookie": f"{cookie}x"})[0] == 401
    assert get(port, "/page", {"Authorization": b"Bearer " + token.encode("utf-8")})[0] == 200
    assert get(port, "/page", {"Authorization": b"Bearer " + token.encode("utf-8") + b"x"})[0] == 401
    assert get(port, "/page?token=" + quote(token + "x", safe=""))[0] == 401
    assert get(port, "/page")[0] == 401


def test_foreign_cookies_on_localhost_do_not_break_login(front):
    port = front("T")
    jar = ['a="unterminated; b=x\\y; {c}; =novalue; justtext; {c}',  # malformed ones around ours
           '{c}; hybridprune_token_old=zzz', 'x{c}; {c}']
    for cookies in jar:
        assert get(port, "/", {"Cookie": cookies.format(c=f"{COOKIE}=T")})[0] == 200, cookies
    assert get(port, "/", {"Cookie": f"x{COOKIE}=T"})[0] == 401


def test_tokenless_front_checks_host(front):
    port = front(None)
    for host, want in [("evil.example", 403), (f"attacker.test:{port}", 403), (f"localhost:{port}", 200),
                       (f"127.0.0.1:{port}", 200), ("[::1]", 200), ("10.1.2.3:8080", 200)]:
        status, _, body = get(port, "/x", {"Host": host})
        assert status == want, host
        if want == 403:
            assert b"DNS rebinding" in body


def test_idle_connections_are_bounded_and_time_out(front):
    port = front("T", read_timeout=0.5, max_connections=2)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) for _ in range(2)]
    status, _, body = get(port, "/", {"Authorization": "Bearer T"})  # both slots held by silent clients
    assert status == 503 and b"too many connections" in body
    for sock in idle:  # the server hangs up on them after the read timeout ...
        assert sock.recv(1) == b""
        sock.close()
    deadline = time.monotonic() + HANG_GUARD_S
    while True:  # ... and their slots come back (released just after the hang-up)
        status = get(port, "/", {"Authorization": "Bearer T"})[0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200


def test_a_port_in_use_is_one_error_line_for_the_dashboard_and_the_agent(tiny_study, capsys):
    from hybridprune.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv in (["dashboard", str(tiny_study), "--port", str(port)], ["agent", "serve", "--port", str(port)]):
            assert main(argv) == 2
            captured = capsys.readouterr()
            err = captured.err.strip()
            assert err == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); pick another --port " \
                          f"or --host", (argv, err)
            assert "optuna-dashboard for" not in captured.out  # no URL announced that does not answer
