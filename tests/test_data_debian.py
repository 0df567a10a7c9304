"""Debian soundtrack packages, offline: music files and licences from an unpacked package tree."""

from melody_core.data.debian import detect_licenses, file_license, music_files, package_license

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2001 Game Authors
License: GPL-2+

Files: data/music/*
Copyright: 2010 A. Composer
License: CC-BY-SA-3.0

Files: debian/*
Copyright: 2012 Packager
License: GPL-2+
"""


def _tree(tmp_path, copyright_text: str):
    pkg = "game-music"
    doc = tmp_path / "usr/share/doc" / pkg
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text, encoding="utf-8")
    music = tmp_path / "usr/share/games/game/music"
    (music / "album").mkdir(parents=True)
    for name in ("a.ogg", "album/b.opus", "readme.txt"):
        (music / name).write_bytes(b"x")
    (tmp_path / "usr/share/games/game/sounds").mkdir()
    (tmp_path / "usr/share/games/game/sounds/click.ogg").write_bytes(b"x")
    return pkg, music


def test_music_files_and_dep5_licence(tmp_path):
    pkg, music = _tree(tmp_path, DEP5)
    files = music_files(tmp_path)
    assert [f.relative_to(music).as_posix() for f in files] == ["a.ogg", "album/b.opus"]
    licence, note = package_license(tmp_path, pkg)
    assert licence == "CC-BY-SA-3.0 (Copyright 2010 A. Composer)" and "data/music/*" in note


def test_free_form_copyright_and_per_folder_licence_file(tmp_path):
    text = "Copyright (C) 2003 by Someone\n\nThis program is free software; GNU General Public License\n" \
           "version 2 or at your option any later version.\n"  # fmt: skip
    pkg, music = _tree(tmp_path, text)
    licence, _ = package_license(tmp_path, pkg)
    assert licence == "GPL-2+ (Copyright 2003 by Someone)"
    (music / "album" / "license.txt").write_text("Album - Copyright (C) 2021 Musician\nCC-BY-SA-3.0\n")
    assert file_license(music / "album" / "b.opus", tmp_path, licence).startswith(
        "CC-BY-SA-3.0 (Copyright 2021"
    )
    assert file_license(music / "a.ogg", tmp_path, licence) == licence


def test_detect_licenses():
    assert detect_licenses("released under the same BY-SA 3.0 license") == ["CC-BY-SA-3.0"]
    assert detect_licenses("CC BY 4.0; or the GNU General Public License version 3 or later") == [
        "CC-BY-4.0",
        "GPL-3+",
    ]
    assert detect_licenses("no licence named here") == []
