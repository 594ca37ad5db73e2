#!/usr/bin/env python3
"""The origin behind each gateway in interop/conformance.sh (stdlib only).

    origin.py PORT LOG

Listens on 127.0.0.1:PORT, speaks HTTP/1.1 with keep-alive and answers every request with a small
HTML page ("It works", what HTTPWookiee's client mode expects), with the validators and caching
headers REDbot looks at: ETag, Last-Modified, Cache-Control, Vary, and conditional requests (304),
byte ranges (206) and gzip when asked for. Request bodies are read by Content-Length or chunked.

Every request head that arrives is appended to LOG as one JSON line, raw bytes included, with its
upstream connection number and its position on that connection, so that a runner can tell what a
gateway forwarded (and whether it forwarded one request as two). Bytes that do not parse as a
request are logged too ("error"), and the connection is closed.
"""
import email.utils
import gzip
import json
import re
import socket
import sys
import threading
import time

PORT, LOG = int(sys.argv[1]), sys.argv[2]
IDLE = 15  # seconds a connection may stay silent before the origin closes it
MAX_HEAD = 65536
MAX_BODY = 10 * 1024 * 1024

BODY = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>It works</title></head>\n"
        b"<body><p>It works: the conformance origin answered.</p></body></html>\n")
BODY_GZ = gzip.compress(BODY, mtime=0)
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
LAST_MODIFIED_TS = email.utils.parsedate_to_datetime(LAST_MODIFIED).timestamp()

log_lock = threading.Lock()
conn_counter = [0]


def log(record):
    line = json.dumps(record) + "\n"
    with log_lock:
        with open(LOG, "a") as f:
            f.write(line)


class Closed(Exception):
    pass


class Reader:
    """Buffered reads from a socket, with an idle timeout."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def until(self, marker, limit):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("no %r within %d bytes" % (marker, limit))
            self.fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse_head(raw):
    """(method, target, version, [(name, value)]); lenient, the runners judge the raw bytes."""
    lines = raw[:-4].split(b"\r\n") if raw.endswith(b"\r\n\r\n") else raw.rstrip(b"\r\n").split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError("bad request line %r" % lines[0][:200])
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and headers:  # obs-fold: joined, the runners see the raw head
            headers[-1] = (headers[-1][0], headers[-1][1] + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("header line without a colon %r" % line[:200])
        headers.append((name, value.strip(b" \t")))
    return parts[0], parts[1], parts[2], headers


def read_body(reader, headers):
    te = [v for n, v in headers if n.strip().lower() == b"transfer-encoding"]
    cl = [v for n, v in headers if n.strip().lower() == b"content-length"]
    if te:
        if te[-1].split(b",")[-1].strip().lower() != b"chunked":
            raise ValueError("transfer-encoding without final chunked")
        total = 0
        while True:
            size_line = reader.until(b"\r\n", 4096)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while reader.until(b"\r\n", 65536) != b"\r\n":  # trailers
                    pass
                return total
            total += len(reader.exactly(size))
            if total > MAX_BODY:
                raise ValueError("body too large")
            if reader.exactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
    if cl:
        if len(set(cl)) != 1 or not cl[0].isdigit():
            raise ValueError("bad content-length %r" % cl)
        n = int(cl[0])
        if n > MAX_BODY:
            raise ValueError("body too large")
        reader.exactly(n)
        return n
    return 0


def header(headers, name):
    for n, v in headers:
        if n.strip().lower() == name:
            return v.decode("latin-1")
    return None


def respond(method, target, headers):
    status, extra = 200, []
    gz = "gzip" in (header(headers, b"accept-encoding") or "").lower()
    body = BODY_GZ if gz else BODY
    etag = '"v1-gz"' if gz else '"v1"'
    inm = header(headers, b"if-none-match")
    ims = header(headers, b"if-modified-since")
    rng = header(headers, b"range")
    not_modified = False
    if inm is not None:
        not_modified = inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
    elif ims is not None:
        try:
            not_modified = email.utils.parsedate_to_datetime(ims).timestamp() >= LAST_MODIFIED_TS
        except (TypeError, ValueError):
            pass
    if not_modified:
        status, body = 304, b""
    elif rng and rng.startswith("bytes=") and "," not in rng:
        first, _, last = rng[6:].strip().partition("-")
        try:
            if first:
                a, b = int(first), (int(last) if last else len(body) - 1)
            else:
                a, b = max(0, len(body) - int(last)), len(body) - 1
            b = min(b, len(body) - 1)
            if a > b:
                raise ValueError()
            status = 206
            extra.append(("Content-Range", "bytes %d-%d/%d" % (a, b, len(body))))
            body = body[a:b + 1]
        except ValueError:
            status, body = 416, b""
            extra.append(("Content-Range", "bytes */%d" % len(BODY_GZ if gz else BODY)))
    reason = {200: "OK", 206: "Partial Content", 304: "Not Modified", 416: "Range Not Satisfiable"}[status]
    out = ["HTTP/1.1 %d %s" % (status, reason),
           "Date: " + email.utils.formatdate(usegmt=True),
           "Server: conformance-origin",
           "Content-Type: text/html; charset=utf-8",
           "Cache-Control: max-age=60",
           "Last-Modified: " + LAST_MODIFIED,
           "ETag: " + etag,
           "Vary: Accept-Encoding",
           "Accept-Ranges: bytes"]
    if gz:
        out.append("Content-Encoding: gzip")
    out += ["%s: %s" % kv for kv in extra]
    if status != 304:
        out.append("Content-Length: %d" % len(body))
    head = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return head + (b"" if method == b"HEAD" or status == 304 else body)


def serve(sock, conn_id):
    sock.settimeout(IDLE)
    reader = Reader(sock)
    seq = 0
    try:
        while True:
            try:
                raw = reader.until(b"\r\n\r\n", MAX_HEAD)
            except ValueError as e:
                log({"conn": conn_id, "seq": seq, "time": time.time(), "error": str(e),
                     "raw": reader.buf[:4096].decode("latin-1")})
                return
            record = {"conn": conn_id, "seq": seq, "time": time.time(), "raw": raw.decode("latin-1")}
            seq += 1
            try:
                method, target, _version, headers = parse_head(raw)
                record["case"] = header(headers, b"x-conformance-case")
                record["body"] = read_body(reader, headers)
            except ValueError as e:
                record["error"] = str(e)
                m = re.search(rb"(?im)^x-conformance-case:[ \t]*([^\s]+)", raw)
                record["case"] = m.group(1).decode("latin-1") if m else None
                log(record)
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            log(record)
            sock.sendall(respond(method, target, headers))
            if (header(headers, b"connection") or "").lower() == "close":
                return
    except (Closed, OSError):
        if reader.buf.strip():
            log({"conn": conn_id, "seq": seq, "time": time.time(), "error": "closed inside a request",
                 "raw": reader.buf[:4096].decode("latin-1")})
    finally:
        sock.close()


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PORT))
    listener.listen(128)
    while True:
        sock, _ = listener.accept()
        conn_counter[0] += 1
        threading.Thread(target=serve, args=(sock, conn_counter[0]), daemon=True).start()


if __name__ == "__main__":
    main()
