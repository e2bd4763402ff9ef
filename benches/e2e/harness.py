"""meshguard's end-to-end benchmark: the same topic on the same broker, every contender in one run.

Started by `benches/e2e/run` (which installs what is missing); see docs/benchmarks.md.

Throughput mode: preload a topic with N payment events (meshguard's generator), then run each
contender, one at a time, from the committed start (a fresh consumer group) to the end of the
topic. A contender is done when its group's committed offsets reach the end offsets (kcat has no
group: it exits at the end of every partition). Measured: events/s over the wall time from spawn
to done, CPU seconds (user+system of the contender's whole process tree, from /proc, at done),
peak RSS (the largest resident set summed over the process tree, sampled every 100 ms, and the
kernel's high-water mark of the main process). Each contender writes invalid records to its own
dead-letter topic; its record count is reported beside the generator's invalid count.

Latency mode: for each contender a fresh topic; the contender is started and given time to join;
then meshguard's generator produces at a fixed rate. Latency of a dead letter = the dead-letter
record's LogAppendTime (the DLQ topic is created with message.timestamp.type=LogAppendTime) minus
the source record's CreateTime (set by the producer when the generator hands it the event), joined
through the meshguard.source.partition/offset headers every contender writes. Commit latency =
the first 50 ms poll of the group's committed offsets that covers a record, minus its CreateTime.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MG_BENCH_CACHE", Path.home() / ".cache" / "mg-bench"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

ALL = ["kcat", "meshguard", "meshguard+reconcile", "meshguard+all", "meshguard+all-decoupled", "mongodb-ceiling", "node-seed", "python", "kstreams", "bento"]


# Contenders that look events up in the source database (their events need source rows).
RECONCILING = ("meshguard+reconcile", "meshguard+all", "meshguard+all-decoupled", "node-seed")
# With every sink on: the document store written inline, or fed from Kafka by the materializer.
STORING = ("meshguard+all", "meshguard+all-decoupled")


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Process tree accounting from /proc


def children_of(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children_of(p)
    return out


def proc_cpu_rss(pid):
    """(cpu seconds, rss bytes) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        rss = int(fields[21]) * PAGE
        return cpu, rss
    except (OSError, ValueError, IndexError):
        return None


