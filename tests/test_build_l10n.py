"""``textdistill data build l10n`` on tiny synthetic data, without network.

Catalogs are real ``.mo`` files (polib) packed into real ``.deb`` files (``dpkg-deb -b``; those
tests are skipped where it is missing), descriptions are fake ``Translation-XX`` files, the
manual is a fake Debian Reference. The APT side runs against fake ``apt-get``/``apt-cache``
scripts on the PATH, so its caching and errors are tested too.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import polib
import pytest
from typer.testing import CliRunner

from textdistill.cli import app
from textdistill.data import build_l10n as b
from textdistill.data.build_l10n_apt import Apt, local_debs
from textdistill.data.build_l10n_read import (
    catalog_texts,
    description_paragraphs,
    description_texts,
    manual_texts,
)
from textdistill.data.corpora import read_l10n
from textdistill.errors import UserError
from textdistill.paths import DATA_ENV

LANGS = ("en", "de", "fr", "es")
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is missing")
runner = CliRunner()

# -- synthetic data ----------------------------------------------------------------------------


def mo_bytes(messages: dict, plurals: dict | None = None) -> bytes:
    """A .mo catalog (``POFile.save_as_mofile``): ``{msgid or (msgctxt, msgid): msgstr}``,
    plus plural entries."""
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for key, text in messages.items():
        ctxt, msgid = key if isinstance(key, tuple) else (None, key)
        po.append(polib.POEntry(msgctxt=ctxt, msgid=msgid, msgstr=text))
    for msgid, (plural, forms) in (plurals or {}).items():
        po.append(polib.POEntry(msgid=msgid, msgid_plural=plural, msgstr_plural=forms))
    with tempfile.TemporaryDirectory() as folder:
        po.save_as_mofile(str(Path(folder) / "x.mo"))
        return (Path(folder) / "x.mo").read_bytes()


def make_deb(folder: Path, name: str, files: dict[str, bytes], version: str = "1.0-1") -> Path:
    """A real .deb (gzip-compressed) holding ``files``."""
    stage = folder / f"stage-{name}"
    (stage / "DEBIAN").mkdir(parents=True)
    (stage / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test package\n")
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    deb = folder / f"{name}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(stage), str(deb)],
                   check=True, capture_output=True)
    shutil.rmtree(stage)
    return deb


def locale(lang: str, domain: str) -> str:
    return f"usr/share/locale/{lang}/LC_MESSAGES/{domain}.mo"


# Four sentences translated into all three languages (kept by every filter).
SENTENCES = {
    "Open the selected file in a new window": (
        "Die ausgewählte Datei in einem neuen Fenster öffnen",
        "Ouvrir le fichier sélectionné dans une nouvelle fenêtre",
        "Abrir el archivo seleccionado en una ventana nueva"),
    "Save the current document under another name": (
        "Das aktuelle Dokument unter einem anderen Namen speichern",
        "Enregistrer le document actuel sous un autre nom",
        "Guardar el documento actual con otro nombre"),
    "Print the whole document on the default printer": (
        "Das ganze Dokument auf dem Standarddrucker drucken",
        "Imprimer tout le document sur l'imprimante par défaut",
        "Imprimir todo el documento en la impresora predeterminada"),
    "Close every window of this program now": (
        "Jetzt alle Fenster dieses Programms schließen",
        "Fermer maintenant toutes les fenêtres de ce programme",
        "Cerrar ahora todas las ventanas de este programa"),
}


def catalogs(n: int = 0) -> dict[str, dict]:
    """Per language, the messages of a catalog: SENTENCES plus ``n`` numbered sentences and a
    few entries the join must skip (empty, missing in es, header-only/plural)."""
    out = {}
    for i, lang in enumerate(LANGS[1:]):
        messages = {en: texts[i] for en, texts in SENTENCES.items()}
        for k in range(n):
            messages[f"Number {k} is shown in this window"] = f"{lang} {k} wird in diesem Fenster"
        messages["This entry has no translation at all"] = ""
        if lang != "es":
            messages["Only German and French translate this message"] = f"{lang} nur zwei hier"
        out[lang] = messages
    return out


def gettext_debs(folder: Path, n: int = 0) -> list[str]:
    """Two packages: ``app`` with de, fr, es catalogs; ``office-l10n-XX`` with one language
    each (joined across packages). Returns the package names."""
    cats = catalogs(n)
    plurals = {"%d file": ("%d files", {0: "x", 1: "y"})}
    make_deb(folder, "app", {locale(lang, "app"): mo_bytes(cats[lang], plurals)
                             for lang in LANGS[1:]})
    texts = {"de": "Eine Tabelle in den Text einfügen", "fr": "Insérer un tableau dans le texte",
             "es": "Insertar una tabla en el texto"}
    for lang in LANGS[1:]:
        office = {("menu", "Insert a table into the text"): texts[lang] + " (menu)",
                  "Insert a table into the text": texts[lang]}
        make_deb(folder, f"office-l10n-{lang}",
                 {f"usr/lib/office/resource/{lang}/LC_MESSAGES/sw.mo": mo_bytes(office)})
    return ["app", *(f"office-l10n-{lang}" for lang in LANGS[1:])]


def description(synopsis: str, *paragraphs: str) -> str:
    body = "\n .\n".join("\n".join(f" {line}" for line in p.split("\n")) for p in paragraphs)
    return f"{synopsis}\n{body}" if paragraphs else synopsis


DESCRIPTIONS = {
    # md5: per language (synopsis, paragraphs...)
    "aaa": {"en": ("text editor for the console and the desktop",
                   "This editor opens very large files quickly.\nIt also has syntax colours.",
                   "This package contains the main program."),
            "de": ("Texteditor für die Konsole und den Desktop",
                   "Dieser Editor öffnet sehr große Dateien schnell.\nEr hat auch Syntaxfarben.",
                   "Dieses Paket enthält das Hauptprogramm."),
            "fr": ("éditeur de texte pour la console et le bureau",
                   "Cet éditeur ouvre très vite les gros fichiers.\nIl colore aussi la syntaxe.",
                   "Ce paquet contient le programme principal."),
            "es": ("editor de texto para la consola y el escritorio",
                   "Este editor abre rápidamente archivos muy grandes.\nTambién colorea.",
                   "Este paquete contiene el programa principal.")},
    "bbb": {"en": ("library for reading pictures of many kinds", "One paragraph in English."),
            "de": ("Bibliothek zum Lesen von Bildern vieler Arten", "Ein Absatz.", "Noch einer."),
            "fr": ("bibliothèque pour lire des images de toutes sortes", "Un paragraphe."),
            "es": ("biblioteca para leer imágenes de muchos tipos", "Un párrafo.")},
    "ccc": {"en": ("a description that only German and French translate",),
            "de": ("eine Beschreibung, die nur Deutsch und Französisch übersetzen",),
            "fr": ("une description que seuls l'allemand et le français traduisent",)},
}


def translation_lists(folder: Path) -> Path:
    """Fake ``Translation-XX`` files (es gzipped, as APT may keep it) in an APT lists folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        stanzas = [f"Package: pkg-{md5}\nDescription-md5: {md5}\n"
                   f"Description-{lang}: {description(*texts[lang])}\n"
                   for md5, texts in DESCRIPTIONS.items() if lang in texts]
        name = f"deb.example.org_debian_dists_stable_main_i18n_Translation-{lang}"
        text = "\n".join(stanzas)
        if lang == "es":
            (folder / f"{name}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def page(lang: str, body: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            f"<head><title>T {lang}</title></head><body>"
            f'<div class="navheader"><table><tr><th>Chapter 1 {lang}</th></tr></table></div>'
            f'<div class="toc"><p>Table of Contents {lang}</p></div>{body}'
            '<div class="navfooter"><p>Next page</p></div></body></html>')


