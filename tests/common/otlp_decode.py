#!/usr/bin/env python3
"""Decodes raw OTLP/HTTP requests with the OpenTelemetry project's own protobuf
classes (PyPI opentelemetry-proto), independently of agent's prost structs.

stdin: one or more raw HTTP/1.1 requests (Content-Length bodies), back to back.
stdout: a JSON list, one object per request: its request line, headers (names
lower-cased, in order) and the body decoded as ExportLogsServiceRequest (or
ExportMetricsServiceRequest when the request path has "metrics" in it) with
MessageToDict (gzip bodies inflated first; the Rust test inflates zstd ones with the
zstd crate and marks them `Content-Encoding: zstd-inflated`).
"""
import gzip
import json
import sys

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest


def requests(raw):
    while raw:
        end = raw.index(b"\r\n\r\n")
        lines = raw[:end].decode("latin-1").split("\r\n")
        headers = []
        length = 0
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers.append([k.strip().lower(), v.strip()])
            if k.strip().lower() == "content-length":
                length = int(v)
        body = raw[end + 4:end + 4 + length]
        raw = raw[end + 4 + length:]
        yield lines[0], headers, body


def decode(line, headers, body):
    enc = dict(headers).get("content-encoding")
    if enc == "gzip":
        body = gzip.decompress(body)
    elif enc == "zstd":
        sys.exit("a zstd body: the test inflates those before calling (Content-Encoding: zstd-inflated)")
    msg = ExportMetricsServiceRequest() if "metrics" in line.split(" ")[1] else ExportLogsServiceRequest()
    msg.ParseFromString(body)
    # Every byte understood: a field with a wrong number or wire type would be kept as
    # unknown and written back at the end, so the bytes would differ.
    assert msg.SerializeToString() == body, "bytes the .proto does not account for"
    return MessageToDict(msg)


out = []
for line, headers, body in requests(sys.stdin.buffer.read()):
    out.append({"line": line, "headers": headers, "body": decode(line, headers, body)})
json.dump(out, sys.stdout, indent=1, sort_keys=False, ensure_ascii=False)
print()
