"""The garbage collector around a service run inside the test process."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_restored() -> Iterator[None]:
    """Put the collector back as it was: the service tunes it once it is up
    (`livedash.service.settle_the_collector`), and in here that is the test run, which must
    go on collecting as before."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
