#!/usr/bin/env python3
"""A load measurement of `keel serve` (not a pass/fail test): N concurrent streaming clients for a
bounded time, the server's RSS sampled from /proc/PID/status all along.

Usage: scripts/serve_load.py [--keel build/keel] [--clients 32] [--seconds 60] [--warmup 10]
                             [--long-every 0] [-- keel serve args, e.g. -np 8 --chunk 64]

It starts `keel serve --port 0 ARGS` (default model: the embedded stories260K), runs the clients
(each: a streaming /v1/completions or /v1/chat/completions request after another, prompts from a
small list, max_tokens from 16 to 160 or, for --no-max-share of them (0.1), absent: until the
context is full; temperature 0.8 with a seed), then prints one JSON
report: requests done and failed (non-200, no [DONE], bad JSON, transport errors), tokens, time
to first token and the gaps between streamed tokens (p50/p99/max), and VmRSS (kB) after the
warm-up: first, min, max, last, and its slope in kB per minute. With --long-every K, every K-th
request of client 0 carries a long prompt (about 440 tokens), and the gaps the other streams saw
while a long prefill ran are reported apart from those while none did, beside the server's
prefill speed (/metrics, sampled each second) from which one chunk's time follows.
/metrics is read at the end too (preemptions, pages in use).
"""
import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

SHORT = ["Once upon a time", "The little dog", "Lily went to the park", "One day, a bird", "Tom had a big red ball",
         "The sun was hot and", "A girl named Sue", "There was a big tree"]
LONG = "Once upon a time there was a little cat who liked to play in the garden with her friends. " * 22


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.done = 0
        self.failed = []
        self.tokens = 0
        self.ttft = []
        self.gaps = []
        self.gaps_beside_long = []
        self.gaps_without_long = []
        self.finish = {}
        self.long_active = 0


