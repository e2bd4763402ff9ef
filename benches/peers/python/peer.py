"""What a Python team would write: confluent-kafka + fastjsonschema, validate, dead-letter invalid
records, at-least-once (offsets stored after the batch's dead letters are acknowledged).

Environment: BOOTSTRAP, TOPIC, GROUP, DLQ, SCHEMA (path to the contract's JSON Schema).
"""

import json
import os
import signal
import sys

import fastjsonschema
from confluent_kafka import Consumer, KafkaException, Producer

BATCH = 2000
UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

running = True


def stop(*_):
    global running
    running = False


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(os.environ["SCHEMA"], encoding="utf-8") as f:
        # fastjsonschema knows no `uuid` format and would accept any string there (the seed's
        # payment_id is `format: uuid`); a team holding to the contract adds it.
        validate = fastjsonschema.compile(json.load(f), formats={"uuid": UUID})
    dlq = os.environ["DLQ"]
    consumer = Consumer({
        "bootstrap.servers": os.environ["BOOTSTRAP"],
        "group.id": os.environ["GROUP"],
        "auto.offset.reset": "earliest",
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 100,
    })
    producer = Producer({
        "bootstrap.servers": os.environ["BOOTSTRAP"],
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    })
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    consumer.subscribe([os.environ["TOPIC"]])
    while running:
        batch = consumer.consume(BATCH, 0.1)
        if not batch:
            continue
        for msg in batch:
            if msg.error():
                continue
            value = msg.value()
            try:
                validate(json.loads(value))
                continue
            except fastjsonschema.JsonSchemaException:
                klass = b"contract_violation"
            except ValueError:  # json.JSONDecodeError, UnicodeDecodeError
                klass = b"json_syntax"
            producer.produce(dlq, value=value, key=msg.key(), on_delivery=delivered, headers=[
                ("meshguard.source.topic", msg.topic().encode()),
                ("meshguard.source.partition", str(msg.partition()).encode()),
                ("meshguard.source.offset", str(msg.offset()).encode()),
                ("meshguard.error.class", klass),
            ])
            producer.poll(0)
        producer.flush(30)
        if failed:
            raise KafkaException(failed[0])
        store_all(consumer, batch)
    consumer.close()


def store_all(consumer, batch):
    """Stores the next offset of the last record of each partition in the batch."""
    last = {}
    for m in batch:
        if not m.error():
            last[(m.topic(), m.partition())] = m
    for m in last.values():
        consumer.store_offsets(m)


if __name__ == "__main__":
    sys.exit(main())
