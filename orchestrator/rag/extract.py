"""The text of an uploaded document (.txt, .md, .pdf), never on the serving event loop.

PDFs are parsed by pypdf in a separate worker process with a page limit, a memory limit
and a time limit: a crafted PDF (a decompression bomb, a page tree loop, a huge content
stream) costs one worker, which is killed, and never stalls the API or the bot.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import resource
from multiprocessing.connection import Connection

DOCUMENT_TYPES = {".txt", ".md", ".pdf"}
PDF_MEMORY_BYTES = 1024 * 1024 * 1024  # the worker's address-space cap


class DocumentError(ValueError):
    """The document cannot be read; the message is fit to show the user."""


def document_type(name: str) -> str:
    """The file's suffix if June reads that type; DocumentError with the reason otherwise."""
    suffix = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    if suffix not in DOCUMENT_TYPES:
        raise DocumentError("I can read .txt, .md and .pdf files only.")
    return suffix


def _pdf_worker(data: bytes, max_pages: int, out: Connection) -> None:  # pragma: no cover
    """Runs in the child process: the PDF's text, or an error line, sent back on ``out``."""
    resource.setrlimit(resource.RLIMIT_AS, (PDF_MEMORY_BYTES, PDF_MEMORY_BYTES))
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        if len(reader.pages) > max_pages:
            out.send(("error", f"That PDF has more than {max_pages} pages; send a shorter one."))
            return
        out.send(("text", "\n".join(page.extract_text() or "" for page in reader.pages)))
    except MemoryError:
        out.send(("error", "That PDF is too large to read."))
    except Exception:
        out.send(("error", "I couldn't read that PDF."))


def pdf_text(data: bytes, *, max_pages: int, timeout_s: float) -> str:
    """The PDF's text from a worker process; DocumentError if it fails or runs too long."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_pdf_worker, args=(data, max_pages, sender), daemon=True)
    worker.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise DocumentError("That PDF took too long to read.")
        kind, value = receiver.recv()
    except EOFError as exc:  # the worker died (memory limit, a crash in a C extension)
        raise DocumentError("I couldn't read that PDF.") from exc
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join(5)
        receiver.close()
    if kind == "error":
        raise DocumentError(value)
    return value


def document_text(name: str, data: bytes, *, max_pages: int = 200, timeout_s: float = 20.0) -> str:
    """The text of an uploaded .txt/.md/.pdf (blocking: call it through asyncio.to_thread)."""
    if document_type(name) == ".pdf":
        text = pdf_text(data, max_pages=max_pages, timeout_s=timeout_s)
    else:
        text = data.decode("utf-8", errors="replace")
    text = text.replace("\x00", "")
    if not text.strip():
        raise DocumentError("That file has no text I could read.")
    return text


async def read_document(
    name: str, data: bytes, *, max_pages: int = 200, timeout_s: float = 20.0
) -> str:
    return await asyncio.to_thread(
        document_text, name, data, max_pages=max_pages, timeout_s=timeout_s
    )
