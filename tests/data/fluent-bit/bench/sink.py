#!/usr/bin/env python3
"""TCP sink for benchmarks: accepts any number of connections, discards data, counts
newline-terminated records; exits when --expect records arrived (or on --idle timeout).
Prints JSON: {"records":N,"bytes":B,"first_byte":t0,"last_byte":t1} (time.time() values)."""
import argparse, json, socket, threading, time

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int, default=5170)
ap.add_argument('--expect', type=int, required=True)
ap.add_argument('--idle', type=float, default=120.0)
a = ap.parse_args()

lock = threading.Lock()
st = {'records': 0, 'bytes': 0, 'first_byte': None, 'last_byte': None}
done = threading.Event()

def handle(conn):
    with conn:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            now = time.time()
            with lock:
                if st['first_byte'] is None:
                    st['first_byte'] = now
                st['last_byte'] = now
                st['bytes'] += len(data)
                st['records'] += data.count(b'\n')
                if st['records'] >= a.expect:
                    done.set()

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', a.port))
srv.listen(16)
srv.settimeout(0.2)
def acceptor():
    while not done.is_set():
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=acceptor, daemon=True).start()
print('ready', flush=True)
while not done.wait(0.5):
    with lock:
        last = st['last_byte']
    if last and time.time() - last > a.idle:
        break
with lock:
    print(json.dumps(st), flush=True)
