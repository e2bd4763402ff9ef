#!/usr/bin/env python3
"""What the document store can look up: FerretDB's pushdown, measured on several backends.

Fills, on every target (one FerretDB each, e.g. its SQLite and its PostgreSQL backend), a
collection of record versions shaped like `records.{product}` (src/sink/mongo.rs,
`write_versions`: `_id = "{key}@{topic}/{partition}/{offset}/{timestamp_ms}"`, the record's
fields, `key`, `_meta`) and one of lineage documents (`data_lineage`: `_id =
"{topic}/{partition}/{offset}/{timestamp_ms}"`, `source`, `destination`, ...), grows both stage
by stage (--sizes), and at each stage times, target after target (the order rotates per
operation, so that both see the same machine load):

  find_one by _id (versions, lineage), find _id $in 100, find _id range (one key's versions:
  $gte "K@" $lt "KA"), the same range sorted by _id descending with limit 1, find by the
  top-level `key` field, find by a nested field (source.record_id: the scan reference),
  unordered insert_many of 1,000, replace_one upsert by _id, update_one $set by _id,
  delete_one by _id, delete_many _id $in 100. Those FerretDB 1.24 does not push down to the
  backend ($in, $gte/$lt, nested fields: every document is decoded and filtered in Go, ~0.2 ms
  each) are skipped above --scan-max-size.

With --backend-index the same operations are timed a second time after an index on the
expression FerretDB pushes `_id` equality down as has been created directly in the backing
database (SQLite: `_ferretdb_sjson->'$._id'`; PostgreSQL: GIN jsonb_path_ops on
`_jsonb->'_id'`), then the index is dropped again before the next fill.

A target is NAME=MONGODB_URI[,sqlite=DIR|,pg=POSTGRES_URL] (the backing store is needed only
for --backend-index). Slow operations stop after --budget seconds (at least --min-samples
samples), so the sample count of each row is printed. Prints a Markdown table per stage and
writes every sample's summary as JSON lines to --out.

Example (docs/benchmarks.md, round 5c):
  lookups.py --target sqlite=mongodb://127.0.0.1:37118,sqlite=/tmp/store-lookups/sqlite \\
             --target pg=mongodb://127.0.0.1:37117,pg=postgres://postgres@127.0.0.1:15432/ferretdb \\
             --sizes 20000,200000,1000000 --backend-index --out results.jsonl
"""

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid

import pymongo

DB_NAME = ["mg_lookups"]
VERSIONS = "records.payments"
LINEAGE = "data_lineage"
TOPIC = "payments"
PARTITIONS = 12
VERSIONS_PER_KEY = 10  # 1 M events over 100k keys, as issue 19 item 2 puts it


def key_of(i):
    """The i-th key: UUID-shaped, like the seed's payment_id, stable across runs."""
    return str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4))


def event(n):
    """Event n of the stream: its key, partition, offset, timestamp."""
    k = n % max(1, EVENTS_KEYS[0])
    part = n % PARTITIONS
    off = n // PARTITIONS
    ts = 1_764_417_600_000 + n * 7
    return key_of(k), part, off, ts


EVENTS_KEYS = [100_000]


def version_doc(n):
    key, part, off, ts = event(n)
    r = random.Random(n)
    return {
        "_id": f"{key}@{TOPIC}/{part}/{off}/{ts}",
        "amount": round(r.uniform(1, 30000), 2),
        "created_at": "2026-11-29T11:59:59.871Z",
        "currency": r.choice(["USD", "EUR", "GBP", "JPY"]),
        "customer_id": r.randrange(1_000_000, 9_999_999),
        "payment_id": key,
        "payment_method": {"last_four": f"{r.randrange(10000):04d}", "type": r.choice(["WIRE", "CARD"])},
        "status": r.choice(["PENDING", "SETTLED"]),
        "updated_at": "2026-11-29T11:59:59.956Z",
        "_meta": {
            "event_time_ms": ts,
            "topic": TOPIC,
            "partition": part,
            "offset": off,
            "contract": "payments",
            "contract_version": "1.0.0",
            "updated_at": ts,
        },
        "key": key,
    }


