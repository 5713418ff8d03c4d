#!/usr/bin/env python3
"""Checks the AWS SigV4 signature of one raw HTTP request with botocore (AWS's own
Python signer), independently of the agent's signer.

stdin: JSON {"raw": <request bytes, base64>, "access_key", "secret_key", "token"
(or null), "region", "service"}. The request's own x-amz-date is the signing time and
its Authorization's SignedHeaders the headers signed (as a server verifies). botocore
recomputes the Authorization header; the script prints it and the request's, and exits
1 when they differ, when the credential scope or the session token is not the expected
one, or when x-amz-content-sha256 (if sent) is not the hash of the body as sent.
"""
import base64
import hashlib
import json
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

job = json.load(sys.stdin)
raw = base64.b64decode(job["raw"])
head, body = raw.split(b"\r\n\r\n", 1)
lines = head.decode("latin-1").split("\r\n")
method, target, _ = lines[0].split(" ", 2)
headers = []
for line in lines[1:]:
    k, v = line.split(":", 1)
    headers.append((k.strip(), v.strip()))


def get(name):
    vals = [v for k, v in headers if k.lower() == name]
    return vals[0] if vals else None


got = get("authorization")
if not got:
    print("the request has no Authorization header")
    sys.exit(1)
amz_date = get("x-amz-date")
signed = got.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
host = get("host")
request = AWSRequest(method=method, url="http://%s%s" % (host, target), data=body)
for k, v in headers:
    if k.lower() != "authorization":
        request.headers.add_header(k, v)
request.context["timestamp"] = amz_date


class Verifier(SigV4Auth):
    def headers_to_sign(self, request):
        out = HTTPHeaders()
        for name in signed:
            for k, v in headers:
                if k.lower() == name:
                    out[name] = v
        return out


creds = Credentials(job["access_key"], job["secret_key"], job.get("token"))
auth = Verifier(creds, job["service"], job["region"])
canonical = auth.canonical_request(request)
to_sign = auth.string_to_sign(request, canonical)
signature = auth.signature(to_sign, request)
want = "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s" % (
    auth.scope(request),
    ";".join(signed),
    signature,
)
ok = want == got
problems = []
if not ok:
    problems.append("signature differs")
if job.get("token") and get("x-amz-security-token") != job["token"]:
    problems.append("x-amz-security-token is %r" % get("x-amz-security-token"))
if job.get("token") and "x-amz-security-token" not in signed:
    problems.append("x-amz-security-token is not signed")
sha = get("x-amz-content-sha256")
if sha is not None and sha != hashlib.sha256(body).hexdigest():
    problems.append("x-amz-content-sha256 is not the hash of the body as sent")
print(json.dumps({"want": want, "got": got, "canonical": canonical, "problems": problems}))
sys.exit(1 if problems else 0)
