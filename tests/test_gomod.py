"""The shared Go-module build helper (.ci/lib/gomod.sh) from an empty module cache.

A fresh machine once could not pass .ci/run: `go mod download -json` reports
"module lookup disabled by GOPROXY=off" inside the JSON on stdout, and the
offline-first helper, reading stderr only, gave up instead of going online.
Machines with a warm module cache never saw it. These tests run the helper the
way node-exporter.sh and actionlint.sh do (mc_cached_build + mc_build_upstream)
on a small pinned module that a module proxy on 127.0.0.1 serves, with an
empty GOMODCACHE: cold (downloads what is missing), warm (no go, no request),
rebuilt from the module cache with the proxy gone, refused (named),
--cached-only, and cached but never checked against the checksum database
(the etcd case: offline, the go command asks the database directly, which a
machine that reaches only the proxy cannot; the helper must go online, where
the database is asked through the proxy). The proxy is a plain HTTP server of
the GOPROXY protocol over a directory this test writes, with a checksum
database (a signed one-level transparency log, signed by openssl's ed25519)
under its /sumdb/ path; nothing leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from support.loopback import serve

pytestmark = pytest.mark.toolchain

ROOT = Path(__file__).resolve().parent.parent
GO = shutil.which("go") or "/usr/local/go/bin/go"

GREET = ("example.test/greet", "v1.0.0")
HELLO = ("example.test/hello", "v1.2.3")

HELLO_GO_MOD = "module example.test/hello\n\ngo 1.22\n\nrequire example.test/greet v1.0.0\n"
HELLO_MAIN = """package main

import (
\t"fmt"

\t"example.test/greet"
)

var version = "dev"

