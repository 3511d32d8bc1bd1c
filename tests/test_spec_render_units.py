"""The metric spec helpers and the histogram and process-metric rendering, as units: state
sets, info labels, scaled and missing values, bucket lines, the process-metrics cache."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Annotated, Any

import pytest
from pydantic import TypeAdapter

from exporter import metrics, render, spec
from exporter.fields import Lenient, number
from exporter.metrics import API_METRICS, DURATION_BUCKETS
from exporter.models import InvalidResponse, parse_pause_schedule, read_connection
from exporter.render import sample_lines
from exporter.spec import ApiView, info, info_labels, state_set, value
from tests.conftest import parse_exposition


def test_a_state_set_marks_the_current_state() -> None:
    """Every listed state is a sample, 1 for the current one and 0 for the rest."""
    samples = state_set("m", ("a", "b", "c"), lambda o: o)
    assert list(samples("b")) == [(("a",), 0.0), (("b",), 1.0), (("c",), 0.0)]


def test_a_missing_state_is_unknown_or_absent() -> None:
    """None sets the family's unknown state when it has one, else gives no samples."""
    with_unknown = state_set("m", ("a", "unknown"), lambda o: o, unknown="unknown")
    assert list(with_unknown(None)) == [(("a",), 0.0), (("unknown",), 1.0)]
    without = state_set("m", ("a",), lambda o: o)
    assert list(without(None)) == []


@pytest.fixture
def unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    """No unlisted value seen yet in this process (a test run may repeat in one process)."""
    monkeypatch.setattr(spec, "_unlisted_seen", set())


@pytest.mark.usefixtures("unseen")
def test_an_unlisted_state_is_exported_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A value outside the list is its own series at 1, the listed ones 0, logged once."""
    samples = state_set("reflexdb_test_unlisted", ("a", "b"), lambda o: o)
    with caplog.at_level(logging.WARNING, logger="exporter.spec"):
        assert list(samples("zz-new")) == [(("a",), 0.0), (("b",), 0.0), (("zz-new",), 1.0)]
        assert list(samples("zz-new")) == [(("a",), 0.0), (("b",), 0.0), (("zz-new",), 1.0)]
    records = [r for r in caplog.records if getattr(r, "value", None) == "zz-new"]
    assert len(records) == 1
    assert records[0].metric == "reflexdb_test_unlisted"  # type: ignore[attr-defined]
    assert records[0].getMessage() == (
        "API sent a value the reference does not list; exporting it as-is")


def test_values_are_floats_and_missing_ones_absent() -> None:
    """value() gives one unlabelled float sample; True is 1, False 0, None nothing."""
    read = value(lambda o: o)
    assert list(read(2)) == [((), 2.0)]
    assert list(read(True)) == [((), 1.0)]
    assert list(read(False)) == [((), 0.0)]
    assert list(read(0)) == [((), 0.0)]
    assert list(read(None)) == []


def test_info_samples_carry_text_labels() -> None:
    """info() is one sample of 1 whose labels are the values as text, None as ""."""
    samples = info(lambda o: o["a"], lambda o: o["b"], lambda o: o["c"])
    assert list(samples({"a": "x", "b": None, "c": 5.0})) == [(("x", "", "5"), 1.0)]
    assert info_labels([1.5, 3, None, "t", 2.0]) == ("1.5", "3", "", "t", "2")


def test_scaled_values_multiply_and_keep_missing_missing() -> None:
    """A scaled read multiplies the field; a missing field stays missing."""
    scaled = metrics._scaled(lambda db: db.cpu, 1 / 1024)
    assert scaled(SimpleNamespace(db=SimpleNamespace(cpu=2048))) == 2.0
    assert scaled(SimpleNamespace(db=SimpleNamespace(cpu=None))) is None
    assert scaled(SimpleNamespace(db=SimpleNamespace(cpu=0))) == 0.0


def test_connection_samples_wait_for_the_first_answer() -> None:
    """A connection family reads the last good answer and is absent before there is one."""
    read = metrics._connection_samples(lambda data: data.count)
    assert list(read(SimpleNamespace(data=None))) == []
    assert list(read(SimpleNamespace(data=SimpleNamespace(count=7)))) == [((), 7.0)]
    assert list(read(SimpleNamespace(data=SimpleNamespace(count=None)))) == []


@pytest.mark.parametrize(("body", "why"), [
    (b"[1, 2]", "answer is not a JSON object"), (b'"text"', "answer is not a JSON object"),
    (b"5", "answer is not a JSON object"), (b'{"databases": 5}', "answer has no databases list"),
    (b'{"databases": {"a": 1}}', "answer has no databases list"),
    (b'{"name": "x"}', "answer has no databases list"),
])
def test_an_answer_of_the_wrong_shape_says_which(body: bytes, why: str) -> None:
    """Only the answer's shape fails it whole, and the error says which shape was wrong."""
    with pytest.raises(InvalidResponse) as caught:
        read_connection(body)
    assert str(caught.value) == why


