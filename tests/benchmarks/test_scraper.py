"""The suite's reading of the server's Prometheus histograms: parsed text, and the sum over workers' endpoints."""

from __future__ import annotations

import http.server
import threading
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.suite import MetricsScraper


def _text(count: int, under_50: int) -> str:
    return (
        "# TYPE faultprint_event_loop_lag_seconds histogram\n"
        f'faultprint_event_loop_lag_seconds_bucket{{le="0.05"}} {under_50}\n'
        f'faultprint_event_loop_lag_seconds_bucket{{le="+Inf"}} {count}\n'
        f"faultprint_event_loop_lag_seconds_count {count}\n"
        f"faultprint_event_loop_lag_seconds_sum {count * 2.0}\n"
    )


def _scrape(count: int, under_50: int) -> list[Any]:
    return list(text_string_to_metric_families(_text(count, under_50)))


class GrowingScraper(MetricsScraper):
    """Each scrape sees one more sample under 0.05 s than the one before, as a live server would."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:0")
        self.scrapes = 0

    def _families(self) -> list[Any]:
        self.scrapes += 1
        return _scrape(count=100 + self.scrapes, under_50=97 + self.scrapes)


def test_samples_above_a_bound_take_count_and_bucket_from_one_scrape() -> None:
    scraper = GrowingScraper()
    assert scraper.histogram_above("faultprint_event_loop_lag", 0.05) == 3
    assert scraper.scrapes == 1


def test_histogram_totals_read_sum_and_count_together() -> None:
    scraper = GrowingScraper()
    assert scraper.histogram_totals("faultprint_event_loop_lag") == (202.0, 101.0)
    assert scraper.scrapes == 1


def test_a_server_with_workers_is_read_as_the_sum_of_their_endpoints() -> None:
    texts = [_text(count=10, under_50=9), _text(count=5, under_50=2)]
    servers = []
    for text in texts:
        body = text.encode()

        class Metrics(http.server.BaseHTTPRequestHandler):
            def do_GET(self, body: bytes = body) -> None:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        scraper = MetricsScraper(*(f"127.0.0.1:{s.server_address[1]}" for s in servers))
        assert scraper.histogram_totals("faultprint_event_loop_lag") == (30.0, 15.0)
        assert scraper.histogram_above("faultprint_event_loop_lag", 0.05) == 4
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
