"""``textdistill data build l10n``: rebuild the l10n parallel corpus (English → de, fr, es) from
Debian packages, as ``../shared/data/README.md`` describes it.

Sources: ``gettext`` (the ``.mo`` catalogs of a package list), ``ddtp`` (translated package
descriptions) and ``debref`` (the Debian Reference). The shipped corpus also holds the GIMP
manual, the Debian Administrator's Handbook and the GNOME user docs; those are not built here.
Rows are normalised and filtered, split by a seeded shuffle, and written with a manifest.
"""

from __future__ import annotations

import datetime
import gzip
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from textdistill import __version__
from textdistill.data.build_l10n_apt import (
    LANGS,
    OFFLINE_HINT,
    Apt,
    Deb,
    local_debs,
    require_tools,
    sha256_file,
    translation_files,
    translation_language,
)
from textdistill.data.build_l10n_read import (
    DEBREF_PACKAGES,
    Texts,
    catalog_texts,
    debref_texts,
    description_texts,
)
from textdistill.data.corpora import L10N_FILES
from textdistill.errors import UserError
from textdistill.paths import atomic_write_bytes, atomic_write_json

SOURCES = ("gettext", "ddtp", "debref")
MANIFEST = "parallel/l10n.manifest.json"
DEFAULT_SEED = 13
MIN_WORDS = 4
RATIO = (0.5, 2.2)
FILTERS = ("short", "placeholder_or_markup", "length_ratio", "duplicate")
"""The filters, in the order they are tried (a dropped row counts for the first that fails)."""

DEFAULT_PACKAGES = (
    # games
    "wesnoth-1.16-data", "freeciv-data", "widelands-data", "minetest-data", "aisleriot",
    # graphics
    "gimp-data", "inkscape", "darktable", "digikam-data", "hugin-data", "shotwell-common",
    # office
    "gnucash-common", "gramps", "gnumeric-common", "evolution-common",
    "evolution-data-server-common", "libreoffice-l10n-de", "libreoffice-l10n-fr",
    "libreoffice-l10n-es",
    # development
    "gcc-12-locales", "binutils-common", "git", "postgresql-15", "postgresql-client-15",
    "poedit-common", "meld",
    # system
    "libc-l10n", "coreutils", "bash", "tar", "sed", "grep", "findutils", "diffutils", "wget",
    "apt", "dpkg", "util-linux-locales", "e2fsprogs-l10n", "gnupg-l10n", "mc-data",
    "vim-runtime", "appstream",
    # desktop
    "libglib2.0-data", "libgtk-3-common", "gnome-control-center-data", "nautilus-data",
    "gedit-common", "gnome-shell-common", "gnome-software-common", "evince-common",
    # media and network
    "vlc-l10n", "audacity-data", "kdenlive-data", "rhythmbox-data", "libgphoto2-l10n",
    "filezilla-common", "pidgin-data", "hexchat-common",
)
"""Debian 12 (bookworm) packages that ship de, fr and es gettext catalogs (740 MB of .deb)."""

Row = tuple[str, str, str, str, str]
"""en, de, fr, es, source."""

_MARK = re.compile(r"(?<![_&~])(?:[_~]|&(?!#?\w+;))(?=[^\W_])")
_WORD = re.compile(r"[\w&~]+")
_PLACEHOLDER_OR_MARKUP = re.compile(
    r"%(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?[A-Za-z]"  # printf (and GCC's %qD)
    r"|%\([^)\s]+\)|%\d|%%|%[<>]"  # Python named, Qt numbered, literal %, GCC quotes
    r"|\$\{[^}]*\}|\$\(|\$\w"  # shell variables and substitutions
    r"|\{\d*\}|\{\w+(?:[:!][^{}]*)?\}"  # brace formats
    r"|</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>"  # tags
    r"|&(?:[A-Za-z]\w*|#\d+|#x[0-9A-Fa-f]+);"  # entities
)


