"""Repositories in object storage: push to a real S3-compatible server (moto's, on loopback), validate it there,
and serve it with the real tritonserver reading s3:// itself."""

from __future__ import annotations

import shutil

import pytest

from conftest import resnet_client, trtrepo
from trtrepo.errors import UserError
from trtrepo.imagesets import shipped_photos
from trtrepo.serving.objectstore import INDEX, S3Location, is_remote
from trtrepo.serving.server import Ports, TritonServer, free_port

MODEL = "efficientnet_lite0_onnxruntime_fp32"


def test_locations_parse_both_of_tritons_forms():
    aws = S3Location.parse("s3://models/prod/v1/")
    assert (aws.bucket, aws.prefix, aws.endpoint_url, aws.triton_url) == ("models", "prod/v1", None, "s3://models/prod/v1")
    custom = S3Location.parse("s3://http://127.0.0.1:9000/models/prod")
    assert (custom.bucket, custom.prefix, custom.endpoint_url) == ("models", "prod", "http://127.0.0.1:9000")
    assert custom.triton_url == "s3://http://127.0.0.1:9000/models/prod"
    assert S3Location.parse("s3://models", "http://localhost:9000").triton_url == "s3://http://localhost:9000/models"
    assert custom.key("a/config.pbtxt") == "prod/a/config.pbtxt"
    for bad in ("models/prod", "s3://", "s3://http://127.0.0.1:9000/"):
        with pytest.raises(UserError):
            S3Location.parse(bad)
    assert is_remote("s3://b/p") and is_remote("gs://b/p") and not is_remote("model_repository")


@pytest.mark.integration
def test_push_uploads_what_changed_and_triton_serves_it_from_s3(s3, small_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(small_repo / MODEL, repo / MODEL)
    url = f"s3://{s3}/models/prod"

    first = trtrepo("push", str(repo), url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{url}: uploaded 5 files") and ", 0 unchanged, deleted 0" in first.stdout
    again = trtrepo("push", str(repo), "s3://models/prod", "--endpoint-url", s3)
    assert again.returncode == 0 and again.stdout.startswith(f"{url}: uploaded 0 files (0.0 MiB), 5 unchanged")

    edited = trtrepo("config", str(repo / MODEL), "--instances", "2")
    assert edited.returncode == 0, edited.stderr
    after_edit = trtrepo("push", str(repo), url)
    assert "uploaded 1 files" in after_edit.stdout and "4 unchanged" in after_edit.stdout

    checked = trtrepo("validate", url)
    assert checked.returncode == 0 and checked.stdout.strip() == f"{url}: ok", checked.stderr

    coffee = next(p for p in shipped_photos() if p.name == "coffee.png")
    with TritonServer(url, Ports.free(), model_control="explicit") as server:
        answer = resnet_client("--url", server.http_url, "--model", MODEL, str(coffee))
    assert answer.returncode == 0 and "espresso" in answer.stdout, answer.stderr

    shutil.rmtree(repo / MODEL)
    (repo / "README.md").write_text("no models")
    (repo / "other").mkdir()
    gone = trtrepo("push", str(repo), url)
    assert gone.returncode == 2 and "not pushed" in gone.stderr  # an invalid repository is never pushed
    import boto3

    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="models")["Contents"]]
    assert f"prod/{INDEX}" in keys and f"prod/{MODEL}/config.pbtxt" in keys


def test_push_to_a_store_that_does_not_answer_is_one_line(tmp_path, small_repo, monkeypatch):
    pytest.importorskip("boto3", reason="boto3 is a test dependency: run make install")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    shutil.copytree(small_repo / MODEL, tmp_path / MODEL)
    result = trtrepo("push", str(tmp_path), f"s3://http://127.0.0.1:{free_port()}/models/prod")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: s3://http://127.0.0.1:") and "Traceback" not in result.stderr


@pytest.mark.integration
def test_object_keys_that_climb_out_write_nothing_outside_and_are_refused(s3, small_repo, tmp_path):
    """Keys as the QA pass planted them: validate, deploy and serve each refuse the store with one line."""
    import boto3

    outside = tmp_path / "outside"
    outside.mkdir()
    client = boto3.client("s3", endpoint_url=s3)
    client.upload_file(str(small_repo / MODEL / "config.pbtxt"), "models", f"repo/{MODEL}/config.pbtxt")
    climbing = [f"repo/../../../../../../..{outside}/pwned.txt", f"repo/x/../../../../../../..{outside}/pwned2"]
    for key in climbing:
        client.put_object(Bucket="models", Key=key, Body=b"planted")
    url = f"s3://{s3}/models/repo"
    for command in (("validate", url), ("serve", "--model-repository", url, "--http-port", str(free_port()))):
        result = trtrepo(*command)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "object key" in result.stderr and "would leave" in result.stderr and "refused" in result.stderr
    assert list(outside.iterdir()) == []


def test_push_refuses_symbolic_links_rather_than_following_or_skipping_them(small_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(small_repo / MODEL, repo / MODEL)
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = x")
    (repo / MODEL / "1" / "notes.txt").symlink_to(secret)
    result = trtrepo("push", str(repo), "s3://http://127.0.0.1:9/models/prod")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    # validate, which push runs first, names the link that leaves its model folder
    assert f"not pushed: {repo / MODEL / '1' / 'notes.txt'}" in result.stderr and str(secret) in result.stderr
    (repo / MODEL / "1" / "notes.txt").unlink()
    (repo / MODEL / "2").symlink_to(repo / MODEL / "1")  # a linked version folder is refused too, not skipped
    result = trtrepo("push", str(repo), "s3://http://127.0.0.1:9/models/prod")
    assert result.returncode == 2 and f"{repo / MODEL / '2'}: a symbolic link" in result.stderr
