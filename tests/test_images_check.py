"""The image check, for real: the rendered script run by /bin/sh against an https host on 127.0.0.1.

What ImageStore runs before a base volume is made (components/render/image_check.py):
a good digest fetches once into the content-addressed cache and prints its
path, a second run downloads nothing, a wrong digest fails naming the OS, the
source and both digests and leaves no file, a cached file that changed is
fetched again, http (the source or a redirect) is never followed, and a local
path is checked where it is. curl trusts only the test's own CA
(CURL_CA_BUNDLE); nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from components.config import ImageConfig
from components.config.artifacts import DIGEST_HEX as CONFIG_DIGESTS
from components.render.image_check import DIGEST_HEX, ImageCheckSpec, render_image_check
from components.specs import image_check_script
from support.loopback import Redirect, serve

pytestmark = pytest.mark.validators

IMAGE = b"QFI\xfb" + os.urandom(4096)  # a qcow2 magic, then noise: the script only hashes it
PATH = "/amd64-usr/4593.2.4/flatcar_production_qemu_image.img"


def sha(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


@pytest.fixture()
def host(tmp_path):
    # /to-http sends to a plain-http host that serves the very same image: only the scheme is wrong.
    with serve({PATH: IMAGE}) as plain, serve({PATH: IMAGE}, tls_dir=tmp_path / "tls") as h:
        h.routes["/to-http"] = Redirect(plain.base + PATH)
        h.plain = plain
        yield h


def run(script: str, tmp_path: Path, host=None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "MICROCLOUD_IMAGE_CACHE": str(tmp_path / "cache")}
    if host is not None:
        env["CURL_CA_BUNDLE"] = host.ca
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def remote(host, algorithm: str = "sha512", digest: str | None = None, path: str = PATH) -> str:
    image = ImageConfig(source=host.base + path, version="4593.2.4", **{algorithm: digest or sha(algorithm, IMAGE)})
    return image_check_script("flatcar", image)


def cached(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else []


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_a_good_digest_is_fetched_once_into_the_cache(host, tmp_path, algorithm):
    first = run(remote(host, algorithm), tmp_path, host)
    assert first.returncode == 0, first.stderr
    want = tmp_path / "cache" / f"{algorithm}-{sha(algorithm, IMAGE)}.img"
    assert first.stdout == f"{want}\n" and first.stderr == ""
    assert want.read_bytes() == IMAGE and cached(tmp_path) == [want]  # no temporary file left
    assert want.stat().st_mode & 0o222 == 0, "the checked file is read-only"
    assert host.requests == [PATH]

    again = run(remote(host, algorithm), tmp_path, host)
    assert again.returncode == 0 and again.stdout == first.stdout and again.stderr == ""
    assert host.requests == [PATH], "the second run downloaded again"


def test_a_wrong_digest_fails_names_both_and_keeps_nothing(host, tmp_path):
    pinned = "0" * 128
    res = run(remote(host, digest=pinned), tmp_path, host)
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.strip() == (f"microcloud: image flatcar: {host.base}{PATH} has sha512 {sha('sha512', IMAGE)}, "
                                  f"not the pinned {pinned}; nothing was kept")
    assert cached(tmp_path) == []


def test_a_cached_file_that_changed_is_fetched_again(host, tmp_path):
    assert run(remote(host), tmp_path, host).returncode == 0
    [dest] = cached(tmp_path)
    dest.chmod(0o644)
    dest.write_bytes(b"swapped")
    res = run(remote(host), tmp_path, host)
    assert res.returncode == 0, res.stderr
    assert "is not the pinned file any more: fetching it again" in res.stderr
    assert dest.read_bytes() == IMAGE and host.requests == [PATH, PATH]


def test_a_missing_file_fails_and_keeps_nothing(host, tmp_path):
    res = run(remote(host, path="/amd64-usr/4593.2.4/nothing.img"), tmp_path, host)
    assert res.returncode != 0 and res.stdout == ""
    assert "microcloud: image flatcar: could not fetch" in res.stderr and "nothing was kept" in res.stderr, res.stderr
    assert cached(tmp_path) == []


def test_a_redirect_to_http_is_not_followed(host, tmp_path):
    res = run(remote(host, path="/to-http"), tmp_path, host)
    assert res.returncode != 0, res.stdout
    assert "could not fetch" in res.stderr, res.stderr
    assert host.requests == ["/to-http"] and host.plain.requests == [] and cached(tmp_path) == []


def test_an_http_source_never_reaches_the_script():
    with pytest.raises(ValueError, match="http:// is refused"):
        ImageConfig(source="http://127.0.0.1:9/x.img", version="1", sha256="0" * 64)
    with pytest.raises(ValueError, match="neither an https URL nor an absolute path"):
        ImageCheckSpec(os_name="flatcar", source="http://127.0.0.1:9/x.img", algorithm="sha256", digest="0" * 64)


def test_a_local_path_is_checked_where_it_is(tmp_path):
    image = tmp_path / "debian12.qcow2"
    image.write_bytes(IMAGE)
    good = ImageConfig(source=str(image), version="12-1", sha256=sha("sha256", IMAGE))
    res = run(image_check_script("debian12", good), tmp_path)
    assert res.returncode == 0 and res.stdout == f"{image}\n" and res.stderr == "", res
    assert cached(tmp_path) == [], "a local source is not copied"

    bad = ImageConfig(source=str(image), version="12-1", sha256="1" * 64)
    res = run(image_check_script("debian12", bad), tmp_path)
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.strip() == (f"microcloud: image debian12: {image} has sha256 {sha('sha256', IMAGE)}, "
                                  f"not the pinned {'1' * 64}; nothing was used")
    missing = ImageConfig(source=str(tmp_path / "gone.qcow2"), version="12-1", sha256="1" * 64)
    res = run(image_check_script("debian12", missing), tmp_path)
    assert res.returncode != 0 and f"no file {tmp_path / 'gone.qcow2'} on this machine" in res.stderr


def test_a_source_with_shell_characters_stays_one_word(tmp_path):
    odd = tmp_path / "it's $(touch pwned) image.qcow2"
    odd.write_bytes(IMAGE)
    res = run(render_image_check(ImageCheckSpec("alma9", str(odd), "sha256", sha("sha256", IMAGE))), tmp_path)
    assert res.returncode == 0 and res.stdout == f"{odd}\n", res.stderr
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_the_renderer_and_the_config_accept_the_same_digests():
    assert {a: p.pattern for a, p in DIGEST_HEX.items()} == {a: p.pattern for a, p in CONFIG_DIGESTS.items()}
    with pytest.raises(ValueError, match="not a lowercase sha512 hex digest"):
        ImageCheckSpec(os_name="flatcar", source="/x.img", algorithm="sha512", digest="A" * 128)