def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples CPU and RSS of a process tree every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.cpu_by_pid = {}
        self.wait_by_task = {}
        self.stop_flag = threading.Event()

    def sample(self):
        total = 0
        for p in tree(self.pid):
            r = proc_cpu_rss(p)
            if r:
                self.cpu_by_pid[p] = r[0]
                total += r[1]
            try:
                for tid in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                        self.wait_by_task[(p, tid)] = int(f.read().split()[1]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
        self.peak_rss = max(self.peak_rss, total, hwm(self.pid))

    def cpu(self):
        return sum(self.cpu_by_pid.values())

    def runqueue_wait(self):
        """Seconds the process tree's threads were runnable but waiting for a CPU."""
        return sum(self.wait_by_task.values())

    def run(self):
        while not self.stop_flag.is_set():
            self.sample()
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Kafka helpers


class Kafka:
    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.admin.list_topics(timeout=10)

    def create(self, topic, partitions, log_append_time=False):
        config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
        fs = self.admin.create_topics([NewTopic(topic, partitions, 1, config=config)], operation_timeout=30)
        for f in fs.values():
            f.result()
        deadline = time.time() + 30
        while time.time() < deadline:
            md = self.admin.list_topics(topic, timeout=10)
            t = md.topics.get(topic)
            if t is not None and t.error is None and len(t.partitions) == partitions:
                return
            time.sleep(0.2)
        raise RuntimeError(f"topic {topic} did not appear")

    def delete(self, topics):
        existing = set(self.admin.list_topics(timeout=10).topics)
        topics = sorted(set(topics) & existing)
        if topics:
            for f in self.admin.delete_topics(topics, operation_timeout=30).values():
                try:
                    f.result()
                except Exception as e:  # noqa: BLE001 - best-effort clean-up
                    log(f"delete topic: {e}")

    def partitions(self, topic):
        md = self.admin.list_topics(topic, timeout=10)
        return sorted(md.topics[topic].partitions)

    def end_offsets(self, topic):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "mg-bench-watermarks"})
        try:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in self.partitions(topic)}
        finally:
            c.close()

    def end_offsets_many(self, topics):
        return {(t, p): o for t in topics for p, o in self.end_offsets(t).items()}

    def count(self, topic):
        try:
            return sum(self.end_offsets(topic).values())
        except KeyError:
            return 0

    def committed_probe(self, group, topic, topics=None):
        """A function returning {partition: committed offset} for `group` (without joining it);
        with `topics`, {(topic, partition): committed offset} over all of them."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(t, p) for t in (topics or [topic]) for p in self.partitions(t)]

        def probe():
            try:
                got = c.committed(tps, timeout=10)
                if topics:
                    return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in got}
                return {tp.partition: max(tp.offset, 0) for tp in got}
            except Exception:  # noqa: BLE001 - a busy coordinator: try again on the next poll
                return None

        probe.close = c.close
        return probe

    def group_ready(self, group):
        try:
            f = self.admin.describe_consumer_groups([group], request_timeout=5)[group]
            d = f.result()
            return any(m.assignment and m.assignment.topic_partitions for m in d.members)
        except Exception:  # noqa: BLE001 - not there yet
            return False

    def read_all(self, topic, with_headers):
        """Every record of `topic`: (partition, offset, timestamp ms, headers dict)."""
        end = self.end_offsets(topic)
        want = sum(end.values())
        c = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": f"mg-bench-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": False,
        })
        c.assign([TopicPartition(topic, p, 0) for p in end])
        out = []
        deadline = time.time() + 120
        while len(out) < want and time.time() < deadline:
            for m in c.consume(10000, 1.0):
                if m.error():
                    continue
                h = {k: v for k, v in (m.headers() or [])} if with_headers else None
                out.append((m.partition(), m.offset(), m.timestamp()[1], h))
        c.close()
        return out


# ---------------------------------------------------------------------------------------------
# Contenders


class Run:
    def __init__(self, args):
        self.args = args
        self.id = uuid.uuid4().hex[:8]
        self.kafka = Kafka(args.bootstrap)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"mg-bench-{self.id}-"))
        self.topics = []
        self.mysql_db = None
        self.mongo_dbs = []
        self.meshguard = Path(args.meshguard)

    def name(self, what):
        return f"mgbench-{self.id}-{what}"

    def products_dir(self, topic, topics=None):
        d = self.tmp / f"products-{topic}"
        d.mkdir()
        seed = (REPO / "config/products/payments.yaml").read_text()
        out, skipping = [], False
        for line in seed.splitlines():
            if line.startswith("      topics:"):
                out.append(line)
                out += [f"        - {t}" for t in (topics or [topic])]
                skipping = True
                continue
            if skipping and line.startswith("        - "):
                continue
            skipping = False
            out.append(line)
        (d / "payments.yaml").write_text("\n".join(out) + "\n")
        return d

    def ensure_mysql(self):
        if self.mysql_db:
            return
        db = self.name("src").replace("-", "_")
        sql = "".join(p.read_text() for p in sorted((REPO / "migrations/mysql").glob("*.sql")))
        sql = re.sub(r"\bbanking\b", db, sql)
        host, port = self.args.mysql_host.split(":")
        subprocess.run(["mariadb", "-h", host, "-P", port, "-u", "root"], input=sql.encode(), check=True)
        self.mysql_db = db

    def mysql_url(self):
        return f"mysql://root@{self.args.mysql_host}/{self.mysql_db}"

    def produce(self, topic, count, rate=0, mysql=False):
        products = self.products_dir_for(topic)
        cmd = [str(self.meshguard), "produce", "-t", topic, "-n", str(count), "--invalid-ratio", str(self.args.invalid_ratio),
               "--seed", str(self.args.seed), "--rate", str(rate), "--keys", str(self.args.keys)]
        if mysql:
            self.ensure_mysql()
            cmd += ["--mysql", self.mysql_url()]
        env = dict(os.environ, MESHGUARD__KAFKA__BOOTSTRAP_SERVERS=self.args.bootstrap,
                   MESHGUARD__PRODUCTS__DIR=str(products), MESHGUARD__SCHEMAS__DIR=str(REPO / "schemas"), RUST_LOG="warn")
        t0 = time.time()
        p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"meshguard produce failed: {p.stderr}")
        m = re.search(r"\((\d+) valid, (\d+) invalid\)", p.stderr)
        if not m:
            raise RuntimeError(f"unexpected produce output: {p.stderr}")
        log(f"produced {count} to {topic} in {time.time() - t0:.1f}s: {m.group(0)}")
        return int(m.group(1)), int(m.group(2))

    def contender(self, name, topic, dlq, group, schemas=None):
        """(argv, env, uses_group) for a contender."""
        a = self.args
        base = dict(os.environ, BOOTSTRAP=a.bootstrap, TOPIC=topic, GROUP=group, DLQ=dlq,
                    SCHEMA=str(REPO / "schemas/payment-schema.json"))
        if name == "kcat":
            return ["kcat", "-C", "-b", a.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n"], base, False
        if name.startswith("meshguard"):
            # "<contender>:group": the same with group-wide quality (quality.scope = "group").
            name, _, variant = name.partition(":")
            cfg = self.tmp / f"{group}.toml"
            extra = "".join(f'"{k}" = "{v}"\n' for k, v in (kv.split("=", 1) for kv in a.consumer_config))
            cfg.write_text('[kafka.consumer]\n"auto.commit.interval.ms" = "100"\n' + extra)
            db = f"{group}".replace("-", "_")
            self.mongo_dbs.append(db)
            # Its alert and lineage topics exist before the clock starts, as in a deployment and
            # as the dead-letter topic does for every contender (meshguard would create missing
            # ones at start, ~0.1 s of a million-event run); deleted at the end.
            for side in (f"{group}-alerts", f"{group}-lineage"):
                self.kafka.create(side, 3)
                self.topics.append(side)
            env = dict(base, MESHGUARD__KAFKA__BOOTSTRAP_SERVERS=a.bootstrap, MESHGUARD__KAFKA__GROUP_ID=group,
                       MESHGUARD__PRODUCTS__DIR=str(self.products_dir_for(topic)), MESHGUARD__SCHEMAS__DIR=str(schemas or REPO / "schemas"),
                       MESHGUARD__TOPICS__DLQ=dlq, MESHGUARD__TOPICS__ALERTS=f"{group}-alerts",
                       MESHGUARD__TOPICS__LINEAGE=f"{group}-lineage",
                       MESHGUARD__HTTP__ADDR=f"127.0.0.1:{a.metrics_port}",
                       MESHGUARD__MONGODB__URI=a.mongodb, MESHGUARD__MONGODB__DATABASE=db,
                       MESHGUARD__MYSQL__ENABLED="true" if name in RECONCILING else "false",
                       MESHGUARD__MONGODB__ENABLED="true" if name in STORING else "false",
                       RUST_LOG="warn")
            # Group-wide quality's topics of this contender only (group scope is the default):
            # the compacted state and claims topics are read to their end at every assignment,
            # and the defaults would grow with every run on a broker that is kept.
            for side in ("partials", "state", "claims"):
                self.kafka.create(f"{group}-{side}", 3)
                self.topics.append(f"{group}-{side}")
            env.update(MESHGUARD__TOPICS__PARTIALS=f"{group}-partials",
                       MESHGUARD__TOPICS__QUALITY_STATE=f"{group}-state", MESHGUARD__TOPICS__CLAIMS=f"{group}-claims")
            if variant == "group":
                env.update(MESHGUARD__QUALITY__SCOPE="group")
            if name == "meshguard+all-decoupled":
                # The records topic exists before the clock starts, as the other side topics.
                self.kafka.create(f"{group}-records", a.partitions)
                self.topics.append(f"{group}-records")
                env.update(MESHGUARD__MONGODB__MATERIALIZE="kafka", MESHGUARD__TOPICS__RECORDS=f"{group}-records")
            if name != "meshguard":
                self.ensure_mysql()
                env["MESHGUARD__MYSQL__URL"] = self.mysql_url()
            binary = a.meshguard_before if name == "meshguard@before" else str(self.meshguard)
            return [binary, "run", "--config", str(cfg)], env, True
        if name == "node-seed":
            self.ensure_mysql()
            db = self.name("node").replace("-", "_")
            self.mongo_dbs.append(db)
            env = dict(base, MODE="full", REPO=str(REPO), PRODUCT_YAML=str(self.products_dir_for(topic) / "payments.yaml"),
                       MYSQL_URL=self.mysql_url(), MONGODB_URL=a.mongodb, MONGODB_DB=db)
            return ["node", str(REPO / "benches/peers/node/peer.js")], env, True
        if name == "python":
            return [str(CACHE / "venv/bin/python"), str(REPO / "benches/peers/python/peer.py")], base, True
        if name == "kstreams":
            lib = CACHE / "kstreams"
            cp = f"{lib}/kstreams-peer-0.0.0.jar:{lib}/lib/*"
            return ["java", "-Xmx256m", "-XX:+UseG1GC", "-cp", cp, "meshguard.bench.Peer"], base, True
        if name == "bento":
            cfg = self.tmp / f"{group}-bento.yaml"
            cfg.write_text(bento_config(a.bootstrap, topic, group, dlq, REPO / "schemas/payment-schema.json"))
            return [str(CACHE / "bin/bento"), "-c", str(cfg), "--log.level", "warn"], base, True
        raise ValueError(name)

    def products_dir_for(self, topic):
        d = self.tmp / f"products-{topic}"
        return d if d.exists() else self.products_dir(topic)

    def spawn(self, argv, env, stdout):
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=stdout, stderr=open(self.tmp / f"{Path(argv[0]).name}-{time.time_ns()}.log", "w"),
                                start_new_session=True)

    def stop(self, proc, timeout=30):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # -----------------------------------------------------------------------------------------

    def throughput(self, name, topic, n, invalid, topics=None, schemas=None, tag=""):
        group = self.name(f"g-{slug(name)}{tag}")
        dlq = self.name(f"dlq-{slug(name)}{tag}")
        self.kafka.create(dlq, 1)
        self.topics.append(dlq)
        argv, env, uses_group = self.contender(name, topic, dlq, group, schemas=schemas)
        out_path = self.tmp / f"{group}.out"
        log(f"{name}: start")
        t0 = time.time()
        with open(out_path, "w") as out:
            proc = self.spawn(argv, env, out)
            sampler = Sampler(proc.pid)
            sampler.start()
            probe = self.kafka.committed_probe(group, topic, topics) if uses_group else None
            end = self.kafka.end_offsets_many(topics) if topics else self.kafka.end_offsets(topic)
            total = sum(end.values())
            done_at, processed, timed_out = None, 0, False
            rusage = None
            while True:
                if not uses_group:
                    pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                    if pid != 0:
                        done_at = time.time()
                        proc.returncode = os.waitstatus_to_exitcode(status)
                        rusage = ru
                        break
                else:
                    c = probe()
                    if c is not None:
                        processed = sum(min(c.get(p, 0), end[p]) for p in end)
                        if processed >= total:
                            done_at = time.time()
                            break
                    if proc.poll() is not None:
                        break
                if time.time() - t0 > self.args.timeout:
                    timed_out = True
                    done_at = time.time()
                    break
                time.sleep(0.05)
            materialized = self.wait_materialized(group, t0, done_at, proc) if name.startswith("meshguard+all-decoupled") and done_at else None
            sampler.stop_flag.set()
            sampler.sample()
            cpu = sampler.cpu()
            rss = sampler.peak_rss
            runq = sampler.runqueue_wait()
            metrics = scrape(self.args.metrics_port) if name.startswith("meshguard") else None
            self.stop(proc)
            rc = proc.returncode
            if probe:
                probe.close()
        if not uses_group:
            with open(out_path) as f:
                processed = sum(1 for _ in f)
            if rusage is not None:
                cpu = rusage.ru_utime + rusage.ru_stime
                rss = max(rss, rusage.ru_maxrss * 1024)
        wall = done_at - t0 if done_at else time.time() - t0
        ok = done_at is not None and (processed >= total)
        dlq_count = self.kafka.count(dlq)
        r = {
            "contender": name, "events": processed, "of": total, "wall_s": round(wall, 3),
            "events_per_s": round(processed / wall, 1) if wall > 0 else 0,
            "cpu_s": round(cpu, 2), "cpu_s_per_million": round(cpu / processed * 1e6, 2) if processed else None,
            "peak_rss_mb": round(rss / 2**20, 1), "dlq": dlq_count if name != "kcat" else None, "invalid_produced": invalid,
            "runqueue_wait_s": round(runq, 2),
            "complete": ok, "timed_out": timed_out, "exit_code": rc,
        }
        if metrics:
            r["sink_write_seconds"] = metrics
        if materialized:
            r.update(materialized)
        if name.partition(":")[0] in STORING and ok and (materialized is None or materialized.get("materialized")):
            try:
                r["api"] = self.api_latency(env)
            except Exception as e:  # the stream's figures stand without it
                r["api"] = {"error": str(e)[:200]}
        log(json.dumps(r))
        return r

    def api_latency(self, run_env, samples=300):
        """API reads on the store a run filled: `meshguard serve` on it, then GET data/{id} and
        lineage/{id} for `samples` record ids (one at a time, p50/p99 in ms) and the README's
        search (3 times, the median)."""
        import pymongo
        import urllib.request
        port = self.args.metrics_port + 1
        secret = uuid.uuid4().hex + uuid.uuid4().hex
        env = dict(run_env, MESHGUARD__AUTH__JWT_HS256_SECRET=secret, MESHGUARD__API__ADDR=f"127.0.0.1:{port}",
                   MESHGUARD__HTTP__ADDR=f"127.0.0.1:{port + 1}")
        db = run_env["MESHGUARD__MONGODB__DATABASE"]
        client = pymongo.MongoClient(self.args.mongodb)
        store = client[db]["records.payments-data-product"]
        ids = [d["_id"] for d in store.find({}, {"_id": 1, "_meta.offset": 1}).limit(samples * 2) if "_meta" in d][:samples]
        docs = store.estimated_document_count()
        client.close()
        token = subprocess.run([str(self.meshguard), "token", "--sub", "bench", "--role", "payments-team"], env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        out = open(self.tmp / f"{db}-serve.out", "w")
        proc = self.spawn([str(self.meshguard), "serve"], env, out)
        base = f"http://127.0.0.1:{port}"

        def call(method, path, body=None):
            req = urllib.request.Request(base + path, data=body, method=method,
                                         headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=120) as resp:
                text = resp.read()
                status = resp.status
            return (time.perf_counter() - t) * 1000, status, text

        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=2).read()
                    break
                except Exception:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError("meshguard serve did not start")
                    time.sleep(0.1)
            result = {"store_documents": docs, "samples": len(ids)}
            for route in ("data", "lineage"):
                ms = sorted(call("GET", f"/payments-data-product/{route}/{i}")[0] for i in ids)
                if ms:
                    result[f"{route}_p50_ms"] = round(ms[len(ms) // 2], 2)
                    result[f"{route}_p99_ms"] = round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2)
            body = json.dumps({"filter": {"and": [{"field": "payment_id", "op": "prefix", "value": "ab"},
                                                    {"field": "status", "op": "eq", "value": "COMPLETED"}]},
                                 "sort": {"field": "amount", "order": "desc"}, "limit": 5}).encode()
            # Its key prefix reads a range of the `_id` index (FerretDB patched by
            # testcontainers/ferretdb/patches/id-prefix.patch); the status is filtered in FerretDB.
            try:
                first, _, text = call("POST", "/payments-data-product/search", body)
                result["search_results"] = json.loads(text).get("count")
                result["search_ms"] = round(sorted([first] + [call("POST", "/payments-data-product/search", body)[0] for _ in range(2)])[1], 1)
            except Exception as e:
                result["search_ms"] = f"failed: {str(e)[:80]}"
        finally:
            self.stop(proc)
            out.close()
        log(json.dumps({"api": result}))
        return result

    def wait_materialized(self, group, t0, stream_done, proc):
        """After the stream of a decoupled run has committed everything: waits until the
        materializer has committed the whole records topic; the documents it wrote (from its
        metric), its docs/s from the start, and the lag left when the stream finished."""
        topic = f"{group}-records"
        end = self.kafka.end_offsets(topic)
        probe = self.kafka.committed_probe(f"{group}.materializer", topic)
        deadline = time.time() + self.args.timeout
        done = None
        while time.time() < deadline and proc.poll() is None:
            c = probe()
            if c is not None and all(c.get(p, 0) >= o for p, o in end.items()):
                done = time.time()
                break
            time.sleep(0.1)
        probe.close()
        docs = scrape_counter(self.args.metrics_port, "meshguard_materialized_documents_total", 'outcome="written"')
        if done is None:
            return {"materialized": False, "materialized_docs": docs}
        wall = done - t0
        # The records topic's records the materializer consumed (with --keys, many versions of a
        # key fold into one document write, so records/s and docs/s differ).
        records = sum(end.values())
        return {"materialized": True, "materialized_docs": docs, "materialize_wall_s": round(wall, 3),
                "materialized_docs_per_s": round(docs / wall, 1) if docs and wall > 0 else None,
                "materialized_records": records, "materialized_records_per_s": round(records / wall, 1) if wall > 0 else None,
                "materialize_lag_at_stream_end_s": round(done - stream_done, 3)}

    def mongodb_ceiling(self, n):
        """The document store's own ceiling: unordered insert_many of n documents shaped like the
        record store's (a payment's fields, `_meta`, one lineage entry: what meshguard writes for
        a new key), batches of 4,000, from one pymongo client into a fresh collection, docs/s.
        Twice: with ids in ascending order (each insert lands at the right edge of the `_id`
        index) and with random v4 UUIDs, the ids the stream's records have (each insert lands
        anywhere in the index, as meshguard's do)."""
        import datetime
        import pymongo
        client = pymongo.MongoClient(self.args.mongodb)
        db = self.name("ceiling").replace("-", "_")
        self.mongo_dbs.append(db)
        coll = client[db]["records.payments-data-product"]
        now = datetime.datetime.now(datetime.timezone.utc)

        def doc(i, k=None):
            k = k or f"{i:08x}-1111-4111-8111-111111111111"
            lid = f"ceiling/{i % 12}/{i}/1700000000000"
            return {"_id": k, "payment_id": k, "customer_id": i, "amount": 1234.56, "currency": "EUR", "status": "COMPLETED",
                    "payment_method": {"type": "CARD", "last_four": "1234"}, "created_at": "2026-12-05T08:00:00.123456789Z",
                    "updated_at": "2026-12-05T08:00:00.223456789Z",
                    "_meta": {"event_time_ms": 1700000000000 + i, "topic": "ceiling", "partition": i % 12, "offset": i,
                              "timestamp_ms": 1700000000000, "contract": "payment-schema", "contract_version": "1.0.0",
                              "version_id": f"{k}@{lid}", "updated_at": now},
                    "_lineage": [{"lineage_id": lid, "product": "payments-data-product",
                                  "source": {"system": "kafka", "topic": "ceiling", "partition": i % 12, "offset": i, "record_id": k, "timestamp": now},
                                  "destination": {"system": "mongodb", "collection": "records.payments-data-product", "document_id": k},
                                  "transformation": {"type": "contract-validation", "contract": "payment-schema", "version": "1.0.0", "outcome": "valid"},
                                  "created_at": now, "event_time_ms": 1700000000000 + i}]}
        import random
        import uuid

        def insert_all(target, key=lambda i: None):
            """insert_many of the n documents into `target`, 4,000 a call; the wall time."""
            t0 = time.time()
            for start in range(0, n, 4000):
                target.insert_many([doc(i, key(i)) for i in range(start, min(n, start + 4000))], ordered=False)
            return time.time() - t0

        rnd = random.Random(11)
        self.mongo_dbs.append(db + "_uuid")
        random_wall = insert_all(client[db + "_uuid"]["records.payments-data-product"],
                                 lambda i: str(uuid.UUID(int=rnd.getrandbits(128), version=4)))
        wall = insert_all(coll)
        # The merge ceiling: what updating a key that exists costs any client: find_one by _id,
        # then replace_one by _id with the document grown to ten lineage entries (the default
        # mongodb.history), 8 threads (the materializer's merges in flight), over m keys.
        from concurrent.futures import ThreadPoolExecutor
        m = min(n, 4000)

        def merge(i):
            d = coll.find_one({"_id": f"{i:08x}-1111-4111-8111-111111111111"})
            d["_lineage"] = [dict(d["_lineage"][0], lineage_id=f"{d['_lineage'][0]['lineage_id']}/{j}") for j in range(10)]
            coll.replace_one({"_id": d["_id"]}, d)

        t1 = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(merge, range(m)))
        merge_wall = time.time() - t1
        client.close()
        r = {"contender": "mongodb-ceiling", "docs": n, "wall_s": round(wall, 3), "docs_per_s": round(n / wall, 1),
             "random_ids_docs_per_s": round(n / random_wall, 1), "merge_docs": m, "merge_docs_per_s": round(m / merge_wall, 1)}
        log(json.dumps(r))
        return r

    def latency(self, name, rate, duration):
        topic = self.name(f"lat-{slug(name)}")
        group = self.name(f"lg-{slug(name)}")
        dlq = self.name(f"ldlq-{slug(name)}")
        self.kafka.create(topic, self.args.partitions)
        self.kafka.create(dlq, 1, log_append_time=True)
        self.topics += [topic, dlq]
        argv, env, _ = self.contender(name, topic, dlq, group)
        proc = self.spawn(argv, env, subprocess.DEVNULL)
        sampler = Sampler(proc.pid)
        sampler.start()
        deadline = time.time() + 60
        while not self.kafka.group_ready(group):
            if time.time() > deadline or proc.poll() is not None:
                self.stop(proc)
                raise RuntimeError(f"{name} did not join its group")
            time.sleep(0.2)
        time.sleep(1.0)
        count = int(rate * duration)
        polls = []
        probe = self.kafka.committed_probe(group, topic)
        stop_polling = threading.Event()

        def poll_commits():
            while not stop_polling.is_set():
                c = probe()
                if c is not None:
                    polls.append((time.time() * 1000, c))
                time.sleep(0.05)

        poller = threading.Thread(target=poll_commits, daemon=True)
        poller.start()
        # A reconciling contender needs the events' source rows, as in throughput mode: without
        # them every record waits out reconcile.grace_ms as "not yet in the source".
        valid, invalid = self.produce(topic, count, rate=rate, mysql=name.partition(":")[0] in RECONCILING)
        end = self.kafka.end_offsets(topic)
        deadline = time.time() + max(60, duration)
        while time.time() < deadline:
            if polls and all(polls[-1][1].get(p, 0) >= o for p, o in end.items()):
                break
            time.sleep(0.1)
        time.sleep(0.2)
        stop_polling.set()
        poller.join()
        probe.close()
        sampler.stop_flag.set()
        sampler.sample()
        self.stop(proc)
        src = self.kafka.read_all(topic, with_headers=False)
        # Records of the first --warmup seconds of production are left out of the percentiles:
        # the generator's own producer connects while its first events are already stamped.
        first = min((ts for _, _, ts, _ in src), default=0)
        cutoff = first + self.args.warmup * 1000
        created = {(p, o): ts for p, o, ts, _ in src}
        dl = self.kafka.read_all(dlq, with_headers=True)
        lat = []
        for _, _, ts, h in dl:
            try:
                key = (int(h["meshguard.source.partition"]), int(h["meshguard.source.offset"]))
            except (KeyError, TypeError, ValueError):
                continue
            if key in created and created[key] >= cutoff:
                lat.append(ts - created[key])
        # Commit latency: first poll whose committed offset covers the record.
        commit_lat = []
        by_part = {}
        for p, o, ts, _ in src:
            by_part.setdefault(p, []).append((o, ts))
        for p, recs in by_part.items():
            recs.sort()
            i = 0
            for t, c in polls:
                while i < len(recs) and recs[i][0] < c.get(p, 0):
                    if recs[i][1] >= cutoff:
                        commit_lat.append(t - recs[i][1])
                    i += 1
        r = {"contender": name, "rate": rate, "duration_s": duration, "produced": count, "invalid_produced": invalid,
             "dlq": len(dl), "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
             "dlq_latency_ms": pct(lat), "commit_latency_ms": pct(commit_lat), "committed_records": sum(len(r) for r in by_part.values()),
             "warmup_s": self.args.warmup}
        log(json.dumps(r))
        return r

    def cleanup(self):
        self.kafka.delete(self.topics)
        if self.mysql_db and not self.args.keep:
            host, port = self.args.mysql_host.split(":")
            subprocess.run(["mariadb", "-h", host, "-P", port, "-u", "root", "-e", f"DROP DATABASE IF EXISTS {self.mysql_db}"], check=False)
        if self.mongo_dbs and not self.args.keep:
            try:
                import pymongo
                client = pymongo.MongoClient(self.args.mongodb, serverSelectionTimeoutMS=5000)
                for db in set(self.mongo_dbs):
                    client.drop_database(db)
            except Exception as e:  # noqa: BLE001 - best effort
                log(f"mongo clean-up: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Growth curves (meshguard validate+DLQ only)


def big_schema():
    """The seed's payment schema plus 200 typed properties and a nested array of objects."""
    schema = json.loads((REPO / "schemas/payment-schema.json").read_text())
    kinds = [
        {"type": "string", "pattern": "^[A-Z]{2}[0-9]{6}$"},
        {"type": "integer", "minimum": 0, "maximum": 1000000},
        {"type": "number", "minimum": 0},
        {"type": "string", "enum": ["RETAIL", "CORPORATE", "PRIVATE", "PUBLIC"]},
        {"type": "string", "format": "date-time"},
        {"type": "boolean"},
        {"type": "string", "maxLength": 64},
    ]
    for i in range(200):
        schema["properties"][f"f{i:03d}"] = kinds[i % len(kinds)]
    schema["properties"]["lines"] = {
        "type": "array", "maxItems": 50,
        "items": {"type": "object", "required": ["sku", "qty", "price"], "properties": {
            "sku": {"type": "string", "pattern": "^[A-Z0-9-]{4,20}$"}, "qty": {"type": "integer", "minimum": 1},
            "price": {"type": "number", "minimum": 0}, "tags": {"type": "array", "items": {"type": "string"}},
            "tax": {"type": "object", "properties": {"rate": {"type": "number"}, "code": {"type": "string"}}}}},
    }
    schema["required"] = schema["required"] + ["f000", "f001", "lines"]
    return schema


def big_values(i):
    vals = ["AB123456", 4242, 12.5, "RETAIL", "2026-11-29T12:00:00Z", True, "free text of a few words"]
    out = {f"f{k:03d}": vals[k % len(vals)] for k in range(200)}
    out["lines"] = [{"sku": f"SKU-{i % 1000:04d}-{j}", "qty": j + 1, "price": 9.5 + j, "tags": ["a", "b"],
                     "tax": {"rate": 0.2, "code": "VAT"}} for j in range(5)]
    return out


def reshape(lines, pad_to=None, big=False):
    """Valid JSON objects get padding (a `memo` string) or the big contract's fields; anything
    else (the generator's undecodable records) is kept as it is."""
    out = []
    for i, line in enumerate(lines):
        try:
            doc = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if not isinstance(doc, dict):
            out.append(line)
            continue
        if big:
            doc.update(big_values(i))
        if pad_to:
            size = len(json.dumps(doc, separators=(",", ":")))
            if pad_to > size + 12:
                doc["memo"] = "x" * (pad_to - size - 11)
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def produce_raw(bootstrap, topics, payloads, n):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                  "batch.size": 1048576, "queue.buffering.max.kbytes": 1048576, "message.max.bytes": 10485760})
    for i in range(n):
        while True:
            try:
                p.produce(topics[i % len(topics)], payloads[i % len(payloads)])
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("growth preload: not every record was delivered")