def lineage_doc(n):
    key, part, off, ts = event(n)
    lid = f"{TOPIC}/{part}/{off}/{ts}"
    return {
        "_id": lid,
        "lineage_id": lid,
        "product": "payments-data-product",
        "source": {"system": "kafka", "topic": TOPIC, "partition": part, "offset": off, "record_id": key, "timestamp": ts},
        "destination": {"system": "mongodb", "collection": VERSIONS, "document_id": key},
        "transformation": {"type": "contract-validation", "contract": "payments", "version": "1.0.0", "outcome": "valid"},
        "created_at": ts,
    }


class Target:
    def __init__(self, spec):
        name, rest = spec.split("=", 1)
        parts = rest.split(",")
        self.name = name
        self.uri = parts[0]
        self.sqlite_dir = None
        self.pg_url = None
        for p in parts[1:]:
            kind, val = p.split("=", 1)
            if kind == "sqlite":
                self.sqlite_dir = val
            elif kind == "pg":
                self.pg_url = val
            else:
                sys.exit(f"unknown backing store {kind!r} in {spec!r}")
        self.client = pymongo.MongoClient(self.uri, directConnection=True, serverSelectionTimeoutMS=5000, socketTimeoutMS=600_000)
        self.db = self.client[DB_NAME[0]]
        self.size = 0

    def coll(self, name):
        return self.db[name]

    # -- backend indexes -------------------------------------------------------------------
    def _sqlite_tables(self, conn):
        rows = conn.execute("select name, table_name from _ferretdb_collections").fetchall()
        return {n: t for n, t in rows}

    def _pg(self, sql):
        out = subprocess.run(["psql", "-X", "-q", "-tA", self.pg_url, "-c", sql], check=True, capture_output=True, text=True)
        return out.stdout

    def _pg_tables(self):
        out = self._pg(f"select _jsonb->>'_id', _jsonb->>'table' from \"{DB_NAME[0]}\"._ferretdb_database_metadata")
        return dict(line.split("|", 1) for line in out.split("\n") if "|" in line)

    def backend_index(self, create):
        if self.sqlite_dir:
            conn = sqlite3.connect(os.path.join(self.sqlite_dir, DB_NAME[0] + ".sqlite"), timeout=60)
            for coll, table in self._sqlite_tables(conn).items():
                if create:
                    conn.execute(f'create index if not exists "{table}_mg_id" on "{table}" (_ferretdb_sjson->\'$._id\')')
                else:
                    conn.execute(f'drop index if exists "{table}_mg_id"')
            conn.commit()
            conn.close()
        elif self.pg_url:
            for coll, table in self._pg_tables().items():
                if create:
                    self._pg(f'create index if not exists "{table}_mg_id" on "{DB_NAME[0]}"."{table}" using gin ((_jsonb->\'_id\') jsonb_path_ops)')
                    self._pg(f'analyze "{DB_NAME[0]}"."{table}"')
                else:
                    self._pg(f'drop index if exists "{DB_NAME[0]}"."{table}_mg_id"')
        else:
            sys.exit(f"--backend-index needs sqlite=DIR or pg=URL for target {self.name}")


def fill(t, upto, batch):
    """Grows both collections of t to `upto` documents; returns docs/s of the fill."""
    start = t.size
    if upto <= start:
        return None
    t0 = time.perf_counter()
    for lo in range(start, upto, batch):
        hi = min(upto, lo + batch)
        t.coll(VERSIONS).insert_many([version_doc(n) for n in range(lo, hi)], ordered=False)
        t.coll(LINEAGE).insert_many([lineage_doc(n) for n in range(lo, hi)], ordered=False)
    dt = time.perf_counter() - t0
    t.size = upto
    return 2 * (upto - start) / dt


