"""The check an OS image passes on the machine that runs Pulumi before a base volume is made from it.

One POSIX shell script per image (ImageStore runs it as a local command).
It prints, on stdout and alone, the path of a file whose digest is the
pinned one; the libvirt provider uploads that file into the pool (it
streams a local path to a remote libvirt host too):

- an https source is fetched into a content-addressed cache on this machine,
  ``$MICROCLOUD_IMAGE_CACHE`` (default ``~/.cache/microcloud/images``), as
  ``<algorithm>-<digest>.img``: to a temporary file beside it (curl https
  only, redirects too), the digest checked, then renamed into place read-only.
  A cached file with the right digest is used as it is (no download); one
  with another digest is removed and fetched again;
- a local path is checked where it is and printed as it is.

A mismatch fails naming the OS, the source and both digests, and leaves no
file behind. The cache directory is read from the environment when the
script runs, so the script is the same on every machine that runs the stack.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

DIGEST_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}


@dataclass(frozen=True)
class ImageCheckSpec:
    os_name: str      # "flatcar": names the image in every message
    source: str       # https URL, or an absolute path on this machine
    algorithm: str    # "sha256" | "sha512"
    digest: str       # lowercase hex

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]+", self.os_name):
            raise ValueError(f"image check: OS name {self.os_name!r} must be lowercase letters and digits")
        pattern = DIGEST_HEX.get(self.algorithm)
        if pattern is None:
            raise ValueError(f"image check {self.os_name}: algorithm {self.algorithm!r} is not sha256 or sha512")
        if not pattern.match(self.digest):
            raise ValueError(f"image check {self.os_name}: {self.digest!r} is not a lowercase {self.algorithm} hex digest")
        if not (self.source.startswith("https://") or self.source.startswith("/")):
            raise ValueError(f"image check {self.os_name}: source {self.source!r} is neither an https URL nor an absolute path")

    @property
    def remote(self) -> bool:
        return self.source.startswith("https://")


_PRELUDE = r"""set -eu
fail() { echo "microcloud: image $os: $*" >&2; exit 1; }
digest_of() { "${algo}sum" < "$1" | cut -d' ' -f1; }
"""

_LOCAL = r"""[ -f "$src" ] || fail "no file $src on this machine"
got=$(digest_of "$src") || fail "could not read $src"
[ "$got" = "$want" ] || fail "$src has $algo $got, not the pinned $want; nothing was used"
printf '%s\n' "$src"
"""

_REMOTE = r"""cache=${MICROCLOUD_IMAGE_CACHE:-$HOME/.cache/microcloud/images}
dest="$cache/$algo-$want.img"
if [ -f "$dest" ]; then
  if [ "$(digest_of "$dest")" = "$want" ]; then printf '%s\n' "$dest"; exit 0; fi
  echo "microcloud: image $os: the cached $dest is not the pinned file any more: fetching it again" >&2
  rm -f "$dest"
fi
command -v curl >/dev/null 2>&1 || fail "curl is not installed on this machine; it fetches $src"
mkdir -p "$cache"
tmp=$(mktemp "$cache/.fetch-$os.XXXXXX")
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
curl -fsSL --proto =https --proto-redir =https --retry 3 --connect-timeout 30 -o "$tmp" "$src" ||
  fail "could not fetch $src (curl exit $?); nothing was kept"
got=$(digest_of "$tmp")
[ "$got" = "$want" ] || fail "$src has $algo $got, not the pinned $want; nothing was kept"
chmod 0444 "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
printf '%s\n' "$dest"
"""


def render_image_check(spec: ImageCheckSpec) -> str:
    """The script: stdout is the checked file's path and nothing else; every message goes to stderr."""
    head = (
        f"# microcloud: image {spec.os_name}: {spec.algorithm} {spec.digest} (components/render/image_check.py)\n"
        + _PRELUDE
        + f"os={spec.os_name}\nsrc={shlex.quote(spec.source)}\nalgo={spec.algorithm}\nwant={spec.digest}\n"
    )
    return head + (_REMOTE if spec.remote else _LOCAL)
