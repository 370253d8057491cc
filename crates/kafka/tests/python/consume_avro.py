#!/usr/bin/env python3
"""Read a fedistream Kafka channel topic from the other side, as a Python user
would: confluent-kafka's consumer and its AvroDeserializer, which fetches each
writer schema from the schema registry by the id in the record (Confluent wire
format) and decodes with fastavro. Prints one JSON object per record on stdout:
key, partition, offset, headers, schema_id, and the decoded value (or
"tombstone": true for a null value).

Install (what crates/kafka/tests/kafka_channel.rs expects in FEDISTREAM_PYTHON):
    scripts/python-deps     # a venv with confluent-kafka[avro]; prints its python

Usage: consume_avro.py --brokers HOST:PORT --topic T --registry URL --expect N [--timeout S]
Exits 1 (with what it got on stderr) if fewer than N records arrive in time.
"""

import argparse
import json
import struct
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"consume-avro-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([args.topic])
    got = []
    deadline = time.monotonic() + args.timeout
    try:
        while len(got) < args.expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consumer error: {msg.error()}")
            key = msg.key().decode("utf-8") if msg.key() is not None else None
            headers = {k: (v.decode("utf-8") if v is not None else None) for k, v in (msg.headers() or [])}
            out = {"key": key, "partition": msg.partition(), "offset": msg.offset(), "headers": headers}
            value = msg.value()
            if value is None:
                out["tombstone"] = True
            else:
                out["schema_id"] = struct.unpack(">bI", value[:5])[1]
                ctx = SerializationContext(msg.topic(), MessageField.VALUE, msg.headers())
                out["value"] = deserialize(value, ctx)
            got.append(out)
            print(json.dumps(out, default=str), flush=True)
    finally:
        consumer.close()
    if len(got) < args.expect:
        print(f"expected {args.expect} records from {args.topic}, got {len(got)} in {args.timeout}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
