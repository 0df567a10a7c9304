"""Music from freely licensed Debian soundtrack packages (`melody data build --debian-music`).

Each package is fetched with `apt-get download` (needs the network and an updated package list)
into the user cache, unpacked with `dpkg-deb -x`, and its audio files whose path contains
"/music/" become a recorded source `debian:<package>`. The licence is read from the package's
machine-readable copyright file (`usr/share/doc/<package>/copyright`): the Files stanza that names
music, else the `Files: *` stanza; if the file is absent it says so instead of guessing.

*(our choice)* Captions of these clips come from a short description of each package's music
(below) plus the track title from the file name; the music has no score facts (bpm, key).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from melody_core.data.clips import ClipSpec
from melody_core.data.jobs import RecordedJob

DEFAULT_PACKAGES = ("asc-music", "singularity-music", "warzone2100-music", "wesnoth-1.16-music")
DESCRIPTIONS = {  # package -> short description of its music (caption words)
    "asc-music": "a strategy game soundtrack",
    "singularity-music": "an electronic game soundtrack made in music trackers",
    "warzone2100-music": "a sci-fi strategy game soundtrack",
    "wesnoth-1.16-music": "an orchestral fantasy game soundtrack",
}
AUDIO_SUFFIXES = (".ogg", ".opus", ".flac", ".wav", ".mp3", ".oga")
LICENSE_FILE_STEMS = ("license", "licence", "copying", "copyright")
LICENSE_SCAN_CHARS = 4000  # licence names are looked for in the head of a text (not in legal code)
LICENSE_PATTERNS = (  # (pattern, SPDX-like template)
    (re.compile(r"\bBY[- ]SA[- ]?(\d\.\d)", re.I), "CC-BY-SA-{}"),  # "CC BY-SA 3.0", "BY-SA 3.0"
    (re.compile(r"Attribution-ShareAlike (\d\.\d)", re.I), "CC-BY-SA-{}"),
    (re.compile(r"(?:CC[- ]?BY|Creative Commons Attribution)[- ](\d\.\d)", re.I), "CC-BY-{}"),
    (re.compile(r"\bCC0\b"), "CC0-1.0"),
    (re.compile(r"General Public License[^.]{0,80}?version (\d)[^.]{0,120}?later", re.I), "GPL-{}+"),
    (re.compile(r"General Public License[^.]{0,80}?version (\d)", re.I), "GPL-{}"),
)
DOWNLOAD_TIMEOUT_S = 1800.0
EXTRACT_TIMEOUT_S = 600.0
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


class DebianError(RuntimeError):
    """A package that could not be fetched or unpacked (one line)."""


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("melody-studio")) / "debian"


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DebianError(f"{cmd[0]} not found (Debian/Ubuntu only)") from None
    except subprocess.TimeoutExpired:
        raise DebianError(f"{' '.join(cmd[:2])} timed out") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("E:")] or proc.stderr.splitlines()
        raise DebianError(f"{' '.join(cmd[:3])} failed: {lines[-1] if lines else proc.returncode}")


def fetch_package(package: str, root: Path) -> Path:
    """Download (once) and unpack (once) `package` under `root`; returns the unpacked folder."""
    if not _PACKAGE_NAME.match(package):
        raise DebianError(f"{package!r} is not a Debian package name")
    debs, tree = root / "debs", root / "extracted" / package
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", package], debs, DOWNLOAD_TIMEOUT_S)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise DebianError(f"apt-get download {package} left no .deb file")
    done = tree / ".extracted"
    if not done.is_file():
        tree.mkdir(parents=True, exist_ok=True)
        _run(["dpkg-deb", "-x", str(found[-1]), str(tree)], root, EXTRACT_TIMEOUT_S)
        done.write_text(found[-1].name, encoding="utf-8")
    return tree


def music_files(tree: Path) -> list[Path]:
    """Audio files whose path (inside the package) contains /music/."""
    out = []
    for p in sorted(tree.rglob("*")):
        rel = "/" + p.relative_to(tree).as_posix().lower()
        if p.is_file() and "/music/" in rel and p.suffix.lower() in AUDIO_SUFFIXES:
            out.append(p)
    return out


def _stanzas(text: str) -> list[dict[str, str]]:
    """DEP-5 paragraphs -> {field: first line of the value}; Files keeps all its lines."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                key = m.group(1).lower()
                fields[key] = m.group(2).strip()
            elif key == "files" and line.startswith((" ", "\t")):
                fields[key] += " " + line.strip()
        if fields:
            out.append(fields)
    return out