def timed(fn, max_samples, budget, min_samples):
    """Runs fn() up to max_samples times, stopping after `budget` seconds (min_samples at least)."""
    samples = []
    t_end = time.perf_counter() + budget
    for i in range(max_samples):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
        if len(samples) >= min_samples and time.perf_counter() > t_end:
            break
    return samples


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def operations(size, rng, args):
    """(name, max samples, factory) for the stage; factory(target) gives fn(i)."""
    n_keys = min(size, EVENTS_KEYS[0])
    ids = [rng.randrange(size) for _ in range(args.samples)]
    in_lists = [[rng.randrange(size) for _ in range(100)] for _ in range(args.samples)]
    keys = [key_of(rng.randrange(n_keys)) for _ in range(args.samples)]
    bulk_ids = [[rng.randrange(size) for _ in range(1000)] for _ in range(args.inserts)]
    found = {}

    def check(name, want, got):
        if got != want:
            found.setdefault(name, []).append((want, got))

    def find_one_v(t):
        return lambda i: check("find_one v", 1, int(t.coll(VERSIONS).find_one({"_id": version_doc(ids[i])["_id"]}) is not None))

    def find_one_l(t):
        return lambda i: check("find_one l", 1, int(t.coll(LINEAGE).find_one({"_id": lineage_doc(ids[i])["_id"]}) is not None))

    def find_in(t):
        def f(i):
            want = {version_doc(n)["_id"] for n in in_lists[i]}
            got = list(t.coll(VERSIONS).find({"_id": {"$in": sorted(want)}}, {"_id": 1}))
            check("find $in", len(want), len(got))
        return f

    def find_range(t):
        def f(i):
            k = keys[i]
            got = list(t.coll(VERSIONS).find({"_id": {"$gte": k + "@", "$lt": k + "A"}}))
            check("range", True, len(got) >= 1)
        return f

    def find_range_sort(t):
        def f(i):
            k = keys[i]
            got = list(t.coll(VERSIONS).find({"_id": {"$gte": k + "@", "$lt": k + "A"}}).sort("_id", -1).limit(1))
            check("range sort", 1, len(got))
        return f

    def find_key(t):
        def f(i):
            got = list(t.coll(VERSIONS).find({"key": keys[i]}))
            check("key", True, len(got) >= 1)
        return f

    def find_nested(t):
        def f(i):
            got = list(t.coll(LINEAGE).find({"source.record_id": keys[i]}))
            check("nested", True, len(got) >= 1)
        return f

    def insert_many(t):
        def f(i):
            docs = [version_doc(n) for n in range(size + i * 1000, size + (i + 1) * 1000)]
            for d in docs:
                d["_id"] = "zz-bench/" + d["_id"]
            t.coll(VERSIONS).insert_many(docs, ordered=False)
        return f

    def replace_upsert(t):
        def f(i):
            d = version_doc(ids[i])
            d["status"] = "REPLACED"
            r = t.coll(VERSIONS).replace_one({"_id": d["_id"]}, d, upsert=True)
            check("replace", 1, r.matched_count)
        return f

    def bulk_upsert(t):
        def f(i):
            reqs = []
            for n in bulk_ids[i]:
                d = version_doc(n)
                d["status"] = "BULK"
                reqs.append(pymongo.ReplaceOne({"_id": d["_id"]}, d, upsert=True))
            # one `update` command with every statement (FerretDB has no client bulkWrite)
            r = t.coll(VERSIONS).bulk_write(reqs, ordered=False)
            check("bulk", len(reqs), r.matched_count + len(r.upserted_ids))
        return f

    def update_set(t):
        def f(i):
            r = t.coll(VERSIONS).update_one({"_id": version_doc(ids[i])["_id"]}, {"$set": {"status": "UPDATED"}})
            check("update", 1, r.matched_count)
        return f

    def bench_ids():
        return ["zz-bench/" + version_doc(n)["_id"] for n in range(size, size + args.inserts * 1000)]

    def delete_one(t):
        b = bench_ids()
        return lambda i: check("delete_one", 1, t.coll(VERSIONS).delete_one({"_id": b[i]}).deleted_count)

    def delete_many(t):
        b = bench_ids()[args.samples:]  # those delete_one did not take

        def f(i):
            chunk = b[i * 100:(i + 1) * 100]
            if len(chunk) < 100:
                return
            check("delete_many", 100, t.coll(VERSIONS).delete_many({"_id": {"$in": chunk}}).deleted_count)
        return f

    # (name, max samples, factory, scans in FerretDB's Go code whatever the backend: skipped
    # above --scan-max-size, one sample is enough)
    ops = [
        ("find_one by _id (versions)", args.samples, find_one_v, False),
        ("find_one by _id (lineage)", args.samples, find_one_l, False),
        ("find _id $in 100", args.batch_samples, find_in, True),
        ("find _id range (one key's versions)", args.batch_samples, find_range, True),
        ("find _id range + sort _id desc, limit 1", args.batch_samples, find_range_sort, True),
        ("find by top-level `key`", args.batch_samples, find_key, False),
        ("find by nested source.record_id (lineage)", args.batch_samples, find_nested, True),
        ("insert_many 1,000 unordered", args.inserts, insert_many, False),
        ("replace_one upsert by _id", args.write_samples, replace_upsert, False),
        ("update_one $set by _id", args.write_samples, update_set, False),
        ("bulk_write of 1,000 replace-upserts by _id (per document)", args.inserts, bulk_upsert, False),
        ("delete_one by _id", args.write_samples, delete_one, False),
        ("delete_many _id $in 100", args.batch_samples, delete_many, True),
    ]
    ops = [(n, m, f, sc) for n, m, f, sc in ops if not (sc and size > args.scan_max_size)]
    if args.only:
        ops = [o for o in ops if any(w.lower() in o[0].lower() for w in args.only.split(","))]
    return ops, found