def growth(run, a):
    base = run.tmp / "base.ndjson"
    base_topic = run.name("growth-base")
    products = run.products_dir(base_topic)
    env = dict(os.environ, MESHGUARD__PRODUCTS__DIR=str(products), MESHGUARD__SCHEMAS__DIR=str(REPO / "schemas"), RUST_LOG="warn")
    subprocess.run([a.meshguard, "produce", "-t", base_topic, "-n", "20000", "--invalid-ratio", str(a.invalid_ratio),
                    "--seed", str(a.seed), "-o", str(base)], env=env, cwd=REPO, check=True)
    lines = base.read_bytes().splitlines()
    n0 = a.growth_events
    points = []

    def point(dimension, label, x, payloads, n, topics=1, partitions=12, schemas=None):
        tag = slug(f"-{dimension[:4]}-{x}")
        names = [run.name(f"gr{tag}-{i}") for i in range(topics)]
        for t in names:
            run.kafka.create(t, partitions)
        run.topics += names
        run.products_dir(names[0], names)
        try:
            produce_raw(a.bootstrap, names, payloads, n)
            mean = sum(len(x) for x in payloads) / len(payloads)
            r = run.throughput("meshguard", names[0], n, None, topics=names if topics > 1 else None, schemas=schemas, tag=tag)
            r.update(dimension=dimension, label=label, x=x, mean_bytes=round(mean), topics=topics, partitions=partitions)
        except Exception as e:  # noqa: BLE001 - one failed point must not end the curves
            log(f"growth point {dimension} {label}: {e}")
            r = {"dimension": dimension, "label": label, "x": x, "error": str(e)}
        points.append(r)

    seed_schema_dir = REPO / "schemas"
    for kb in (0.3, 3, 30):
        n = n0 if kb < 10 else max(n0 // 10, 1000)
        point("message size", f"{kb} KB", kb, reshape(lines, pad_to=int(kb * 1000)), n)
    big_dir = run.tmp / "big-schemas"
    shutil.copytree(REPO / "schemas", big_dir)
    (big_dir / "payment-schema.json").write_text(json.dumps(big_schema(), indent=1))
    point("contract size", "seed (8 properties)", 8, reshape(lines), n0, schemas=seed_schema_dir)
    point("contract size", "~210 properties + nested arrays", 210, reshape(lines, big=True), n0 // 2, schemas=big_dir)
    for t in (1, 10, 100):
        point("bound topics", f"{t}", t, reshape(lines), n0, topics=t, partitions=1)
    for parts in (1, 12, 48):
        point("partitions", f"{parts}", parts, reshape(lines), n0, partitions=parts)
    return points


def chart(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dims = ["message size", "contract size", "bound topics", "partitions"]
    units = {"message size": "KB per event", "contract size": "properties in the contract", "bound topics": "topics", "partitions": "partitions"}
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for i, d in enumerate(dims):
        ps = [p for p in points if p.get("dimension") == d and "error" not in p]
        xs = [p["x"] for p in ps]
        for row, (key, label) in enumerate((("events_per_s", "events/s"), ("peak_rss_mb", "peak RSS (MB)"))):
            ax = axes[row][i]
            ax.plot(xs, [p[key] for p in ps], marker="o")
            if d != "contract size":
                ax.set_xscale("log")
            ax.set_xlabel(units[d])
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(f"vs {d}")
            for x, p in zip(xs, ps):
                ax.annotate(f"{p[key]:,.0f}", (x, p[key]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    fig.suptitle("meshguard validate+DLQ: throughput and peak RSS (one point per run of the harness's growth mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def slug(name):
    """A contender's name as it may appear in a topic or group name."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def pct(values):
    if not values:
        return None
    v = sorted(values)

    def q(x):
        return round(v[min(len(v) - 1, int(x * len(v)))], 1)

    return {"n": len(v), "p50": q(0.50), "p99": q(0.99), "max": round(v[-1], 1)}


def scrape(port):
    """meshguard_sink_write_seconds sums and counts per sink, from the metrics endpoint."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception:  # noqa: BLE001 - metrics are a bonus
        return None
    out = {}
    for line in text.splitlines():
        m = re.match(r'meshguard_(sink_write_seconds|reconcile_seconds)_(sum|count)(?:\{sink="(\w+)"\})? ([0-9.e+-]+)', line)
        if m:
            key = m.group(3) or m.group(1)
            out.setdefault(key, {})[m.group(2)] = float(m.group(4))
    return out


def scrape_counter(port, name, labels):
    """The sum of a counter's series whose labels contain `labels`, from the metrics endpoint."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception:  # noqa: BLE001 - metrics are a bonus
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def bento_config(bootstrap, topic, group, dlq, schema):
    return f"""input:
  kafka_franz:
    seed_brokers: [ "{bootstrap}" ]
    topics: [ "{topic}" ]
    consumer_group: "{group}"
    start_from_oldest: true
    commit_period: 100ms
pipeline:
  processors:
    - json_schema:
        schema_path: "file://{schema}"
    - catch:
        - mapping: |
            meta meshguard_failed = "true"
output:
  switch:
    cases:
      - check: '@meshguard_failed == "true"'
        output:
          kafka_franz:
            seed_brokers: [ "{bootstrap}" ]
            topic: "{dlq}"
            metadata:
              include_patterns: [ "^meshguard\\\\.source\\\\..*" ]
          processors:
            - mapping: |
                meta = deleted()
                meta "meshguard.source.topic" = "{topic}"
                meta "meshguard.source.partition" = metadata("kafka_partition").string()
                meta "meshguard.source.offset" = metadata("kafka_offset").string()
      - output:
          drop: {{}}
"""


def machine():
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "loadavg_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1) if m else None
    except OSError:
        pass
    return info


def versions(meshguard):
    def v(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return None

    return {"meshguard": v([meshguard, "--version"]), "kcat": v(["kcat", "-V"]), "node": v(["node", "--version"]),
            "python": platform.python_version(), "java": (subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines() or [None])[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=os.environ.get("MESHGUARD_TEST_KAFKA", "127.0.0.1:9092"))
    ap.add_argument("--mysql-host", default="127.0.0.1:3306")
    ap.add_argument("--mongodb", default=os.environ.get("MESHGUARD_TEST_MONGODB", "mongodb://127.0.0.1:27017"))
    ap.add_argument("--meshguard", required=True, help="the meshguard binary (release build)")
    ap.add_argument("--meshguard-before", help="another meshguard binary, run as the contender meshguard@before (validate+DLQ)")
    ap.add_argument("--consumer-config", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka consumer property for the meshguard contenders (repeatable)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=0,
                    help="record ids drawn from a pool of this many keys (meshguard produce --keys); 0: a fresh id per event")
    ap.add_argument("--invalid-ratio", type=float, default=0.01)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--contenders", default=",".join(ALL), help=f"comma-separated subset of {ALL}")
    ap.add_argument("--mode", choices=["throughput", "latency", "both", "growth"], default="both")
    ap.add_argument("--growth-events", type=int, default=200_000, help="growth mode: events per point (a tenth at 30 KB)")
    ap.add_argument("--chart", help="growth mode: write the chart (PNG) here")
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--duration", type=int, default=30, help="latency mode: seconds of production")
    ap.add_argument("--warmup", type=float, default=2, help="latency mode: seconds of production left out of the percentiles")
    ap.add_argument("--latency-contenders", default="meshguard,meshguard+reconcile,meshguard+all,python,kstreams,bento")
    ap.add_argument("--timeout", type=float, default=600, help="throughput mode: longest run of one contender (s)")
    ap.add_argument("--metrics-port", type=int, default=19464)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--api-search", metavar="CONTENDER", default="",
                    help="ignored: the README's search is now timed on every store (round 5d's command had it)")
    ap.add_argument("--keep", action="store_true", help="keep the bench databases")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every contender finished and each DLQ count equals the invalid count")
    a = ap.parse_args()

    run = Run(a)
    results = {"run": run.id, "machine": machine(), "versions": versions(a.meshguard), "args": vars(a), "throughput": [], "latency": [], "growth": []}
    names = [c for c in a.contenders.split(",") if c]
    failures = []
    try:
        if a.mode in ("throughput", "both"):
            topic = run.name("payments")
            run.kafka.create(topic, a.partitions)
            run.topics.append(topic)
            needs_mysql = any(n.partition(":")[0] in RECONCILING for n in names)
            valid, invalid = run.produce(topic, a.events, mysql=needs_mysql)
            for n in names:
                try:
                    if n == "mongodb-ceiling":
                        results["store_ceiling"] = run.mongodb_ceiling(min(a.events, 200_000))
                        continue
                    results["throughput"].append(run.throughput(n, topic, a.events, invalid))
                except Exception as e:  # noqa: BLE001 - one broken peer must not end the run
                    log(f"{n}: failed: {e}")
                    results["throughput"].append({"contender": n, "error": str(e)})
        if a.mode == "growth":
            results["growth"] = growth(run, a)
            if a.chart:
                try:
                    chart(results["growth"], a.chart)
                except Exception as e:  # noqa: BLE001 - the table and JSON still count
                    log(f"chart: {e}")
        if a.mode in ("latency", "both"):
            for n in [c for c in a.latency_contenders.split(",") if c and c in names]:
                try:
                    results["latency"].append(run.latency(n, a.rate, a.duration))
                except Exception as e:  # noqa: BLE001
                    log(f"{n}: latency failed: {e}")
                    results["latency"].append({"contender": n, "error": str(e)})
    finally:
        results["machine"]["loadavg_end"] = os.getloadavg()
        run.cleanup()
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))
    print(table(results))
    if a.check:
        for r in results["throughput"]:
            if "error" in r or not r["complete"]:
                failures.append(f"{r['contender']}: did not finish ({r.get('error') or r})")
            elif r["contender"] != "kcat" and r["dlq"] != r["invalid_produced"] and r["contender"].startswith("meshguard"):
                failures.append(f"{r['contender']}: {r['dlq']} dead letters for {r['invalid_produced']} invalid events")
            elif r.get("materialized") is False:
                failures.append(f"{r['contender']}: the materializer did not write the whole records topic")
        for r in results["latency"]:
            if "error" in r:
                failures.append(f"{r['contender']} latency: {r['error']}")
            elif r["contender"].startswith("meshguard") and r["dlq"] != r["invalid_produced"]:
                failures.append(f"{r['contender']} latency: {r['dlq']} dead letters for {r['invalid_produced']} invalid events")
        for f in failures:
            print(f"FAILED: {f}")
        print(f"{len(results['throughput']) + len(results['latency']) - len(failures)} passed, {len(failures)} failed")
        return 1 if failures else 0
    return 0


def table(results):
    rows = [r for r in results["throughput"] if "error" not in r]
    ceiling = next((r["events_per_s"] for r in rows if r["contender"] == "kcat"), None)
    mg = next((r["events_per_s"] for r in rows if r["contender"] == "meshguard"), None)
    lines = ["| contender | events | events/s | × kcat | meshguard × | CPU s / 1M | peak RSS MB | DLQ / invalid |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        eps = r["events_per_s"]
        lines.append("| {} | {}{} | {:,.0f} | {} | {} | {} | {} | {} |".format(
            r["contender"], f"{r['events']:,}", "" if r["complete"] else f" of {r['of']:,} (stopped)", eps,
            f"{eps / ceiling:.2f}" if ceiling else "–", f"{mg / eps:.1f}" if mg and eps else "–",
            r["cpu_s_per_million"], r["peak_rss_mb"],
            "–" if r["dlq"] is None else f"{r['dlq']:,} / {r['invalid_produced']:,}"))
    for r in results["throughput"]:
        if "error" in r:
            lines.append(f"| {r['contender']} | failed: {r['error'][:80]} | | | | | | |")
    stored = [r for r in rows if "materialized" in r]
    store_ceiling = (results.get("store_ceiling") or {}).get("docs_per_s")
    if stored or store_ceiling:
        merge_ceiling = (results.get("store_ceiling") or {}).get("merge_docs_per_s")
        random_ceiling = (results.get("store_ceiling") or {}).get("random_ids_docs_per_s")
        lines += ["", "| document store | docs | docs/s | × insert_many ceiling | × insert_many, random ids | × merge ceiling | records/s | lag left when the stream finished (s) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "–"  # noqa: E731
        if store_ceiling:
            c = results["store_ceiling"]
            lines.append(f"| insert_many ceiling (pymongo, 4,000/batch, ascending ids) | {c['docs']:,} | {store_ceiling:,.0f} | 1.00 | "
                         f"{ratio(store_ceiling, random_ceiling)} | – | – | – |")
            if random_ceiling:
                lines.append(f"| insert_many ceiling (the same, random v4 UUID ids as the stream's) | {c['docs']:,} | {random_ceiling:,.0f} | "
                             f"{ratio(random_ceiling, store_ceiling)} | 1.00 | – | – | – |")
            if merge_ceiling:
                lines.append(f"| merge ceiling (pymongo find_one + replace_one by _id, 8 threads, 10 lineage entries) | {c['merge_docs']:,} "
                             f"| {merge_ceiling:,.0f} | {ratio(merge_ceiling, store_ceiling)} | {ratio(merge_ceiling, random_ceiling)} | 1.00 | – | – |")
        for r in stored:
            dps = r.get("materialized_docs_per_s")
            lines.append("| {} materializer | {} | {} | {} | {} | {} | {} | {} |".format(
                r["contender"], f"{r['materialized_docs']:,.0f}" if r.get("materialized_docs") else "–",
                f"{dps:,.0f}" if dps else "(did not finish)", ratio(dps, store_ceiling), ratio(dps, random_ceiling),
                ratio(dps, merge_ceiling),
                f"{r['materialized_records_per_s']:,.0f}" if r.get("materialized_records_per_s") else "–",
                r.get("materialize_lag_at_stream_end_s", "–")))
    with_api = [r for r in rows if r.get("api") and "error" not in r["api"]]
    if with_api:
        lines += ["", "| API on the store the run filled | documents | GET data p50 / p99 ms | GET lineage p50 / p99 ms | README search ms |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for r in with_api:
            x = r["api"]
            lines.append("| {} | {:,} | {} / {} | {} / {} | {} |".format(
                r["contender"], x["store_documents"], x.get("data_p50_ms"), x.get("data_p99_ms"),
                x.get("lineage_p50_ms"), x.get("lineage_p99_ms"), x.get("search_ms")))
    if results.get("growth"):
        lines += ["", "| dimension | point | mean bytes/event | events | events/s | MB/s | CPU s / 1M | peak RSS MB |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in results["growth"]:
            if "error" in r:
                lines.append(f"| {r['dimension']} | {r['label']} | failed: {r['error'][:80]} | | | | | |")
                continue
            lines.append("| {} | {} | {:,} | {:,} | {:,.0f} | {:.1f} | {} | {} |".format(
                r["dimension"], r["label"], r["mean_bytes"], r["events"], r["events_per_s"],
                r["events_per_s"] * r["mean_bytes"] / 1e6, r["cpu_s_per_million"], r["peak_rss_mb"]))
    if results["latency"]:
        lines += ["", "| contender | rate/s | DLQ latency p50 / p99 / max ms (n) | commit latency p50 / p99 / max ms | peak RSS MB | DLQ / invalid |",
                  "| --- | ---: | --- | --- | ---: | ---: |"]
        for r in results["latency"]:
            if "error" in r:
                lines.append(f"| {r['contender']} | failed: {r['error'][:80]} | | | | |")
                continue
            d, c = r["dlq_latency_ms"], r["commit_latency_ms"]
            lines.append("| {} | {:,} | {} | {} | {} | {:,} / {:,} |".format(
                r["contender"], r["rate"], f"{d['p50']} / {d['p99']} / {d['max']} ({d['n']})" if d else "–",
                f"{c['p50']} / {c['p99']} / {c['max']}" if c else "–", r["peak_rss_mb"], r["dlq"], r["invalid_produced"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
