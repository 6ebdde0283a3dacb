"""The suite's reading of the server's Prometheus histograms (parsed text, no server)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.suite import MetricsScraper


def _scrape(count: int, under_50: int) -> list[Any]:
    text = (
        "# TYPE faultprint_event_loop_lag_milliseconds histogram\n"
        f'faultprint_event_loop_lag_milliseconds_bucket{{le="50.0"}} {under_50}\n'
        f'faultprint_event_loop_lag_milliseconds_bucket{{le="+Inf"}} {count}\n'
        f"faultprint_event_loop_lag_milliseconds_count {count}\n"
        f"faultprint_event_loop_lag_milliseconds_sum {count * 2.0}\n"
    )
    return list(text_string_to_metric_families(text))


class GrowingScraper(MetricsScraper):
    """Each scrape sees one more sample under 50 ms than the one before, as a live server would."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:0")
        self.scrapes = 0

    def _families(self) -> list[Any]:
        self.scrapes += 1
        return _scrape(count=100 + self.scrapes, under_50=97 + self.scrapes)


def test_samples_above_a_bound_take_count_and_bucket_from_one_scrape() -> None:
    scraper = GrowingScraper()
    assert scraper.histogram_above("faultprint_event_loop_lag", 50.0) == 3
    assert scraper.scrapes == 1


def test_histogram_totals_read_sum_and_count_together() -> None:
    scraper = GrowingScraper()
    assert scraper.histogram_totals("faultprint_event_loop_lag") == (202.0, 101.0)
    assert scraper.scrapes == 1