def run_ops(targets, size, variant, args, out, rng_seed):
    rng = random.Random(rng_seed)
    ops, found = operations(size, rng, args)
    rows = []
    for k, (name, n, factory, scan) in enumerate(ops):
        order = targets[k % len(targets):] + targets[:k % len(targets)]
        row = {"op": name}
        for t in order:
            s = timed(factory(t), n, args.budget, 1 if scan else args.min_samples)
            res = {"n": len(s), "p50": statistics.median(s), "p99": pct(s, 0.99), "mean": statistics.fmean(s)}
            row[t.name] = res
            rec = {"size": size, "variant": variant, "target": t.name, "op": name, **res}
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"  {size:>8} {variant:<8} {t.name:<8} {name:<42} n={len(s):<4} p50={res['p50']:9.2f} ms  p99={res['p99']:9.2f} ms", flush=True)
        rows.append(row)
    # whatever the timed deletes left of the inserted documents
    for t in targets:
        t.coll(VERSIONS).delete_many({"_id": {"$in": ["zz-bench/" + version_doc(n)["_id"] for n in range(size, size + args.inserts * 1000)]}})
        # restore what replace/update changed (the status field only; ids are unchanged)
    if found:
        print(f"  WRONG ANSWERS: {json.dumps({k: v[:3] for k, v in found.items()})}", flush=True)
    return rows


