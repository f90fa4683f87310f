"""Readers of the l10n builder: each yields ``(en, de, fr, es)`` tuples and counts what it could
not join in a Counter.

- ``gettext``: the ``.mo`` catalogs of packages, keyed on the identical English msgid (and
  msgctxt) of the same catalog in the three languages;
- ``ddtp``: translated package descriptions (``Translation-XX``), joined on ``Description-md5``
  and zipped paragraph by paragraph;
- ``debref``: the Debian Reference's HTML pages, aligned block by block within each section
  whose block structure is identical in the four languages.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import polib

from textdistill.data.build_l10n_apt import LANGS, Deb, deb_members, translation_language

Texts = tuple[str, str, str, str]
TARGETS = LANGS[1:]

MO_PATH = re.compile(r"^(?P<head>.*/)(?P<lang>de|fr|es)(?P<tail>/LC_MESSAGES/[^/]+\.mo)$")


def catalog_texts(debs: Iterable[Deb], stats: Counter) -> Iterator[Texts]:
    """Rows of the gettext catalogs of ``debs``.

    A catalog is its path with the language left out (``usr/share/locale/{lang}/LC_MESSAGES/
    gimp20.mo``), so the three languages may come from different packages (libreoffice-l10n-de,
    -fr, -es). Header, plural and untranslated entries are skipped; the first package that
    translates a message wins.
    """
    catalogs: dict[str, dict[str, dict[tuple[str, str], str]]] = {}
    for deb in debs:
        for path, data in deb_members(deb, MO_PATH):
            match = MO_PATH.match(path)
            assert match is not None
            try:
                entries = polib.mofile(data)
            except (OSError, ValueError, UnicodeDecodeError, struct.error):
                stats["unreadable_catalogs"] += 1
                continue
            stats["catalogs"] += 1
            table = catalogs.setdefault(match["head"] + "{lang}" + match["tail"], {})
            messages = table.setdefault(match["lang"], {})
            for entry in entries:
                if not entry.msgid:
                    continue
                if entry.msgid_plural:
                    stats["plural_entries"] += 1
                elif entry.msgstr:
                    messages.setdefault((entry.msgctxt or "", entry.msgid), entry.msgstr)
    for table in catalogs.values():
        first, *others = (table.get(lang, {}) for lang in TARGETS)
        for key, text in first.items():
            if all(key in other for other in others):
                yield (key[1], text, *(other[key] for other in others))
            else:
                stats["missing_a_language"] += 1


def _open_text(path: Path):
    opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", errors="replace")


def read_descriptions(path: Path) -> Iterator[tuple[str, str]]:
    """``(Description-md5, description)`` of each stanza of a ``Translation-XX`` file."""
    md5, lines = None, []
    with _open_text(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if md5 and lines:
                    yield md5, "\n".join(lines)
                md5, lines = None, []
            elif line.startswith("Description-md5:"):
                md5 = line.partition(":")[2].strip()
            elif line.startswith("Description-"):
                lines = [line.partition(":")[2].strip()]
            elif line[0] in " \t" and lines:
                lines.append(line)
    if md5 and lines:
        yield md5, "\n".join(lines)


def description_paragraphs(description: str) -> list[str]:
    """The synopsis, then each paragraph of the long description (separated by `` .`` lines)."""
    synopsis, *body = description.split("\n")
    paragraphs, current = [synopsis], []
    for line in body:
        if line.strip() == ".":
            paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line)
    paragraphs.append(" ".join(current))
    return [" ".join(p.split()) for p in paragraphs if p.strip()]


def description_texts(files: Iterable[Path], stats: Counter) -> Iterator[Texts]:
    """Rows of translated package descriptions: the descriptions of one ``Description-md5`` in
    the four languages, zipped paragraph by paragraph when their paragraph counts agree."""
    by_lang: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    for path in files:
        table = by_lang[translation_language(path)]
        for md5, text in read_descriptions(path):
            table.setdefault(md5, text)
    for md5, english in by_lang["en"].items():
        if not all(md5 in by_lang[lang] for lang in TARGETS):
            continue
        stats["descriptions"] += 1
        paragraphs = [description_paragraphs(english),
                      *(description_paragraphs(by_lang[lang][md5]) for lang in TARGETS)]
        if len({len(p) for p in paragraphs}) > 1:
            stats["paragraph_count_differs"] += 1
            continue
        yield from zip(*paragraphs, strict=True)


class _Blocks(HTMLParser):
    """Text blocks of an XHTML page, grouped by the last ``id`` seen before them (DocBook puts
    one on every section); navigation, tables of contents and ``<pre>`` are left out."""

    BLOCK = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "dt", "caption"})
    VOID = frozenset({"br", "img", "hr", "meta", "link", "col", "input", "area", "base", "wbr"})
    SKIP = frozenset({"pre", "head", "script", "style"})
    SKIP_CLASSES = frozenset({"toc", "navheader", "navfooter", "list-of-tables"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, bool]] = []  # (tag, skipped) of the open elements
        self.blocks: list[tuple[str, list[str]]] = []  # the open text blocks
        self.groups: dict[str, list[tuple[str, str]]] = {"": []}
        self.current = ""

    def _skipping(self) -> bool:
        return any(skipped for _, skipped in self.open)

    def _anchor(self, attrs: list[tuple[str, str | None]]) -> None:
        anchor = dict(attrs).get("id")
        if anchor and not self._skipping():
            self.current = anchor
            self.groups.setdefault(anchor, [])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._anchor(attrs)
        if tag in self.VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        self.open.append((tag, tag in self.SKIP or bool(classes & self.SKIP_CLASSES)))
        if tag in self.BLOCK and not self._skipping():
            self.blocks.append((tag, []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._anchor(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or tag not in {t for t, _ in self.open}:
            return
        skipped = self._skipping()
        while self.open.pop()[0] != tag:
            pass
        if tag in self.BLOCK and not skipped and self.blocks:
            name, parts = self.blocks.pop()
            self.groups[self.current].append((name, " ".join("".join(parts).split())))

    def handle_data(self, data: str) -> None:
        if self.blocks and not self._skipping():
            self.blocks[-1][1].append(data)


def page_blocks(html: str) -> dict[str, list[tuple[str, str]]]:
    """``{section id: [(tag, text), ...]}`` of an XHTML page."""
    parser = _Blocks()
    parser.feed(html)
    parser.close()
    return parser.groups


DEBREF_PAGE = re.compile(r"^usr/share/debian-reference/(?P<page>[^/]+)\.(?P<lang>en|de|fr|es)"
                         r"\.html$")
DEBREF_PACKAGES = tuple(f"debian-reference-{lang}" for lang in LANGS)


def manual_texts(pages: dict[str, dict[str, str]], stats: Counter) -> Iterator[Texts]:
    """Rows of a manual given as ``{page: {lang: html}}``: in each section whose sequence of
    block tags is identical in the four languages, block by block. Blocks left untranslated
    (a target identical to the English) are skipped."""
    for page in sorted(pages):
        if set(pages[page]) != set(LANGS):
            stats["pages_missing_a_language"] += 1
            continue
        groups = {lang: page_blocks(pages[page][lang]) for lang in LANGS}
        for section, english in groups["en"].items():
            if not english:
                continue
            others = [groups[lang].get(section) for lang in TARGETS]
            tags = [tag for tag, _ in english]
            if any(o is None or [tag for tag, _ in o] != tags for o in others):
                stats["sections_differ"] += 1
                continue
            stats["sections_aligned"] += 1
            for blocks in zip(english, *others, strict=True):
                texts = tuple(text for _, text in blocks)
                if not all(texts):
                    continue
                if any(text == texts[0] for text in texts[1:]):
                    stats["untranslated_blocks"] += 1
                    continue
                yield texts


def debref_texts(debs: Iterable[Deb], stats: Counter) -> Iterator[Texts]:
    """Rows of the Debian Reference (packages ``debian-reference-{en,de,fr,es}``)."""
    pages: dict[str, dict[str, str]] = {}
    for deb in debs:
        for path, data in deb_members(deb, DEBREF_PAGE):
            match = DEBREF_PAGE.match(path)
            assert match is not None
            pages.setdefault(match["page"], {})[match["lang"]] = data.decode("utf-8", "replace")
    yield from manual_texts(pages, stats)
