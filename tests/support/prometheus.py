"""`/metrics` read as Prometheus reads it: every sample by name and labels, and histograms.

`scrape(url)` parses a service's `/metrics` with prometheus_client's own parser; `Scrape.value`
reads one sample (a missing one fails the test, naming what is there), `Scrape.histogram`
one histogram's count, sum and cumulative buckets. `scrape_until` scrapes again until a
condition holds, for counters that move after the event a test can await (a delivery marked
sent after the SMTP server received it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import WAIT_SECONDS, read_until

POLL_SECONDS = 0.05

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Histogram:
    """One histogram's samples: `buckets` are (upper bound, cumulative count), +Inf last."""

    count: float
    sum: float
    buckets: list[tuple[float, float]]


class Scrape:
    """One scrape of `/metrics`, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The value of the sample `name` with exactly `labels`."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            shown = sorted(str(dict(found)) for sample, found in self.samples if sample == name)
            raise AssertionError(f"no sample {name}{labels} in /metrics; {name} has {shown}")
        return self.samples[key]

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the sample `name` with exactly `labels`, None when there is none."""
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[Labels, float]:
        """Every sample named `name`, by its labels."""
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def histogram(self, name: str, **labels: str) -> Histogram:
        """The histogram `name` (a family name, without _bucket) with `labels`."""
        if self.types.get(name) != "histogram":
            raise AssertionError(f"{name} is not a histogram in /metrics: {self.types.get(name)}")
        buckets = sorted(
            (float(dict(found)["le"]), value)
            for found, value in self.series(name + "_bucket").items()
            if dict(found).keys() - {"le"} == labels.keys()
            and all(dict(found)[key] == wanted for key, wanted in labels.items())
        )
        if not buckets or not math.isinf(buckets[-1][0]):
            raise AssertionError(f"no buckets up to +Inf for {name}{labels}")
        return Histogram(
            self.value(name + "_count", **labels), self.value(name + "_sum", **labels), buckets
        )


async def scrape(url: str) -> Scrape:
    """A service's `/metrics` now."""
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def scrape_until(
    url: str, condition: Callable[[Scrape], bool], *, within: float = WAIT_SECONDS
) -> Scrape:
    """Scrape until `condition` holds (polled, as Prometheus does: a counter announces nothing
    when it moves); the last scrape is in the failure's message."""
    return await read_until(
        lambda: scrape(url), condition, what="/metrics", every=POLL_SECONDS, within=within
    )
