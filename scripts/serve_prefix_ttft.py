#!/usr/bin/env python3
"""A measurement of `keel serve`'s prefix cache (not a pass/fail test): the time to first token of a
question after a long shared context, first and second, through the real server.

Usage: scripts/serve_prefix_ttft.py [--keel build/keel] [--repeat 200] [-- keel serve args]

It starts `keel serve --port 0 ARGS`, then sends two /v1/completions requests (max_tokens 1, so
the answer's time is the time to the first token): the context (a sentence repeated --repeat
times) followed by one question, then the same context followed by another. It prints one JSON
line: prompt tokens, both times, and the prefix-cache counters from /metrics.
"""
import argparse
import http.client
import json
import re
import subprocess
import sys
import time


def post(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    t0 = time.monotonic()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    seconds = time.monotonic() - t0
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
    return seconds, json.loads(data)


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    wanted = ("keel_prefix_cache_", "keel_state_snapshot", "keel_prompt_tokens_total", "keel_prefill_tokens_per_second")
    out = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, value = line.split(" ", 1)
            out[name] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", default="build/keel")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("serve_args", nargs="*")
    args = ap.parse_args()
    server = subprocess.Popen([args.keel, "serve", "--port", "0", *args.serve_args], stderr=subprocess.PIPE, text=True)
    try:
        port = None
        log = []
        for line in server.stderr:
            log.append(line.rstrip())
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError("the server did not start:\n" + "\n".join(log))
        context = "Once upon a time there was a little cat who liked to play in the garden with her friends. " * args.repeat
        questions = ["Question: what did the cat like to do? Answer:", "Question: where did the cat play? Answer:"]
        times, prompt_tokens = [], []
        for q in questions:
            seconds, answer = post(port, {"prompt": context + q, "max_tokens": 1, "temperature": 0})
            times.append(seconds)
            prompt_tokens.append(answer["usage"]["prompt_tokens"])
        report = {"serve_args": args.serve_args, "prompt_tokens": prompt_tokens, "ttft_first_s": times[0],
                  "ttft_second_s": times[1], "second_over_first": times[1] / times[0], "metrics": metrics(port),
                  "log": [l for l in log if "prompt cache" in l]}
        print(json.dumps(report))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
