"""Fills a record store with N documents shaped as meshguard writes them (a payment's fields,
`_meta`, one lineage entry; random UUID keys, a third of them COMPLETED), for timing API reads
on a store of a given size without streaming N events first (docs/benchmarks.md, round 5e).

    python benches/e2e/fill_store.py MONGODB_URI DATABASE N
"""
import datetime
import random
import sys
import time
import uuid

from pymongo import MongoClient


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    uri, database, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    coll = MongoClient(uri)[database]["records.payments-data-product"]
    coll.drop()
    now = datetime.datetime.now(datetime.timezone.utc)
    rnd = random.Random(7)

    def doc(i):
        k = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        lid = f"fill/{i % 12}/{i}/1700000000000"
        return {"_id": k, "payment_id": k, "customer_id": i, "amount": rnd.randint(1, 100000) / 100, "currency": "EUR",
                "status": rnd.choice(["CREATED", "UPDATED", "COMPLETED"]),
                "payment_method": {"type": "CARD", "last_four": "1234"}, "created_at": "2026-12-05T08:00:00.123456789Z",
                "updated_at": "2026-12-05T08:00:00.223456789Z",
                "_meta": {"event_time_ms": 1700000000000 + i, "topic": "fill", "partition": i % 12, "offset": i,
                          "timestamp_ms": 1700000000000, "contract": "payment-schema", "contract_version": "1.0.0",
                          "version_id": f"{k}@{lid}", "updated_at": now},
                "_lineage": [{"lineage_id": lid, "product": "payments-data-product",
                              "source": {"system": "kafka", "topic": "fill", "partition": i % 12, "offset": i, "record_id": k, "timestamp": now},
                              "destination": {"system": "mongodb", "collection": "records.payments-data-product", "document_id": k},
                              "transformation": {"type": "contract-validation", "contract": "payment-schema", "version": "1.0.0", "outcome": "valid"},
                              "created_at": now, "event_time_ms": 1700000000000 + i}]}

    t0 = time.time()
    for s in range(0, n, 4000):
        coll.insert_many([doc(i) for i in range(s, min(n, s + 4000))], ordered=False)
    print(f"filled {database}: {n} documents in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
