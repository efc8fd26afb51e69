"""The bot's pure parts: document text, the Telegram user as a June user, settings."""

import io

import pytest

from orchestrator.channel import principal_for
from orchestrator.config import Settings
from orchestrator.rag.extract import document_text


def test_text_and_markdown_documents_decode():
    assert document_text("notes.md", "# Title\nSome text é".encode()) == "# Title\nSome text é"
    assert "\ufffd" in document_text("bad.txt", b"caf\xff")  # bad UTF-8 is replaced, not fatal


def test_pdf_documents_give_their_text():
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(ValueError, match="no text"):
        document_text("blank.pdf", buf.getvalue())  # a page without text
    with pytest.raises(ValueError, match="couldn't read that PDF"):
        document_text("broken.pdf", b"%PDF-1.4 nonsense")


@pytest.mark.parametrize("name", ["x.exe", "photo.jpg", "noextension"])
def test_other_file_types_are_refused(name):
    with pytest.raises(ValueError, match=r"\.txt, \.md and \.pdf"):
        document_text(name, b"data")


def test_telegram_users_are_june_users():
    a, b = principal_for("tg", 1), principal_for("tg", 2)
    assert a.user_id == "tg:1" and not a.is_admin
    assert a.key_id != b.key_id and principal_for("tg", 1).key_id == a.key_id


def test_empty_token_means_no_bot(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "")
    assert Settings(_env_file=None).telegram_bot_token is None


def test_allowlist_from_the_environment(monkeypatch):
    monkeypatch.setenv("JUNE_TELEGRAM_ALLOWED_USERS", "11, 22,33")
    assert Settings(_env_file=None).telegram_allowed_users == [11, 22, 33]
    monkeypatch.setenv("JUNE_TELEGRAM_ALLOWED_USERS", "[44]")
    assert Settings(_env_file=None).telegram_allowed_users == [44]


def test_webhook_mode_refuses_to_start_without_a_secret():
    with pytest.raises(ValueError, match="telegram_webhook_secret"):
        Settings(_env_file=None, telegram_webhook_url="https://june.example/telegram/webhook")
    Settings(_env_file=None, telegram_webhook_url="https://x/y", telegram_webhook_secret="s")