def strip_accelerators(texts: Texts) -> Texts:
    """Drop the keyboard-accelerator mark (``_`` of GTK, ``&`` of Qt, ``~`` of LibreOffice,
    before a letter or digit) of each text that has exactly one, unless the word holding it
    occurs in all four texts (then it is an identifier such as ``abi_tag`` or a name such as
    ``AT&T``)."""
    out = []
    for text in texts:
        marks = list(_MARK.finditer(text))
        if len(marks) == 1:
            at = marks[0].start()
            word = next(w[0] for w in _WORD.finditer(text) if w.start() <= at < w.end())
            if not all(word in other for other in texts):
                text = text[:at] + text[at + 1:]
        out.append(text)
    return tuple(out)


def rejection(texts: Texts, seen: set[str]) -> str | None:
    """The first filter of ``FILTERS`` that drops a normalised row, or None to keep it."""
    english, *targets = texts
    if len(english.split()) < MIN_WORDS:
        return "short"
    if any(_PLACEHOLDER_OR_MARKUP.search(text) for text in texts):
        return "placeholder_or_markup"
    if any(not RATIO[0] <= len(t) / len(english) <= RATIO[1] for t in targets):
        return "length_ratio"
    if english in seen:
        return "duplicate"
    return None


def empty_counts() -> dict:
    """The tallies of ``filter_rows``: per source, candidates, rows whose accelerator marks were
    removed, kept rows, and for each filter the rows it dropped."""
    counts: dict = {key: Counter() for key in ("candidates", "accelerators_removed", "rows")}
    counts["dropped"] = {name: Counter() for name in FILTERS}
    return counts


def filter_rows(source: str, texts: Iterable[Texts], seen: set[str], counts: dict) -> Iterator[Row]:
    """Normalise (whitespace, accelerator marks) and filter the rows of one source, counting
    candidates, changed rows and drops per filter in ``counts``."""
    for raw in texts:
        counts["candidates"][source] += 1
        spaced = tuple(" ".join(t.split()) for t in raw)
        clean = strip_accelerators(spaced)
        counts["accelerators_removed"][source] += clean != spaced
        reason = rejection(clean, seen)
        if reason:
            counts["dropped"][reason][source] += 1
            continue
        seen.add(clean[0])
        counts["rows"][source] += 1
        yield (*clean, source)


def split_rows(rows: list[Row], seed: int, dev: int, test: int) -> dict[str, list[Row]]:
    """A seeded shuffle: the first ``dev`` rows, the next ``test`` rows, the rest for train."""
    if len(rows) <= dev + test:
        raise UserError(
            f"only {len(rows)} rows passed the filters, too few for {dev} dev and {test} test "
            "rows plus a training split: lower --dev/--test or add packages or sources"
        )
    order = list(rows)
    random.Random(seed).shuffle(order)
    return {"train": order[dev + test:], "dev": order[:dev], "test": order[dev:dev + test]}


def tsv(rows: Iterable[Row]) -> str:
    return "".join("\t".join(row) + "\n" for row in [("en", *LANGS[1:], "source"), *rows])


def parse_sources(text: str) -> list[str]:
    """``gettext,ddtp`` → ``["gettext", "ddtp"]``, checked."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in SOURCES:
            raise UserError(f"unknown source kind '{name}'; use some of {', '.join(SOURCES)}")
    if not names:
        raise UserError(f"no source kind given; use some of {', '.join(SOURCES)}")
    return list(dict.fromkeys(names))


def read_package_list(path: Path) -> list[str]:
    """Package names, one a line; blank lines and ``#`` comments are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the package list {path}: {exc.strerror}") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [name for name in names if name]
    if not names:
        raise UserError(f"the package list {path} names no package")
    return names


