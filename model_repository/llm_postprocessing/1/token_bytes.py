"""Token ids -> the exact UTF-8 bytes they stand for (byte-level BPE: Qwen, Llama 3, SmolLM2).

Streaming sends a few tokens at a time, and a character may be split across two of them
(emoji, CJK). Decoding each piece to ``str`` would replace the halves with U+FFFD; their
bytes, joined by the client's incremental UTF-8 decoder, give the text that decoding all the
tokens at once gives.
"""

from __future__ import annotations

import json
from pathlib import Path


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte (the inverse map)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_byte_level(decoder: dict | None) -> bool:
    if not decoder:
        return False
    if decoder.get("type") == "ByteLevel":
        return True
    return any(_is_byte_level(d) for d in decoder.get("decoders", []))


class TokenBytes:
    def __init__(self, tokenizer_file: Path) -> None:
        spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
        if spec.get("model", {}).get("type") != "BPE" or not _is_byte_level(spec.get("decoder")):
            raise ValueError(
                "llm_postprocessing needs a byte-level BPE tokenizer (Qwen, Llama 3, SmolLM2); "
                f"{tokenizer_file.name} is not one"
            )
        alphabet = _byte_level_alphabet()
        self.pieces: dict[int, bytes] = {
            int(i): bytes(alphabet[c] for c in token) for token, i in spec["model"]["vocab"].items()
        }
        self.special: set[int] = set()
        for added in spec.get("added_tokens", []):
            if added.get("special"):
                self.special.add(int(added["id"]))
            else:  # added tokens are literal text, not byte-level pieces
                self.pieces[int(added["id"])] = added["content"].encode()

    def __call__(self, ids: list[int]) -> bytes:
        """Special tokens (end of turn, padding) carry no text and are dropped."""
        return b"".join(self.pieces.get(i, b"") for i in ids if i >= 0 and i not in self.special)
