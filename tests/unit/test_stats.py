"""TransferStats (ftptrio._stats): pure accounting, no trio."""

from __future__ import annotations

import subprocess
import sys
import ftptrio
from ftptrio._stats import TransferStats


def test_record_counts_transfers_modes_bytes_and_errors():
    stats = TransferStats()
    stats.record("passive", to_server=0, to_client=100)
    stats.record("passive", to_server=7, to_client=0, error="reset")
    stats.record("active", to_server=50, to_client=1)
    assert (stats.transfers, stats.transfer_errors) == (3, 1)
    assert (stats.bytes_to_server, stats.bytes_to_client) == (57, 101)
    assert stats.by_mode == {"passive": 2, "active": 1}
    assert ftptrio.TransferStats is TransferStats


def test_importing_stats_imports_no_trio():
    # ftptrio/__init__ imports the server (trio): load the package without running it
    code = ("import importlib.util, sys, types\n"
            "spec = importlib.util.find_spec('ftptrio')\n"
            "pkg = types.ModuleType('ftptrio')\n"
            "pkg.__path__ = list(spec.submodule_search_locations)\n"
            "sys.modules['ftptrio'] = pkg\n"
            "import ftptrio._stats\n"
            "assert 'trio' not in sys.modules, 'trio imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