def build_l10n(
    out: Path,
    *,
    sources: Iterable[str] = SOURCES,
    packages: Iterable[str] = DEFAULT_PACKAGES,
    work: Path | None = None,
    debs_dir: Path | None = None,
    lists_dir: Path | None = None,
    seed: int = DEFAULT_SEED,
    dev: int = 2000,
    test: int = 2000,
    force: bool = False,
    report: Callable[[str], None] = lambda message: None,
) -> dict:
    """Build the l10n corpus into the data directory ``out``; return the manifest.

    Packages are downloaded with a private APT setup in ``work`` (default ``out/.l10n-work``,
    kept as a cache) unless ``debs_dir`` holds them; ``Translation-XX`` files come from
    ``apt-get update`` there unless ``lists_dir`` holds them.
    """
    sources = parse_sources(",".join(sources))
    packages = list(dict.fromkeys(packages))
    if dev < 1 or test < 1:
        raise UserError("--dev and --test must be at least 1")
    outputs = {split: out / rel for split, rel in L10N_FILES.items()}
    if not force:
        for path in [*outputs.values(), out / MANIFEST]:
            if path.exists():
                raise UserError(f"{path} exists: pass --force to overwrite the corpus")
    work = work or out / ".l10n-work"
    from_debs = bool({"gettext", "debref"} & set(sources))
    needs_apt = (from_debs and debs_dir is None) or ("ddtp" in sources and lists_dir is None)
    apt = Apt(work) if needs_apt else None
    if from_debs:
        require_tools("dpkg-deb", hint=f"reading .deb files needs dpkg-deb ({OFFLINE_HINT})")

    def fetch(names: list[str]) -> list[Deb]:
        return apt.fetch(names) if debs_dir is None else local_debs(debs_dir, names)

    used: list[dict] = []
    translations: list[Path] = []
    seen: set[str] = set()
    counts = empty_counts()
    joins: dict[str, Counter] = {source: Counter() for source in sources}
    rows: list[Row] = []
    for source in sources:
        if source == "ddtp":
            report("ddtp: reading translated package descriptions")
            translations = apt.update() if lists_dir is None else translation_files(lists_dir)
            langs = {translation_language(path) for path in translations}
            for lang in LANGS:
                if lang not in langs:
                    raise UserError(f"no Translation-{lang} file in "
                                    f"{lists_dir or apt.lists}")
            texts = description_texts(translations, joins[source])
        else:
            names = packages if source == "gettext" else list(DEBREF_PACKAGES)
            report(f"{source}: fetching {len(names)} packages")
            debs = fetch(names)
            used += [{**deb.record(), "source": source} for deb in debs]
            texts = (catalog_texts if source == "gettext" else debref_texts)(debs, joins[source])
        rows += filter_rows(source, texts, seen, counts)
        report(f"{source}: {counts['rows'][source]} of {counts['candidates'][source]} rows kept")

    splits = split_rows(rows, seed, dev, test)
    (out / MANIFEST).unlink(missing_ok=True)  # it would vouch for files being replaced
    for split, path in outputs.items():
        data = tsv(splits[split]).encode("utf-8")
        # no name or time in the gzip header, so the same rows give the same bytes
        atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    manifest = {
        "corpus": "l10n",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "textdistill": __version__,
        "settings": {"seed": seed, "dev": dev, "test": test, "sources": sources,
                     "min_english_words": MIN_WORDS, "length_ratio": list(RATIO)},
        "packages": used,
        "translation_files": [{"name": path.name, "sha256": sha256_file(path)}
                              for path in translations],
        "counts": {
            "join": {source: dict(joins[source]) for source in sources},
            **{key: {s: counts[key][s] for s in sources}
               for key in ("candidates", "accelerators_removed")},
            "dropped": {name: {s: counts["dropped"][name][s] for s in sources}
                        for name in FILTERS},
            "rows": {s: counts["rows"][s] for s in sources},
            "splits": {split: len(part) for split, part in splits.items()},
        },
        "files": {rel: {"sha256": sha256_file(out / rel), "rows": len(splits[split])}
                  for split, rel in L10N_FILES.items()},
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
