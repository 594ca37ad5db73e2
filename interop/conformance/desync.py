#!/usr/bin/env python3
"""Replays the http-desync-guardian corpus (tests/*.yaml) through one gateway.

    desync.py CORPUS_DIR PORT SERVER ORIGIN_LOG OUT_JSON

Each test case of the corpus describes one request (method, URI, version, headers) and the tier the
library gives it: Compliant, Acceptable, Ambiguous or Severe. Each is sent as raw bytes on its own
connection to 127.0.0.1:PORT, with two headers added in front of the case's own: an
X-Conformance-Case id (so that the origin's log tells whether it was forwarded) and, when the case
has none, Host. A body follows when the framing gives one length (Content-Length values that are
all the same number: that many bytes; Transfer-Encoding ending in chunked: the last chunk), so
that a gateway that accepts the request does not sit waiting for one.

What happened to each case:
  forwarded   the origin received it (the raw head it received is checked, see clean_framing);
  split       the origin received it, and also a second request (or unparseable bytes) while the
              case's connection was open: the gateway made two requests out of one;
  rejected    the gateway answered itself (a status line, no request at the origin);
  closed      the gateway closed the connection without a status line and forwarded nothing;
  no answer   nothing came back within the wait and nothing was forwarded.

The rule each tier gets (the corpus says what a proxy must do with each tier):
  Compliant   must be forwarded;
  Acceptable  forwarded or rejected with a status, either way (the corpus lets strict proxies
              reject); silence is a failure;
  Ambiguous   rejected, closed, or forwarded with unambiguous framing at the origin;
  Severe      must not reach the origin: rejected or closed.
A split is a failure in every tier.
"""
import glob
import json
import os
import re
import socket
import sys
import time

import yaml

corpus, port, server, origin_log, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
WAIT = float(os.environ.get("DESYNC_WAIT", "1.5"))
SKIP = {"single-case.yaml"}  # a copy of one case from another file, for the library's debugging


def unescape(text):
    """The corpus strings carry backslash escapes (\\xHH, \\t, \\r, \\n...) on top of YAML's."""
    simple = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4] or ""):
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(simple.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def to_bytes(text):
    """Characters up to 0xFF are single bytes (as the corpus means \\xHH); others are UTF-8."""
    return b"".join(bytes([ord(c)]) if ord(c) < 256 else c.encode("utf-8") for c in text)


def build(case, case_id):
    method = to_bytes(unescape(str(case.get("method", ""))))
    uri = to_bytes(unescape(str(case.get("uri", ""))))
    version = to_bytes(unescape(str(case.get("version", ""))))
    headers = [(to_bytes(unescape(str(h.get("name", "")))), to_bytes(unescape(str(h.get("value", "")))))
               for h in case.get("headers") or []]
    line = method + b" " + uri + ((b" " + version) if version else b"")
    extra = [(b"X-Conformance-Case", case_id.encode())]
    if not any(n.lower() == b"host" for n, _ in headers):
        extra.append((b"Host", b"localhost"))
    head = line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in extra + headers) + b"\r\n"
    # Content-Length values, comma lists split: one distinct number is a length a proxy may use.
    cl = {v.strip(b" \t") for n, value in headers if n.lower() == b"content-length" for v in value.split(b",")}
    te = [v for n, v in headers if n.lower() == b"transfer-encoding"]
    body = b""
    if te and b",".join(te).split(b",")[-1].strip(b" \t").split(b";")[0].lower() == b"chunked":
        body = b"0\r\n\r\n"
    elif len(cl) == 1 and not te:
        n = next(iter(cl))
        if n.isdigit() and int(n) <= 8 * 1024 * 1024:
            body = b"a" * int(n)
    return head + body


