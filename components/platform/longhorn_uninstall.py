"""Longhorn's uninstall on destroy: its chart's pre-delete hook, run as a Job through a small Kubernetes REST client.

``helm.v4.Chart`` never runs Helm hooks, so the ``longhorn-uninstall``
command (components/platform/longhorn.py) runs this on delete, as
``python -c 'from components.platform import uninstall_longhorn_main as m; m()'``:
that string is in every stack's state, so ``components.platform`` keeps
exporting ``uninstall_longhorn_main``. Standard library only besides PyYAML:
it talks to the API server with the kubeconfig's own credentials.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import yaml

from components.render.platform.longhorn import (LONGHORN_MANAGER, LONGHORN_NAMESPACE, LONGHORN_UNINSTALL_JOB,
                                                 longhorn_uninstall_job)


def uninstall_longhorn_main() -> None:
    """The command Longhorn's delete runs (``python -c``): its chart's pre-delete hook, as a Job, awaited.

    Environment: MICROCLOUD_KUBECONFIG (the kubeconfig's text), LONGHORN_NAMESPACE.
    Uses the image of the running longhorn-manager DaemonSet; nothing to do
    when it is gone. Prints no secret.
    """
    kc = yaml.safe_load(os.environ["MICROCLOUD_KUBECONFIG"])
    ns = os.environ.get("LONGHORN_NAMESPACE", LONGHORN_NAMESPACE)
    ctx_name = kc.get("current-context") or kc["contexts"][0]["name"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])
    tmp = tempfile.mkdtemp(prefix="longhorn-uninstall-")

    def material(obj: dict, key: str) -> Optional[str]:
        if obj.get(f"{key}-data"):
            path = os.path.join(tmp, key)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(obj[f"{key}-data"]))
            return path
        return obj.get(key)

    try:
        sslctx = ssl.create_default_context(cafile=material(cluster, "certificate-authority"))
        if cluster.get("insecure-skip-tls-verify"):
            sslctx.check_hostname, sslctx.verify_mode = False, ssl.CERT_NONE
        cert, key = material(user, "client-certificate"), material(user, "client-key")
        if cert:
            sslctx.load_cert_chain(cert, key)
    finally:
        for f in Path(tmp).iterdir():
            f.unlink()
        os.rmdir(tmp)
    headers = {"Accept": "application/json"}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"

    def call(method: str, path: str, body: Optional[dict] = None, ctype: str = "application/json"):
        req = urllib.request.Request(cluster["server"].rstrip("/") + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={**headers, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, context=sslctx, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None

    status, ds = call("GET", f"/apis/apps/v1/namespaces/{ns}/daemonsets/{LONGHORN_MANAGER}")
    if status == 404:
        print(f"longhorn-uninstall: no {LONGHORN_MANAGER} in {ns}: nothing to uninstall")
        return
    if status != 200:
        sys.exit(f"longhorn-uninstall: reading {ns}/{LONGHORN_MANAGER}: HTTP {status}")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    job = longhorn_uninstall_job(ns, container["image"], container.get("imagePullPolicy", "IfNotPresent"))
    # Longhorn refuses to uninstall unless this setting says yes (it exists once the manager has run).
    call("PATCH", f"/apis/longhorn.io/v1beta2/namespaces/{ns}/settings/deleting-confirmation-flag",
         {"value": "true"}, "application/merge-patch+json")
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    background = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    call("DELETE", f"{jobs}/{LONGHORN_UNINSTALL_JOB}", background)
    deadline = time.monotonic() + 60
    while True:
        status, _ = call("POST", jobs, job)
        if status in (200, 201):
            break
        if status != 409 or time.monotonic() > deadline:
            sys.exit(f"longhorn-uninstall: creating the Job in {ns}: HTTP {status}")
        time.sleep(1)  # the previous Job is still being deleted
    print(f"longhorn-uninstall: Job {ns}/{LONGHORN_UNINSTALL_JOB} created ({container['image']})")
    deadline = time.monotonic() + job["spec"]["activeDeadlineSeconds"] + 60
    while True:
        status, obj = call("GET", f"{jobs}/{LONGHORN_UNINSTALL_JOB}")
        conds = {c["type"]: c for c in (obj or {}).get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if "Complete" in conds:
            break
        if "Failed" in conds:
            sys.exit(f"longhorn-uninstall: Job failed: {conds['Failed'].get('message', '')}")
        if time.monotonic() > deadline:
            sys.exit("longhorn-uninstall: Job did not complete in time")
        time.sleep(2)
    call("DELETE", f"{jobs}/{LONGHORN_UNINSTALL_JOB}", background)
    print("longhorn-uninstall: complete")
