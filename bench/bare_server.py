"""The ceiling: a bare gevent WSGIServer answering every request with the same small JSON body.

python bench/bare_server.py PORT BODY_FILE
"""

from __future__ import annotations

import socket
import sys

from gevent import monkey

monkey.patch_all()

from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402


class NoDelayHandler(WSGIHandler):
    def handle(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle()


def main() -> None:
    port, body_file = int(sys.argv[1]), sys.argv[2]
    handler = NoDelayHandler if sys.argv[3:] == ["nodelay"] else WSGIHandler
    with open(body_file, "rb") as f:
        body = f.read()
    headers = [("Content-Type", "application/json; charset=UTF-8"), ("Content-Length", str(len(body)))]

    def app(environ, start_response):
        start_response("200 OK", headers)
        return [body]

    WSGIServer(("127.0.0.1", port), app, log=None, handler_class=handler).serve_forever()


if __name__ == "__main__":
    main()
