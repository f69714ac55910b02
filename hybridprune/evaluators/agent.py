#!/usr/bin/env python3
"""hybridprune device agent: measures ONNX model latency on the device it runs on.

Runs with Python 3.6 and only the standard library (a Jetson TX2 on JetPack 4.6 has Python 3.6.9).
It needs ``timing.py`` and ``trtexec.py`` beside it; ``hybridprune agent bundle -o agent.pyz``
packs the three into one zipapp, so copy that one file to the device and start it::

    python3 agent.pyz --port 8470 --token SECRET

HTTP API (every request needs ``Authorization: Bearer SECRET`` when a token is set):

* ``GET /info``: device, L4T release, TensorRT version, power mode, clocks, backend, limits.
* ``POST /measure?precision=fp16&batch=1&warmup_runs=10&max_time_s=10``: body is the ONNX model
  (raw bytes); the reply is the latency statistics as JSON. Protocol values must lie within
  ``Protocol.LIMITS`` (e.g. min_runs <= 1000, max_time_s <= 600, batch <= 4096; ``/info`` lists
  them), else 400 names the allowed range.

Errors: 4xx when the request is wrong (retrying will not help), 5xx when the device failed
(trtexec crashed or ran out of memory: retry). A measurement stops when its client disconnects.
Without a token, only requests whose ``Host`` is a loopback name, an IP address or the bound name
are served (DNS rebinding); binding a non-loopback address without a token prints a warning.
SIGTERM/SIGINT delete the private work folder with every uploaded model and engine.

The measurement protocol, its statistics and the onnxruntime timer live in ``timing.py``, which
the host-side backends import too, so both sides measure the same way; ``trtexec.py`` parses and
runs trtexec. This module holds the server and the validation of uploaded ONNX models.
"""

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

if __package__:  # imported as hybridprune.evaluators.agent
    from . import timing, trtexec
else:  # run as a script, or from agent.pyz: timing.py and trtexec.py lie beside this file
    _HERE = os.path.dirname(os.path.abspath(__file__))
    if _HERE not in sys.path:  # python -I leaves the script's folder out
        sys.path.insert(0, _HERE)
    import timing
    import trtexec

AgentError = timing.AgentError
BadRequest = timing.BadRequest
Cancelled = timing.Cancelled
OnnxRuntimeBackend = timing.OnnxRuntimeBackend
PRECISIONS = timing.PRECISIONS
POLL_S = timing.POLL_S
Protocol = timing.Protocol
device_description = timing.device_description
power_info = timing.power_info
tensorrt_version = timing.tensorrt_version
TrtexecBackend = trtexec.TrtexecBackend

AGENT_VERSION = "1"
DEFAULT_PORT = 8470
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body is read and discarded up to this much
AGENT_BACKENDS = ("auto", "trtexec", "onnxruntime")


# ----------------------------------------------------------------------------------------------
# ONNX validation with the standard library (protobuf wire format of ModelProto)
# ----------------------------------------------------------------------------------------------

