"""Benchmarks: our exporter against a static file server and a naive prometheus_client exporter.

Run with ``make bench`` (``python -m benchmarks``); ``python -m benchmarks --help`` lists the
options and ``benchmarks/__main__.py`` explains what each measurement does.
"""
