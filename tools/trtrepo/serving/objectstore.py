"""Model repositories in S3 and S3-compatible object stores: push what changed, fetch one to check it.

Imported by the command line and the server launcher for is_remote alone, so it imports nothing heavy at the top.

Triton reads an s3:// repository itself (credentials from the AWS_* environment variables; a custom endpoint as
s3://http://HOST:PORT/bucket/prefix), so serving needs nothing from here but the URL. Pushing uploads only files
whose SHA-256 differs from what the last push recorded in the store (INDEX, beside the models), taking the hashes
of engine files from each variant's manifest instead of reading them again; files gone from the repository are
deleted from the store, the index last, so an interrupted push is finished by the next one.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from trtrepo.errors import UserError
from trtrepo.format.config import MANIFEST_FILE, file_digest, read_config, read_manifest, runs_on_gpu
from trtrepo.paths import contained, symbolic_links


SCHEMES = ("s3://", "gs://", "as://")
#: What the last push uploaded: repository-relative path -> SHA-256, stored at <prefix>/INDEX.
INDEX = ".trtrepo-index.json"


def is_remote(repository: str | Path) -> bool:
    """Whether a repository argument names object storage (which Triton reads itself) rather than a folder."""
    return str(repository).startswith(SCHEMES)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    #: A custom endpoint (an S3-compatible store), or None for AWS.
    endpoint_url: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> "S3Location":
        """s3://bucket/prefix, or Triton's form for a custom endpoint, s3://http://HOST:PORT/bucket/prefix."""
        if not url.startswith("s3://"):
            raise UserError(f"{url}: not an S3 URL (s3://bucket/prefix)")
        rest = url[len("s3://"):]
        if rest.startswith(("http://", "https://")):
            parts = urlsplit(rest)
            if endpoint_url and endpoint_url.rstrip("/") != f"{parts.scheme}://{parts.netloc}":
                raise UserError(f"{url} names endpoint {parts.scheme}://{parts.netloc}, --endpoint-url {endpoint_url}")
            endpoint_url, rest = f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UserError(f"{url}: no bucket (s3://bucket/prefix)")
        return cls(bucket, prefix.strip("/"), endpoint_url.rstrip("/") if endpoint_url else None)

    @property
    def triton_url(self) -> str:
        """The URL tritonserver's --model-repository takes for this location."""
        path = "/".join(part for part in (self.bucket, self.prefix) if part)
        return f"s3://{self.endpoint_url}/{path}" if self.endpoint_url else f"s3://{path}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, key: str) -> str:
        """An object key's path below the prefix (the inverse of key())."""
        return key[len(self.prefix):].lstrip("/") if self.prefix else key

    def check_keys(self) -> None:
        """Refuse (one line) a store whose object keys would leave the folder a server downloads it into."""
        client = s3_client(self)
        try:
            for key, _ in _objects(client, self):
                contained(Path("/repository"), self.relative(key), f"{self.triton_url}: object key")
        except Exception as exc:
            if isinstance(exc, UserError):
                raise
            raise _one_line(exc, self) from exc


@dataclass(frozen=True)
class PushReport:
    uploaded: tuple[str, ...]
    unchanged: int
    deleted: tuple[str, ...]
    uploaded_bytes: int

    def line(self) -> str:
        return (f"uploaded {len(self.uploaded)} files ({self.uploaded_bytes / 2**20:.1f} MiB), {self.unchanged} "
                f"unchanged, deleted {len(self.deleted)}")


def repository_files(repo: Path) -> dict[str, tuple[Path, str]]:
    """Every file a server reads from ``repo``: relative path -> (path, SHA-256); hidden files and folders (locks,
    build staging) are left out. A variant's engine files take the hashes its manifest lists, when the manifest's
    size still matches."""

    repo = Path(repo)
    if not repo.is_dir():
        raise UserError(f"{repo}: model repository does not exist; run `trtrepo repo` first")
    links = symbolic_links(repo)
    if links:
        raise UserError(f"{links[0]}: a symbolic link (to {os.readlink(links[0])}); a store holds files, and a link "
                        f"may lead out of the repository: replace it with the file itself"
                        + (f" ({len(links) - 1} more links)" if len(links) > 1 else ""))
    files = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        listed = read_manifest(model_dir).get("files") or {}
        for path in sorted(model_dir.rglob("*")):
            relative = path.relative_to(model_dir)
            if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                continue
            entry = listed.get(str(relative)) if isinstance(listed, dict) else None
            known = isinstance(entry, dict) and entry.get("bytes") == path.stat().st_size and entry.get("sha256")
            files[f"{model_dir.name}/{relative.as_posix()}"] = (path, known or file_digest(path))
    return files