# ModelProto field number -> expected wire type (0 varint, 2 length-delimited)
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def _varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise BadRequest("not an ONNX model: truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BadRequest("not an ONNX model: malformed protobuf varint")


def _fields(buf):
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise BadRequest("not an ONNX model: field %d runs past the end" % number)
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise BadRequest("not an ONNX model: unsupported protobuf wire type %d" % wire)
        yield number, wire, value


def inspect_onnx(data):
    """Check that ``data`` is a serialized ONNX ModelProto; return its ir_version and opsets.

    Walks the top-level protobuf fields: each must be a known ModelProto field with the right wire
    type, ``ir_version`` and a non-empty ``graph`` are required. The runtime's own load decides
    the rest.

    Returns:
        dict with ``ir_version``, ``opsets`` ({domain: version}) and ``producer``.

    Raises:
        BadRequest: naming what is wrong.
    """
    if not data:
        raise BadRequest("not an ONNX model: empty body")
    info = {"ir_version": None, "opsets": {}, "producer": ""}
    has_graph = False
    for number, wire, value in _fields(bytes(data)):
        if number not in _MODEL_FIELDS or _MODEL_FIELDS[number] != wire:
            raise BadRequest("not an ONNX model: unexpected protobuf field %d (wire type %d)"
                             % (number, wire))
        if number == 1:
            info["ir_version"] = value
        elif number == 2:
            info["producer"] = value.decode("utf-8", "replace")
        elif number == 7:
            has_graph = len(value) > 0
        elif number == 8:
            domain, version = "", None
            for sub_number, sub_wire, sub_value in _fields(value):
                if sub_number == 1 and sub_wire == 2:
                    domain = sub_value.decode("utf-8", "replace")
                elif sub_number == 2 and sub_wire == 0:
                    version = sub_value
            info["opsets"][domain or "ai.onnx"] = version
    if not info["ir_version"]:
        raise BadRequest("not an ONNX model: ir_version is missing")
    if not has_graph:
        raise BadRequest("not an ONNX model: graph is missing")
    return info


# ----------------------------------------------------------------------------------------------
# HTTP server
# ----------------------------------------------------------------------------------------------


MAX_BATCH = 4096  # largest batch the agent feeds to a dynamic input
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_loopback(host):
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = (host or "").strip().strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header, bound_host):
    """Whether a request's ``Host`` header is safe to serve without a token (DNS rebinding).

    A page on an attacker's domain that re-resolves to 127.0.0.1 sends ``Host: evil.example``;
    only loopback names, IP literals (which DNS cannot rebind) and the name the server was bound
    to are accepted.

    Args:
        host_header: The ``Host`` header (``name``, ``name:port``, ``[v6]:port``), or None.
        bound_host: The ``--host`` the server was started with.
    """
    if not host_header:
        return False
    value = host_header.strip()
    if value.startswith("["):
        name = value[1:value.find("]")] if "]" in value else value
    elif value.count(":") == 1:
        name = value.split(":", 1)[0]
    else:
        name = value
    name = name.rstrip(".").lower()
    if not name:
        return False
    if is_loopback(name) or name == (bound_host or "").strip("[]").lower():
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def exposure_warning(host, token):
    """The warning to print when binding a non-loopback ``host`` without a token, else None."""
    if token or is_loopback(host):
        return None
    return ("warning: the agent listens on %s without a token: anyone who can reach this port can "
            "upload models and hold the device; start it with --token" % host)


