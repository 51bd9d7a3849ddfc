"""Every fallback branch of the toolchain: which CLI is picked and why, and where each plugin comes from.

The CLI (.ci/toolchain.sh, run in a copy of .ci/ so the checkout's pointer is
never touched): a `pulumi` on PATH at or above the pinned SDK is used as it
is, an older one is named and passed over for the cached build; with nothing
cached, the official release tarball comes from a download host on
127.0.0.1 (https, a CA of the test's own through CURL_CA_BUNDLE), is
checksum-verified, and a refusing host, a wrong checksum and air-gapped mode
each end where they should. Stand-in CLIs (shell scripts that answer
`version`) stand for the real one; nothing is built.

The plugins (.ci/plugins.sh with the real CLI, tier engine): installed ->
the plugin directory -> the CLI's own download (`pulumi plugin install`,
pointed at 127.0.0.1 with PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES, the CLI's own
knob) -> one message naming every plugin still missing and why: refused,
timed out, or not asked in air-gapped mode.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.cli import require_toolchain
from support.loopback import Hang, Status, serve

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    out = subprocess.run(["bash", "-c", 'source .ci/pins.sh; echo "$PULUMI_VERSION $CLI_VERSION"; printf "%s\\n" "${PROVIDERS[@]}" "$KUBERNETES"'],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    sdk, cli = out[0].split()
    return {"sdk": sdk, "cli": cli, "plugins": [ln for ln in out[1:] if ln]}


PINS = _pins()
SDK, CLI = PINS["sdk"], PINS["cli"]
CLI_BINARIES = ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python")


def _stand_in(d: Path, version: str) -> Path:
    """A directory with a stand-in CLI reporting ``version`` and its language host files."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "pulumi").write_text(f'#!/bin/sh\ncase "$1" in version) echo {version} ;; *) echo "stand-in pulumi $*" ;; esac\n')
    for name in CLI_BINARIES[1:]:
        (d / name).write_text("#!/bin/sh\nexit 0\n")
    for f in d.iterdir():
        f.chmod(0o755)
    return d


def _repo_copy(tmp: Path) -> Path:
    """A checkout with .ci/ and requirements.txt only: toolchain.sh writes its pointer there, not in ours."""
    repo = tmp / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / ".ci", repo / ".ci")
    shutil.copy(ROOT / "requirements.txt", repo / "requirements.txt")
    return repo


