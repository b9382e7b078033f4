"""Server options (bind address, restricted APIs, key), addresses and key files: the logic, without a server."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from trtrepo.serving.access import (
    KEY_ENV,
    RESTRICTED_APIS,
    ServerOptions,
    find_key,
    key_headers,
    split_url,
    write_key_files,
)
from trtrepo.errors import UserError


@pytest.fixture(autouse=True)
def key_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTREPO_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    return tmp_path / "keys"


def test_defaults_listen_on_loopback_and_restrict_every_management_api():
    options = ServerOptions().keyed()
    assert options.loopback and options.api_key and len(options.api_key) >= 32
    flags = options.server_flags()
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(flags)
    restricted = f"{','.join(RESTRICTED_APIS)}:trtrepo-key={options.api_key}"
    assert f"--http-restricted-api={restricted}" in flags and f"--grpc-restricted-protocol={restricted}" in flags
    assert ServerOptions().keyed().api_key != options.api_key  # a new key per start


def test_unrestricted_and_exposed_options_say_so():
    options = ServerOptions(host="0.0.0.0", restricted=()).keyed()
    assert options.api_key is None and not options.loopback
    assert not any("restricted" in flag for flag in options.server_flags())
    assert "code execution" in options.exposure() and "0.0.0.0" in options.exposure()
    assert ServerOptions(api_key="given").keyed().api_key == "given"


@pytest.mark.parametrize("key", ["", "has space", "a,b", "a=b", "tab\there"])
def test_a_key_that_would_break_the_flag_is_refused(key):
    with pytest.raises(UserError, match="API key"):
        ServerOptions(api_key=key)


@pytest.mark.parametrize("url, expected", [
    ("localhost:8001", ("localhost", 8001)),
    ("http://127.0.0.1:8000/", ("127.0.0.1", 8000)),
    ("grpc://example.org:8001", ("example.org", 8001)),
    ("[::1]:8000", ("[::1]", 8000)),
])
def test_urls_with_or_without_scheme(url, expected):
    assert split_url(url) == expected


@pytest.mark.parametrize("url", ["localhost", "localhost:port", "localhost:0", "localhost:70000", "http://h:1/v2/x", ":8000"])
def test_malformed_urls_are_one_line_errors(url):
    with pytest.raises(UserError, match="is not HOST:PORT"):
        split_url(url)


def test_key_files_are_private_and_found_only_for_this_machine(key_dir):
    written = write_key_files([18000, 18001], "k3y")
    assert [p.name for p in written] == ["18000.key", "18001.key"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in written)
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert find_key("localhost:18001") == "k3y" and find_key("127.0.0.5:18000") == "k3y"
    assert find_key("example.org:18001") is None  # never sent to another host unasked
    assert find_key("localhost:18002") is None
    assert find_key("example.org:18001", "given") == "given"


def test_a_key_file_whose_launcher_is_gone_is_never_sent(key_dir):
    """A launcher killed with SIGKILL leaves its key file; whatever listens on that port later must not get it."""
    launcher = subprocess.Popen([sys.executable, "-c", "import sys; from trtrepo.serving.access import write_key_files; "
                                 "write_key_files([18003], 'stale'); print(flush=True); sys.stdin.read()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    launcher.stdout.readline()
    assert find_key("localhost:18003") == "stale"  # its launcher runs
    launcher.kill()
    launcher.wait()
    assert (key_dir / "18003.key").is_file() and find_key("localhost:18003") is None
    (key_dir / "18003.key").write_text("no-owner\n")  # a file without its writer's identity is not trusted either
    assert find_key("localhost:18003") is None


def test_environment_key_wins_over_the_key_file(monkeypatch):
    write_key_files([18000], "from-file")
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert find_key("localhost:18000") == "from-env"


def test_headers_per_protocol():
    assert key_headers("k", "http") == {"trtrepo-key": "k"}
    assert key_headers("k", "grpc") == {"triton-grpc-protocol-trtrepo-key": "k"}  # Triton's gRPC prefix
    assert key_headers(None, "http") == {}


def test_a_servers_metrics_are_where_given_or_on_the_port_after_grpc_when_triton_answers_there():
    """perf --url: --metrics-url as HOST:PORT or as the URL Triton prints; without it, gRPC's port + 1 only where a
    Triton's metrics answer (here nothing listens: unknown, not a wrong guess)."""
    from trtrepo.serving.endpoints import metrics_url_of
    from trtrepo.serving.server import free_port

    assert metrics_url_of("10.0.0.5:8001", "10.0.0.5:9102") == "http://10.0.0.5:9102/metrics"
    assert metrics_url_of("10.0.0.5:8001", "http://10.0.0.5:9102/metrics") == "http://10.0.0.5:9102/metrics"
    assert metrics_url_of(f"127.0.0.1:{free_port()}") is None
    with pytest.raises(UserError, match="is not HOST:PORT"):
        metrics_url_of("127.0.0.1:8001", "metrics")