func main() { fmt.Println("hello", version, greet.Word()) }
"""
GREET_GO_MOD = "module example.test/greet\n\ngo 1.22\n"
GREET_GO = 'package greet\n\nfunc Word() string { return "greetings" }\n'

# A build script shaped exactly like .ci/node-exporter.sh, for the test module.
SCRIPT = r"""#!/usr/bin/env bash
set -euo pipefail
source "$REPO/.ci/pins.sh"
source "$REPO/.ci/lib/gomod.sh"
MC_LOG_NAME=hello.sh
VERSION=${HELLO_VERSION:-v1.2.3}
MODULE=example.test/hello
DIR=$CACHE/hello-$VERSION
MC_RESULT=$DIR/hello
WANT="$MODULE@$VERSION CGO_ENABLED=0"
mc_current() {
  local v
  [[ -x $MC_RESULT ]] && mc_stamp_ok "$MC_RESULT.stamp" "$WANT" || return 1
  v=$("$MC_RESULT" 2>&1) || return 1
  [[ $v == "hello ${VERSION#v} greetings" ]]
}
mc_build() {
  mc_build_upstream "$MODULE" "$VERSION" . "$MC_RESULT" "-X main.version=${VERSION#v}" 1 || return 1
  mc_stamp_write "$MC_RESULT.stamp" "$WANT"
}
mc_cached_build "$DIR" "${1:-}"
"""


def _zip_module(dest: Path, path: str, version: str, files: dict[str, str]) -> None:
    with zipfile.ZipFile(dest, "w") as z:
        for name, text in files.items():
            z.writestr(f"{path}@{version}/{name}", text)


# The database's name is also its direct address (https://NAME): a closed port on
# loopback, which is what sum.golang.org is to a machine that reaches only the
# module proxy. (An explicit URL in GOSUMDB would bypass the proxy altogether.)
SUMDB = "127.0.0.1:9"


def _ed25519(tmp: Path) -> tuple[bytes, callable]:
    """A fresh ed25519 key made by openssl: (raw public key, sign(message) -> raw signature)."""
    key = tmp / "sumdb.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    msg = tmp / "msg"

    def sign(message: bytes) -> bytes:
        msg.write_bytes(message)
        return subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", msg], check=True,
                              capture_output=True).stdout

    return der[-32:], sign


def _verifier(pub: bytes) -> str:
    """The GOSUMDB key of SUMDB for an ed25519 public key: NAME+keyhash+base64(0x01 || key)."""
    alg_pub = b"\x01" + pub
    keyhash = hashlib.sha256(SUMDB.encode() + b"\n" + alg_pub).digest()[:4]
    return f"{SUMDB}+{keyhash.hex()}+{base64.b64encode(alg_pub).decode()}"


def _checksum_db(tmp: Path, records: list[str]) -> tuple[str, dict[str, bytes]]:
    """A checksum database of `records` (go.sum lines of one module each): (GOSUMDB key, routes under /sumdb/NAME).

    The layout of golang.org/x/mod/sumdb: a record's leaf hash is
    SHA-256(0x00 || record), the tree of two leaves SHA-256(0x01 || left || right),
    the hash tile of level 0 holds the leaves, the signed tree head is a note
    ("go.sum database tree", size, root) signed as "— NAME base64(keyhash || sig)".
    """
    assert len(records) == 2
    pub, sign = _ed25519(tmp)
    verifier = _verifier(pub)
    keyhash = bytes.fromhex(verifier.split("+")[1])
    leaves = [hashlib.sha256(b"\x00" + r.encode()).digest() for r in records]
    root = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    tree = f"go.sum database tree\n{len(records)}\n{base64.b64encode(root).decode()}\n".encode()
    note = tree + "\n\u2014 {} {}\n".format(SUMDB, base64.b64encode(keyhash + sign(tree)).decode()).encode()
    base = f"/sumdb/{SUMDB}"
    routes = {f"{base}/supported": b"", f"{base}/latest": note, f"{base}/tile/8/0/000.p/2": leaves[0] + leaves[1]}
    for i, r in enumerate(records):
        path, version = r.split()[:2]
        routes[f"{base}/lookup/{path}@{version}"] = f"{i}\n{r}\n".encode() + note
    return verifier, routes


def _publish(proxy: Path, path: str, version: str, files: dict[str, str]) -> None:
    d = proxy / path / "@v"
    d.mkdir(parents=True, exist_ok=True)
    (d / "list").write_text(version + "\n")
    (d / f"{version}.info").write_text(json.dumps({"Version": version, "Time": "2026-01-01T00:00:00Z"}))
    (d / f"{version}.mod").write_text(files["go.mod"])
    _zip_module(d / f"{version}.zip", path, version, files)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[tuple[str, list[str], Path]]:
    """A GOPROXY on 127.0.0.1 serving greet v1.0.0 and hello v1.2.3 (whose go.sum pins greet)."""
    if not os.access(GO, os.X_OK):
        pytest.fail("no go toolchain: bash .ci/prereqs.sh says what to install")
    base = tmp_path_factory.mktemp("goproxy")
    root = base / "proxy"
    _publish(root, *GREET, {"go.mod": GREET_GO_MOD, "greet.go": GREET_GO})
    # hello's go.sum: greet's checksums as the go command computes them.
    scratch = base / "sums"
    scratch.mkdir()
    env = _go_env(base / "sums-mod", f"file://{root}")

    def go_sum(mod: tuple[str, str]) -> str:
        out = subprocess.run([GO, "mod", "download", "-json", "@".join(mod)], cwd=scratch, env=env,
                             capture_output=True, text=True, timeout=120)
        _chmod_rw(base / "sums-mod")
        meta = json.loads(out.stdout)
        assert "Error" not in meta, meta
        return f"{mod[0]} {mod[1]} {meta['Sum']}\n{mod[0]} {mod[1]}/go.mod {meta['GoModSum']}\n"

    greet_sum = go_sum(GREET)
    _publish(root, *HELLO, {"go.mod": HELLO_GO_MOD, "go.sum": greet_sum, "main.go": HELLO_MAIN})
    verifier, sumdb = _checksum_db(base, [greet_sum, go_sum(HELLO)])

    routes = {f"/{p.relative_to(root)}": p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with serve({**routes, **sumdb}) as host:
        yield host.base, host.requests, verifier


def _go_env(modcache: Path, goproxy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        GOMODCACHE=str(modcache),
        GOPATH=str(modcache.parent / "gopath"),   # the checksum database's tree head is kept in GOPATH/pkg/sumdb
        GOPROXY=goproxy,
        GONOSUMDB="example.test",   # the module is ours: no checksum database to ask
        GOPRIVATE="",
        GONOPROXY="",
        GOTOOLCHAIN="local",
        PATH=f"{Path(GO).parent}:{env.get('PATH', '')}",
    )
    return env


def _chmod_rw(tree: Path) -> None:
    """Go's module cache is read-only; make it removable."""
    for p in [tree, *tree.rglob("*")] if tree.exists() else []:
        if p.is_dir() and not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.fixture()
