"""Prometheus exporter for ReflexDB Cloud database instances."""

__version__ = "0.1.0"
