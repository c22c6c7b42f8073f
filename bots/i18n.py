"""Replies in the user's language: standard gettext catalogs (`bots/locale/<lang>/LC_MESSAGES/digits.po`).

Why .po files read with Babel: a translator edits a .po file (any PO editor, Weblate, Crowdin),
not Python, and no compile step can be forgotten: the catalogs are read and compiled in memory on
first use. Messages are marked in the code with `N_("...")` (Babel's extractor finds them);
placeholders are `{name}` (str.format), and a test checks every catalog has every message with the
same placeholders. English is the source language and the fallback for any other language code.

    tr = translator(update.effective_user.language_code)   # "pt-BR", "uk", "en-US", None...
    tr(NO_DIGIT_TEXT)
"""

from __future__ import annotations

import functools
import gettext
import io
from collections.abc import Callable
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "digits"
LANGUAGES = ("en", "es", "pt", "ru", "de", "fr", "hi", "uk")

Translate = Callable[[str], str]


def N_(message: str) -> str:  # noqa: N802 - the conventional gettext marker name
    """Mark a message for extraction; it is translated where it is used, in the user's language."""
    return message


def language(code: str | None) -> str:
    """"pt-BR" -> "pt", "en_US" -> "en", "uk" -> "uk"; anything we do not speak -> "en"."""
    base = (code or "").replace("_", "-").split("-")[0].lower()
    return base if base in LANGUAGES else "en"


def catalog_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def _translations(lang: str) -> gettext.NullTranslations:
    path = catalog_path(lang)
    if lang == "en" or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def translator(code: str | None) -> Translate:
    """`tr(message)` for the user's language code (Telegram's language_code, Discord's locale)."""
    return _translations(language(code)).gettext


def english(message: str) -> str:
    return message