def client_gone(sock):
    """Whether the peer of ``sock`` closed its side or reset the connection (non-blocking)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        flags = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)
        return sock.recv(1, flags) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


class Agent(object):
    """State of one agent: backend, private model directory, lock serialising measurements."""

    def __init__(self, backend="auto", token=None, max_bytes=DEFAULT_MAX_BYTES, threads=1,
                 trtexec=None):
        self.token = token or None
        self.max_bytes = int(max_bytes)
        self.workdir = tempfile.mkdtemp(prefix="hybridprune-agent-")  # mode 0700
        self.lock = threading.Lock()
        self.measurements = 0
        backends = {"onnxruntime": OnnxRuntimeBackend(threads),
                    "trtexec": TrtexecBackend(self.workdir, trtexec)}
        try:
            if backend == "auto":
                backend = "trtexec" if backends["trtexec"].available() else "onnxruntime"
            if backend not in backends:
                raise ValueError("unknown backend %r; choose one of: auto, %s"
                                 % (backend, ", ".join(sorted(backends))))
            if not backends[backend].available():
                raise ValueError("backend %r is not available on this machine" % backend)
        except ValueError:
            self.close()
            raise
        self.backend = backends[backend]

    def close(self):
        """Stop a running trtexec and delete the work folder with every uploaded model."""
        backend = getattr(self, "backend", None)
        if isinstance(backend, TrtexecBackend):
            backend.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def public(self, message):
        """``message`` without the agent's private work folder path."""
        return message.replace(self.workdir + os.sep, "").replace(self.workdir, "<workdir>")

    def info(self):
        """The ``GET /info`` reply: device, L4T, TensorRT, power mode, clocks, backend, limits."""
        data = {"agent_version": AGENT_VERSION, "device": device_description(),
                "l4t_release": timing.read_first_line("/etc/nv_tegra_release"),
                "tensorrt_version": tensorrt_version(), "backend": self.backend.name,
                "python": platform.python_version(), "max_bytes": self.max_bytes,
                "limits": dict(Protocol.LIMITS, batch=(1, MAX_BATCH))}
        data.update(power_info())
        try:
            data["versions"] = self.backend.versions()
        except Exception:
            data["versions"] = {}
        return data

    def measure(self, body, query, cancelled=None):
        """Validate the model and options, then measure under the lock (one at a time).

        ``cancelled`` (a callable) is polled while queued and between timed batches; when it
        returns True the measurement stops with :class:`Cancelled`.
        """
        options = dict((k, v[-1]) for k, v in query.items())
        precision = options.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise BadRequest("precision must be one of %s, got %r" % (", ".join(PRECISIONS), precision))
        try:
            batch = int(options.get("batch", 1))
            protocol = Protocol.from_mapping(options)
        except ValueError as exc:
            raise BadRequest(str(exc))
        if not 1 <= batch <= MAX_BATCH:
            raise BadRequest("batch must be in [1, %d], got %d" % (MAX_BATCH, batch))
        model_info = inspect_onnx(body)
        digest = hashlib.sha256(body).hexdigest()[:32]
        path = os.path.join(self.workdir, digest + ".onnx")
        while not self.lock.acquire(timeout=POLL_S):  # queued: give up if the client left
            if cancelled is not None and cancelled():
                raise Cancelled("request dropped while queued: the client went away")
        try:
            self.measurements += 1
            began = time.monotonic()
            if not os.path.exists(path):
                with open(path + ".partial", "wb") as handle:
                    handle.write(body)
                os.rename(path + ".partial", path)
            if isinstance(self.backend, TrtexecBackend):
                stats = self.backend.measure(path, protocol, precision, batch, model_hash=digest,
                                             cancelled=cancelled)
            else:
                stats = self.backend.measure(path, protocol, precision, batch, cancelled=cancelled)
            versions = self.backend.versions()
            # agent-clock interval of this measurement: lets a client verify that none overlap
            stats["agent_interval"] = [began, time.monotonic()]
            stats["agent_sequence"] = self.measurements
        finally:
            self.lock.release()
        stats.update({"backend": self.backend.name, "precision": precision, "batch_size": batch,
                      "device": device_description(), "versions": versions,
                      "model_sha256": digest, "onnx": model_info})
        return stats