def cold(proxy, tmp_path) -> Iterator[dict]:
    """An empty module cache and an empty build-output cache for one test."""
    url, requests, verifier = proxy
    script = tmp_path / "hello.sh"
    script.write_text(SCRIPT)
    env = _go_env(tmp_path / "gomod", url)
    env.update(REPO=str(ROOT), CACHE=str(tmp_path / "cache"))
    requests.clear()
    yield {"env": env, "script": script, "requests": requests, "tmp": tmp_path, "sumdb": verifier}
    _chmod_rw(tmp_path / "gomod")


def _run(ctx: dict, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ctx["script"]), *args], env={**ctx["env"], **env},
                          capture_output=True, text=True, timeout=300)


def _zips(requests: list[str]) -> list[str]:
    return sorted(r for r in requests if r.endswith(".zip"))


def test_cold_module_cache_goes_online_for_what_is_missing(cold):
    assert not (cold["tmp"] / "gomod").exists()
    proc = _run(cold)
    assert proc.returncode == 0, proc.stderr
    binary = Path(proc.stdout.strip())
    assert binary == cold["tmp"] / "cache" / "hello-v1.2.3" / "hello"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "hello 1.2.3 greetings\n"
    # The module itself (go mod download: the JSON-on-stdout case) and its dependency (go build).
    assert _zips(cold["requests"]) == ["/example.test/greet/@v/v1.0.0.zip", "/example.test/hello/@v/v1.2.3.zip"]
    assert "not all modules are in Go's module cache: downloading them" in proc.stderr
    assert (binary.parent / "hello.stamp").read_text() == "example.test/hello@v1.2.3 CGO_ENABLED=0\n"


def test_warm_run_asks_neither_go_nor_the_proxy(cold):
    assert _run(cold).returncode == 0
    cold["requests"].clear()
    # GO pointing at false: any go invocation would fail the run.
    proc = _run(cold, GO="/bin/false")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("hello-v1.2.3/hello")
    assert cold["requests"] == []
    assert proc.stderr == ""


def test_rebuild_from_the_module_cache_needs_no_proxy(cold):
    first = _run(cold)
    assert first.returncode == 0, first.stderr
    binary = Path(first.stdout.strip())
    binary.unlink()
    cold["requests"].clear()
    # A proxy that cannot be reached: everything must come from the module cache.
    proc = _run(cold, GOPROXY="http://127.0.0.1:9")
    assert proc.returncode == 0, proc.stderr
    assert binary.is_file()
    assert "downloading" not in proc.stderr
    assert cold["requests"] == []


# k8s.sh's wrapper module, for the test module: requires it, seeded with a go.sum
# that lacks its dependency, as etcd's go.sum lacks etcd's sibling modules (local
# replaces upstream).
WRAPPER = r"""#!/usr/bin/env bash
set -euo pipefail
source "$REPO/.ci/pins.sh"
source "$REPO/.ci/lib/gomod.sh"
MC_LOG_NAME=wrapper.sh
mc_go_setup
up=$(mc_mod_dir example.test/hello@v1.2.3)
src=$CACHE/wrapper
rm -rf "$src"; mkdir -p "$src"
printf 'module microcloud.local/hello\n\ngo 1.22\n\nrequire example.test/hello v1.2.3\n' >"$src/go.mod"
grep -v '^example.test/greet ' "$up/go.sum" >"$src/go.sum" || true
cd "$src" && mc_offline_first "$GO" build -o "$CACHE/hello" example.test/hello
"""


