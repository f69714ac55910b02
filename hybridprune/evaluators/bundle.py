"""Pack the device agent (``agent.py``, ``timing.py``, ``trtexec.py``) into one zipapp to copy to a device.

The archive runs with the device's own Python 3.6+ and nothing else::

    python3 agent.pyz --host 0.0.0.0 --port 8470 --token SECRET
"""

from __future__ import annotations

import os
import tempfile
import zipapp
from pathlib import Path

from hybridprune.errors import ConfigError
from hybridprune.io import atomic_path

AGENT_FILES = ("agent.py", "timing.py", "trtexec.py")
INTERPRETER = "/usr/bin/env python3"
_MAIN = ('"""Entry point of agent.pyz: the hybridprune device agent."""\n'
         "import sys\n\nimport agent\n\nsys.exit(agent.main())\n")


def build_agent_bundle(dest: str | os.PathLike, interpreter: str = INTERPRETER) -> Path:
    """Write the agent zipapp (:data:`AGENT_FILES` and a ``__main__``) to ``dest``.

    Args:
        dest: The ``.pyz`` file to write (atomically; parent folders are created).
        interpreter: The shebang line's interpreter, so ``./agent.pyz`` works too.

    Returns:
        The path written.

    Raises:
        ConfigError: if ``dest`` is an existing folder.
    """
    dest = Path(dest)
    if dest.is_dir():
        raise ConfigError(f"{dest} is a folder; give the file to write, e.g. {dest / 'agent.pyz'}")
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="hybridprune-bundle-") as tmp:
        for name in AGENT_FILES:
            (Path(tmp) / name).write_bytes((here / name).read_bytes())
        (Path(tmp) / "__main__.py").write_text(_MAIN)
        with atomic_path(dest, suffix=".pyz") as out:
            zipapp.create_archive(tmp, str(out), interpreter=interpreter)
            out.chmod(0o755)
    return dest
