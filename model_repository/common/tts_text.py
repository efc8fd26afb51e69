"""Text normalisation for speech synthesis: written text -> words a voice can say.

Shared by every TTS frontend (Piper and FastPitch). Numbers, currency, dates, times,
ordinals, abbreviations, URLs and e-mail addresses become words; control characters,
emoji and other symbols go. What is left is plain text the phonemizer or character
tokenizer reads. Pure Python (num2words) so it is unit-tested without a server.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August")
MONTHS += ("September", "October", "November", "December")

ABBREVIATIONS = {
    "dr": "doctor",
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "prof": "professor",
    "jr": "junior",
    "sr": "senior",
    "vs": "versus",
    "etc": "et cetera",
    "approx": "approximately",
    "no": "number",
    "dept": "department",
    "min": "minutes",
}
UNITS = {
    "km": ("kilometre", "kilometres"),
    "kg": ("kilogram", "kilograms"),
    "cm": ("centimetre", "centimetres"),
    "mm": ("millimetre", "millimetres"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometre per hour", "kilometres per hour"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
}
_LATIN = {"e.g.": "for example", "i.e.": "that is", "a.m.": "a m", "p.m.": "p m"}

CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
}
SYMBOLS = {"&": " and ", "%": " percent", "+": " plus ", "=": " equals ", "@": " at "}

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_MONTH_DATE = re.compile(
    r"\b(" + "|".join(MONTHS) + r")\s+(\d{1,2})(?:st|nd|rd|th)?(?:,\s*(\d{4}))?\b"
)
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\s*(am|pm|a\.m\.|p\.m\.)?", re.IGNORECASE)
_MONEY = re.compile(r"([$€£¥])\s?(\d[\d,]*)(?:\.(\d{1,2}))?(\s?(?:million|billion|thousand))?")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b(?!\.\d|,\d)")
_DECIMAL = re.compile(r"(?<![\w.])(\d[\d,]*)\.(\d+)\b")
_NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*)\b")
_UNIT = re.compile(
    r"(\d[\d,]*(?:\.\d+)?)\s?("
    + "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
    + r")(?![\w/])"
)
_ABBREV = re.compile(r"\b(" + "|".join(ABBREVIATIONS) + r")\.(?=\s|$)", re.IGNORECASE)
_SAINT = re.compile(r"\bSt\.(?=\s+[A-Z])")  # St. Louis
_STREET = re.compile(r"(?<=[A-Za-z] )St\.?(?=\W|$)")  # Baker St.


# Longer digit strings (card and phone numbers, IDs, a pasted hash) are read digit by
# digit, as people read them; num2words would make a sentence of every one.
MAX_NUMBER_DIGITS = 15
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _int_words(digits: str) -> str:
    plain = digits.replace(",", "")
    if len(plain) > MAX_NUMBER_DIGITS:
        return " ".join(DIGITS[int(d)] for d in plain)
    return num2words(int(plain))


def _url(match: re.Match[str]) -> str:
    url = re.sub(r"^(?:https?://)?(?:www\.)?", "", match.group(0), flags=re.IGNORECASE)
    host = url.split("/", 1)[0].rstrip(".,;:!?")
    return " " + " dot ".join(part for part in host.split(".") if part) + " "


def _email(match: re.Match[str]) -> str:
    user = match.group(1).replace(".", " dot ")
    return f" {user} at " + " dot ".join(match.group(2).split(".")) + " "


def _day(day: int) -> str:
    return num2words(day, to="ordinal")


def _iso_date(match: re.Match[str]) -> str:
    year, month, day = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0).replace("-", " ")
    return f"{MONTHS[month - 1]} {_day(day)}, {num2words(year, to='year')}"


def _month_date(match: re.Match[str]) -> str:
    month, day, year = match.groups()
    words = f"{month} {_day(int(day))}"
    return words + (f", {num2words(int(year), to='year')}" if year else "")


def _time(match: re.Match[str]) -> str:
    hour, minute, suffix = int(match.group(1)), int(match.group(2)), match.group(3)
    if hour > 23 or minute > 59:
        return match.group(0).replace(":", " ")
    words = num2words(hour)
    if minute == 0:
        words += "" if suffix else " o'clock"
    elif minute < 10:
        words += f" oh {num2words(minute)}"
    else:
        words += f" {num2words(minute)}"
    if suffix:
        words += " a m" if suffix.lower().startswith("a") else " p m"
    return words


def _money(match: re.Match[str]) -> str:
    symbol, whole, fraction, scale = match.groups()
    one, many, sub_one, sub_many = CURRENCIES[symbol]
    amount = int(whole.replace(",", ""))
    if scale:
        return f"{num2words(amount)}{scale} {many}"
    words = f"{num2words(amount)} {one if amount == 1 else many}"
    if fraction and sub_one:
        cents = int(fraction.ljust(2, "0"))
        if cents:
            words += f" and {num2words(cents)} {sub_one if cents == 1 else sub_many}"
    return words


def _unit(match: re.Match[str]) -> str:
    number, unit = match.groups()
    one, many = UNITS[unit]
    return f"{number} {one if number == '1' else many}"


def _decimal(match: re.Match[str]) -> str:
    return f"{_int_words(match.group(1))} point " + " ".join(DIGITS[int(d)] for d in match.group(2))


def _abbreviation(match: re.Match[str]) -> str:
    word = ABBREVIATIONS[match.group(1).lower()]
    return word.capitalize() if match.group(1)[0].isupper() else word


def _clean_characters(text: str) -> str:
    """NFKC; control and format characters become spaces; emoji and symbols go."""
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        category = unicodedata.category(ch)
        if ch in SYMBOLS or ch in CURRENCIES or ch == "°":
            out.append(ch)
        elif category[0] == "C" or category in ("Zl", "Zp", "So", "Sk", "Sm"):
            out.append(" ")  # control, format, private use; emoji and other symbols
        else:
            out.append(ch)
    return "".join(out)


def normalise(text: str) -> str:
    """Written text -> speakable words (may be empty: nothing in it could be said)."""
    text = _clean_characters(text)
    text = _URL.sub(_url, text)
    text = _EMAIL.sub(_email, text)
    for short, long in _LATIN.items():
        text = re.sub(re.escape(short), long, text, flags=re.IGNORECASE)
    text = _SAINT.sub("Saint", text)
    text = _STREET.sub("Street", text)
    text = _ABBREV.sub(_abbreviation, text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _MONTH_DATE.sub(_month_date, text)
    text = _TIME.sub(_time, text)
    text = _MONEY.sub(_money, text)
    text = _UNIT.sub(_unit, text)
    text = _ORDINAL.sub(lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = _YEAR.sub(lambda m: num2words(int(m.group(1)), to="year"), text)
    text = _DECIMAL.sub(_decimal, text)
    text = _NUMBER.sub(lambda m: _int_words(m.group(1)), text)
    for symbol, word in SYMBOLS.items():
        text = text.replace(symbol, word)
    text = text.replace("°", " ")
    return re.sub(r"\s+", " ", text).strip()


PACE_RANGE = (0.5, 2.0)


class TextTooLong(ValueError):
    """More characters than the model accepts in one request."""


def check_request(text: str, pace: float, *, max_chars: int) -> None:
    """The checks every TTS frontend makes: text length and PACE (1.0 normal, 2.0 twice as fast)."""
    if len(text) > max_chars:
        raise TextTooLong(f"text has {len(text)} characters; the limit is {max_chars}")
    if not PACE_RANGE[0] <= pace <= PACE_RANGE[1]:
        raise ValueError(f"PACE must be in {list(PACE_RANGE)}, got {pace}")


# Speech runs at about 15 characters of normalised text a second (Piper and FastPitch
# voices at PACE 1 measure 13-17): enough to cap work before any of it is done.
SPOKEN_CHARS_PER_SECOND = 15.0
# A voice model's work and memory grow with a sentence's length; one longer than this
# (about a minute of speech without a pause) is refused rather than synthesised.
MAX_SENTENCE_PHONEMES = 1000


def spoken_seconds(words: str, pace: float = 1.0) -> float:
    """About how long normalised ``words`` take to say."""
    return len(words) / SPOKEN_CHARS_PER_SECOND / pace


def check_spoken(words: str, *, max_chars: int) -> None:
    """Cap the work of one request by its normalised length (numbers grow when spelled)."""
    if len(words) > max_chars:
        raise TextTooLong(
            f"the text is {len(words)} characters when spoken out; the limit is {max_chars}"
        )


def check_sentence(n_phonemes: int) -> None:
    if n_phonemes > MAX_SENTENCE_PHONEMES:
        raise TextTooLong(
            f"a sentence is {n_phonemes} phonemes long; the limit is {MAX_SENTENCE_PHONEMES} "
            "(split it with punctuation)"
        )


def is_speakable(text: str) -> bool:
    """True when the normalised text has at least one letter."""
    return any(ch.isalpha() for ch in text)
