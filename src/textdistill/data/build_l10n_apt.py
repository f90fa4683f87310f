"""The Debian side of the l10n builder: a private APT setup (own lists and cache, the system's
sources), cached and checked package downloads, and files read out of ``.deb`` packages."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from textdistill.errors import UserError

LANGS = ("en", "de", "fr", "es")
"""The source language and the targets, in the corpus's column order."""

OFFLINE_HINT = "or pass --debs and --lists with files fetched on a Debian or Ubuntu machine"


@dataclass(frozen=True)
class Deb:
    """One downloaded package."""

    name: str
    version: str
    architecture: str
    path: Path
    sha256: str

    def record(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version,
                "architecture": self.architecture, "sha256": self.sha256}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_tools(*tools: str, hint: str) -> None:
    """Raise a UserError naming the first of ``tools`` that is not on the PATH."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found: {hint}")


def _run(args: list[str], cwd: Path | None = None, check: bool = True) -> str:
    """Run a command, return its stdout; a failure becomes a UserError with its last stderr
    line (unless ``check`` is false)."""
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"{' '.join(args[:3])} failed (exit {proc.returncode}): {last}")
    return proc.stdout


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """The fields of each stanza of a Debian control-style text (continuation lines joined
    with newlines, the first line of a multi-line field kept as is)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t" and key is not None:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


class Apt:
    """``apt-get`` and ``apt-cache`` with a private configuration under ``root``: the system's
    sources, English, German, French and Spanish package descriptions, own lists and cache."""

    def __init__(self, root: Path) -> None:
        require_tools("apt-get", "apt-cache", "dpkg-deb",
                      hint=f"building l10n needs a Debian or Ubuntu system ({OFFLINE_HINT})")
        self.root = root
        self.lists = root / "lists"
        self.debs = root / "debs"
        for folder in (self.lists / "partial", root / "cache" / "archives" / "partial",
                       self.debs / ".partial"):
            folder.mkdir(parents=True, exist_ok=True)
        languages = " ".join(f'"{lang}";' for lang in LANGS)
        self.config = root / "apt.conf"
        self.config.write_text(
            f'Dir::State::Lists "{self.lists.resolve()}";\n'
            f'Dir::Cache "{(root / "cache").resolve()}";\n'
            'Acquire::GzipIndexes "false";\n'
            "#clear Acquire::Languages;\n"
            f"Acquire::Languages {{ {languages} }};\n"
        )
        self._updated = False

    def _apt(self, tool: str, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        return _run([tool, "-q", "-c", str(self.config.resolve()), *args], cwd=cwd, check=check)

    def update(self) -> list[Path]:
        """``apt-get update`` into the private lists (once); the ``Translation-XX`` files."""
        if not self._updated:
            self._apt("apt-get", "update")
            self._updated = True
        return translation_files(self.lists)

    def fetch(self, names: Iterable[str]) -> list[Deb]:
        """The candidate version of each package, downloaded unless a checked copy is cached."""
        self.update()
        names = list(dict.fromkeys(names))
        shown = self._apt("apt-cache", "show", "--no-all-versions", *names, check=False)
        found = {s["Package"]: s for s in _stanzas(shown) if "Package" in s}
        missing = [name for name in names if name not in found]
        if missing:
            raise UserError(f"package {', '.join(missing)} not found in the APT sources "
                            "(check the name with 'apt-cache policy NAME')")
        wanted = {}
        for name in names:
            s = found[name]
            file = f"{name}_{s['Version'].replace(':', '%3a')}_{s['Architecture']}.deb"
            wanted[name] = (s, file)
        partial = self.debs / ".partial"
        todo = [name for name, (s, file) in wanted.items()
                if not (self.debs / file).is_file() or sha256_file(self.debs / file) != s["SHA256"]]
        if todo:
            for name in todo:
                (partial / wanted[name][1]).unlink(missing_ok=True)
            self._apt("apt-get", "download", *(f"{n}={found[n]['Version']}" for n in todo),
                      cwd=partial)
            for name in todo:
                s, file = wanted[name]
                if sha256_file(partial / file) != s["SHA256"]:
                    raise UserError(f"the download of {name} does not match its SHA256 sum")
                (partial / file).replace(self.debs / file)
        return [Deb(name, s["Version"], s["Architecture"], self.debs / file, s["SHA256"])
                for name, (s, file) in wanted.items()]


def local_debs(folder: Path, names: Iterable[str]) -> list[Deb]:
    """The packages ``names`` from the ``.deb`` files in ``folder`` (no download; where a
    package has several files, the first by file name)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    available: dict[str, tuple[dict[str, str], Path]] = {}
    for path in sorted(folder.glob("*.deb")):
        fields = next(_stanzas(_run(["dpkg-deb", "-f", str(path),
                                     "Package", "Version", "Architecture"])), {})
        if "Package" in fields:
            available.setdefault(fields["Package"], (fields, path))
    names = list(dict.fromkeys(names))
    missing = [name for name in names if name not in available]
    if missing:
        raise UserError(f"package {', '.join(missing)} has no .deb file in {folder}")
    return [Deb(name, fields.get("Version", ""), fields.get("Architecture", ""), path,
                sha256_file(path)) for name in names for fields, path in [available[name]]]


_TRANSLATION = re.compile(r"Translation-(en|de|fr|es)(\.gz|\.xz|\.bz2)?$")


def translation_files(folder: Path) -> list[Path]:
    """The ``Translation-{en,de,fr,es}`` files in an APT lists folder, sorted by name."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and _TRANSLATION.search(p.name))


def translation_language(path: Path) -> str:
    match = _TRANSLATION.search(path.name)
    if match is None:
        raise UserError(f"{path} is not a Translation-XX file")
    return match[1]


def deb_members(deb: Deb, pattern: re.Pattern[str]) -> Iterator[tuple[str, bytes]]:
    """``(path, content)`` of the regular files in a package whose path matches ``pattern``
    (streamed from ``dpkg-deb --fsys-tarfile``: nothing else is unpacked)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb.path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    error = ""
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isfile() and pattern.search(name):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        yield name, handle.read()
    except tarfile.TarError as exc:
        error = str(exc)
    finally:
        proc.stdout.close()
        message = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        code = proc.wait()
    if code != 0 or error:
        last = (message.splitlines() or [error or "(no message)"])[-1]
        raise UserError(f"dpkg-deb cannot read {deb.path}: {last}")