def _wrapper(ctx: dict, **env: str) -> subprocess.CompletedProcess:
    script = ctx["tmp"] / "wrapper.sh"
    script.write_text(WRAPPER)
    return subprocess.run(["bash", str(script)], env={**ctx["env"], **env}, capture_output=True, text=True,
                          timeout=300)


def test_cached_modules_the_checksum_database_never_saw_go_online(cold):
    """etcd's case: modules in the cache but in no go.sum; offline, go asks the database directly."""
    first = _wrapper(cold)   # the database off for example.test: the cache is filled, nothing vouched for
    assert first.returncode == 0, first.stderr
    binary = cold["tmp"] / "cache" / "hello"
    binary.unlink()
    cold["requests"].clear()
    # The database switched on: directly it cannot be reached, through the proxy it can.
    db = {"GONOSUMDB": "", "GOSUMDB": cold["sumdb"]}
    proc = _wrapper(cold, **db)
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "hello dev greetings\n"
    assert ("wrapper.sh: not all modules in Go's module cache are checked against the checksum database: "
            "asking it through GOPROXY") in proc.stderr
    assert f"/sumdb/{SUMDB}/supported" in cold["requests"]
    assert f"/sumdb/{SUMDB}/lookup/example.test/greet@v1.0.0" in cold["requests"]
    assert _zips(cold["requests"]) == []   # the modules themselves came from the cache
    # Vouched for once (the answer is cached), the next build is offline again.
    binary.unlink()
    cold["requests"].clear()
    again = _wrapper(cold, **db)
    assert again.returncode == 0, again.stderr
    assert binary.is_file()
    assert cold["requests"] == []
    assert "checksum database" not in again.stderr


def test_going_online_for_the_checksum_database_still_verifies(cold, tmp_path):
    """The online retry asks the database; a tree head it cannot verify stops the build."""
    assert _wrapper(cold).returncode == 0
    binary = cold["tmp"] / "cache" / "hello"
    binary.unlink()
    cold["requests"].clear()
    # The same database name with another key: the served tree heads carry no signature it trusts.
    other = tmp_path / "other-key"
    other.mkdir()
    pub, _ = _ed25519(other)
    proc = _wrapper(cold, GONOSUMDB="", GOSUMDB=_verifier(pub))
    assert proc.returncode != 0
    assert f"/sumdb/{SUMDB}/lookup/example.test/hello@v1.2.3" in cold["requests"]
    assert "verifying" in proc.stderr and "no verifiable signatures" in proc.stderr
    assert not binary.exists()


def test_a_version_the_proxy_refuses_is_named(cold):
    proc = _run(cold, HELLO_VERSION="v9.9.9")
    assert proc.returncode != 0
    assert "hello.sh: could not download example.test/hello@v9.9.9:" in proc.stderr
    # The reason is the proxy's, not the offline attempt's.
    line = next(ln for ln in proc.stderr.splitlines() if "could not download" in ln)
    assert "GOPROXY=off" not in line
    assert "404" in line or "not found" in line.lower()
    assert "/example.test/hello/@v/v9.9.9.info" in cold["requests"]
    assert not (cold["tmp"] / "cache" / "hello-v9.9.9" / "hello").exists()


def test_cached_only_never_builds(cold):
    proc = _run(cold, "--cached-only")
    assert proc.returncode == 1
    assert "is not built (bash .ci/hello.sh builds it)" in proc.stderr
    assert cold["requests"] == []


@pytest.mark.parametrize("script", ["node-exporter.sh", "actionlint.sh", "registries-check.sh", "coredns.sh", "k8s.sh", "toolchain.sh"])
def test_every_go_module_build_uses_the_shared_helper(script):
    text = (ROOT / ".ci" / script).read_text()
    assert "lib/gomod.sh" in text
    # No private copy of the offline-first logic or of the module-dir lookup.
    assert "GOPROXY=off" not in text
    assert '"Dir": "' not in text