def hint(case):
    """What the RFCs say of a case whose tier a strict gateway may well disagree with, or None."""
    uri = unescape(str(case.get("uri", "")))
    headers = [(unescape(str(h.get("name", ""))), unescape(str(h.get("value", ""))))
               for h in case.get("headers") or []]
    te = [v for n, v in headers if n.lower() == "transfer-encoding"]
    codings = [c.strip(" \t").split(";")[0].strip(" \t").lower() for c in ",".join(te).split(",")] if te else []
    if uri == "":
        return "an empty request-target is an invalid request-line (RFC 9112 section 3)"
    if te and codings[-1] != "chunked":
        return "chunked is not the final transfer coding: RFC 9112 section 6.3 requires 400"
    if te and any(c not in ("chunked", "") for c in codings):
        return "a transfer coding other than chunked: RFC 9112 section 6.1 lets a server answer 501"
    if te and any(";" in c for c in ",".join(te).split(",")):
        return "chunked defines no parameters (RFC 9112 section 7.1)"
    if re.search(r"[^\x21-\x7e]", uri) or re.search(r"[\"<>\\^`{|}]", uri):
        return "characters RFC 3986 does not allow unencoded in a URI"
    for n, _ in headers:
        squashed = re.sub(r"[^a-z]", "", n.lower())
        if squashed in ("transferencoding", "contentlength") and n.lower() not in ("transfer-encoding", "content-length") \
                and re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", n):
            return ("a valid field name, but a look-alike of %s: a backend that reads '_' as '-' (CGI-style "
                    "environments) takes it for the real one" % ("Transfer-Encoding" if squashed[0] == "t" else "Content-Length"))
    return None


def read_response(sock, head_only):
    """(status or None, bytes received, closed by the gateway): reads until a complete response,
    EOF or the wait."""
    sock.settimeout(0.2)
    data, eof, deadline = b"", False, time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
        if complete(data, head_only):
            break
    m = re.match(rb"HTTP/\d\.\d (\d{3})", data)
    return (int(m.group(1)) if m else None), data, eof


