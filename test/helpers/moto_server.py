"""moto server for longrun's tests, with DynamoDB requests handled one at a time.

moto applies TransactWriteItems by copying the table, writing the items one by one and
restoring the copy when a condition fails; with the stock multi-threaded server, a
concurrent request's writes can be rolled back with it and half-applied transactions can
be read. Real DynamoDB isolates transactions, so the tests serialise DynamoDB calls (and
only those: SQS long polls and the rest stay concurrent).

That copy is deep, and it used to take every stream record the table ever produced with
it (each holds the old and new image of its item): a transaction cost grew with the
table's whole history, quadratically over a run, and the server's memory with it (300
transactions on a table with a 500-attribute counters item took 178 s, and one contract
file drove the server past 12 GB). A stream record never changes once written, so the
copy now shares the records (same 300 transactions: 4 s); a rollback still restores the
record list as it was, without the failed transaction's records.

A rollback also put the copy in the table's place, with a stream shard of its own: a shard
iterator a reader already held (the local webhook poller's, a test's) went on reading the
discarded shard, which no write reaches again, so a stream went silent after any cancelled
transaction. Real DynamoDB has no such break: a cancelled transaction writes nothing and the
stream goes on. After a rollback the table gets its shard back, cut to where it was before
the transaction (what the copy held).

usage: python3 moto_server.py <host> <port>
"""

import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamRecord
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

_dynamodb_lock = threading.Lock()


def _share_record(record: StreamRecord, _memo: dict) -> StreamRecord:
    # Immutable once written: a table's copy may hold the very same record.
    return record


StreamRecord.__deepcopy__ = _share_record  # type: ignore[attr-defined]

_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_keeping_streams(self, transact_items):
    # Each written table's shard, and how many records it held before the transaction.
    before = {}
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        name = op.get("TableName")
        table = self.tables.get(name) if name else None
        if table is not None and table.stream_shard is not None:
            before[name] = (table.stream_shard, len(table.stream_shard.items))
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for name, (shard, length) in before.items():
            table = self.tables.get(name)
            if table is not None and table.stream_shard is not shard:
                del shard.items[length:]
                shard.table = table
                table.stream_shard = shard
        raise


DynamoDBBackend.transact_write_items = _transact_keeping_streams


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
