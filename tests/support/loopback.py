"""A download host on 127.0.0.1 for the tests of what the toolchain and the program fetch.

``serve(routes)`` runs a threaded HTTP server (HTTPS with ``tls_dir``: a
certificate for 127.0.0.1 made with openssl, its file given as ``ca``, to be
trusted through SSL_CERT_FILE or CURL_CA_BUNDLE) and records every request
path. A route's value is the body (bytes), or one of:

- ``Redirect(url)``: 302 to ``url``;
- ``Hang()``: accept and never answer (until the server stops);
- ``Status(code)``: that status with no body.

A path without a route answers 404. The server stops (and any hanging
request is released) when the context ends. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union


@dataclass(frozen=True)
class Redirect:
    url: str


@dataclass(frozen=True)
class Hang:
    pass


@dataclass(frozen=True)
class Status:
    code: int


Route = Union[bytes, Redirect, Hang, Status]


@dataclass
class Host:
    base: str
    requests: list[str] = field(default_factory=list)
    ca: Optional[str] = None
    routes: dict[str, Route] = field(default_factory=dict)


def make_cert(d: Path) -> tuple[Path, Path]:
    """(cert, key) of a self-signed certificate for 127.0.0.1, valid for a day."""
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-keyout", key, "-out", cert, "-subj", "/CN=microcloud test download host",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def serve(routes: dict[str, Route], tls_dir: Optional[Path] = None) -> Iterator[Host]:
    released = threading.Event()
    host = Host(base="", routes=routes)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet; requests are recorded instead
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            host.requests.append(self.path)
            route = host.routes.get(self.path.split("?", 1)[0])
            if isinstance(route, Hang):
                released.wait(600)
                return
            if isinstance(route, Redirect):
                self.send_response(302)
                self.send_header("Location", route.url)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route is None or isinstance(route, Status):
                self.send_response(404 if route is None else route.code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(route)))
            self.end_headers()
            if body:
                self.wfile.write(route)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls_dir is not None:
        cert, key = make_cert(tls_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        host.ca = str(cert)
        scheme = "https"
    host.base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
