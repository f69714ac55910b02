"""optuna-dashboard on the study's storage and artifact store."""

from __future__ import annotations

from typing import Any

from hybridprune.errors import ConfigError
from hybridprune.search.config import StudyConfig


def serve_dashboard(cfg: StudyConfig, host: str = "127.0.0.1", port: int = 8080, storage: Any = None) -> None:
    """Serve optuna-dashboard (blocks until interrupted).

    Args:
        cfg: The study; its storage and artifact directory are served.
        host: Bind address (loopback by default; the dashboard has no authentication).
        port: TCP port.
        storage: Storage URL override.

    Raises:
        ConfigError: for a bad port.
    """
    import optuna_dashboard

    from hybridprune.search.storage import get_artifact_store
    from hybridprune.search.study import quiet_optuna, storage_for

    if not 0 < int(port) < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    quiet_optuna()
    optuna_dashboard.run_server(storage_for(cfg, storage), host=host, port=int(port),
                                artifact_store=get_artifact_store(cfg.artifact_dir))
