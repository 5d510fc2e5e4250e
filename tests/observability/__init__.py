"""Helpers of tests/test_observability.py: PromQL/dashboard parsing, the metric catalog,
and a real Prometheus on loopback."""