def detect_licenses(text: str) -> list[str]:
    """Licence identifiers named in free text (e.g. ["CC-BY-SA-3.0", "GPL-2+"]), in table order."""
    found: list[str] = []
    for pattern, template in LICENSE_PATTERNS:
        for m in pattern.finditer(text):
            ident = template.format(*m.groups())
            if ident not in found and not (ident.startswith("GPL-") and ident + "+" in found):
                found.append(ident)
    return found


def _holder(text: str) -> str:
    m = re.search(r"Copyright\s*(?:\(C\)|©)?\s*([^\n]{3,80})", text)
    return m.group(1).strip() if m else ""


def package_license(tree: Path, package: str) -> tuple[str, str]:
    """(licence, note) from the package's copyright file: the DEP-5 Files stanza that names music,
    else `Files: *`; for a free-form file, the licences its text (and README) names."""
    doc = tree / "usr" / "share" / "doc" / package
    path = doc / "copyright"
    if not path.is_file():
        return "unknown (no copyright file in the package)", f"Debian package {package}: check its copyright"
    text = path.read_text(encoding="utf-8", errors="replace")
    stanzas = [s for s in _stanzas(text) if "files" in s]
    stanzas = [s for s in stanzas if not all(f.startswith("debian/") for f in s["files"].split())]
    if stanzas:
        music = [s for s in stanzas if "music" in s["files"].lower()]
        star = [s for s in stanzas if "*" in s["files"].split()]
        chosen = (music or star or stanzas)[0]
        licence = chosen.get("license", "") or "unknown (no License field)"
        holder = chosen.get("copyright", "")
        note = f"Debian package {package}; usr/share/doc/{package}/copyright, Files: {chosen['files']}"
        return (f"{licence} (Copyright {holder})" if holder else licence), note
    readme = doc / "README"
    extra = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    found = detect_licenses(text[:LICENSE_SCAN_CHARS] + "\n" + extra)
    holder = _holder(text)
    licence = " / ".join(found) if found else "unknown (see the copyright file)"
    note = f"Debian package {package}; licence detected in the text of usr/share/doc/{package}/copyright"
    return (f"{licence} (Copyright {holder})" if holder and found else licence), note


def file_license(file: Path, tree: Path, package_licence: str) -> str:
    """The licence of one music file: a licence file next to it (or in a parent folder inside the
    package, e.g. warzone2100's per-album license.txt) wins over the package's copyright."""
    folder = file.parent
    while folder != tree and tree in folder.parents:
        for cand in sorted(folder.iterdir()):
            if cand.is_file() and cand.stem.lower() in LICENSE_FILE_STEMS:
                text = cand.read_text(encoding="utf-8", errors="replace")[:LICENSE_SCAN_CHARS]
                found = detect_licenses(text)
                if found:
                    holder = _holder(text)
                    where = cand.relative_to(tree).as_posix()
                    return f"{' / '.join(found)}{f' (Copyright {holder})' if holder else ''} per {where}"
        folder = folder.parent
    return package_licence


def _title(path: Path) -> str:
    return re.sub(r"[_\-.]+", " ", path.stem).strip()


def debian_jobs(packages: list[str], out: Path, spec: ClipSpec, log, root: Path | None = None):
    """Recorded jobs for the music of `packages` -> (jobs, {source: licence}, {source: note}).
    A package that cannot be fetched is logged and skipped."""
    root = root or cache_dir()
    jobs, licences, notes = [], {}, {}
    for package in packages:
        try:
            log(f"fetching Debian package {package} into {root}")
            tree = fetch_package(package, root)
        except DebianError as exc:
            log(f"  skipped debian:{package}: {exc}")
            continue
        files = music_files(tree)
        if not files:
            log(f"  skipped debian:{package}: no audio under a /music/ folder")
            continue
        source = f"debian:{package}"
        pkg_licence, note = package_license(tree, package)
        per_file = {f: file_license(f, tree, pkg_licence) for f in files}
        licence = "; ".join(dict.fromkeys(per_file.values()))
        licences[source], notes[source] = licence, note
        desc = DESCRIPTIONS.get(package, "a game soundtrack")
        log(f"  {source}: {len(files)} music files; licence {licence}")
        for f in files:
            title = _title(f)
            captions = (f"{desc[0].upper()}{desc[1:]}, track '{title}'.", f"{title}, {desc}")
            attributes = (("title", title), ("package", package), ("description", desc))
            jobs.append(
                RecordedJob(
                    file=str(f), file_id=f.relative_to(tree).as_posix(), source=source, license=per_file[f],
                    out=str(out), spec=spec, captions=captions, attributes=attributes,
                )
            )  # fmt: skip
    return jobs, licences, notes