def s3_client(location: S3Location):
    """A boto3 S3 client for the location; credentials and region from the environment, as Triton takes them."""
    try:
        import boto3
    except ImportError:
        raise UserError("pushing to S3 needs boto3: pip install 'trtrepo[s3]'") from None
    return boto3.client("s3", endpoint_url=location.endpoint_url)


def _one_line(exc: Exception, location: S3Location) -> UserError:
    message = " ".join(str(exc).split())[:300]
    return UserError(f"{location.triton_url}: {message}")


def push(repo: Path, location: S3Location, log: Callable[[str], None] = lambda _: None) -> PushReport:
    """Upload what differs between ``repo`` and the store; delete what the repository no longer holds."""

    local = repository_files(repo)
    client = s3_client(location)
    try:
        index = _read_index(client, location)
        stored = dict(_objects(client, location))
        changed = [rel for rel, (path, digest) in local.items()
                   if index.get(rel) != digest or stored.get(location.key(rel)) != path.stat().st_size]
        # Engine files before the configs that name them, so that a server polling the store never meets a config
        # whose model file is still on its way.
        changed.sort(key=lambda rel: (rel.endswith(("config.pbtxt", MANIFEST_FILE)), rel))
        sent = 0
        for rel in changed:
            path, digest = local[rel]
            log(f"uploading {rel} ({path.stat().st_size / 2**20:.1f} MiB)")
            client.upload_file(str(path), location.bucket, location.key(rel), ExtraArgs={"Metadata": {"sha256": digest}})
            sent += path.stat().st_size
            index[rel] = digest
        deleted = sorted(rel for rel in index if rel not in local)
        for rel in deleted:
            log(f"deleting {rel}")
            client.delete_object(Bucket=location.bucket, Key=location.key(rel))
            del index[rel]
        body = json.dumps(dict(sorted(index.items())), indent=1).encode()
        client.put_object(Bucket=location.bucket, Key=location.key(INDEX), Body=body)
    except Exception as exc:  # botocore's ClientError, EndpointConnectionError, NoCredentialsError ...
        if isinstance(exc, UserError):
            raise
        raise _one_line(exc, location) from exc
    return PushReport(tuple(changed), len(local) - len(changed), tuple(deleted), sent)


def fetch(location: S3Location, target: Path, configs_only: bool = False) -> Path:
    """Download the repository at ``location`` into ``target`` (to validate it where it lives), or only its
    models' config.pbtxt files (to read what the models need)."""
    client = s3_client(location)
    try:
        keys = [key for key, _ in _objects(client, location)
                if not key.endswith(INDEX) and (not configs_only or key.endswith("/config.pbtxt"))]
        if not keys:
            raise UserError(f"{location.triton_url}: no model repository there")
        paths = [contained(Path(target), location.relative(key), f"{location.triton_url}: object key") for key in keys]
        for key, path in zip(keys, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(location.bucket, key, str(path))
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        raise _one_line(exc, location) from exc
    return Path(target)


def _read_index(client, location: S3Location) -> dict[str, str]:
    try:
        body = client.get_object(Bucket=location.bucket, Key=location.key(INDEX))["Body"].read()
    except client.exceptions.NoSuchKey:
        return {}
    try:
        index = json.loads(body)
    except ValueError:
        return {}  # unreadable: every file is uploaded again
    return {str(k): str(v) for k, v in index.items()} if isinstance(index, dict) else {}


def _objects(client, location: S3Location) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under the location's prefix."""
    prefix = f"{location.prefix}/" if location.prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            yield entry["Key"], entry["Size"]


def repository_uses_gpus(repository: str) -> bool:
    """Whether any model of an s3:// repository has GPU instances (its configs are fetched to tell); other stores:
    not known here, so no."""
    if not repository.startswith("s3://"):
        return False
    with tempfile.TemporaryDirectory(prefix="trtrepo-configs-") as scratch:
        fetch(S3Location.parse(repository), Path(scratch), configs_only=True)
        return any(runs_on_gpu(read_config(path)) for path in Path(scratch).glob("*/config.pbtxt"))


@contextmanager
def local_copy(repository: str) -> Iterator[tuple[Path, Callable[[str], str]]]:
    """The repository as a folder: itself, or an S3 repository fetched into a temporary one; and a function that
    names the fetched files by their URL in messages."""
    if not is_remote(repository):
        yield Path(repository), lambda message: message
        return
    if not repository.startswith("s3://"):
        raise UserError(f"{repository}: trtrepo reads s3:// repositories only (Triton itself also serves gs:// and as://)")
    location = S3Location.parse(repository)
    with tempfile.TemporaryDirectory(prefix="trtrepo-fetched-") as scratch:
        folder = fetch(location, Path(scratch))
        yield folder, lambda message: message.replace(str(folder), location.triton_url)
