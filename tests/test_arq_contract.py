"""The arq code the relay's worker relies on, pinned: an arq upgrade that changes any of it
fails here, so the upgrade gets a review of workers/settings.py and workers/jobs.py first.

What depends on what:
- `RelayWorker._poll_iteration` replaces arq's; it reuses `run_job` (claims the job it is
  given, runs it under `wait_for`, hands the outcome to `finish_job`), arq's semaphore and
  counter (`_release_sem_dec_counter_on_complete`), `heart_beat`, and `main`'s loop calling
  `_poll_iteration` every `poll_delay`.
- The job functions raise `Retry(defer=...)` and rely on `run_job` turning it into
  `ZINCRBY queue (host now + defer - score)` in `finish_job` (relay.clock corrects the defer).
- `run_worker` relies on `close()` gathering running tasks before closing the pool.

When this fails: read the new arq code of the function named, check each point above, then
update the digest.
"""

from __future__ import annotations

import hashlib
import inspect

import arq
import pytest
from arq import Retry
from arq.worker import Worker

PINNED = {
    "Worker.main": "45ca1591c9717466",
    "Worker._poll_iteration": "f8d39d823a0a59f2",
    "Worker.run_job": "589a19059ff84ee7",
    "Worker.finish_job": "903f09c92830d3fd",
    "Worker._release_sem_dec_counter_on_complete": "0ed101482e942c33",
    "Worker.heart_beat": "2e9959bea66dc551",
    "Worker.close": "5bcc9cb356680829",
    "Retry": "d0bab8b0018e9431",
}


def _digest(name: str) -> str:
    target = Retry if name == "Retry" else getattr(Worker, name.removeprefix("Worker."))
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_arq_code_the_worker_relies_on_is_unchanged(name: str) -> None:
    assert _digest(name) == PINNED[name], (
        f"arq {arq.VERSION} changed {name}: review workers/settings.py (RelayWorker) and "
        f"workers/jobs.py against it (see this module's docstring), then update the digest"
    )
