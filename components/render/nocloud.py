"""The NoCloud seed of a cloud-init node: an ISO 9660 image labelled ``cidata``.

Built here, in Python, instead of by the libvirt provider's CloudInitDisk,
which uploads its ISO and then reads it back and failed that read-back
intermittently on real runs ("corrupted-image: EOF", upstream
terraform-provider-libvirt issue 973). The program writes the image to a file
named after the hash of its three documents and uploads it as a plain volume.

The file's NAME is a pure function of the documents (pycdlib stamps the
image with the clock, so its bytes are not): the volume's ``source`` input,
and so the plan, changes exactly when a document does.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import pycdlib

LABEL = "cidata"
FILES = ("meta-data", "user-data", "network-config")


def seed_digest(docs: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode() + b"\0" + docs[name].encode() + b"\0")
    return h.hexdigest()


def render_seed_iso(docs: dict[str, str]) -> bytes:
    """ISO 9660 + Joliet + Rock Ridge image with meta-data, user-data and network-config."""
    missing = [n for n in FILES if n not in docs]
    if missing:
        raise ValueError(f"NoCloud seed: missing {', '.join(missing)}")
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL, sys_ident="LINUX")
    for name in FILES:
        data = docs[name].encode()
        short = name.replace("-", "").upper()[:8]
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            iso_path=f"/{short}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
            file_mode=0o100444,
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write_seed_iso(docs: dict[str, str], directory: str, stem: str) -> str:
    """Write the seed to ``directory/stem-<digest>.iso`` (once) and return its path.

    The digest in the name makes the path, and so the volume's ``source``
    input, change exactly when the documents do.
    """
    path = os.path.join(directory, f"{stem}-{seed_digest(docs)[:16]}.iso")
    if not os.path.exists(path):
        # The seed holds the node's private host key: this user's alone (mkstemp makes it 0600).
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(render_seed_iso(docs))
        os.replace(tmp, path)
    return path
