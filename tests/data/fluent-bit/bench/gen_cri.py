#!/usr/bin/env python3
"""Generate a CRI-format (containerd/CRI-O) container log for throughput benchmarks.

Each logical message is an Apache "combined" access-log line (matches Fluent Bit's
standard `apache2` parser).  ~80% of the physical lines are single `F` lines; the
rest belong to split messages: 1-3 `P` parts followed by the closing `F` part.

usage: gen_cri.py [--lines N] [--seed S] [--out FILE]
prints a summary (physical lines, logical messages) to stderr.
"""
import argparse
import random
import sys
from datetime import datetime, timedelta, timezone

METHODS = ['GET'] * 8 + ['POST', 'PUT', 'DELETE', 'HEAD']
PATHS = ['/', '/index.html', '/api/v1/items', '/api/v1/items/{id}', '/api/v1/users/{id}/orders',
         '/static/js/app.{id}.js', '/static/css/site.css', '/healthz', '/login', '/search?q=term{id}&page=2']
CODES = [200] * 12 + [201, 204, 301, 302, 304, 400, 401, 403, 404, 404, 500, 502, 503]
AGENTS = ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36',
          'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15',
          'curl/8.4.0', 'kube-probe/1.28', 'Go-http-client/1.1', 'python-requests/2.31.0']
REFERERS = ['-', 'https://www.example.com/', 'https://shop.example.com/cart', 'https://www.google.com/']


def apache_line(rnd, ts):
    ip = f'{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}'
    user = '-' if rnd.random() < 0.9 else rnd.choice(['alice', 'bob', 'carol'])
    path = rnd.choice(PATHS).replace('{id}', str(rnd.randint(1, 99999)))
    size = '-' if rnd.random() < 0.05 else str(rnd.randint(0, 250000))
    return (f'{ip} - {user} [{ts.strftime("%d/%b/%Y:%H:%M:%S +0000")}] '
            f'"{rnd.choice(METHODS)} {path} HTTP/1.1" {rnd.choice(CODES)} {size} '
            f'"{rnd.choice(REFERERS)}" "{rnd.choice(AGENTS)}"')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lines', type=int, default=1_000_000)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--out', default='cri_bench.log')
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    t = datetime(2024, 3, 14, 10, 0, 0, tzinfo=timezone.utc)
    n = 0
    msgs = 0
    buf = []
    with open(a.out, 'w', newline='\n') as f:
        while n < a.lines:
            t += timedelta(microseconds=rnd.randint(1, 2000))
            stream = 'stdout' if rnd.random() < 0.9 else 'stderr'
            msg = apache_line(rnd, t)
            left = a.lines - n
            # ~1 in 13 messages is split into 2-4 parts (1-3 P + closing F): ~80% of lines are single F lines
            parts = rnd.randint(1, 3) if (rnd.random() < 1 / 13 and left > 1) else 0
            parts = min(parts, left - 1)
            if parts:
                cuts = sorted(rnd.sample(range(1, len(msg)), parts))
                pieces = [msg[i:j] for i, j in zip([0] + cuts, cuts + [len(msg)])]
            else:
                pieces = [msg]
            for k, piece in enumerate(pieces):
                tag = 'F' if k == len(pieces) - 1 else 'P'
                ts = (t + timedelta(microseconds=k)).strftime('%Y-%m-%dT%H:%M:%S.%f') + '123Z'
                buf.append(f'{ts} {stream} {tag} {piece}\n')
                n += 1
            msgs += 1
            if len(buf) >= 10000:
                f.write(''.join(buf))
                buf.clear()
        f.write(''.join(buf))
    print(f'physical_lines={n} messages={msgs}', file=sys.stderr)


if __name__ == '__main__':
    main()
