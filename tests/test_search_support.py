"""Compatibility alias: the search-test helpers moved to ``tests/helpers.py``.

Kept while ``test_study_config.py``, ``test_search_workers.py`` and ``test_search_storage.py`` still
import from here; new code imports ``helpers`` (and gets the ``tiny_study`` fixture from
``conftest.py``). This module holds no tests.
"""

from helpers import FAST_LATENCY, REPO, TINY, cli, load, write_checkpoint, write_study

__all__ = ["FAST_LATENCY", "REPO", "TINY", "cli", "load", "write_checkpoint", "write_study"]
