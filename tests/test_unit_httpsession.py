"""esproxy.clients.httpsession against a real HTTPS server on loopback (in this process, a thread): the
config's TLS contexts used as they are (private CA, fingerprint pin, client certificate, verify: false, an
admin listener's own certificate), credentials from the URL, and errors that name the cause, never a password."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest
from support.certs import Pki, make_pki

from esproxy.clients.httpsession import HttpSession, Unreachable
from esproxy.clients.tls import admin_base, client_context
from esproxy.core.config import AdminListener, ClientTls, ServerTls

# urllib3 warns of a context that does not verify the chain (a pin, verify: false); httpsession silences it
# for the commands, pytest shows warnings whatever a module's filters say
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with its method, path and headers as JSON; /slow after 2 s; /missing 404."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: Optional[ssl.SSLContext]) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.context = context

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        return (self.context.wrap_socket(sock, server_side=True) if self.context else sock), addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # refused handshakes: the client's error is what is tested


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other"), "other")


def _serve(cert: Path, key: Path, client_ca: Optional[Path] = None) -> Iterator[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    server = _Server(ctx)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def https(pki: Pki) -> Iterator[str]:
    yield from _serve(pki.server_cert, pki.server_key)


@pytest.fixture(scope="module")
def mutual(pki: Pki) -> Iterator[str]:
    yield from _serve(pki.server_cert, pki.server_key, client_ca=pki.ca)


def _fingerprint(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def test_a_private_ca_is_trusted_and_only_it(https: str, pki: Pki, other_pki: Pki) -> None:
    tls = client_context(ClientTls(ca=str(pki.ca)), "tls")
    with HttpSession(https, tls=tls) as s:
        answer = s.request("POST", "/x", {"a": 1})
        assert answer.status == 200 and answer.json()["body"] == '{"a": 1}'
        assert answer.json()["headers"]["Content-Type"] == "application/json"
    assert tls.cert_store_stats()["x509_ca"] == 1  # requests added no CA bundle of its own (certifi's)
    with HttpSession(https, tls=client_context(ClientTls(ca=str(other_pki.ca)), "tls")) as s:
        with pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
            s.get("/x")
    with HttpSession(https) as s:  # no context: the system's CAs, which do not hold the private one
        with pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
            s.get("/x")


def test_a_fingerprint_pin_accepts_its_chain_and_refuses_another(https: str, pki: Pki, other_pki: Pki) -> None:
    leaf = _fingerprint(pki.server_cert)  # the leaf is the first certificate of the file
    with HttpSession(https, tls=client_context(ClientTls(fingerprint=leaf), "tls")) as s:
        assert s.get("/pinned").status == 200
    wrong = _fingerprint(other_pki.ca)
    with HttpSession(https, tls=client_context(ClientTls(fingerprint=wrong), "tls")) as s:
        with pytest.raises(Unreachable, match=f"pinned SHA-256 fingerprint {wrong}"):
            s.get("/pinned")


def test_verify_false_accepts_any_certificate(https: str, other_pki: Pki) -> None:
    with HttpSession(https, tls=client_context(ClientTls(verify=False), "tls")) as s:
        assert s.get("/anything").status == 200


def test_a_client_certificate_is_shown(mutual: str, pki: Pki) -> None:
    with_cert = ClientTls(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
    with HttpSession(mutual, tls=client_context(with_cert, "tls")) as s:
        assert s.get("/mutual").status == 200
    with HttpSession(mutual, tls=client_context(ClientTls(ca=str(pki.ca)), "tls")) as s:
        with pytest.raises(Unreachable):
            s.get("/mutual")


def test_an_admin_listener_is_reached_trusting_its_own_certificate(https: str, pki: Pki) -> None:
    port = int(https.rsplit(":", 1)[1])
    listener = AdminListener(port=port, host="0.0.0.0", tls=ServerTls(cert=str(pki.server_cert)))
    base, tls = admin_base(listener)
    with HttpSession(base, {"X-Admin-Token": "t"}, tls) as s:
        answer = s.get("/_esproxy/stats")
    assert answer.status == 200 and answer.json()["headers"]["X-Admin-Token"] == "t"


def test_statuses_are_answers_not_errors(https: str) -> None:
    with HttpSession(https, tls=client_context(ClientTls(verify=False), "tls")) as s:
        answer = s.get("/missing")
    assert answer.status == 404 and answer.json()["path"] == "/missing"


def test_url_credentials_are_sent_as_basic_unless_a_header_says_otherwise(https: str) -> None:
    with_user = https.replace("https://", "https://elastic:s3cret@")
    tls = client_context(ClientTls(verify=False), "tls")
    with HttpSession(with_user, tls=tls) as s:
        headers = s.get("/auth").json()["headers"]
    assert headers["Authorization"] == "Basic ZWxhc3RpYzpzM2NyZXQ="  # elastic:s3cret
    with HttpSession(with_user, {"Authorization": "ApiKey k"}, tls) as s:
        assert s.get("/auth").json()["headers"]["Authorization"] == "ApiKey k"


def test_errors_name_the_cause_and_mask_the_password() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with HttpSession(f"http://user:s3cret@127.0.0.1:{port}") as s:
        with pytest.raises(Unreachable) as e:
            s.get("/_esproxy/stats")
    assert str(e.value) == f"http://user:***@127.0.0.1:{port}/_esproxy/stats: [Errno 111] Connection refused"
    assert e.value.reason == "[Errno 111] Connection refused" and "s3cret" not in str(e.value)


def test_a_read_that_takes_too_long_times_out(https: str) -> None:
    with HttpSession(https, tls=client_context(ClientTls(verify=False), "tls"), timeout=0.3) as s:
        with pytest.raises(Unreachable) as e:
            s.get("/slow")
    assert e.value.reason == "timed out"
