"""The bots' gettext catalogs: every message marked in the code is in every language, with the same
placeholders, and the template (bots/locale/digits.pot) is up to date."""

from __future__ import annotations

import re
import string

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bots.i18n import LANGUAGES, LOCALE_DIR, catalog_path, language, translator
from bots.replies import DIGIT_TEXT, HELP_TEXT

BOTS_DIR = LOCALE_DIR.parent


def marked_messages() -> set[str]:
    """What Babel's extractor finds in bots/*.py (the N_ marker), as `pybabel extract -k N_` would."""
    found = extract_from_dir(str(BOTS_DIR), method_map=[("**.py", "python")], keywords={"N_": None},
                             comment_tags=(), strip_comment_tags=True)
    return {message for _, _, message, _, _ in found}


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def catalog(lang: str) -> dict[str, str]:
    with catalog_path(lang).open("rb") as fh:
        return {m.id: m.string for m in read_po(fh) if m.id}


def test_the_template_lists_every_marked_message():
    with (LOCALE_DIR / "digits.pot").open("rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    marked = marked_messages()
    assert len(marked) > 30 and HELP_TEXT in marked
    assert template == marked, "run: pybabel extract --no-default-keywords -k N_ --no-location --omit-header " \
                               "--sort-output -o bots/locale/digits.pot bots/"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_is_translated_with_the_same_placeholders(lang):
    messages = catalog(lang)
    marked = marked_messages()
    assert set(messages) == marked, f"{lang}: missing {marked - set(messages)}, stale {set(messages) - marked}"
    for msgid, msgstr in messages.items():
        if lang == "en":
            assert msgstr == "", "English is the source: its catalog only lists the messages"
            continue
        assert msgstr.strip(), f"{lang}: {msgid!r} is not translated"
        assert placeholders(msgstr) == placeholders(msgid), f"{lang}: {msgid!r} -> {msgstr!r}"
        assert msgstr.count("\n") == msgid.count("\n"), f"{lang}: line breaks differ in {msgid!r}"


def test_language_codes_and_the_english_fallback():
    assert [language(c) for c in ("pt-BR", "en_US", "uk", "ES", "zh-CN", None, "")] == [
        "pt", "en", "uk", "es", "en", "en", "en"]
    assert translator("zh-TW")(HELP_TEXT) == HELP_TEXT
    assert translator(None)(DIGIT_TEXT) == DIGIT_TEXT
    spanish = translator("es-419")(DIGIT_TEXT)
    assert spanish != DIGIT_TEXT and re.search(r"\{digit\}", spanish)
    assert translator("de")(DIGIT_TEXT).format(digit=7, confidence="91%") == "Es ist eine 7 (91% sicher)."