def table(rows, targets, size, variant):
    names = [t.name for t in targets]
    head = "| op | " + " | ".join(f"{n} p50 / p99 ms (n)" for n in names)
    if len(names) == 2:
        head += f" | {names[0]} ÷ {names[1]} (p50)"
    print(f"\n#### {size:,} versions + {size:,} lineage documents, {variant}\n")
    print(head + " |")
    print("|" + " --- |" * (1 + len(names) + (1 if len(names) == 2 else 0)))
    for r in rows:
        cells = [f"{r[n]['p50']:.1f} / {r[n]['p99']:.1f} ({r[n]['n']})" for n in names]
        if len(names) == 2:
            a, b = r[names[0]]["p50"], r[names[1]]["p50"]
            cells.append(f"{a / b:.1f}×" if b > 0 else "–")
        print(f"| {r['op']} | " + " | ".join(cells) + " |")
    print(flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True, help="NAME=MONGODB_URI[,sqlite=DIR|,pg=POSTGRES_URL]; give two or more")
    ap.add_argument("--sizes", default="20000,200000", help="stages: documents per collection (comma-separated, growing)")
    ap.add_argument("--keys", type=int, default=100_000, help="distinct record keys (versions per key = size / keys)")
    ap.add_argument("--samples", type=int, default=200, help="max samples of find_one by _id")
    ap.add_argument("--batch-samples", type=int, default=20, help="max samples of $in, range, key and nested finds and delete_many")
    ap.add_argument("--write-samples", type=int, default=50, help="max samples of replace_one, update_one, delete_one")
    ap.add_argument("--inserts", type=int, default=5, help="insert_many calls of 1,000 (their documents feed the deletes)")
    ap.add_argument("--budget", type=float, default=15.0, help="seconds per operation and target, after which sampling stops")
    ap.add_argument("--min-samples", type=int, default=3, help="samples at least, whatever the budget (1 for the scans)")
    ap.add_argument("--scan-max-size", type=int, default=20000,
                    help="skip the operations FerretDB filters in Go ($in, ranges, nested fields) above this size")
    ap.add_argument("--fill-batch", type=int, default=2000, help="documents per insert_many while filling")
    ap.add_argument("--backend-index", action="store_true", help="also time with an _id index made in the backing database")
    ap.add_argument("--only", default="", help="time only the operations whose name contains one of these words (comma-separated)")
    ap.add_argument("--database", default="mg_lookups", help="database to fill (dropped at the start and, unless --keep, at the end)")
    ap.add_argument("--resume", action="store_true", help="keep what --database holds (an earlier run with --keep or stopped) and grow it")
    ap.add_argument("--variants", default="stock,indexed", help="stock (as FerretDB makes the tables) and/or indexed (with --backend-index)")
    ap.add_argument("--keep", action="store_true", help="keep the database at the end (default: dropped)")
    ap.add_argument("--out", default="lookups.jsonl", help="JSON lines, one per (stage, variant, target, op)")
    args = ap.parse_args()
    EVENTS_KEYS[0] = args.keys
    DB_NAME[0] = args.database
    if args.inserts * 1000 < args.samples + 100 * args.batch_samples:
        args.inserts = -(-(args.samples + 100 * args.batch_samples) // 1000)

    targets = [Target(s) for s in args.target]
    for t in targets:
        if args.resume:
            # documents 0..n-1 of an earlier run of the same --keys (the timed writes leave the
            # count as it was)
            t.size = t.coll(VERSIONS).estimated_document_count()
            print(f"resuming {t.name} at {t.size:,} + {t.coll(LINEAGE).estimated_document_count():,} documents", flush=True)
        else:
            t.client.drop_database(DB_NAME[0])
    variants = args.variants.split(",")
    with open(args.out, "a") as out:
        for stage, size in enumerate(int(s) for s in args.sizes.split(",")):
            # fill, alternating which target goes first
            order = targets if stage % 2 == 0 else targets[::-1]
            for t in order:
                rate = fill(t, size, args.fill_batch)
                if rate:
                    print(f"fill {t.name} to {size:,} + {size:,}: {rate:,.0f} docs/s", flush=True)
                    out.write(json.dumps({"size": size, "target": t.name, "op": "fill insert_many", "docs_per_s": rate}) + "\n")
            if "stock" in variants:
                rows = run_ops(targets, size, "stock", args, out, size)
                table(rows, targets, size, "stock")
            if args.backend_index and "indexed" in variants:
                for t in targets:
                    t0 = time.perf_counter()
                    t.backend_index(True)
                    print(f"backend _id index on {t.name}: {time.perf_counter() - t0:.1f} s", flush=True)
                rows = run_ops(targets, size, "indexed", args, out, size + 1)
                table(rows, targets, size, "with backend _id index")
                for t in targets:
                    t.backend_index(False)
    if not args.keep:
        for t in targets:
            t.client.drop_database(DB_NAME[0])


if __name__ == "__main__":
    main()
