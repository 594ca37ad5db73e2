#!/usr/bin/env python3
"""Writes a realistic nginx error.log of about SIZE bytes to PATH: usage gen-nginx-error-log.py PATH SIZE.

The mix follows what busy sites log: mostly upstream errors of every kind (refused, timeouts in each
phase, premature closes, resets, unix sockets, TLS, DNS, no live upstreams), client aborts at info
level, and notices, over a day of timestamps. Deterministic (fixed seed) so runs compare.
"""
import random
import sys
import time

path, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
hosts = ["shop.example.com", "api.example.com", "admin.example.com", "static.example.com"]
ups = ["10.0.2.%d:8080" % i for i in range(10, 30)] + ["[2001:db8::%x]:8080" % i for i in range(1, 5)]
paths = ["/", "/api/orders", "/api/cart", "/checkout", "/search?q=shoes", "/v1/reports/yearly", "/index.php", "/login"]
clients = ["203.0.113.%d" % i for i in range(1, 200)] + ["2001:db8:1::%x" % i for i in range(1, 40)]
messages = [
    (30, "error", "connect() failed (111: Connection refused) while connecting to upstream"),
    (15, "error", "upstream timed out (110: Connection timed out) while reading response header from upstream"),
    (5, "error", "upstream timed out (110: Connection timed out) while connecting to upstream"),
    (10, "error", "upstream prematurely closed connection while reading response header from upstream"),
    (6, "error", "recv() failed (104: Connection reset by peer) while reading response header from upstream"),
    (3, "error", "upstream prematurely closed connection while reading upstream"),
    (3, "error", "no live upstreams while connecting to upstream"),
    (2, "error", "upstream sent too big header while reading response header from upstream"),
    (2, "error", "SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number) while SSL handshaking to upstream"),
    (2, "error", "upstream sent invalid chunked response while reading upstream"),
    (8, "info", "client prematurely closed connection while sending to client"),
    (4, "warn", "upstream server temporarily disabled while connecting to upstream"),
    (3, "warn", "an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/1/00/0000000001 while reading upstream"),
]
weights = [m[0] for m in messages]
out = open(path, "w", buffering=1 << 20)
written, second, conn = 0, 0, 1000
while written < size:
    batch = []
    for _ in range(2000):
        second += rng.random() * 0.05
        ts = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(1714521600 + int(second)))
        conn += 1
        if rng.random() < 0.03:
            batch.append("%s [notice] 2741#2741: signal process started\n" % ts)
            continue
        if rng.random() < 0.01:
            sock = "unix:/run/php/php8.2-fpm.sock"
            batch.append(
                "%s [crit] 2741#2741: *%d connect() to %s failed (2: No such file or directory) while connecting to upstream, "
                "client: %s, server: shop.example.com, request: \"GET /index.php HTTP/1.1\", upstream: \"fastcgi://%s:\", host: \"shop.example.com\"\n"
                % (ts, conn, sock, rng.choice(clients), sock))
            continue
        _, level, msg = rng.choices(messages, weights)[0]
        host, up, p = rng.choice(hosts), rng.choice(ups), rng.choice(paths)
        batch.append(
            "%s [%s] %d#%d: *%d %s, client: %s, server: %s, request: \"GET %s HTTP/1.1\", upstream: \"http://%s%s\", host: \"%s\"\n"
            % (ts, level, 2741 + conn % 4, 2741 + conn % 4, conn, msg, rng.choice(clients), host, p, up, p, host))
    chunk = "".join(batch)
    out.write(chunk)
    written += len(chunk)
out.close()