MANUAL = {
    "en": ['<h2><a id="s1"/>About the system and this manual</h2>'
           "<p>The system <code>starts</code> in several stages after power on.</p>"
           "<pre>$ sudo reboot now please</pre>"
           "<p>This paragraph stays untranslated in every language here.</p>",
           '<h2><a id="s2"/>A section whose structure differs</h2><p>One paragraph.</p>'],
    "de": ['<h2><a id="s1"/>Über das System und dieses Handbuch</h2>'
           "<p>Das System <code>startet</code> nach dem Einschalten in mehreren Stufen.</p>"
           "<pre>$ sudo reboot now please</pre>"
           "<p>This paragraph stays untranslated in every language here.</p>",
           '<h2><a id="s2"/>Ein Abschnitt mit anderer Struktur</h2><p>Eins.</p><p>Zwei.</p>'],
    "fr": ['<h2><a id="s1"/>À propos du système et de ce manuel</h2>'
           "<p>Le système <code>démarre</code> en plusieurs étapes après la mise sous tension.</p>"
           "<pre>$ sudo reboot now please</pre>"
           "<p>This paragraph stays untranslated in every language here.</p>",
           '<h2><a id="s2"/>Une section de structure différente</h2><p>Un paragraphe.</p>'],
    "es": ['<h2><a id="s1"/>Acerca del sistema y de este manual</h2>'
           "<p>El sistema <code>arranca</code> en varias etapas tras el encendido.</p>"
           "<pre>$ sudo reboot now please</pre>"
           "<p>This paragraph stays untranslated in every language here.</p>",
           '<h2><a id="s2"/>Una sección de estructura distinta</h2><p>Un párrafo.</p>'],
}
MANUAL_ROWS = [
    ("About the system and this manual", "Über das System und dieses Handbuch",
     "À propos du système et de ce manuel", "Acerca del sistema y de este manual"),
    ("The system starts in several stages after power on.",
     "Das System startet nach dem Einschalten in mehreren Stufen.",
     "Le système démarre en plusieurs étapes après la mise sous tension.",
     "El sistema arranca en varias etapas tras el encendido."),
]


