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


def test_the_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.setenv("LOCKSTEP_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="log_level"):
        Settings()


def test_schema_export_refuses_settings_where_the_namespace_goes(tmp_path: Path) -> None:
    # The old signature took the settings; passed now, they would be written into the
    # AsyncAPI document as text, database password and all.
    from events.schema import asyncapi, export

    settings = Settings(pg_dsn="postgresql://u:secret@db/x")
    with pytest.raises(TypeError, match=r"settings\.namespace"):
        export(tmp_path, settings)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        asyncapi(settings)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert "secret" not in str(asyncapi(settings.namespace))


def test_spans_go_to_the_users_state_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCKSTEP_TRACE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Settings().trace_dir == tmp_path / "state" / "lockstep" / "traces"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().trace_dir == tmp_path / "home" / ".local" / "state" / "lockstep" / "traces"
