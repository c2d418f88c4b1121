"""A small TLS terminator for tests: HTTPS (optionally requiring a client certificate) in front of a plain
server of the suite (osmem), forwarding the bytes both ways, one thread per connection."""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit


class TlsTerminator:
    def __init__(self, backend_url: str, cert: Path, key: Path, client_ca: Optional[Path] = None) -> None:
        parts = urlsplit(backend_url)
        self.backend = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self._client_ca = client_ca.read_text() if client_ca is not None else ""
        if client_ca is not None:
            self.context.load_verify_locations(cadata=self._client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.handshake_failures = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name=f"tls-{self.port}").start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (OSError, ValueError):
            with self._lock:
                self.handshake_failures += 1
            client.close()
            return
        tls.settimeout(None)
        try:
            upstream = socket.create_connection(self.backend, timeout=10)
        except OSError:
            tls.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open |= {tls, upstream}
        try:
            self._pump(tls, upstream)
        finally:
            with self._lock:
                self._open -= {tls, upstream}
            tls.close()
            upstream.close()

    @staticmethod
    def _pump(tls: ssl.SSLSocket, upstream: socket.socket) -> None:
        peers = {tls: upstream, upstream: tls}
        with selectors.DefaultSelector() as sel:
            sel.register(tls, selectors.EVENT_READ)
            sel.register(upstream, selectors.EVENT_READ)
            while True:
                # TLS may hold decrypted bytes that select() cannot see: drain those first
                ready = [tls] if tls.pending() else [key.fileobj for key, _ in sel.select(timeout=60)]
                if not ready:
                    return
                for sock in ready:
                    try:
                        data = sock.recv(65536)  # type: ignore[union-attr]
                    except ssl.SSLWantReadError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    try:
                        peers[sock].sendall(data)  # type: ignore[index]
                    except OSError:
                        return

    def present(self, cert: Path, key: Path) -> None:
        """Show another certificate from now on; open connections are cut, so clients connect (and check) again."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        if self._client_ca:
            context.load_verify_locations(cadata=self._client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        self.context = context
        self._cut()

    def stop(self) -> None:
        self._stopped = True
        self.listener.close()
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
