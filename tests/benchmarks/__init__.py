"""Tests of the benchmark tools: load generators, reports, scrapers (not of the product)."""
