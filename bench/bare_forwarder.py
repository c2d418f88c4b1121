"""S1's reference: the least a proxy on esproxy's stack can cost. A bare gevent WSGIServer (with
TCP_NODELAY, as the proxy sets) forwarding every request to A through geventhttpclient, capturing,
recording and logging nothing.

python bench/bare_forwarder.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

from bare_server import NoDelayHandler  # beside this script; it patches gevent first
from gevent.pywsgi import WSGIServer
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def main() -> None:
    port, upstream = int(sys.argv[1]), URL(sys.argv[2])
    client = HTTPClient(upstream.host, upstream.port, concurrency=1000, connection_timeout=10, network_timeout=60)

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        headers = {"Content-Type": environ.get("CONTENT_TYPE") or "application/json"}
        uri = environ.get("RAW_URI") or environ["PATH_INFO"]
        r = client.request(environ["REQUEST_METHOD"], uri, body=body, headers=headers)
        try:
            data = r.read()
        finally:
            r.release()
        start_response(
            f"{r.status_code} {r.status_message}", [(k, v) for k, v in r.items() if k.lower() not in HOP_BY_HOP]
        )
        return [data]

    WSGIServer(("127.0.0.1", port), app, log=None, handler_class=NoDelayHandler).serve_forever()


if __name__ == "__main__":
    main()
