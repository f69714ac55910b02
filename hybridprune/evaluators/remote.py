"""Client of the device agent (``agent.py``): scores a model by the latency measured on the device."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.base import LATENCY_BACKENDS, BaseLatencyBackend, LatencyResult
from hybridprune.evaluators.timing import PRECISIONS


@LATENCY_BACKENDS.register()
class RemoteLatency(BaseLatencyBackend):
    """Sends the ONNX export to a device agent's ``POST /measure``.

    Args:
        url: The agent, e.g. ``http://tx2.local:8470``.
        token: The agent's token (sent as ``Authorization: Bearer``), or None.
        timeout: Seconds to wait for the agent to answer one request (engine builds on a TX2 take
            minutes, hence the generous default; connection failures are immediate).
        connect_timeout: Seconds for ``GET /info`` and connection attempts.
        retries: Extra attempts after a connection failure or a 5xx answer (bounded).
        backoff: Seconds before the first retry, doubling after each.
        **options: ``opset`` (TensorRT 8.2 reads <= 13, the default) and the measurement protocol
            options, forwarded to the agent (which bounds them: see ``/info``'s ``limits``).

    Raises:
        ConfigError: if the URL is not http(s).
    """

    name = "remote"
    precisions = PRECISIONS
    takes = "onnx"
    queues_itself = True  # the agent measures one model at a time and queues the rest
    shares_host = False  # a dedicated device: nothing else runs there

    def __init__(self, url: str = "http://127.0.0.1:8470", token: str | None = None, timeout: float = 900.0,
                 connect_timeout: float = 10.0, retries: int = 2, backoff: float = 0.5, **options: Any) -> None:
        super().__init__(**options)
        parsed = urllib.parse.urlparse(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"agent url must look like http://HOST:PORT, got {url!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, got {retries!r}")
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        self.url = str(url).rstrip("/")
        self.token, self.timeout, self.connect_timeout = token or None, float(timeout), float(connect_timeout)
        self.retries, self.backoff = retries, float(backoff)

    @classmethod
    def option_names(cls) -> list[str]:
        """Options the constructor accepts."""
        return sorted([*super().option_names(), "url", "token", "timeout", "connect_timeout", "retries",
                       "backoff"])

    def _request(self, method: str, path: str, body: bytes | None, timeout: float) -> dict[str, Any]:
        headers: dict[str, Any] = {"Content-Type": "application/octet-stream"} if body is not None else {}
        if self.token:  # bytes: http.client would encode a str as latin-1 and fail on other characters
            headers["Authorization"] = b"Bearer " + self.token.encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                reason = _error_text(exc)
                if exc.code < 500:  # the request itself is wrong: retrying will not help
                    raise LatencyError(f"agent {self.url} refused {method} {path} ({exc.code}): {reason}") from None
                last = f"HTTP {exc.code}: {reason}"
            except (urllib.error.URLError, OSError, socket.timeout) as exc:
                last = str(getattr(exc, "reason", exc)) or type(exc).__name__
            except ValueError as exc:
                raise LatencyError(f"agent {self.url} sent a reply that is not JSON ({exc})") from None
        raise LatencyError(f"latency agent at {self.url} failed after {self.retries + 1} attempt(s): {last}")

    def info(self) -> dict[str, Any]:
        """The agent's ``GET /info`` (device, L4T, TensorRT, power mode, clocks, backend).

        Raises:
            LatencyError: if the agent is unreachable or refuses.
        """
        return self._request("GET", "/info", None, self.connect_timeout)

    def _measure(self, model: Any, *, input_shape: tuple[int, ...], batch_size: int,
                 precision: str) -> LatencyResult:
        data = model.read_bytes()
        query = urllib.parse.urlencode({"precision": precision, "batch": batch_size, **self.protocol.to_dict()})
        stats = self._request("POST", f"/measure?{query}", data, self.timeout)
        return LatencyResult.from_stats(
            stats, backend=f"remote:{stats.get('backend', '?')}", device=str(stats.get("device", "?")),
            precision=precision, batch_size=batch_size, versions=stats.get("versions") or {}, url=self.url)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read().decode("utf-8")).get("error", exc.reason))
    except Exception:
        return str(exc.reason)