def complete(data, head_only):
    if b"\r\n\r\n" not in data:
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    if head_only:
        return True
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(body) >= int(m.group(1))
    if re.search(rb"(?im)^transfer-encoding:.*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return re.match(rb"HTTP/\d\.\d (1\d\d|204|304)", head) is not None


TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def clean_framing(raw):
    """None when the forwarded head frames its body one way only; else what is ambiguous."""
    raw = raw.encode("latin-1")
    if not raw.endswith(b"\r\n\r\n"):
        return "head does not end with CRLF CRLF"
    lines = raw[:-4].split(b"\r\n")
    problems = []
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not re.fullmatch(rb"HTTP/1\.[01]", parts[2]) or not TOKEN.match(parts[0]):
        problems.append("request line %r" % lines[0][:80])
    if re.search(rb"[\x00-\x20\x7f]", parts[1] if len(parts) > 1 else b""):
        problems.append("control character in the target")
    cl, te = [], []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            problems.append("obs-fold line %r" % line[:60])
            continue
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN.match(name):
            problems.append("malformed header name %r" % name[:60])
        if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
            problems.append("control character in %r" % name[:40])
        squashed = re.sub(rb"[^a-z]", b"", name.lower())
        if squashed in (b"contentlength", b"transferencoding") and name.lower() not in (b"content-length", b"transfer-encoding"):
            problems.append("look-alike header %r" % name[:60])
        if name.lower() == b"content-length":
            cl.append(value.strip(b" \t"))
        if name.lower() == b"transfer-encoding":
            te.append(value.strip(b" \t"))
    if len(cl) > 1:
        problems.append("%d Content-Length headers" % len(cl))
    if cl and not cl[0].isdigit():
        problems.append("Content-Length %r" % cl[0][:40])
    if cl and te:
        problems.append("both Content-Length and Transfer-Encoding")
    if te:
        codings = [c.strip(b" \t").split(b";")[0].strip(b" \t").lower() for c in b",".join(te).split(b",")]
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            problems.append("Transfer-Encoding %r" % b",".join(te)[:60])
    return "; ".join(problems) or None


def main():
    cases = []
    for path in sorted(glob.glob(os.path.join(corpus, "*.yaml"))):
        if os.path.basename(path) in SKIP:
            continue
        with open(path, encoding="utf-8") as f:
            for k, case in enumerate(yaml.safe_load(f) or [], 1):
                cases.append(("%s #%d" % (os.path.basename(path)[:-5], k), case))
    results = []
    for n, (where, case) in enumerate(cases):
        case_id = "%s-%d" % (server, n)
        request = build(case, case_id)
        status, data, eof, error = None, b"", False, None
        started = time.time()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            try:
                sock.sendall(request)
                status, data, eof = read_response(sock, str(case.get("method")) == "HEAD")
            finally:
                sock.close()
        except OSError as e:
            error = str(e)
        results.append({"case": where, "name": str(case.get("name")), "tier": case["expected"]["tier"],
                        "reason": case["expected"].get("reason"), "id": case_id, "status": status,
                        "received": len(data), "eof": eof, "error": error, "hint": hint(case),
                        "window": [started, time.time()]})
    time.sleep(0.5)  # the last forwarded requests reach the origin's log

    records = []
    if os.path.exists(origin_log):
        with open(origin_log) as f:
            records = [json.loads(line) for line in f if line.strip()]
    # A request that carries a case's id is that case's; one without (its head was rewritten, or it
    # is a second request cut out of the first one's bytes) belongs to the case whose connection
    # was open when it arrived: the cases run one after the other.
    seen, extra = {}, {}
    windows = {res["id"]: res["window"] for res in results}
    ours = lambda r: (r.get("case") or "").startswith(server + "-") and r["case"] in windows
    by_conn = {}
    for r in records:
        by_conn.setdefault(r["conn"], {})[r["seq"]] = r
    for r in records:
        if ours(r):
            seen.setdefault(r["case"], r)
            continue
        if r.get("case"):
            continue  # another server's run
        prev = by_conn[r["conn"]].get(r["seq"] - 1) if r["seq"] else None
        if r.get("error") == "closed inside a request" and prev is not None and ours(prev):
            extra.setdefault(prev["case"], []).append(r)  # bytes left behind a forwarded request
            continue
        owner = None
        for res in results:
            if res["window"][0] <= r["time"]:
                owner = res
        if owner is not None and r["time"] <= owner["window"][1] + 0.25:
            # Forwarded without the id header (its head was rewritten), or, when the case's own
            # request arrived too, a second request cut out of its bytes.
            extra.setdefault(owner["id"], []).append(r)

    summary = {}
    for res in results:
        cid, tier = res["id"], res["tier"]
        rec, more = seen.get(cid), extra.get(cid, [])
        res["framing"] = None
        if rec is not None and more:
            outcome = "split"
            note = "forwarded, and more came out of it on the upstream connection: %r" % more[0]["raw"][:60]
        elif rec is not None or more:
            outcome = "forwarded"
            got = rec if rec is not None else more[0]
            problem = got.get("error") or clean_framing(got["raw"])
            res["framing"] = problem
            how = "forwarded" if rec is not None else "forwarded as %r" % got["raw"][:60]
            note = (how + "; at the origin: " + problem) if problem else how + ", framing clean at the origin"
        elif res["status"] is not None:
            outcome, note = "rejected", "rejected with %d" % res["status"]
        elif res["received"]:
            outcome, note = "rejected", "answered without a status line (%d bytes)" % res["received"]
        elif res["error"]:
            outcome, note = "closed", "connection error: " + res["error"]
        elif res["eof"]:
            outcome, note = "closed", "closed without an answer"
        else:
            outcome, note = "no answer", "no answer within %.1f s, nothing forwarded" % WAIT
        res["outcome"], res["note"] = outcome, note
        if outcome == "split":
            ok = False
        elif tier == "Compliant":
            ok = outcome == "forwarded"
        elif tier == "Acceptable":
            ok = outcome in ("forwarded", "rejected")
        elif tier == "Ambiguous":
            ok = outcome in ("rejected", "closed") or (outcome == "forwarded" and not res["framing"])
        else:  # Severe
            ok = outcome in ("rejected", "closed")
        res["pass"] = ok
        del res["window"]
        s = summary.setdefault(tier, {"pass": 0, "fail": 0})
        s["pass" if ok else "fail"] += 1
    with open(out_path, "w") as f:
        json.dump({"summary": summary, "cases": results}, f, indent=1)
    print("desync %s: %s" % (server, ", ".join("%s %d/%d" % (t, s["pass"], s["pass"] + s["fail"])
                                                  for t, s in sorted(summary.items()))))


if __name__ == "__main__":
    main()
