#!/usr/bin/env python3
"""Regenerates cases.tsv: runs Fluent Bit (tail + parser + stdout) on each line of
cases.in (parser<TAB>line; parsers from props.conf and the repo's conf/parsers.conf) and records what it printed after the tag (both as JSON strings).
Usage: gen_cases.py /path/to/fluent-bit"""
import json, os, subprocess, sys, tempfile, time
fb = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
cases = [l.rstrip('\n').split('\t', 1) for l in open(os.path.join(here, 'cases.in'), encoding='utf-8') if l.strip()]
out = [f'# captured_at\t{int(time.time())}']
for name, line in cases:
    d = tempfile.mkdtemp()
    with open(os.path.join(d, 'in.log'), 'w', encoding='utf-8') as f:
        f.write(line + '\n')
    with open(os.path.join(d, 'fb.conf'), 'w') as f:
        f.write(f"[SERVICE]\n    flush 0.2\n    log_level error\n    parsers_file {here}/props.conf\n    parsers_file {here}/../../../conf/parsers.conf\n"
                f"[INPUT]\n    name tail\n    path {d}/in.log\n    read_from_head on\n    parser {name}\n    tag t\n"
                f"[OUTPUT]\n    name stdout\n    match *\n")
    res = subprocess.run(['timeout', '2.5', fb, '-c', os.path.join(d, 'fb.conf')], capture_output=True)
    text = res.stdout.decode('utf-8', 'replace')
    start = text.find('[0] t: ')
    # The record runs to the end of the output; values may hold newlines.
    rec = text[start + len('[0] t: '):].rstrip('\n') if start >= 0 else 'NONE'
    out.append(f"{name}\t{json.dumps(line)}\t{json.dumps(rec)}")
with open(os.path.join(here, 'cases.tsv'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(out) + '\n')