def _toolchain(tmp: Path, path_dirs: list[Path], **env: str) -> subprocess.CompletedProcess:
    repo = tmp / "repo" if (tmp / "repo").exists() else _repo_copy(tmp)
    (tmp / "plugins").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "MICROCLOUD_", "CURL_"))}
    base.update({
        "PATH": ":".join([*map(str, path_dirs), "/usr/bin", "/bin"]),
        "MICROCLOUD_TOOLCHAIN_CACHE": str(tmp / "cache"),
        "MICROCLOUD_PLUGIN_DIR": str(tmp / "plugins"),
        "MICROCLOUD_AIRGAPPED": "1",
        "GO": "/bin/false",  # no Go build may start: each case ends before it or names the failure
        # Nothing may leave the machine, whatever the case asks for.
        "MICROCLOUD_PULUMI_RELEASES": "https://127.0.0.1:9/releases",
        **env,
    })
    return subprocess.run(["bash", str(repo / ".ci" / "toolchain.sh")], env=base, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _pointer(tmp: Path) -> str:
    return (tmp / "repo" / ".pulumi-home" / "toolchain-bin").read_text().strip()


pytestmark = pytest.mark.toolchain


# ------------------------------------------------------------------ the CLI
def test_a_newer_cli_on_path_is_used_as_it_is(tmp_path):
    newer = _stand_in(tmp_path / "newer", "v3.299.0")
    res = _toolchain(tmp_path, [newer])
    assert res.returncode == 0, res.stderr
    assert f"toolchain.sh: using pulumi v3.299.0 on PATH ({newer}): at or above the pinned SDK {SDK}" in res.stderr
    assert _pointer(tmp_path) == str(newer)
    assert "toolchain.sh: mode: air-gapped" in res.stderr


def test_the_sdk_version_itself_is_enough(tmp_path):
    exact = _stand_in(tmp_path / "exact", f"v{SDK}")
    res = _toolchain(tmp_path, [exact])
    assert res.returncode == 0, res.stderr
    assert _pointer(tmp_path) == str(exact)


def test_an_older_cli_on_path_is_named_and_passed_over_for_the_cache(tmp_path):
    older = _stand_in(tmp_path / "older", "v3.100.0")
    cached = tmp_path / "cache" / f"pulumi-v{CLI}"
    _stand_in(cached / "bin", f"v{CLI}")
    (cached / "stamp").write_text(f"version=v{CLI}\nsource=official\n")
    res = _toolchain(tmp_path, [older])
    assert res.returncode == 0, res.stderr
    assert f"pulumi on PATH ({older}/pulumi) is v3.100.0, older than the pinned SDK {SDK}: not used" in res.stderr
    assert f"using the cached pulumi v{CLI}" in res.stderr
    assert _pointer(tmp_path) == str(cached / "bin")


def _release(version: str, good_sum: bool = True) -> dict[str, bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in CLI_BINARIES:
            body = (f'#!/bin/sh\ncase "$1" in version) echo v{version} ;; *) echo "official pulumi $*" ;; esac\n'
                    if name == "pulumi" else "#!/bin/sh\nexit 0\n").encode()
            info = tarfile.TarInfo(f"pulumi/{name}")
            info.size, info.mode = len(body), 0o755
            tar.addfile(info, io.BytesIO(body))
    tgz = buf.getvalue()
    digest = hashlib.sha256(tgz if good_sum else b"something else").hexdigest()
    name = f"pulumi-v{version}-linux-x64.tar.gz"
    return {f"/releases/{name}": tgz, f"/releases/pulumi-{version}-checksums.txt": f"{digest}  {name}\n".encode()}


@pytest.fixture()
def release_host(tmp_path):
    routes = _release(CLI)
    with serve(routes, tls_dir=tmp_path / "tls") as host:
        yield host


def test_connected_with_nothing_cached_takes_the_official_release_checksum_verified(tmp_path, release_host):
    res = _toolchain(tmp_path, [], MICROCLOUD_AIRGAPPED="0", MICROCLOUD_PULUMI_RELEASES=release_host.base + "/releases",
                     CURL_CA_BUNDLE=release_host.ca)
    assert res.returncode == 0, res.stderr
    assert "toolchain.sh: mode: connected" in res.stderr
    assert f"downloading the official Pulumi v{CLI} release" in res.stderr
    cached = tmp_path / "cache" / f"pulumi-v{CLI}"
    assert (cached / "stamp").read_text() == f"version=v{CLI}\nsource=official\n"
    assert _pointer(tmp_path) == str(cached / "bin")
    assert f"/releases/pulumi-{CLI}-checksums.txt" in release_host.requests


def test_a_wrong_checksum_is_refused(tmp_path, release_host):
    release_host.routes.update(_release(CLI, good_sum=False))
    res = _toolchain(tmp_path, [], MICROCLOUD_AIRGAPPED="0", MICROCLOUD_PULUMI_RELEASES=release_host.base + "/releases",
                     CURL_CA_BUNDLE=release_host.ca)
    assert res.returncode != 0
    assert "checksum mismatch for the official tarball" in res.stderr, res.stderr
    assert not (tmp_path / "cache" / f"pulumi-v{CLI}" / "stamp").exists()


def test_a_refusing_release_host_falls_through_to_the_go_build_and_is_not_asked_again(tmp_path, release_host):
    release_host.routes.clear()  # everything 404
    env = dict(MICROCLOUD_AIRGAPPED="0", MICROCLOUD_PULUMI_RELEASES=release_host.base + "/releases", CURL_CA_BUNDLE=release_host.ca)
    res = _toolchain(tmp_path, [], **env)
    assert res.returncode != 0
    assert "the official Pulumi release download is unreachable; building from Go modules" in res.stderr
    assert "/bin/false does not run" in res.stderr, res.stderr  # the Go build was next
    assert (tmp_path / "cache" / "refused" / "official").is_file()
    asked = len(release_host.requests)
    again = _toolchain(tmp_path, [], **env)
    assert "refused within the last day" in again.stderr and len(release_host.requests) == asked


def test_air_gapped_never_asks_the_release_host(tmp_path, release_host):
    res = _toolchain(tmp_path, [], MICROCLOUD_PULUMI_RELEASES=release_host.base + "/releases", CURL_CA_BUNDLE=release_host.ca)
    assert res.returncode != 0
    assert "air-gapped: not asking for the official Pulumi release" in res.stderr
    assert release_host.requests == []


def test_a_plain_http_release_mirror_is_refused(tmp_path):
    res = _toolchain(tmp_path, [], MICROCLOUD_AIRGAPPED="0", MICROCLOUD_PULUMI_RELEASES="http://127.0.0.1:9/releases")
    assert res.returncode != 0
    assert "MICROCLOUD_PULUMI_RELEASES=http://127.0.0.1:9/releases is not an https URL" in res.stderr


# ------------------------------------------------------------------ the plugins (the real CLI)
def _real_cli() -> Path:
    return require_toolchain()


def _fake_plugin(name: str) -> bytes:
    return f"#!/bin/sh\necho stand-in {name} plugin\n".encode()


def _plugin_tgz(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = _fake_plugin(name)
        info = tarfile.TarInfo(f"pulumi-resource-{name}")
        info.size, info.mode = len(body), 0o755
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def _plugins(tmp: Path, host_base: str, in_dir: list[str], **env: str) -> subprocess.CompletedProcess:
    """plugins.sh with an empty PULUMI_HOME and a plugin directory holding stand-ins for ``in_dir``."""
    bin_dir = _real_cli()
    plugin_dir = tmp / "plugins"
    for spec in PINS["plugins"]:
        name, ver = spec.split()
        if name in in_dir:
            f = plugin_dir / f"{name}-v{ver}" / f"pulumi-resource-{name}"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(_fake_plugin(name))
            f.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "MICROCLOUD_"))}
    base.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        PULUMI_HOME=str(tmp / "home"),
        PULUMI_SKIP_UPDATE_CHECK="true",
        MICROCLOUD_PLUGIN_DIR=str(plugin_dir),
        MICROCLOUD_TOOLCHAIN_CACHE=str(tmp / "cache"),
        # The CLI's own override: every plugin download goes to the host on 127.0.0.1.
        PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES=f".*={host_base}",
        MICROCLOUD_PLUGIN_DOWNLOAD_TIMEOUT="5",
        **env,
    )
    return subprocess.run(["bash", str(ROOT / ".ci" / "plugins.sh")], env=base, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def _installed(tmp: Path, name: str) -> Path:
    ver = next(s.split()[1] for s in PINS["plugins"] if s.split()[0] == name)
    return tmp / "home" / "plugins" / f"resource-{name}-v{ver}" / f"pulumi-resource-{name}"


ALL = [s.split()[0] for s in PINS["plugins"]]
VER = dict(s.split() for s in PINS["plugins"])
K8S_VER = VER["kubernetes"]
K8S_TGZ = f"/pulumi-resource-kubernetes-v{K8S_VER}-linux-amd64.tar.gz"
K8S_ARCHIVE = _plugin_tgz("kubernetes")  # once: gzip stamps the time, so every build differs


def _sums(tmp: Path, pins: dict[str, str]) -> dict[str, str]:
    """The environment of a site whose MICROCLOUD_PLUGIN_SUMS pins ``pins`` (file name -> sha256)."""
    f = tmp / "site-plugin-sums"
    f.write_text("".join(f"{digest}  {name}\n" for name, digest in pins.items()))
    return {"MICROCLOUD_PLUGIN_SUMS": str(f)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.engine
def test_a_plugin_the_directory_lacks_is_downloaded_by_the_cli_checked_against_its_pin(tmp_path):
    with serve({K8S_TGZ: K8S_ARCHIVE}) as host:
        res = _plugins(tmp_path, host.base, [n for n in ALL if n != "kubernetes"],
                       **_sums(tmp_path, {K8S_TGZ[1:]: _sha(K8S_ARCHIVE)}))
    assert res.returncode == 0, res.stderr
    assert (f"plugins: kubernetes v{K8S_VER} is not in {tmp_path / 'plugins'}: downloading it with the CLI (at most 5s), "
            "checked against its pinned sha256") in res.stderr
    assert f"plugins: downloaded kubernetes v{K8S_VER}" in res.stderr
    assert host.requests == [K8S_TGZ]
    assert _installed(tmp_path, "kubernetes").read_bytes() == _fake_plugin("kubernetes")
    for name in ALL:  # the others from the directory, with --file
        assert _installed(tmp_path, name).is_file(), name


@pytest.mark.engine
def test_refused_and_timed_out_downloads_are_named_in_one_message(tmp_path):
    ver = VER
    routes = {f"/pulumi-resource-tls-v{ver['tls']}-linux-amd64.tar.gz": Hang(),
              f"/pulumi-resource-random-v{ver['random']}-linux-amd64.tar.gz": Status(403)}
    with serve(routes) as host:
        res = _plugins(tmp_path, host.base, ["command", "libvirt", "kubernetes"],
                       **_sums(tmp_path, {r[1:]: "a" * 64 for r in routes}))
    assert res.returncode == 3, res.stderr
    missing = [ln for ln in res.stderr.splitlines() if ln.startswith("plugins: missing")]
    assert missing == [f"plugins: missing 2 provider plugin(s): random {ver['random']}, tls {ver['tls']}."], res.stderr
    lines = res.stderr.splitlines()
    rnd = next(ln for ln in lines if ln.startswith(f"plugins:   {tmp_path / 'plugins'}/random-v"))
    tls = next(ln for ln in lines if ln.startswith(f"plugins:   {tmp_path / 'plugins'}/tls-v"))
    assert "download failed:" in rnd and "403" in rnd, rnd
    assert "download timed out after 5s" in tls, tls
    assert _installed(tmp_path, "kubernetes").is_file() and not _installed(tmp_path, "tls").exists()


@pytest.mark.engine
def test_air_gapped_asks_nothing_and_names_every_missing_plugin(tmp_path):
    with serve({K8S_TGZ: K8S_ARCHIVE}) as host:
        res = _plugins(tmp_path, host.base, ["command"], MICROCLOUD_AIRGAPPED="1")
    assert res.returncode == 3, res.stderr
    assert host.requests == []
    missing = [ln for ln in res.stderr.splitlines() if ln.startswith("plugins: missing")]
    assert len(missing) == 1 and all(n in missing[0] for n in ALL if n != "command"), res.stderr
    assert res.stderr.count("(not in the plugin directory; air-gapped: not downloaded)") == len(ALL) - 1


@pytest.mark.engine
def test_installed_plugins_ask_nothing(tmp_path):
    pinned = _sums(tmp_path, {K8S_TGZ[1:]: _sha(K8S_ARCHIVE)})
    with serve({K8S_TGZ: K8S_ARCHIVE}) as host:
        first = _plugins(tmp_path, host.base, [n for n in ALL if n != "kubernetes"], **pinned)
        assert first.returncode == 0, first.stderr
        host.requests.clear()
        shutil.rmtree(tmp_path / "plugins")
        again = _plugins(tmp_path, host.base, [], **pinned)
    assert again.returncode == 0, again.stderr
    assert host.requests == [] and again.stderr == ""


@pytest.mark.engine
def test_a_download_without_a_pin_is_not_asked_for_unless_taken_unchecked(tmp_path):
    with serve({K8S_TGZ: K8S_ARCHIVE}) as host:
        refused = _plugins(tmp_path, host.base, [n for n in ALL if n != "kubernetes"])
        assert refused.returncode == 3, refused.stderr
        assert host.requests == [], "an unpinned archive was downloaded"
        assert (f"plugins:   {tmp_path / 'plugins'}/kubernetes-v{K8S_VER}/pulumi-resource-kubernetes  (not in the plugin "
                f"directory, and no pinned sha256 of {K8S_TGZ[1:]} (.ci/plugin-sums, MICROCLOUD_PLUGIN_SUMS): not downloaded)"
                ) in refused.stderr, refused.stderr
        assert not _installed(tmp_path, "kubernetes").exists()
        taken = _plugins(tmp_path, host.base, [], MICROCLOUD_PLUGIN_UNPINNED="1")
    assert taken.returncode == 0, taken.stderr
    assert f"{K8S_TGZ[1:]} has no pinned sha256: downloading it unchecked (MICROCLOUD_PLUGIN_UNPINNED=1)" in taken.stderr
    assert host.requests == [K8S_TGZ] and _installed(tmp_path, "kubernetes").read_bytes() == _fake_plugin("kubernetes")


@pytest.mark.engine
def test_a_download_that_is_not_its_pinned_archive_installs_nothing(tmp_path):
    with serve({K8S_TGZ: K8S_ARCHIVE}) as host:
        res = _plugins(tmp_path, host.base, [n for n in ALL if n != "kubernetes"], **_sums(tmp_path, {K8S_TGZ[1:]: "0" * 64}))
    assert res.returncode == 3, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith(f"plugins:   {tmp_path / 'plugins'}/kubernetes-v"))
    assert "download failed:" in line and f"invalid checksum, expected {'0' * 64}" in line, line
    assert host.requests == [K8S_TGZ] and not _installed(tmp_path, "kubernetes").exists()
    assert not (tmp_path / "home" / "plugins" / f"resource-kubernetes-v{K8S_VER}").exists()


@pytest.mark.engine
def test_a_directory_binary_is_held_to_its_pin_and_a_swapped_install_is_replaced(tmp_path):
    """The site pins its own builds: a matching binary installs, a different one never does, and an
    installed binary that changed afterwards is removed and installed again from the directory."""
    good = _sha(_fake_plugin("command"))
    pins = {f"{n}-v{VER[n]}/pulumi-resource-{n}": _sha(_fake_plugin(n)) for n in ALL}
    pins[f"libvirt-v{VER['libvirt']}/pulumi-resource-libvirt"] = "0" * 64
    env = {**_sums(tmp_path, pins), "MICROCLOUD_AIRGAPPED": "1"}
    with serve({}) as host:
        first = _plugins(tmp_path, host.base, ALL, **env)
        assert first.returncode == 3, first.stderr
        assert f"plugins: installing command v{VER['command']} from {tmp_path / 'plugins'}/command-v{VER['command']}/pulumi-resource-command (its pinned sha256)" in first.stderr
        libvirt = next(ln for ln in first.stderr.splitlines() if ln.startswith(f"plugins:   {tmp_path / 'plugins'}/libvirt-v"))
        assert f"has sha256 {_sha(_fake_plugin('libvirt'))}, not the pinned {'0' * 64}: not installed" in libvirt, libvirt
        assert not _installed(tmp_path, "libvirt").exists() and _installed(tmp_path, "command").is_file()

        # Someone swaps the installed command plugin: the next run puts the pinned one back.
        swapped = _installed(tmp_path, "command")
        swapped.write_bytes(b"#!/bin/sh\necho not the plugin\n")
        again = _plugins(tmp_path, host.base, ["command"], **env)
    assert f"installed command v{VER['command']} is not its pinned binary" in again.stderr, again.stderr
    assert "removed, installing it again" in again.stderr
    assert _sha(_installed(tmp_path, "command").read_bytes()) == good
    assert host.requests == []


@pytest.mark.engine
def test_an_unpinned_directory_binary_is_installed_and_said_to_be_unpinned(tmp_path):
    """This project's own machines: plugins built here from upstream source, pinned by no one."""
    with serve({}) as host:
        res = _plugins(tmp_path, host.base, ALL, MICROCLOUD_AIRGAPPED="1")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("(no pinned sha256: the site's own binary; MICROCLOUD_PLUGIN_SUMS pins it)") == len(ALL), res.stderr


# ------------------------------------------------------------------ the scripts themselves
CI_SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in [*(ROOT / ".ci").glob("*.sh"), *(ROOT / ".ci" / "lib").glob("*.sh"),
                                                              ROOT / ".ci" / "run", ROOT / ".ci" / "dev"])


@pytest.mark.parametrize("script", CI_SCRIPTS)
def test_every_ci_script_passes_shellcheck(script):
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is not installed; run .ci/install.sh (Debian package shellcheck)"
    res = subprocess.run([tool, "-x", "-P", "SCRIPTDIR", "-P", ".ci", script], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
