"""The exposition formats: escaping, sample lines, family headers and content negotiation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from exporter.logs import SECRETS
from exporter.spec import MetricSpec

# Label names are fixed in metrics.py; values come from the API and must be escaped.
_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})
_OM_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})


def escape_label_value(text: str) -> str:
    """Escape backslash, double quote and newline, as both text formats require; a token the
    API quotes in a text (a name, a tag) is redacted as in the logs."""
    return SECRETS.redact(text).translate(_LABEL_ESCAPES)


def format_value(number: float) -> str:
    """Shortest text that reads back as the same float; whole numbers without ``.0``."""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)


def label_block(names: Sequence[str], values: Iterable[str]) -> str:
    """``a="x",b="y"`` with escaped values; the caller adds the braces."""
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


# Rendered single-label blocks (status="running", reason="timeout"): a handful of values
# repeat across every database. Multi-label blocks (info, tags) vary per database and would
# only fill the cache as databases come and go.
_OWN_LABELS: dict[tuple[str, str], str] = {}
_OWN_LABELS_MAX = 4096


def _own_labels(spec: MetricSpec[Any], labels: tuple[str, ...]) -> str:
    if len(labels) != 1:
        return label_block(spec.labels, labels)
    key = (spec.name, labels[0])
    own = _OWN_LABELS.get(key)
    if own is None:
        own = label_block(spec.labels, labels)
        if len(_OWN_LABELS) < _OWN_LABELS_MAX:
            _OWN_LABELS[key] = own
    return own


def sample_lines(spec: MetricSpec[Any], identity: str, obj: Any) -> str:
    """Every sample line of one family for one object, each ending in a newline.

    ``identity`` is the object's already escaped identity label block, shared by every family
    so it is escaped once per object rather than once per line.
    """
    if spec.kind == "histogram":
        return _histogram_lines(spec, identity, obj)
    name = spec.name
    lines = []
    for labels, number in spec.samples(obj):
        block = identity
        if labels:
            own = _own_labels(spec, labels)
            block = f"{identity},{own}" if identity else own
        text = "1" if number == 1 else "0" if number == 0 else format_value(number)
        lines.append(f"{name}{{{block}}} {text}\n" if block else f"{name} {text}\n")
    return "".join(lines)


def _histogram_lines(spec: MetricSpec[Any], identity: str, obj: Any) -> str:
    """``_bucket`` lines (cumulative, ``le`` last), then ``_sum`` and ``_count``."""
    assert spec.total is not None
    counts = [number for _, number in spec.samples(obj)]
    prefix = f"{identity}," if identity else ""
    bounds = [str(float(b)) for b in spec.bounds] + ["+Inf"]  # as client_python writes them
    lines = [f'{spec.name}_bucket{{{prefix}le="{bound}"}} {format_value(float(count))}\n'
             for bound, count in zip(bounds, counts, strict=True)]
    block = f"{{{identity}}}" if identity else ""
    lines.append(f"{spec.name}_sum{block} {format_value(spec.total(obj))}\n")
    lines.append(f"{spec.name}_count{block} {format_value(float(counts[-1]))}\n")
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class Format:
    """One exposition format: its content type, family headers and how the body ends."""

    content_type: str
    openmetrics: bool
    registry_encoder: Callable[[Any], bytes]

    def header(self, spec: MetricSpec[Any]) -> str:
        """The HELP and TYPE lines that open a family."""
        name = spec.name
        if self.openmetrics:
            if spec.kind == "counter":
                name = name.removesuffix("_total")
            text = spec.help.translate(_OM_HELP_ESCAPES)
        else:
            text = spec.help.translate(_HELP_ESCAPES)
        return f"# HELP {name} {text}\n# TYPE {name} {spec.kind}\n"

    def process_metrics(self) -> bytes:
        """The prometheus_client default registry (process and Python runtime metrics).

        In OpenMetrics this also supplies the closing ``# EOF`` line. Rendered at most every
        PROCESS_METRICS_TTL: a burst of requests (a hundred at once, hostile or not) must not
        read /proc and render the registry a hundred times.
        """
        now = time.monotonic()
        cached = _PROCESS_CACHE.get(self.openmetrics)
        if cached is None or now - cached[0] >= PROCESS_METRICS_TTL:
            cached = (now, self.registry_encoder(REGISTRY))
            _PROCESS_CACHE[self.openmetrics] = cached
        return cached[1]


def utf8(text: str) -> bytes:
    """UTF-8 bytes; a lone surrogate (JSON allows ``"\\ud800"``) becomes ``?``."""
    return text.encode("utf-8", "replace")


PROCESS_METRICS_TTL = 0.25  # seconds; far below any scrape interval
_PROCESS_CACHE: dict[bool, tuple[float, bytes]] = {}


def negotiate(accept: str | None) -> Format:
    """Pick the format the scraper prefers, as prometheus_client's ``choose_encoder`` does."""
    encoder, content_type = choose_encoder(accept or "")
    return Format(
        content_type=content_type,
        openmetrics=content_type.startswith("application/openmetrics-text"),
        registry_encoder=encoder,
    )