def one_request(port, rng, stats, client, n, long_every, warm_until, no_max_share):
    chat = rng.random() < 0.5
    long_prompt = long_every > 0 and client == 0 and n % long_every == 0
    prompt = LONG if long_prompt else rng.choice(SHORT)
    body = {"stream": True, "temperature": 0.8, "seed": rng.randrange(1 << 30)}
    if rng.random() >= no_max_share:
        body["max_tokens"] = rng.randint(16, 160)
    if long_prompt:
        body["max_tokens"] = 4
        chat = False
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/v1/chat/completions" if chat else "/v1/completions"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.monotonic()
    try:
        if long_prompt:
            with stats.lock:
                stats.long_active += 1
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        last, tokens, finish, done = None, 0, None, False
        for raw in resp:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            if payload == "[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            if "error" in chunk:
                raise RuntimeError(f"error event: {chunk['error']}")
            for c in chunk["choices"]:
                piece = c["delta"].get("content") if chat else c.get("text")
                if piece:
                    now = time.monotonic()
                    tokens += 1
                    with stats.lock:
                        if last is None:
                            if now > warm_until:
                                stats.ttft.append(now - t0)
                        elif now > warm_until:
                            stats.gaps.append(now - last)
                            if stats.long_active and not long_prompt:
                                stats.gaps_beside_long.append(now - last)
                            elif not stats.long_active:
                                stats.gaps_without_long.append(now - last)
                    last = now
                if c.get("finish_reason"):
                    finish = c["finish_reason"]
        if not done:
            raise RuntimeError("the stream ended without [DONE]")
        with stats.lock:
            stats.done += 1
            stats.tokens += tokens
            stats.finish[finish] = stats.finish.get(finish, 0) + 1
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        with stats.lock:
            stats.failed.append(f"{type(e).__name__}: {e}")
    finally:
        if long_prompt:
            with stats.lock:
                stats.long_active -= 1
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", default="build/keel")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--long-every", type=int, default=0)
    ap.add_argument("--no-max-share", type=float, default=0.1, help="share of requests without max_tokens")
    ap.add_argument("--sample-every", type=float, default=0.25)
    ap.add_argument("serve_args", nargs="*")
    a = ap.parse_args()

    serve_args = list(a.serve_args)
    if "--chat-template" not in serve_args:  # the embedded model has none
        template = os.path.join(tempfile.mkdtemp(), "chat.jinja")
        with open(template, "w") as f:
            f.write("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
                    "{% if add_generation_prompt %}[assistant]{% endif %}")
        serve_args += ["--chat-template", template]
    if "--queue" not in serve_args:  # every client may wait: none is refused with 503
        serve_args += ["--queue", str(max(64, a.clients))]
    server = subprocess.Popen([a.keel, "serve", "--port", "0"] + serve_args,
                              stderr=subprocess.PIPE, text=True)
    seen = ""
    while True:  # the banner, after any warnings
        line = server.stderr.readline()
        seen += line
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m or not line:
            break
    if not m:
        print(seen, file=sys.stderr)
        sys.exit(1)
    port = int(m.group(1))
    threading.Thread(target=lambda: server.stderr.read(), daemon=True).start()

    rss = []  # (seconds since start, kB)
    anon = []  # (seconds since start, RssAnon kB): the heap and stacks, without the binary's pages
    stop = threading.Event()
    start = time.monotonic()
    warm_until = start + a.warmup
    deadline = start + a.seconds

    prefill_tps = []  # the server's recent prefill tok/s, sampled each second

    def metrics_poller():
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/metrics")
                for line in c.getresponse().read().decode().splitlines():
                    if line.startswith("keel_prefill_tokens_per_second "):
                        prefill_tps.append(float(line.split()[1]))
                c.close()
            except OSError:
                pass
            time.sleep(1)

    def sampler():
        while not stop.is_set():
            t = time.monotonic() - start
            rss.append((t, rss_kb(server.pid)))
            anon.append((t, rss_kb(server.pid, "RssAnon")))
            time.sleep(a.sample_every)

    stats = Stats()

    def client(i):
        rng = random.Random(i)
        n = 0
        while time.monotonic() < deadline:
            one_request(port, rng, stats, i, n, a.long_every, warm_until, a.no_max_share)
            n += 1

    rss_at_start = rss_kb(server.pid)
    threading.Thread(target=sampler, daemon=True).start()
    threading.Thread(target=metrics_poller, daemon=True).start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    stop.set()
    time.sleep(a.sample_every)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    metrics = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split()
            metrics[k] = float(v)
    rss_end = rss_kb(server.pid)
    rss_file_end = rss_kb(server.pid, "RssFile")
    with open(f"/proc/{server.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    server.terminate()
    server.wait()

    after = [(t, kb) for t, kb in rss if t >= a.warmup and kb is not None]
    slope = None
    if len(after) >= 2:
        n = len(after)
        mt = sum(t for t, _ in after) / n
        mk = sum(kb for _, kb in after) / n
        var = sum((t - mt) ** 2 for t, _ in after)
        slope = 60 * sum((t - mt) * (kb - mk) for t, kb in after) / var if var else 0.0

    def ms(x):
        return None if x is None else round(1000 * x, 2)

    report = {
        "clients": a.clients, "seconds": round(elapsed, 1), "serve_args": serve_args,
        "requests_done": stats.done, "requests_failed": len(stats.failed), "failures": stats.failed[:10],
        "finish_reasons": stats.finish, "tokens_streamed": stats.tokens,
        "tokens_per_second": round(stats.tokens / elapsed, 1),
        "ttft_ms": {"p50": ms(percentile(stats.ttft, 0.5)), "p99": ms(percentile(stats.ttft, 0.99)),
                    "max": ms(max(stats.ttft, default=None))},
        "token_gap_ms": {"p50": ms(percentile(stats.gaps, 0.5)), "p99": ms(percentile(stats.gaps, 0.99)),
                         "max": ms(max(stats.gaps, default=None)), "n": len(stats.gaps)},
        "rss_kb": {"at_start": rss_at_start, "after_warmup_first": after[0][1] if after else None,
                   "min": min((kb for _, kb in after), default=None), "max": max((kb for _, kb in after), default=None),
                   "last": after[-1][1] if after else None, "at_end_idle": rss_end, "hwm": hwm,
                   "slope_kb_per_min": None if slope is None else round(slope, 1), "samples": len(after),
                   "series_every_10s": [kb for i, (t, kb) in enumerate(rss)
                                        if int(t / 10) != int(rss[i - 1][0] / 10) or i == 0]},
        "rss_anon_kb_every_10s": [kb for i, (t, kb) in enumerate(anon) if int(t / 10) != int(anon[i - 1][0] / 10) or i == 0],
        "rss_file_kb_at_end": rss_file_end,
        "prefill_tokens_per_second_median": percentile([x for x in prefill_tps if x > 0], 0.5),
        "metrics": {k: metrics.get(k) for k in ("keel_requests_total", "keel_requests_rejected_total",
                                                "keel_requests_preempted_total", "keel_generated_tokens_total",
                                                "keel_kv_pages_used", "keel_kv_pages_total", "keel_requests_running",
                                                "keel_kv_pages_cached", "keel_prefix_cache_hits_total",
                                                "keel_prefix_cache_reused_tokens_total")},
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    if a.long_every:
        g = stats.gaps_beside_long
        report["token_gap_beside_long_prefill_ms"] = {"p50": ms(percentile(g, 0.5)), "p99": ms(percentile(g, 0.99)),
                                                      "max": ms(max(g, default=None)), "n": len(g)}
        g = stats.gaps_without_long
        report["token_gap_without_long_prefill_ms"] = {"p50": ms(percentile(g, 0.5)), "p99": ms(percentile(g, 0.99)),
                                                       "max": ms(max(g, default=None)), "n": len(g)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
