"""Settings that decide where files are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from shared.telemetry import read_spans, tracer, tracer_provider


def test_an_empty_trace_dir_keeps_no_span_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCKSTEP_TRACE_DIR", "")
    settings = Settings()
    assert settings.trace_dir is None
    provider = tracer_provider(settings, "artifacts")
    with tracer(provider).start_as_current_span("a span"):
        pass
    provider.shutdown()
    assert list(tmp_path.iterdir()) == []  # nothing written where the process stood
    assert list(read_spans(settings.trace_dir)) == []


def test_a_named_trace_dir_keeps_spans_there(tmp_path: Path) -> None:
    settings = Settings(trace_dir=tmp_path / "traces")
    provider = tracer_provider(settings, "artifacts")
    with tracer(provider).start_as_current_span("a span"):
        pass
    provider.shutdown()
    assert [s["name"] for s in read_spans(settings.trace_dir)] == ["a span"]
