#!/usr/bin/env python3
"""An independent Kafka client for the kafka tests (confluent-kafka, librdkafka 2.x).

  kafka_client.py produce BROKERS TOPIC FILE      one message per line of FILE; a line
                                                   "KEY\\tVALUE" has a key. Prints the
                                                   count once every message is acknowledged.
  kafka_client.py consume BROKERS TOPIC COUNT SECS [GROUP]
                                                   reads from the beginning until COUNT
                                                   messages or SECS seconds of silence;
                                                   one JSON line per message: topic,
                                                   partition, offset, key, value (base64).

The environment variable KAFKA_CLIENT_CONF, a JSON object, adds librdkafka settings to
both (security.protocol, ssl.ca.location, sasl.*).
"""
import base64
import json
import os
import sys
import time

from confluent_kafka import Consumer, Producer


def conf(**settings):
    settings.update(json.loads(os.environ.get("KAFKA_CLIENT_CONF") or "{}"))
    return settings


def produce(brokers, topic, path):
    p = Producer(conf(**{"bootstrap.servers": brokers, "linger.ms": 5}))
    failed = []
    n = 0

    def report(err, _msg):
        if err is not None:
            failed.append(str(err))

    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            if not line:
                continue
            key, sep, value = line.partition(b"\t")
            if not sep:
                key, value = None, line
            while True:
                try:
                    p.produce(topic, value=value, key=key, on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.1)
            n += 1
            p.poll(0)
    left = p.flush(60)
    if left or failed:
        print(f"not acknowledged: {left}, failed: {failed[:3]}", file=sys.stderr)
        sys.exit(1)
    print(n)


def consume(brokers, topic, count, secs, group=None):
    c = Consumer(
        conf(
            **{
                "bootstrap.servers": brokers,
                "group.id": group or f"reader-{time.time_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    c.subscribe([topic])
    got = 0
    quiet_since = time.monotonic()
    while got < count and time.monotonic() - quiet_since < secs:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            continue
        quiet_since = time.monotonic()
        got += 1
        print(
            json.dumps(
                {
                    "topic": m.topic(),
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": None if m.key() is None else m.key().decode("utf-8", "replace"),
                    "value": base64.b64encode(m.value() or b"").decode(),
                }
            ),
            flush=True,
        )
    c.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "consume":
        consume(
            sys.argv[2],
            sys.argv[3],
            int(sys.argv[4]),
            float(sys.argv[5]),
            sys.argv[6] if len(sys.argv) > 6 else None,
        )
    else:
        sys.exit(f"unknown command {cmd}")
