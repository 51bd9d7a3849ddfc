"""A node binary from its upstream release: `url` + `sha256` in stack config, fetched and checked before use.

CoreDNS and node_exporter can come from the release archive a connected user
can download (no Go toolchain), the way `k3s.binary` can. An https server on
127.0.0.1 (certificate of a CA this test makes, trusted through SSL_CERT_FILE)
plays the release host: the archive is fetched once into the toolchain cache,
its digest checked before anything is extracted, the binary taken from it, and
a wrong digest, a refusing or unreachable host, a redirect to http, an archive
without the binary and bad config all stop the run with one line naming the
key. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from components.config import ConfigError, CorednsBinary, NodeExporterBinary, check_local_files, parse_config
from support.harness import stack_model
from support.loopback import Redirect, serve

pytestmark = pytest.mark.validators

BINARY = b"#!/bin/sh\necho 'node_exporter, version 1.12.1 (stand-in)'\n"


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _tgz({"node_exporter-1.12.1.linux-amd64/LICENSE": b"Apache-2.0\n",
                "node_exporter-1.12.1.linux-amd64/node_exporter": BINARY})
NO_BINARY = _tgz({"node_exporter-1.12.1.linux-amd64/LICENSE": b"Apache-2.0\n"})
FILES = {
    "/v1.12.1/node_exporter-1.12.1.linux-amd64.tar.gz": ARCHIVE,
    "/v1.12.1/empty-1.12.1.tar.gz": NO_BINARY,
    "/v1.12.1/coredns-1.12.1": b"#!/bin/sh\necho CoreDNS-1.12.1\n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def release_host(tmp_path_factory) -> Iterator[dict]:
    """https://127.0.0.1:PORT serving FILES; /redirect sends to http://; every request is recorded."""
    routes = dict(FILES)
    with serve(routes, tls_dir=tmp_path_factory.mktemp("tls")) as h:
        routes["/redirect/coredns-1.12.1"] = Redirect(h.base.replace("https://", "http://") + "/v1.12.1/coredns-1.12.1")
        yield {"base": h.base, "ca": h.ca, "requests": h.requests}


