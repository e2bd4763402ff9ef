"""Times the README's search (the API's exact MongoDB filter) on one or more MongoDB-wire
servers holding the same store, alternating them in each round, and checks they answer the same
(docs/benchmarks.md, round 5h).

    python benches/e2e/time_search.py DATABASE ROUNDS URI [URI ...] [--status-only]

--status-only drops the key condition (`status` = COMPLETED alone): a search that reads the store.
"""
import sys
import time

from pymongo import MongoClient


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 3:
        sys.exit(__doc__)
    database, rounds, uris = args[0], int(args[1]), args[2:]
    status = {"status": {"$eq": "COMPLETED"}}
    exists = {"_meta": {"$exists": True}, "_lineage": {"$exists": True}}
    if "--status-only" in sys.argv:
        query = {"$and": [{"$and": [status]}, exists]}
    else:
        query = {"$and": [{"$and": [{"payment_id": {"$regex": "^ab"}}, status]}, exists], "_id": {"$regex": "^ab"}}
    colls = [MongoClient(u)[database]["records.payments-data-product"] for u in uris]
    times = [[] for _ in uris]
    answers = [None for _ in uris]
    for r in range(rounds):
        order = list(range(len(uris)))
        if r % 2:
            order.reverse()
        for i in order:
            t = time.perf_counter()
            ids = [d["_id"] for d in colls[i].find(query, {"_lineage": 0}).sort([("amount", -1), ("_id", 1)]).limit(6)]
            times[i].append(time.perf_counter() - t)
            answers[i] = answers[i] or ids
    for uri, ts in zip(uris, times):
        print(f"{uri}: ms " + " / ".join(f"{t * 1000:.0f}" for t in sorted(ts)))
    print("same results" if all(a == answers[0] for a in answers) else f"DIFFERENT RESULTS: {answers}")


if __name__ == "__main__":
    main()
