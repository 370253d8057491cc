#!/usr/bin/env python3
"""Read a fedistream Kafka channel topic from the other side: confluent-kafka's
consumer, the Confluent wire format taken apart by hand (magic byte 0, 4-byte
big-endian schema id), the writer schema fetched by that id from the schema
registry over HTTP, the Avro body decoded with fastavro. Prints one JSON object
per record on stdout: key, schema_id, headers, and the decoded value (or
"tombstone": true for a null value).

Install (what crates/kafka/tests/kafka_channel.rs expects in FEDISTREAM_PYTHON):
    python3 -m venv /root/.cache/fedistream/py
    /root/.cache/fedistream/py/bin/pip install confluent-kafka fastavro
then run the Rust test with FEDISTREAM_PYTHON=/root/.cache/fedistream/py/bin/python.

Usage: consume_avro.py --brokers HOST:PORT --topic T --registry URL --expect N [--timeout S]
Exits 1 (with what it got on stderr) if fewer than N records arrive in time.
"""

import argparse
import io
import json
import struct
import sys
import time
import urllib.request
import uuid

import fastavro
from confluent_kafka import Consumer, KafkaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def fetch_schema(registry, schema_id, cache):
    if schema_id not in cache:
        req = urllib.request.Request(f"{registry.rstrip('/')}/schemas/ids/{schema_id}", headers={"Accept": CONTENT_TYPE})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.load(resp)
        cache[schema_id] = fastavro.parse_schema(json.loads(body["schema"]))
    return cache[schema_id]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"consume-avro-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([args.topic])
    schemas = {}
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
                magic, schema_id = struct.unpack(">bI", value[:5])
                if magic != 0:
                    raise RuntimeError(f"record {key}: magic byte {magic}, expected 0")
                schema = fetch_schema(args.registry, schema_id, schemas)
                out["schema_id"] = schema_id
                out["value"] = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema)
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