@pytest.fixture()
def host(release_host, tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("SSL_CERT_FILE", release_host["ca"])
    monkeypatch.setenv("MICROCLOUD_TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    release_host["requests"].clear()
    return release_host


def exporter(host: dict, path: str = "/v1.12.1/node_exporter-1.12.1.linux-amd64.tar.gz", digest: str | None = None):
    return NodeExporterBinary(url=host["base"] + path, sha256=digest or sha(ARCHIVE))


def test_release_archive_is_fetched_checked_and_the_binary_taken_from_it(host, tmp_path):
    spec = exporter(host)
    path = Path(spec.ensure("monitoring.node_exporter"))
    assert path == tmp_path / "cache" / "downloads" / sha(ARCHIVE) / "node_exporter"
    assert path.read_bytes() == BINARY
    assert os.access(path, os.X_OK)
    assert subprocess.run([path], capture_output=True, text=True).stdout.startswith("node_exporter, version 1.12.1")
    # Cached: a second run asks the host nothing.
    host["requests"].clear()
    assert spec.ensure("monitoring.node_exporter") == str(path)
    assert host["requests"] == []


def test_a_tampered_cache_is_fetched_again(host):
    spec = exporter(host)
    path = Path(spec.ensure("monitoring.node_exporter"))
    path.write_bytes(b"#!/bin/sh\necho evil\n")
    host["requests"].clear()
    assert spec.ensure("monitoring.node_exporter") == str(path)
    assert path.read_bytes() == BINARY
    assert len(host["requests"]) == 1


def test_a_bare_binary_url(host):
    body = FILES["/v1.12.1/coredns-1.12.1"]
    spec = CorednsBinary(url=host["base"] + "/v1.12.1/coredns-1.12.1", sha256=sha(body))
    assert Path(spec.ensure("dns.coredns")).read_bytes() == body


def test_wrong_digest_stops_the_run_and_keeps_nothing(host, tmp_path):
    spec = exporter(host, digest="0" * 64)
    with pytest.raises(ConfigError) as e:
        spec.ensure("monitoring.node_exporter")
    msg = str(e.value)
    assert "monitoring.node_exporter.sha256" in msg and sha(ARCHIVE) in msg and "0" * 64 in msg, msg
    assert "\n" not in msg
    assert not (tmp_path / "cache" / "downloads").exists() or not any((tmp_path / "cache" / "downloads").rglob("node_exporter"))


def test_refusing_host_is_named(host):
    spec = exporter(host, path="/v1.12.1/node_exporter-1.12.1.linux-arm64.tar.gz")
    with pytest.raises(ConfigError) as e:
        spec.ensure("monitoring.node_exporter")
    assert "monitoring.node_exporter.url" in str(e.value) and "HTTP 404" in str(e.value), str(e.value)


def test_unreachable_host_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROCLOUD_TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = CorednsBinary(url=f"https://127.0.0.1:{port}/v1.12.1/coredns-1.12.1", sha256="a" * 64)
    with pytest.raises(ConfigError) as e:
        spec.ensure("dns.coredns")
    assert "dns.coredns.url" in str(e.value) and "could not fetch" in str(e.value), str(e.value)


def test_an_untrusted_certificate_is_refused(release_host, tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # no CA at all
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("MICROCLOUD_TOOLCHAIN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError) as e:
        exporter(release_host).ensure("monitoring.node_exporter")
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate" in str(e.value).lower(), str(e.value)


def test_a_redirect_to_http_is_refused(host):
    spec = CorednsBinary(url=host["base"] + "/redirect/coredns-1.12.1", sha256=sha(FILES["/v1.12.1/coredns-1.12.1"]))
    with pytest.raises(ConfigError) as e:
        spec.ensure("dns.coredns")
    assert "non-https" in str(e.value), str(e.value)
    assert host["requests"] == ["/redirect/coredns-1.12.1"]


def test_an_archive_without_the_binary(host):
    spec = exporter(host, path="/v1.12.1/empty-1.12.1.tar.gz", digest=sha(NO_BINARY))
    with pytest.raises(ConfigError) as e:
        spec.ensure("monitoring.node_exporter")
    assert "holds 0 files named node_exporter" in str(e.value), str(e.value)


@pytest.mark.parametrize("fields, needle", [
    ({"url": "http://example.test/v1.12.1/node_exporter-1.12.1.tar.gz", "sha256": "a" * 64}, "http:// is refused"),
    ({"url": "https://example.test/v1.12.1/node_exporter-1.12.1.tar.gz"}, "a url needs its sha256"),
    ({"url": "https://example.test/v1.12.1/x-1.12.1.tar.gz", "sha256": "a" * 64, "path": "/opt/x"}, "at most one of url and path"),
    ({"url": "https://example.test/v1.11.0/node_exporter-1.11.0.tar.gz", "sha256": "a" * 64}, "does not name version v1.12.1"),
    ({"url": "https://example.test/latest/node_exporter.tar.gz", "sha256": "a" * 64}, "moving alias"),
])
def test_bad_release_config_is_one_line_naming_the_key(fields, needle):
    raw = stack_model("dev")
    raw["monitoring"] = {"node_exporter": fields}
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    msg = str(e.value)
    assert "monitoring.node_exporter" in msg and needle in msg, msg
    assert "\n" not in msg


def test_the_loader_fetches_both_binaries_before_any_resource(host, tmp_path):
    raw = stack_model("dev")
    body = FILES["/v1.12.1/coredns-1.12.1"]
    raw["dns"] = {**raw.get("dns", {}), "coredns": {"url": host["base"] + "/v1.12.1/coredns-1.12.1", "sha256": sha(body)}}
    raw["monitoring"] = {"node_exporter": {"url": host["base"] + "/v1.12.1/node_exporter-1.12.1.linux-amd64.tar.gz",
                                           "sha256": sha(ARCHIVE)}}
    cfg = parse_config(raw)
    check_local_files(cfg)
    assert Path(cfg.dns.coredns.local_path()).read_bytes() == body
    assert Path(cfg.monitoring.node_exporter.local_path()).read_bytes() == BINARY
    assert sorted(host["requests"]) == ["/v1.12.1/coredns-1.12.1", "/v1.12.1/node_exporter-1.12.1.linux-amd64.tar.gz"]


def test_without_url_the_local_build_is_named_with_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROCLOUD_TOOLCHAIN_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as e:
        CorednsBinary().ensure("dns.coredns")
    msg = str(e.value)
    assert "bash .ci/coredns.sh" in msg and "dns.coredns.url" in msg and "dns.coredns.path" in msg, msg
