"""The fixtures pytest-xdist users rely on, for runs without pytest-xdist.

Registered by :mod:`.plugin` only when pytest-xdist is not loaded (xdist's
own fixtures read the same ``config.workerinput`` keys, so they give the
same answers on a restask worker).  Users derive ports and database names
from ``worker_id``; a replacement worker keeps the name of the one it
replaces.
"""

from __future__ import annotations

import uuid

import pytest

__all__ = ["testrun_uid", "worker_id"]


def _workerinput(config: pytest.Config) -> dict[str, object]:
    workerinput = getattr(config, "workerinput", None)
    return workerinput if isinstance(workerinput, dict) else {}


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """The id of this worker ('gw0', 'gw1', ...), or 'master' in process."""
    return str(_workerinput(request.config).get("workerid", "master"))


@pytest.fixture(scope="session")
def testrun_uid(request: pytest.FixtureRequest) -> str:
    """An id shared by every worker of this run."""
    return str(_workerinput(request.config).get("testrunuid") or uuid.uuid4().hex)