def _api_view(buckets: tuple[int, ...], total: float) -> ApiView:
    return ApiView("env", (("200", buckets[-1]),), buckets, total, None, 0.0, 0.0)


def test_histogram_lines_are_cumulative_buckets_then_sum_and_count() -> None:
    """Buckets in bound order with le as client_python writes it, +Inf last, then _sum and
    _count (the +Inf bucket), and they parse as one histogram."""
    histogram = next(s for s in API_METRICS if s.kind == "histogram")
    counts = tuple(range(1, len(DURATION_BUCKETS) + 2))
    text = sample_lines(histogram, 'token_source="env"', _api_view(counts, 12.5))
    lines = text.splitlines()
    assert len(lines) == len(DURATION_BUCKETS) + 3
    for line, bound, count in zip(lines, [*DURATION_BUCKETS, None], counts, strict=False):
        le = "+Inf" if bound is None else str(float(bound))
        assert line == f'{histogram.name}_bucket{{token_source="env",le="{le}"}} {count}'
    assert lines[-2] == f'{histogram.name}_sum{{token_source="env"}} 12.5'
    assert lines[-1] == f'{histogram.name}_count{{token_source="env"}} {counts[-1]}'
    exposition = f"# TYPE {histogram.name} histogram\n{text}"
    parsed = parse_exposition(exposition)
    assert parsed.value(f"{histogram.name}_count", token_source="env") == counts[-1]  # noqa: S106 - a label, not a secret


def test_histogram_lines_without_identity_have_no_empty_braces() -> None:
    """With no identity labels the bucket has only le, and _sum/_count no braces."""
    histogram = next(s for s in API_METRICS if s.kind == "histogram")
    counts = (0,) * len(DURATION_BUCKETS) + (3,)
    text = sample_lines(histogram, "", _api_view(counts, 0.25))
    lines = text.splitlines()
    assert lines[0] == f'{histogram.name}_bucket{{le="0.005"}} 0'
    assert lines[-3] == f'{histogram.name}_bucket{{le="+Inf"}} 3'
    assert lines[-2] == f"{histogram.name}_sum 0.25"
    assert lines[-1] == f"{histogram.name}_count 3"


