"""Pinned files on the machine that runs Pulumi, which the program copies to the nodes.

``PinnedFile``: a ``path`` and an optional ``sha256`` that a different file
fails; ``K3sArtifact`` (services) adds a ``url`` the node itself fetches.
``ReleaseBinary``: a node binary of an exact ``version`` (CoreDNS,
node_exporter) from the first that is set of:

- ``path``: a file here (``sha256``, when set, must match);
- ``url`` + ``sha256``: the upstream release (a ``.tar.gz``/``.tgz`` archive
  or the bare binary), fetched once over https into the toolchain cache,
  digest-checked before anything is extracted or used, so a connected user
  needs no Go toolchain;
- neither: the local build of the project's ``.ci/`` script in the toolchain
  cache (how air-gapped sites and this project's own machines get it).

``ensure()`` makes the file present and checked, or raises one ConfigError
naming the key; the loader calls it before any resource exists.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import ssl
import tarfile
import tempfile
import urllib.error
import urllib.request
from typing import ClassVar, Optional

from pydantic import Field, field_validator, model_validator

from .base import _Model, check_pinned, check_pinned_path
from .errors import ConfigError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The digests a pin may name: what distributions publish (Flatcar's .DIGESTS and
# Debian's SHA512SUMS carry sha512; Rocky's and Alma's CHECKSUM, sha256).
DIGEST_HEX = {"sha256": SHA256, "sha512": re.compile(r"^[0-9a-f]{128}$")}
RELEASE = re.compile(r"^v\d+\.\d+\.\d+$")
DOWNLOAD_TIMEOUT = 60          # seconds without progress before a fetch gives up
DOWNLOAD_LIMIT = 512 << 20     # bytes; a release binary or its archive is far smaller


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def toolchain_cache() -> str:
    return os.environ.get("MICROCLOUD_TOOLCHAIN_CACHE") or os.path.expanduser("~/.cache/microcloud-toolchain")


def _abs_path(v: Optional[str]) -> Optional[str]:
    if v is not None and not v.startswith(("/", "~/")):
        raise ValueError(f"{v!r} must be an absolute path on the machine that runs Pulumi")
    return v


def hex_digest(v: Optional[str], algorithm: str = "sha256") -> Optional[str]:
    """``v`` lowercased when it is a hex digest of ``algorithm``; else the one-line reason."""
    if v is not None and not DIGEST_HEX[algorithm].match(v.lower()):
        raise ValueError(f"{v!r} is not a {algorithm} hex digest")
    return v.lower() if v else v


def https_url(v: Optional[str], what: str) -> Optional[str]:
    if v is not None:
        if v.startswith("http://"):
            # A pinned digest would catch a swapped file, but nothing else of a
            # plain-http source is trustworthy (redirects, mirrors, the name).
            raise ValueError(f"{v!r}: http:// is refused, what it serves can be changed on the way; use https://")
        if not v.startswith("https://"):
            raise ValueError(f"{v!r} is not an https URL")
        check_pinned_path(v, what)
    return v


class PinnedFile(_Model):
    """A file on the machine that runs Pulumi, optionally pinned by its sha256."""

    path: Optional[str] = Field(default=None, description="Absolute path of the file on the machine that runs Pulumi; it is copied to each node.")
    sha256: Optional[str] = Field(default=None, description="sha256 of the file; when set, a different file stops the run.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: Optional[str]) -> Optional[str]:
        return _abs_path(v)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: Optional[str]) -> Optional[str]:
        return hex_digest(v)

    def local_path(self) -> Optional[str]:
        return os.path.expanduser(self.path) if self.path else None

    def check_file(self, key: str, path: str, missing: str, mismatch: str = "") -> None:
        """``path`` exists and, when pinned, has the pinned digest; else a ConfigError naming ``key``."""
        if not os.path.isfile(path):
            raise ConfigError(f"{key}.path" if self.path else key, missing)
        if self.sha256:
            got = file_sha256(path)
            if got != self.sha256:
                raise ConfigError(f"{key}.sha256", f"{path} has sha256 {got}, not the pinned {self.sha256}{mismatch}")


class ReleaseBinary(PinnedFile):
    """A pinned node binary: from ``path``, from the release ``url`` + ``sha256``, or the local build."""

    # What differs per binary (set by each subclass).
    NAME: ClassVar[str] = ""          # the executable's file name (and the member of a release archive)
    LABEL: ClassVar[str] = ""         # for messages
    SCRIPT: ClassVar[str] = ""        # the .ci/ script that builds it from Go modules
    BUILD_DIR: ClassVar[str] = ""     # its directory in the toolchain cache, "{version}" filled in

    path: Optional[str] = Field(
        default=None,
        description="Absolute path of the binary on the machine that runs Pulumi. Default: the local build of the `.ci/` script for `version` in the toolchain cache.",
    )
    sha256: Optional[str] = Field(
        default=None,
        description="With `url`: sha256 of the downloaded file (required). With `path` or the local build: expected sha256 of the binary; when set, a different file stops the run.",
    )
    version: str = Field(default="", description="Exact release, e.g. `v1.12.1`.")
    url: Optional[str] = Field(
        default=None,
        description="https URL of the upstream release for `version`: its `.tar.gz`/`.tgz` archive (the binary is taken from it) or the bare binary. Needs `sha256` of that file (the release's checksums). Fetched once into the toolchain cache, checked before use; no Go toolchain needed.",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        check_pinned(v, f"{cls.LABEL} version")
        if not RELEASE.match(v):
            raise ValueError(f"{v!r} is not a {cls.LABEL} release like v1.12.1")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        return https_url(v, f"{cls.LABEL} download")

    @model_validator(mode="after")
    def _one_source(self) -> "ReleaseBinary":
        if self.url is not None:
            if self.path is not None:
                raise ValueError("give at most one of url and path")
            if self.sha256 is None:
                raise ValueError("a url needs its sha256; nothing is installed unchecked")
            if self.version.lstrip("v") not in self.url:
                raise ValueError(f"url {self.url!r} does not name version {self.version}")
        return self

    def local_path(self) -> str:
        if self.path:
            return os.path.expanduser(self.path)
        if self.url:
            return os.path.join(toolchain_cache(), "downloads", f"{self.sha256}", self.NAME)
        return os.path.join(toolchain_cache(), self.BUILD_DIR.format(version=self.version), self.NAME)

    def ensure(self, key: str) -> str:
        """The checked local binary (fetched first when it comes from ``url``); else a ConfigError naming ``key``."""
        if self.url:
            return _fetch_release(self, key)
        path = self.local_path()
        # The local build is reproducible, but only with the same Go: the stacks pin go1.26.8's.
        built = "" if self.path else (f"; the build of {self.SCRIPT} differs with another Go version: pin that build's"
                                      f" sha256, or set {key}.url + {key}.sha256 (the upstream release)")
        self.check_file(key, path, f"no {self.LABEL} binary at {path}; run bash {self.SCRIPT}, or set {key}.url + "
                        f"{key}.sha256 (the upstream release), or {key}.path", built)
        return path


# ---------------------------------------------------------------- fetching a release


def _https_opener() -> urllib.request.OpenerDirector:
    """urllib without its http/ftp/file handlers, and no redirect to anything but https."""

    class HttpsOnlyRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if not newurl.startswith("https://"):
                raise urllib.error.URLError(f"redirected to a non-https URL {newurl!r}")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.HTTPSHandler(context=ssl.create_default_context()), HttpsOnlyRedirect(),
                    urllib.request.HTTPErrorProcessor(), urllib.request.HTTPDefaultErrorHandler()):
        opener.add_handler(handler)
    return opener


def _download(url: str, key: str) -> bytes:
    try:
        with _https_opener().open(url, timeout=DOWNLOAD_TIMEOUT) as resp:
            data = resp.read(DOWNLOAD_LIMIT + 1)
    except urllib.error.HTTPError as e:
        raise ConfigError(f"{key}.url", f"{url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"{key}.url", f"could not fetch {url}: {reason}") from None
    if len(data) > DOWNLOAD_LIMIT:
        raise ConfigError(f"{key}.url", f"{url} is larger than {DOWNLOAD_LIMIT >> 20} MiB; not a release binary")
    return data


def _binary_from(data: bytes, spec: ReleaseBinary, key: str) -> bytes:
    """The executable: the archive's one regular file named ``spec.NAME``, or the download itself."""
    if not re.search(r"\.(tar\.gz|tgz|tar)$", spec.url or ""):
        return data
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and os.path.basename(m.name) == spec.NAME]
            if len(members) != 1:
                raise ConfigError(f"{key}.url", f"{spec.url} holds {len(members)} files named {spec.NAME}, not one")
            f = tar.extractfile(members[0])
            assert f is not None
            return f.read()
    except tarfile.TarError as e:
        raise ConfigError(f"{key}.url", f"{spec.url} is not a readable archive: {e}") from None


def _fetch_release(spec: ReleaseBinary, key: str) -> str:
    path = spec.local_path()
    stamp = f"{path}.sha256"
    # Cached: the binary must still be the one extracted from the checked download.
    if os.path.isfile(path) and os.path.isfile(stamp):
        with open(stamp) as f:
            if f.read().strip() == file_sha256(path):
                return path
    data = _download(spec.url or "", key)
    got = hashlib.sha256(data).hexdigest()
    if got != spec.sha256:
        raise ConfigError(f"{key}.sha256", f"{spec.url} has sha256 {got}, not the pinned {spec.sha256}; nothing was kept")
    binary = _binary_from(data, spec, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{spec.NAME}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(binary)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    with open(f"{stamp}.tmp", "w") as f:
        f.write(hashlib.sha256(binary).hexdigest() + "\n")
    os.replace(f"{stamp}.tmp", stamp)
    return path