class AgentServer(socketserver.ThreadingMixIn, HTTPServer):
    """Threaded HTTP server: one thread per connection; errors are logged as one line."""

    daemon_threads = True
    allow_reuse_address = True
    verbose = False

    def handle_error(self, request, client_address):
        """Log a failed connection (usually a client that went away) as one line."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            what = "client %s went away (%s)" % (client_address[0], type(exc).__name__)
        else:
            what = "error serving %s: %s: %s" % (client_address[0], type(exc).__name__,
                                                 self.agent.public(str(exc)))
        sys.stderr.write("hybridprune agent: %s\n" % what)
        if self.verbose:
            traceback.print_exc()


class Handler(BaseHTTPRequestHandler):
    """``GET /info`` and ``POST /measure`` (see the module docstring)."""

    server_version = "hybridprune-agent/" + AGENT_VERSION
    timeout = 120  # seconds a client may stall while sending

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def _reply(self, status, payload, close=False):
        if "error" in payload:
            payload = dict(payload, error=self.server.agent.public(payload["error"]))
        body = json.dumps(payload, allow_nan=True).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self):
        token = self.server.agent.token
        if token is None:
            host = self.headers.get("Host")
            if host_allowed(host, self.server.bound_host):
                return True
            self._reply(403, {"error": "Host header %r is not allowed without a token (DNS "
                                       "rebinding protection); use a loopback or IP address, "
                                       "or start the agent with --token" % host}, close=True)
            return False
        # http.server decodes headers as latin-1: encoding back gives the bytes the client sent,
        # compared with the token's UTF-8 bytes (so non-ASCII tokens work)
        header = self.headers.get("Authorization", "").encode("latin-1", "replace")
        given = header[7:] if header.startswith(b"Bearer ") else b""
        if hmac.compare_digest(given, token.encode("utf-8", "surrogateescape")):  # argv under a C locale
            return True
        self._reply(401, {"error": "missing or wrong token (send 'Authorization: Bearer <token>')"},
                    close=True)
        return False

    def _discard(self, length):
        remaining = length
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except (OSError, IOError):
            pass

    def do_GET(self):
        if not self._authorized():
            return
        if urlparse(self.path).path == "/info":
            self._reply(200, self.server.agent.info())
        else:
            self._reply(404, {"error": "unknown path; use GET /info or POST /measure"})

    def do_POST(self):
        if not self._authorized():
            return
        url = urlparse(self.path)
        if url.path != "/measure":
            self._reply(404, {"error": "unknown path; use GET /info or POST /measure"}, close=True)
            return
        header = self.headers.get("Content-Length")
        if header is None:
            self._reply(411, {"error": "Content-Length header is required"}, close=True)
            return
        if not re.match(r"^[0-9]{1,15}$", header.strip()):
            self._reply(400, {"error": "Content-Length must be a non-negative integer, got %r"
                                       % header[:40]}, close=True)
            return
        length = int(header)
        agent = self.server.agent
        if length > agent.max_bytes:
            self._discard(min(length, DRAIN_LIMIT))  # so ordinary clients read the 413, not a reset
            self._reply(413, {"error": "model is %d bytes; the limit is %d bytes"
                                       % (length, agent.max_bytes)}, close=True)
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._reply(400, {"error": "body shorter than Content-Length"}, close=True)
            return
        try:
            stats = agent.measure(body, parse_qs(url.query),
                                  cancelled=lambda: client_gone(self.connection))
        except Cancelled as exc:
            sys.stderr.write("hybridprune agent: %s (%s)\n" % (exc, self.client_address[0]))
            self.close_connection = True
        except AgentError as exc:
            self._reply(exc.status, {"error": str(exc)})
        except Exception as exc:  # a backend crash must still answer
            self._reply(500, {"error": "%s: %s" % (type(exc).__name__, exc)})
        else:
            self._reply(200, stats)


def serve(host="127.0.0.1", port=DEFAULT_PORT, token=None, backend="auto",
          max_bytes=DEFAULT_MAX_BYTES, threads=1, trtexec=None, verbose=False):
    """Start the agent and serve until SIGINT/SIGTERM; prints the URL it listens on.

    On exit the work folder (uploaded models, engines) is deleted and a running trtexec killed.
    """
    agent = Agent(backend=backend, token=token, max_bytes=max_bytes, threads=threads, trtexec=trtexec)
    try:
        server = AgentServer((host, port), Handler)
    except OSError as exc:  # port taken, address not on this machine, name unknown
        agent.close()
        raise OSError("cannot listen on %s:%d (%s); pick another --port or --host"
                      % (host, port, exc.strerror or exc)) from None
    except Exception:
        agent.close()
        raise
    server.agent = agent
    server.verbose = verbose
    server.bound_host = host
    bound_host, bound_port = server.server_address[:2]
    warning = exposure_warning(host, token)
    if warning:
        sys.stderr.write(warning + "\n")
    previous = {}

    def stop(signum, frame):
        raise KeyboardInterrupt  # unwinds serve_forever in the main thread

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            previous[name] = signal.signal(getattr(signal, name), stop)
    print("hybridprune agent (backend %s) listening on http://%s:%d"
          % (agent.backend.name, bound_host, bound_port))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
        server.server_close()
        agent.close()


def main(argv=None):
    """Command line of the agent (``python3 agent.py --help``); returns the exit code."""
    parser = argparse.ArgumentParser(description="hybridprune latency agent (stdlib only)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0 = any free port)")
    parser.add_argument("--token", default=os.environ.get("HYBRIDPRUNE_AGENT_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' (or $HYBRIDPRUNE_AGENT_TOKEN)")
    parser.add_argument("--backend", default="auto", choices=AGENT_BACKENDS)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help="largest model upload accepted (bytes)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--trtexec", default=None, help="path of trtexec (default: search)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for name, value, low, high in (("--port", args.port, 0, 65535), ("--threads", args.threads, 1, 1024),
                                   ("--max-bytes", args.max_bytes, 1, 1 << 40)):
        if not low <= value <= high:
            sys.stderr.write("error: %s must be a whole number in [%d, %d], got %d\n" % (name, low, high, value))
            return 2
    try:
        serve(args.host, args.port, args.token, args.backend, args.max_bytes, args.threads,
              args.trtexec, args.verbose)
    except (ValueError, OSError) as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