def test_process_metrics_are_rendered_at_most_every_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default registry is rendered once per PROCESS_METRICS_TTL per format, then
    served from the cache; the OpenMetrics one ends with # EOF."""
    calls: list[Any] = []
    now = [100.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(render, "_PROCESS_CACHE", {})
    fmt = render.Format("text/plain", openmetrics=False,
                        registry_encoder=lambda registry: calls.append(registry) or b"p 1\n")
    assert fmt.process_metrics() == b"p 1\n"
    now[0] += render.PROCESS_METRICS_TTL / 2
    assert fmt.process_metrics() == b"p 1\n"
    assert len(calls) == 1
    now[0] += render.PROCESS_METRICS_TTL / 2  # exactly the TTL since the render: stale
    fmt.process_metrics()
    assert len(calls) == 2
    assert calls[0] is render.REGISTRY
    other = render.Format("application/openmetrics-text", openmetrics=True,
                          registry_encoder=lambda registry: b"o 1\n# EOF\n")
    assert other.process_metrics() == b"o 1\n# EOF\n"  # cached apart from the text format
    assert fmt.process_metrics() == b"p 1\n"


def test_the_real_process_metrics_parse() -> None:
    """The real registry's output parses, with the process families in it."""
    body = render.negotiate(None).process_metrics().decode()
    names = parse_exposition(body).names()
    assert {"process_open_fds", "python_info"} <= names


@pytest.mark.usefixtures("unseen")
def test_unlisted_log_is_keyed_by_metric_and_value(caplog: pytest.LogCaptureFixture) -> None:
    """The same value in another family is logged again; another value too."""
    with caplog.at_level(logging.WARNING, logger="exporter.spec"):
        spec.note_unlisted("reflexdb_test_a", "v1")
        spec.note_unlisted("reflexdb_test_b", "v1")
        spec.note_unlisted("reflexdb_test_a", "v2")
        spec.note_unlisted("reflexdb_test_a", "v1")
    seen = [(r.metric, r.value) for r in caplog.records  # type: ignore[attr-defined]
            if getattr(r, "metric", "").startswith("reflexdb_test_")]
    assert seen == [("reflexdb_test_a", "v1"), ("reflexdb_test_b", "v1"), ("reflexdb_test_a",
                                                                         "v2")]


@pytest.mark.parametrize("value", [None, "daily", 5, ["pauseAt"], True])
def test_a_pause_schedule_that_is_no_object_is_none(value: object) -> None:
    """parse_pause_schedule reads objects only; anything else is no schedule."""
    assert parse_pause_schedule(value) is None


def test_a_pause_schedule_object_is_read() -> None:
    """An object becomes a schedule with its times and days."""
    schedule = parse_pause_schedule({"pauseAt": "22:00", "resumeAt": "06:30", "days": [1, 1, 5]})
    assert schedule is not None
    assert (schedule.pause_minute, schedule.resume_minute, schedule.days) == (1320, 390, (1, 5))


def test_lenient_fields_validate_strictly_first_and_repair_only_failures() -> None:
    """A Lenient field keeps a value its strict schema accepts (even one the repair would
    change) and hands only a failing value to the repair."""
    repaired: list[object] = []

    def repair(value: object) -> int:
        repaired.append(value)
        return -1
    field = TypeAdapter(Annotated[int, Lenient(repair)])
    assert field.validate_python(5) == 5
    assert field.validate_python("7") == 7
    assert repaired == []
    assert field.validate_python("seven") == -1
    assert field.validate_python(None) == -1
    assert repaired == ["seven", None]


def test_single_label_blocks_are_cached_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-label block (status="running") is rendered once and reused, up to the cache's
    bound; blocks of more labels are not cached."""
    monkeypatch.setattr(render, "_OWN_LABELS", {})
    monkeypatch.setattr(render, "_OWN_LABELS_MAX", 2)
    one = SimpleNamespace(name="m_one", labels=("status",))
    two = SimpleNamespace(name="m_two", labels=("tag", "color"))
    first = render._own_labels(one, ("running",))  # type: ignore[arg-type]
    assert first == 'status="running"'
    assert render._OWN_LABELS == {("m_one", "running"): 'status="running"'}
    assert render._own_labels(one, ("running",)) is first  # type: ignore[arg-type]
    assert render._own_labels(two, ("a", "b")) == 'tag="a",color="b"'  # type: ignore[arg-type]
    assert len(render._OWN_LABELS) == 1
    render._own_labels(one, ("failed",))  # type: ignore[arg-type]
    render._own_labels(one, ("paused",))  # type: ignore[arg-type]
    assert len(render._OWN_LABELS) == 2
    assert ("m_one", "paused") not in render._OWN_LABELS


@pytest.mark.parametrize(("raw", "read"), [
    (5, 5.0), (2.5, 2.5), (0, 0.0), (-3, -3.0), (True, None), ("5", None), (None, None),
    (10**400, None), (float("inf"), None), (float("nan"), None), ([1], None),
])
def test_numbers_are_finite_floats_or_none(raw: object, read: float | None) -> None:
    """fields.number keeps finite numbers as floats and reads anything else as None."""
    if read is None:
        assert number(raw) is None
    else:
        assert number(raw) == read


def test_large_whole_numbers_switch_to_exponent_form_at_1e15() -> None:
    """Whole numbers print without ".0" below 1e15; from 1e15 on, as Python's repr."""
    assert render.format_value(999_999_999_999_999.0) == "999999999999999"
    assert render.format_value(1e15) == repr(1e15) == "1000000000000000.0"
    assert render.format_value(-1e15) == "-1000000000000000.0"


def test_an_unlabelled_sample_has_no_braces() -> None:
    """A family with no labels and no identity prints "name value", not "name{} value"."""
    plain = SimpleNamespace(kind="gauge", name="m_plain", labels=(),
                            samples=lambda obj: [((), 1.0), ((), 0.0), ((), 2.5)])
    assert sample_lines(plain, "", None) == "m_plain 1\nm_plain 0\nm_plain 2.5\n"  # type: ignore[arg-type]