def debref_debs(folder: Path) -> None:
    for lang in LANGS:
        make_deb(folder, f"debian-reference-{lang}", {
            f"usr/share/debian-reference/ch01.{lang}.html": page(lang, "".join(MANUAL[lang]))
            .encode(),
            f"usr/share/debian-reference/debian-reference.{lang}.txt.gz": b"not read"})


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    """A folder of synthetic .deb files: gettext packages and the Debian Reference."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is missing")
    folder = tmp_path_factory.mktemp("debs")
    gettext_debs(folder, n=30)
    debref_debs(folder)
    return folder


@pytest.fixture(scope="module")
def lists(tmp_path_factory) -> Path:
    return translation_lists(tmp_path_factory.mktemp("lists"))


PACKAGES = ["app", "office-l10n-de", "office-l10n-fr", "office-l10n-es"]


def build(out: Path, debs: Path, lists: Path, **kwargs) -> dict:
    kwargs = {"packages": PACKAGES, "dev": 5, "test": 5, **kwargs}
    return b.build_l10n(out, debs_dir=debs, lists_dir=lists, **kwargs)


def read_tsv(path: Path) -> list[list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


# -- joining -----------------------------------------------------------------------------------


@needs_dpkg
def test_catalogs_join_on_msgid_across_packages(debs):
    stats = Counter()
    rows = list(catalog_texts(local_debs(debs, PACKAGES), stats))
    by_en = {}
    for row in rows:
        by_en.setdefault(row[0], []).append(row[1:])
    for en, texts in SENTENCES.items():
        assert by_en[en] == [texts]
    # one package per language, and the same msgid under two contexts gives two rows
    assert sorted(by_en["Insert a table into the text"]) == [
        ("Eine Tabelle in den Text einfügen", "Insérer un tableau dans le texte",
         "Insertar una tabla en el texto"),
        ("Eine Tabelle in den Text einfügen (menu)", "Insérer un tableau dans le texte (menu)",
         "Insertar una tabla en el texto (menu)")]
    assert "This entry has no translation at all" not in by_en
    assert "Only German and French translate this message" not in by_en
    assert "%d file" not in by_en and "" not in by_en
    assert stats["catalogs"] == 6
    assert stats["missing_a_language"] == 1
    assert stats["plural_entries"] == 3


def test_descriptions_join_on_md5_and_zip_paragraphs(lists):
    stats = Counter()
    files = sorted(lists.iterdir())
    rows = list(description_texts(files, stats))
    expected = [tuple(" ".join(DESCRIPTIONS["aaa"][lang][i].split()) for lang in LANGS)
                for i in range(3)]
    assert rows == expected
    assert stats == Counter(descriptions=2, paragraph_count_differs=1)


def test_description_paragraphs():
    text = description("short one", "first line\n second line", "  * item\n  * item two")
    assert description_paragraphs(text) == ["short one", "first line second line",
                                            "* item * item two"]


def test_manual_aligns_identical_sections_only():
    stats = Counter()
    pages = {"ch01": {lang: page(lang, "".join(MANUAL[lang])) for lang in LANGS},
             "ch02": {"en": page("en", "<p>English only page here.</p>")}}
    assert list(manual_texts(pages, stats)) == MANUAL_ROWS
    assert stats == Counter(sections_aligned=1, sections_differ=1, untranslated_blocks=1,
                            pages_missing_a_language=1)


# -- filters -----------------------------------------------------------------------------------

GOOD = ("Open the file in a new window", "Datei in einem neuen Fenster öffnen",
        "Ouvrir le fichier dans une nouvelle fenêtre", "Abrir el archivo en una ventana nueva")


def with_english(en: str, target: str | None = None) -> tuple[str, ...]:
    t = target or en
    return (en, t, t, t)


@pytest.mark.parametrize(("texts", "reason"), [
    (GOOD, None),
    (with_english("Open this file now"), None),  # four words
    (with_english("Open this file"), "short"),
    (with_english("Cannot open file %s for reading"), "placeholder_or_markup"),
    (with_english("Cannot open file %1$s for reading"), "placeholder_or_markup"),
    (with_english("Deleted %(count)d files from the folder"), "placeholder_or_markup"),
    (with_english("Copying %1 to the folder %2"), "placeholder_or_markup"),
    (with_english("invalid use of %qD in this place"), "placeholder_or_markup"),
    (with_english("%<_Generic%> association has variable length type"),
     "placeholder_or_markup"),
    (with_english("Done: 100%% of the files"), "placeholder_or_markup"),
    (with_english("Set $HOME to your home folder"), "placeholder_or_markup"),
    (with_english("Run ${EDITOR} on the file now"), "placeholder_or_markup"),
    (with_english("The value of {name} is too large"), "placeholder_or_markup"),
    (with_english("Click <b>here</b> to open it"), "placeholder_or_markup"),
    (with_english("Fish &amp; chips for every one"), "placeholder_or_markup"),
    (with_english("About 50% of all the files", "Etwa 50 % aller Dateien hier"), None),
    (with_english("Use the { and } keys to move", "Die Tasten { und } zum Bewegen"), None),
    (with_english("Go to Edit > Preferences > Fonts", "Gehe zu Bearbeiten > Einstellungen"),
     None),
    (with_english("Open the file in a new window", "Öffnen" * 30), "length_ratio"),
    (with_english("Open the file in a new window", "Öffnen Sie"), "length_ratio"),
])
def test_filters(texts, reason):
    assert b.rejection(texts, set()) == reason


def test_length_ratio_bounds():
    en = "a" * 10 + " b c d"  # 16 characters
    assert b.rejection(with_english(en, "x" * 8), set()) is None  # 0.5
    assert b.rejection(with_english(en, "x" * 7), set()) == "length_ratio"
    assert b.rejection(with_english(en, "x" * 35), set()) is None  # 2.1875
    assert b.rejection(with_english(en, "x" * 36), set()) == "length_ratio"  # 2.25


def test_duplicates_keep_the_first():
    counts = b.empty_counts()
    second = (GOOD[0], "Eine andere Übersetzung hier", "Une autre traduction ici",
              "Otra traducción distinta")
    rows = list(b.filter_rows("gettext", [GOOD, second], set(), counts))
    assert rows == [(*GOOD, "gettext")]
    assert counts["dropped"]["duplicate"]["gettext"] == 1


@pytest.mark.parametrize(("texts", "expected"), [
    (("_Open the file now", "Datei ö_ffnen", "_Ouvrir le fichier", "_Abrir el archivo"),
     ("Open the file now", "Datei öffnen", "Ouvrir le fichier", "Abrir el archivo")),
    (("Save &As another file", "Speichern &unter", "Enregistrer &sous", "Guardar &como"),
     ("Save As another file", "Speichern unter", "Enregistrer sous", "Guardar como")),
    (("Print ~automatically inserted pages", "A~utomatisch drucken", "Imprimer ~auto",
      "Imprimir ~auto"),
     ("Print automatically inserted pages", "Automatisch drucken", "Imprimer auto",
      "Imprimir auto")),
    # identifiers and names that occur in all four texts keep their mark
    (("Set the abi_tag attribute now", "Attribut abi_tag setzen", "Définir abi_tag",
      "Fijar abi_tag"), None),
    (('Convert to "SQL_ASCII" now', "In »SQL_ASCII« umwandeln", "Convertir en « SQL_ASCII »",
      "Convertir a «SQL_ASCII»"), None),
    (("Made by AT&T long ago", "Von AT&T gemacht", "Fait par AT&T", "Hecho por AT&T"), None),
    # two marks, doubled marks, entities, a lone & and ~/ are left alone
    (("Use PANGO_WEIGHT_BOLD here", "PANGO_WEIGHT_BOLD nutzen", "Utiliser PANGO_WEIGHT_BOLD",
      "Usar PANGO_WEIGHT_BOLD"), None),
    (("Call __init__ to start", "__init__ aufrufen", "Appeler __init__", "Llamar __init__"),
     None),
    (("Fish &amp; chips tonight", "Fisch &amp; Pommes", "Poisson &amp; frites",
      "Pescado &amp; patatas"), None),
    (("Tom & Jerry are here", "Tom & Jerry sind da", "Tom & Jerry sont là",
      "Tom & Jerry están aquí"), None),
    (("Edit ~/.bashrc to change it", "~/.bashrc bearbeiten", "Modifier ~/.bashrc",
      "Editar ~/.bashrc"), None),
])
def test_accelerator_marks(texts, expected):
    assert b.strip_accelerators(texts) == (expected or texts)


def test_filter_rows_counts_and_normalises():
    counts = b.empty_counts()
    raw = [("_Open the\tfile in a\nnew window", *GOOD[1:]), with_english("Too short")]
    rows = list(b.filter_rows("ddtp", raw, set(), counts))
    assert rows == [(*GOOD, "ddtp")]
    assert counts["candidates"]["ddtp"] == 2 and counts["rows"]["ddtp"] == 1
    assert counts["accelerators_removed"]["ddtp"] == 1
    assert counts["dropped"]["short"]["ddtp"] == 1


# -- splits ------------------------------------------------------------------------------------


def numbered_rows(n: int) -> list[b.Row]:
    return [(f"sentence number {i} is here", "de", "fr", "es", "gettext") for i in range(n)]


def test_split_sizes_disjoint_and_seeded():
    rows = numbered_rows(50)
    splits = b.split_rows(rows, seed=1, dev=7, test=9)
    assert {k: len(v) for k, v in splits.items()} == {"train": 34, "dev": 7, "test": 9}
    english = [{r[0] for r in part} for part in splits.values()]
    assert sum(map(len, english)) == 50 and len(set.union(*english)) == 50
    assert b.split_rows(rows, seed=1, dev=7, test=9) == splits
    assert b.split_rows(rows, seed=2, dev=7, test=9)["dev"] != splits["dev"]


def test_split_too_few_rows():
    with pytest.raises(UserError, match="only 10 rows passed the filters"):
        b.split_rows(numbered_rows(10), seed=1, dev=5, test=5)


# -- the whole build ---------------------------------------------------------------------------


@needs_dpkg
def test_build_outputs_and_manifest(debs, lists, tmp_path, monkeypatch):
    out = tmp_path / "data"
    manifest = build(out, debs, lists, seed=3)
    files = {split: out / rel for split, rel in b.L10N_FILES.items()}
    tables = {split: read_tsv(path) for split, path in files.items()}
    for table in tables.values():
        assert table[0] == ["en", "de", "fr", "es", "source"]
        assert all(len(row) == 5 for row in table)
    rows = [row for table in tables.values() for row in table[1:]]
    english = [row[0] for row in rows]
    assert len(english) == len(set(english))
    sources = Counter(row[4] for row in rows)
    # 4 sentences, 30 numbered, 1 office row (its msgctxt twin is a duplicate); 3 description
    # paragraphs; 2 manual blocks
    assert sources == Counter(gettext=35, ddtp=3, debref=2)
    assert {tuple(r[:4]) for r in rows if r[4] == "debref"} == set(MANUAL_ROWS)

    counts = manifest["counts"]
    assert counts["rows"] == dict(sources)
    assert counts["splits"] == {split: len(t) - 1 for split, t in tables.items()}
    assert counts["splits"]["dev"] == 5 and counts["splits"]["test"] == 5
    dropped = sum(sum(per.values()) for per in counts["dropped"].values())
    assert sum(counts["candidates"].values()) == dropped + len(rows)
    # "Insert a table into the text" (menu): same English twice, the second is a duplicate
    assert counts["dropped"]["duplicate"]["gettext"] == 1
    assert counts["dropped"]["short"]["ddtp"] == 0
    assert counts["join"]["ddtp"] == {"descriptions": 2, "paragraph_count_differs": 1}
    for split, rel in b.L10N_FILES.items():
        digest = hashlib.sha256((out / rel).read_bytes()).hexdigest()
        assert manifest["files"][rel] == {"sha256": digest, "rows": len(tables[split]) - 1}
    on_disk = json.loads((out / b.MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["settings"]["seed"] == 3 and manifest["settings"]["dev"] == 5
    assert manifest["created"][:2] == "20"
    by_name = {p["name"]: p for p in manifest["packages"]}
    assert set(by_name) == {*PACKAGES, *(f"debian-reference-{lang}" for lang in LANGS)}
    for name, record in by_name.items():
        deb = next(debs.glob(f"{name}_*.deb"))
        assert record["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()
        assert record["version"] == "1.0-1"
    assert sorted(f["name"].rsplit("_", 1)[1] for f in manifest["translation_files"]) == [
        "Translation-de", "Translation-en", "Translation-es.gz", "Translation-fr"]
    # the project reads what was written
    monkeypatch.setenv(DATA_ENV, str(out))
    assert len(read_l10n("train")) == counts["splits"]["train"]
    assert read_l10n("dev")[0]["source"] in sources
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in (out / "parallel").iterdir()} == {0o666 & ~umask}


@needs_dpkg
def test_build_is_deterministic_by_seed(debs, lists, tmp_path):
    one = build(tmp_path / "one", debs, lists, seed=5)
    two = build(tmp_path / "two", debs, lists, seed=5)
    other = build(tmp_path / "other", debs, lists, seed=6)
    assert one["files"] == two["files"]
    assert one["files"]["parallel/l10n.dev.tsv"] != other["files"]["parallel/l10n.dev.tsv"]


@needs_dpkg
def test_build_sources_subset(debs, lists, tmp_path):
    manifest = build(tmp_path / "d", debs, lists, sources=["debref", "gettext"], dev=1, test=1)
    assert list(manifest["counts"]["rows"]) == ["debref", "gettext"]
    assert manifest["translation_files"] == []


@needs_dpkg
def test_no_overwrite_without_force_and_atomic_writes(debs, lists, tmp_path, monkeypatch):
    out = tmp_path / "data"
    build(out, debs, lists, seed=1)
    before = {p.name: p.read_bytes() for p in (out / "parallel").iterdir()}
    with pytest.raises(UserError, match="exists: pass --force"):
        build(out, debs, lists, seed=2)
    assert {p.name: p.read_bytes() for p in (out / "parallel").iterdir()} == before

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # a write that fails leaves the old file whole and no temporary file behind
    import textdistill.paths

    monkeypatch.setattr(textdistill.paths.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        build(out, debs, lists, seed=2, force=True)
    monkeypatch.undo()
    files = {p.name: p.read_bytes() for p in (out / "parallel").iterdir()}
    assert files["l10n.train.tsv.gz"] == before["l10n.train.tsv.gz"]
    assert not [name for name in files if name.startswith(".")]
    assert "l10n.manifest.json" not in files  # the old manifest no longer vouches for them

    manifest = build(out, debs, lists, seed=2, force=True)
    assert manifest["settings"]["seed"] == 2
    assert (out / "parallel" / "l10n.manifest.json").is_file()


# -- the APT side, against fake apt-get and apt-cache ------------------------------------------

FAKE_APT = r'''#!{python}
import json, os, re, shutil, sys
root = os.environ["FAKE_APT_ROOT"]
args = sys.argv[1:]
conf = open(args[args.index("-c") + 1]).read()
with open(os.path.join(root, "calls.log"), "a") as log:
    log.write(" ".join([os.path.basename(sys.argv[0]), *args[3:]]) + "\n")
index = json.load(open(os.path.join(root, "index.json")))
if "update" in args:
    lists = re.search(r'Dir::State::Lists "([^"]+)"', conf)[1]
    for name in os.listdir(os.path.join(root, "lists")):
        shutil.copy(os.path.join(root, "lists", name), lists)
elif "show" in args:
    shown = [index[n]["stanza"] for n in args[args.index("--no-all-versions") + 1:] if n in index]
    print("\n".join(shown))
    sys.exit(0 if shown else 100)
elif "download" in args:
    for spec in args[args.index("download") + 1:]:
        name = spec.split("=")[0]
        if name not in index:
            sys.exit("E: Unable to locate package " + name)
        shutil.copy(index[name]["path"], os.getcwd())
'''


@pytest.fixture
def fake_apt(debs, lists, tmp_path, monkeypatch) -> Path:
    """Fake apt-get/apt-cache that serve ``debs`` and ``lists``; returns their root folder."""
    root = tmp_path / "fake-apt"
    (root / "bin").mkdir(parents=True)
    shutil.copytree(lists, root / "lists")
    index = {}
    for deb in sorted(debs.glob("*.deb")):
        name = deb.name.split("_")[0]
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        index[name] = {"path": str(deb), "stanza": f"Package: {name}\nVersion: 1.0-1\n"
                       f"Architecture: all\nFilename: pool/{deb.name}\nSHA256: {digest}\n"}
    (root / "index.json").write_text(json.dumps(index))
    for tool in ("apt-get", "apt-cache"):
        script = root / "bin" / tool
        script.write_text(FAKE_APT.replace("{python}", sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("FAKE_APT_ROOT", str(root))
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return root


def calls(root: Path) -> list[str]:
    return (root / "calls.log").read_text().splitlines()


@needs_dpkg
def test_apt_downloads_once_and_checks(fake_apt, tmp_path):
    work = tmp_path / "work"
    apt = Apt(work)
    debs = apt.fetch(["app", "office-l10n-de"])
    assert [d.name for d in debs] == ["app", "office-l10n-de"]
    assert all(d.path.parent == work / "debs" and d.path.is_file() for d in debs)
    assert "Acquire::Languages" in (work / "apt.conf").read_text()
    assert [c.split()[0] for c in calls(fake_apt)] == ["apt-get", "apt-cache", "apt-get"]
    assert calls(fake_apt)[2].endswith("download app=1.0-1 office-l10n-de=1.0-1")
    assert {p.name[-14:] for p in apt.update()} >= {"Translation-de", "Translation-en"}

    # a new run: the cached packages are not downloaded again, a damaged one is
    debs[1].path.write_bytes(b"truncated")
    again = Apt(work).fetch(["app", "office-l10n-de"])
    assert calls(fake_apt)[-1].endswith("download office-l10n-de=1.0-1")
    assert again[1].sha256 == hashlib.sha256(again[1].path.read_bytes()).hexdigest()
    Apt(work).fetch(["app", "office-l10n-de"])
    assert "download" not in calls(fake_apt)[-1]


@needs_dpkg
def test_apt_unknown_package(fake_apt, tmp_path):
    with pytest.raises(UserError, match="package no-such-pkg not found in the APT sources"):
        Apt(tmp_path / "work").fetch(["app", "no-such-pkg"])


@needs_dpkg
def test_cli_build_through_apt(fake_apt, tmp_path):
    packages = tmp_path / "packages.txt"
    packages.write_text("# gettext packages\napp\noffice-l10n-de  # German\noffice-l10n-fr\n\n"
                        "office-l10n-es\n")
    out = tmp_path / "data"
    result = invoke("data", "build", "l10n", "--out", out, "--packages", packages,
                    "--dev", 4, "--test", 4)
    assert result.exit_code == 0, result.output
    assert "l10n written to" in result.stderr.splitlines()[-1]
    manifest = json.loads((out / b.MANIFEST).read_text())
    assert manifest["counts"]["splits"] == {"train": 32, "dev": 4, "test": 4}
    assert (out / ".l10n-work" / "debs").is_dir()


# -- user errors through the CLI ---------------------------------------------------------------


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2; stderr ends with the one line ``error: ...`` (after any progress lines)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]
    assert result.exit_code == 2, result.stderr


def test_cli_help():
    result = invoke("data", "build", "--help")
    assert result.exit_code == 0
    for word in ("--packages", "--sources", "--work", "--debs", "--lists", "--seed", "--dev",
                 "--test", "--force", "not built"):
        assert word in result.stdout


def test_cli_unknown_corpus(tmp_path):
    result = invoke("data", "build", "mono-en", "--out", tmp_path)
    assert_user_error(result, "unknown corpus 'mono-en'", "l10n")
    assert len(result.stderr.splitlines()) == 1


def test_cli_unknown_source(tmp_path):
    result = invoke("data", "build", "l10n", "--out", tmp_path, "--sources", "gettext,gimp")
    assert_user_error(result, "unknown source kind 'gimp'")
    assert len(result.stderr.splitlines()) == 1


def test_cli_not_debian(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", env={"PATH": str(empty)})
    assert_user_error(result, "apt-get not found", "Debian or Ubuntu", "--debs")
    assert len(result.stderr.splitlines()) == 1


def test_cli_dpkg_deb_missing(tmp_path, lists):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", "--debs", tmp_path,
                    "--lists", lists, env={"PATH": str(empty)})
    assert_user_error(result, "dpkg-deb not found")
    assert len(result.stderr.splitlines()) == 1


@needs_dpkg
def test_cli_package_missing_from_debs(tmp_path, debs, lists):
    packages = tmp_path / "p.txt"
    packages.write_text("app\nno-such-package\n")
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", "--debs", debs,
                    "--lists", lists, "--packages", packages)
    assert_user_error(result, "package no-such-package has no .deb file in")


@needs_dpkg
def test_cli_package_unknown_to_apt(fake_apt, tmp_path):
    packages = tmp_path / "p.txt"
    packages.write_text("app\nno-such-package\n")
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", "--packages", packages)
    assert_user_error(result, "package no-such-package not found in the APT sources")


def test_cli_lists_without_a_language(tmp_path, lists):
    partial = tmp_path / "lists"
    partial.mkdir()
    for path in lists.iterdir():
        if "Translation-es" not in path.name:
            shutil.copy(path, partial)
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", "--sources", "ddtp",
                    "--lists", partial)
    assert_user_error(result, f"no Translation-es file in {partial}")


@pytest.mark.parametrize(("option", "source"), [
    pytest.param("--debs", "debref", marks=needs_dpkg), ("--lists", "ddtp")])
def test_cli_missing_folder(tmp_path, option, source):
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", "--sources", source,
                    option, tmp_path / "nowhere")
    assert_user_error(result, f"{tmp_path / 'nowhere'} is not a folder")


def test_cli_empty_package_list(tmp_path):
    packages = tmp_path / "p.txt"
    packages.write_text("# nothing\n")
    result = invoke("data", "build", "l10n", "--out", tmp_path, "--packages", packages)
    assert_user_error(result, "names no package")


@needs_dpkg
def test_cli_too_few_rows(tmp_path, debs, lists):
    result = invoke("data", "build", "l10n", "--out", tmp_path / "d", "--debs", debs,
                    "--lists", lists, "--packages", _list(tmp_path), "--dev", 30, "--test", 30)
    assert_user_error(result, "rows passed the filters, too few for 30 dev and 30 test")
    assert not (tmp_path / "d" / "parallel").exists()


def test_cli_bad_split_size(tmp_path):
    result = invoke("data", "build", "l10n", "--out", tmp_path, "--dev", 0)
    assert_user_error(result, "--dev and --test must be at least 1")


@needs_dpkg
def test_cli_output_exists(tmp_path, debs, lists):
    out = tmp_path / "d"
    args = ["data", "build", "l10n", "--out", out, "--debs", debs, "--lists", lists,
            "--packages", _list(tmp_path), "--dev", 3, "--test", 3]
    assert invoke(*args).exit_code == 0
    result = invoke(*args)
    assert_user_error(result, "l10n.train.tsv.gz exists: pass --force")
    assert len(result.stderr.splitlines()) == 1
    assert invoke(*args, "--force").exit_code == 0


def test_cli_default_output_is_the_data_dir(tmp_path):
    (tmp_path / "parallel").mkdir()
    (tmp_path / "parallel" / "l10n.dev.tsv").write_text("en\tde\tfr\tes\tsource\n")
    result = invoke("data", "build", "l10n", env={DATA_ENV: str(tmp_path)})
    assert_user_error(result, f"{tmp_path / 'parallel' / 'l10n.dev.tsv'} exists")


def _list(folder: Path) -> Path:
    path = folder / "packages.txt"
    path.write_text("\n".join(PACKAGES) + "\n")
    return path
