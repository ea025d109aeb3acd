"""moto server for longrun's tests, with DynamoDB requests handled one at a time.

moto applies TransactWriteItems by copying the table, writing the items one by one and
restoring the copy when a condition fails; with the stock multi-threaded server, a
concurrent request's writes can be rolled back with it and half-applied transactions can
be read. Real DynamoDB isolates transactions, so the tests serialise DynamoDB calls (and
only those: SQS long polls and the rest stay concurrent).

usage: python3 moto_server.py <host> <port>
"""

import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

_dynamodb_lock = threading.Lock()


class SerialDynamoDB:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            with _dynamodb_lock:
                # Consume the whole response inside the lock: WSGI apps may be lazy.
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, SerialDynamoDB(app), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
