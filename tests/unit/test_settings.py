import pytest
from pydantic import ValidationError

from orchestrator.config import Settings


def test_defaults_bind_to_loopback():
    s = Settings()
    assert s.host == "127.0.0.1"
    assert s.triton_host == "127.0.0.1"
    assert s.triton_grpc_url == "127.0.0.1:8001"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/june")
    monkeypatch.setenv("JUNE_PORT", "9999")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    s = Settings()
    assert s.database_url == "postgresql://u:p@db/june"
    assert s.port == 9999
    assert s.telegram_bot_token is not None
    assert "123:abc" not in repr(s)  # secrets never print


def test_invalid_values_are_rejected(monkeypatch):
    monkeypatch.setenv("JUNE_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("JUNE_PORT")
    with pytest.raises(ValidationError, match="chunk_overlap_words"):
        Settings(chunk_max_words=10, chunk_overlap_words=10)


def test_tts_checkpoints_come_in_pairs(tmp_path):
    assert Settings(_env_file=None).tts_model == "tts_piper"
    both = Settings(
        _env_file=None, tts_acoustic=tmp_path / "a.nemo", tts_vocoder=tmp_path / "v.nemo"
    )
    assert both.tts_model == "tts"
    with pytest.raises(ValueError, match="set both tts_acoustic"):
        Settings(_env_file=None, tts_acoustic=tmp_path / "a.nemo")
