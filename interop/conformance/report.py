#!/usr/bin/env python3
"""Reads the results interop/conformance.sh collected and writes docs/conformance.md.

    report.py RESULTS_DIR DOC

RESULTS_DIR holds, per suite and server, what the suite left (JSON from the runners here, h2spec's
JUnit XML and its text report, smuggler's log, REDbot's HAR) and SUITE-SERVER.run.json (exit
status, seconds). Every suite that was run gets a table of counts per server, a table of the tests
that failed on any server, and the list of cleargate's failures. Exits 1 when CONFORMANCE_STRICT=1
and cleargate failed more tests of some suite than nginx and HAProxy both.
"""
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

res_dir, doc = sys.argv[1], sys.argv[2]
LOGS = os.path.join(os.path.dirname(res_dir.rstrip("/")), "logs")
SERVERS = ("cleargate", "nginx", "haproxy")
NAMES = {"cleargate": "cleargate", "nginx": "nginx", "haproxy": "HAProxy"}
meta = json.load(open(os.path.join(res_dir, "meta.json")))
ran_servers = meta["servers"].split()
ran_suites = meta["suites"].split()


def path(name):
    return os.path.join(res_dir, name)


def run_info(suite, server):
    p = path("%s-%s.run.json" % (suite, server))
    return json.load(open(p)) if os.path.exists(p) else None


def not_run_reason(server):
    if server == "cleargate":
        return "not run: target/release/cleargate was not built"
    return "not run: %s is not installed" % NAMES[server]


def cell(text, limit=160):
    text = re.sub(r"\s+", " ", str(text)).strip()
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("<", "&lt;")


# Each parser returns {"counts": [(label, value)], "tests": {id: (ok, note)}, "failed": n} or
# {"error": text} for one server.

def parse_httpwookiee(server):
    p = path("httpwookiee-%s.json" % server)
    if not os.path.exists(p):
        return None
    records = json.load(open(p))
    tests, n = {}, {"pass": 0, "fail": 0, "error": 0, "skip": 0}
    for r in records:
        n[r["outcome"]] = n.get(r["outcome"], 0) + 1
        if r["outcome"] == "skip":
            continue
        tid = "%s %s" % (r["class"].replace("tests_", ""), r["test"])
        if r["outcome"] == "pass":
            tests[tid] = (True, "")
        elif r["outcome"] == "error":
            tests[tid] = (False, "error: %s" % r["message"])
        else:
            m = re.search(r"'([^']+)' not found in \[(.*)\]", r["message"])
            if m:
                wanted = [w.strip(" '") for w in m.group(2).split(",")]
                told = "got %s, expected %s" % (m.group(1), ", ".join(wanted[:6]) + (", …" if len(wanted) > 6 else ""))
            else:
                told = r["message"]
            doc = r.get("doc", "").splitlines()[0].rstrip(".") if r.get("doc") else ""
            tests[tid] = (False, "%s: %s%s" % (r["gravity"] or "Unknown", doc + ": " if doc else "", told))
    return {"counts": [("passed", n["pass"]), ("failed", n["fail"]), ("errors", n["error"]),
                       ("skipped", n["skip"])],
            "tests": tests, "failed": n["fail"] + n["error"]}


def parse_desync(server):
    p = path("desync-%s.json" % server)
    if not os.path.exists(p):
        return None
    data = json.load(open(p))
    tests = {}
    for c in data["cases"]:
        note = "%s; %s" % (c["tier"], c["note"])
        if not c["pass"] and c.get("hint"):
            note += " (%s)" % c["hint"]
        tests["%s: %s" % (c["case"], c["name"])] = (c["pass"], note)
    counts = []
    for tier in ("Compliant", "Acceptable", "Ambiguous", "Severe"):
        s = data["summary"].get(tier, {"pass": 0, "fail": 0})
        counts.append(("%s (passed / cases)" % tier, "%d / %d" % (s["pass"], s["pass"] + s["fail"])))
    passed = sum(1 for ok, _ in tests.values() if ok)
    counts.append(("all (passed / cases)", "%d / %d" % (passed, len(tests))))
    return {"counts": counts, "tests": tests, "failed": len(tests) - passed}


def h2spec_notes(server):
    """(group, section, description) -> "requirement; actual" from h2spec's text report."""
    p = os.path.join(LOGS, "h2spec-%s.out" % server)
    notes = {}
    if not os.path.exists(p):
        return notes
    text = open(p, errors="replace").read()
    if "Failures:" not in text:
        return notes
    group, section, current = None, None, None
    for line in text.split("Failures:", 1)[1].splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            group = {"Generic": "generic", "Hypertext": "http2", "HPACK": "hpack"}.get(line.split()[0].rstrip(":"), line)
            continue
        m = re.match(r"^\s+(\d+(?:\.\d+)*)\. ", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^\s+× (\d+): (.*)$", line)
        if m:
            current = (group, section, m.group(2).strip())
            notes[current] = {"n": m.group(1), "req": "", "actual": ""}
            continue
        if current is None:
            continue
        s = line.strip()
        if s.startswith("-> "):
            notes[current]["req"] = s[3:]
        elif s.startswith("Actual:"):
            notes[current]["actual"] = s[7:].strip()
        elif notes[current]["actual"] and not s.startswith("Expected:"):
            notes[current]["actual"] += "; " + s
    return notes


def parse_h2spec(server):
    p = path("h2spec-%s.xml" % server)
    if not os.path.exists(p):
        return None
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        return {"error": "unreadable JUnit report: %s" % e}
    notes = h2spec_notes(server)
    tests, n = {}, {"passed": 0, "failed": 0, "skipped": 0}
    for suite in root.iter("testsuite"):
        index = 0
        for tc in suite.iter("testcase"):
            index += 1
            pkg, desc = tc.get("package", ""), tc.get("classname", "")
            group, _, section = pkg.partition("/")
            tid = "%s/%d %s" % (pkg, index, desc)
            if tc.find("skipped") is not None:
                n["skipped"] += 1
                continue
            bad = tc.find("failure") if tc.find("failure") is not None else tc.find("error")
            if bad is None:
                n["passed"] += 1
                tests[tid] = (True, "")
                continue
            n["failed"] += 1
            info = notes.get((group, section, desc))
            if info:
                note = "%s Got: %s" % (info["req"], info["actual"] or "?")
            else:
                note = "expected: " + re.sub(r"\s+", " ", (bad.text or "").strip())
            tests[tid] = (False, note)
    return {"counts": [("passed", n["passed"]), ("failed", n["failed"]), ("skipped", n["skipped"])],
            "tests": tests, "failed": n["failed"]}


SMUGGLER_LINE = re.compile(r"^\[(?P<name>[^\]]+)\]\s*: (?P<msg>.*)$")


def parse_smuggler(server):
    p = path("smuggler-%s.log" % server)
    if not os.path.exists(p):
        return None
    results = {}
    for raw in re.split(r"[\r\n]+", open(p, errors="replace").read()):
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw).strip()
        m = SMUGGLER_LINE.match(line)
        if not m or m.group("name") in ("+", "CRITICAL"):
            continue
        results[m.group("name")] = m.group("msg").strip()
    kinds, tests = {}, {}
    for name, msg in results.items():
        if msg.startswith("OK"):
            codes = re.findall(r"(?:TECL|CLTE): [\d.]+ - (\S*)\)", msg)
            kind = "answered 2xx" if codes and all(c.startswith("2") for c in codes) else "refused (4xx/5xx)"
        elif "Issue Found" in msg:
            kind = "potential issue"
        elif "TIMEOUT" in msg:
            kind = "timeout on both lengths"
        elif msg.startswith("DISCONNECTED"):
            kind = "disconnected"
        elif msg.startswith("SOCKET ERROR"):
            kind = "socket error"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0) + 1
        ok = kind != "potential issue"
        tests[name] = (ok, "" if ok else msg.split(" - ")[0] + " (" + msg.rsplit(" - ", 1)[-1] + ")")
    counts = [("mutations", len(results)), ("no desync found", len(results) - kinds.get("potential issue", 0)),
              ("potential desync (failed)", kinds.get("potential issue", 0))]
    counts += [("of which " + k, kinds.get(k, 0)) for k in ("answered 2xx", "refused (4xx/5xx)", "disconnected",
                                                           "socket error", "timeout on both lengths", "other")]
    return {"counts": counts, "tests": tests, "failed": kinds.get("potential issue", 0)}


def parse_redbot(server):
    tests, n = {}, {"GOOD": 0, "INFO": 0, "WARN": 0, "BAD": 0}
    found = False
    for label in ("origin", "error"):
        p = path("redbot-%s-%s.har" % (label, server))
        if not os.path.exists(p):
            continue
        found = True
        try:
            har = json.load(open(p))
        except ValueError:
            return {"error": "unreadable HAR output from REDbot"}
        where = "/" if label == "origin" else "/down/ (the gateway's own error)"

        def walk(messages, prefix=""):
            for m in messages:
                level = m.get("level", "INFO")
                n[level] = n.get(level, 0) + 1
                tid = "%s %s%s" % (where, prefix, m.get("note_id"))
                tests[tid] = (level != "BAD", "%s: %s" % (level, m.get("summary", "")))
                walk(m.get("subnotes", []), prefix + m.get("note_id", "") + " > ")
        for e in har.get("log", {}).get("entries", []):
            walk(e.get("_red_messages", []))
    if not found:
        return None
    return {"counts": [("good", n["GOOD"]), ("info", n["INFO"]), ("warnings", n["WARN"]), ("bad (failed)", n["BAD"])],
            "tests": tests, "failed": n["BAD"], "warn_is_listed": True, "absent_is_pass": True}


SUITES = [
    ("httpwookiee", "HTTPWookiee", parse_httpwookiee, "rev-httpwookiee",
     "HTTP/1.1 parsing and request smuggling. Client mode: odd request lines, headers, chunks "
     "and Host values sent to the gateway, whose answer is classed. Reverse-proxy mode: "
     "HTTPWookiee's own backend thread is the upstream (behind `/proxy`) and sees what the "
     "gateway forwarded. A test fails when HTTPWookiee's own assertion fails; its gravity "
     "(Minor, Warning, Critical) is HTTPWookiee's, false positives included, as its README warns."),
    ("desync", "http-desync-guardian corpus", parse_desync, "rev-http-desync-guardian",
     "The corpus of the http-desync-guardian library (`tests/*.yaml`, 158 requests with the tier "
     "the library gives each), replayed as raw requests by `interop/conformance/desync.py`, one "
     "connection each. The origin logs what reaches it. Rules: Compliant must be forwarded; "
     "Acceptable may be forwarded or refused with a status; Ambiguous must be refused or forwarded "
     "with framing that is no longer ambiguous (one Content-Length or a final chunked, no look-alike "
     "or malformed header names, no control characters); Severe must not reach the origin. A request "
     "that reaches the origin as two is a failure in every tier. Some Compliant cases are requests "
     "RFC 9112 has since made errors (a transfer coding other than a final chunked), so a strict "
     "gateway fails them."),
    ("h2spec", "h2spec", parse_h2spec, "rev-h2spec",
     "HTTP/2 conformance (RFC 7540, RFC 7541 and generic tests), over h2c with prior knowledge, "
     "`h2spec -o 2` (2 s per test), strict tests off. Requests are forwarded to the origin over "
     "HTTP/1.1."),
    ("smuggler", "smuggler", parse_smuggler, "rev-smuggler",
     "CL.TE and TE.CL desync probes: POST with one mutated Transfer-Encoding header each "
     "(`configs/default.py`), `-t 3`. A mutation fails when smuggler reports a potential desync "
     "(the attack request timed out where its control did not, three times)."),
    ("redbot", "REDbot", parse_redbot, "redbot-version",
     "HTTP lint of two responses through each gateway: `/` (the origin's page, with validators, "
     "ranges and gzip: what the gateway does to them) and `/down/` (a route to an upstream where "
     "nothing listens: the gateway's own error response). A BAD note is a failure; warnings are "
     "listed."),
]


def natural(text):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


NOUNS = {"httpwookiee": "tests failed", "desync": "cases failed", "h2spec": "tests failed",
         "smuggler": "mutations failed", "redbot": "notes were bad or warnings"}


NONE = {"desync": "No case failed", "smuggler": "No mutation failed", "redbot": "No note was bad or a warning"}


def suite_section(key, title, parser, rev_key, about, out, verdicts):
    noun = NOUNS.get(key, "tests failed")
    rev = meta.get(rev_key)
    out.append("## %s\n" % title)
    out.append("%s%s\n" % (about, " (%s `%s`)" % ("version" if key == "redbot" else "revision", rev[:12]) if rev else ""))
    results = {}
    for s in SERVERS:
        if s not in ran_servers:
            results[s] = {"error": not_run_reason(s)}
            continue
        r = parser(s)
        info = run_info(key, s)
        if r is None:
            if info and info["rc"] in (124, 137):
                r = {"error": "no result: stopped by the time limit (%d s)" % info["limit"]}
            else:
                r = {"error": "no result (exit %s); see the suite's output" % (info or {}).get("rc", "?")}
        elif info and info["rc"] in (124, 137):
            r["note"] = "stopped by the time limit (%d s); partial" % info["limit"]
        results[s] = r
    labels = []
    for s in SERVERS:
        for label, _ in results[s].get("counts", []):
            if label not in labels:
                labels.append(label)
    out.append("| | cleargate | nginx | HAProxy |")
    out.append("| --- | --- | --- | --- |")
    for label in labels:
        row = []
        for s in SERVERS:
            r = results[s]
            if "error" in r:
                row.append("—")
            else:
                row.append(str(dict(r["counts"]).get(label, 0)))
        out.append("| %s | %s |" % (label, " | ".join(row)))
    notes = ["%s: %s" % (NAMES[s], results[s]["error"] if "error" in results[s] else results[s]["note"])
             for s in SERVERS if "error" in results[s] or "note" in results[s]]
    out.append("")
    for n in notes:
        out.append("- %s" % n)
    if notes:
        out.append("")

    # Tests that failed (or, for REDbot, warned) on some server.
    ids = []
    for s in SERVERS:
        for tid, (ok, note) in results[s].get("tests", {}).items():
            warned = results[s].get("warn_is_listed") and note.startswith("WARN")
            if (not ok or warned) and tid not in ids:
                ids.append(tid)
    if ids:
        out.append("<details><summary>%d %s on at least one server</summary>\n" % (len(ids), noun))
        out.append("| test | cleargate | nginx | HAProxy |")
        out.append("| --- | --- | --- | --- |")
        for tid in sorted(ids, key=natural):
            row = []
            for s in SERVERS:
                r = results[s]
                if "error" in r:
                    row.append("—")
                    continue
                ok, note = r["tests"].get(tid, (None, ""))
                if ok is None:
                    row.append("pass" if r.get("absent_is_pass") else "not run")
                elif ok and not (r.get("warn_is_listed") and note.startswith("WARN")):
                    row.append("pass")
                else:
                    row.append(("**fail**: " if not ok else "") + cell(note, 110))
            out.append("| %s | %s |" % (cell(tid, 90), " | ".join(row)))
        out.append("\n</details>\n")
    else:
        out.append("%s on any server that ran.\n" % NONE.get(key, "No test failed"))

    cg = results["cleargate"]
    out.append("**cleargate's failures.**")
    if "error" in cg:
        out.append("cleargate was %s.\n" % cg["error"])
    else:
        fails = [(tid, note) for tid, (ok, note) in sorted(cg["tests"].items()) if not ok]
        if not fails:
            out.append("None.\n")
        else:
            out.append("")
            for tid, note in sorted(fails, key=lambda f: natural(f[0])):
                out.append("- `%s`: %s" % (cell(tid, 120).replace("`", "'"), cell(note, 300)))
            out.append("")
    failed = {s: results[s].get("failed") for s in SERVERS if "error" not in results[s]}
    verdicts[title] = failed
    return results


def main():
    out = []
    out.append("# Conformance: cleargate, nginx and HAProxy under public test suites\n")
    out.append("Written by `interop/conformance.sh`; do not edit by hand. The suites are not part of this "
               "repository: `interop/conformance/README.md` says how to get them and run the script "
               "(`CONFORMANCE_SUITES=/path/to/suites bash interop/conformance.sh`). CI has no copy of "
               "them, so there the script says so and leaves this file as it is.\n")
    versions = []
    if "cleargate" in ran_servers:
        versions.append("cleargate %s" % (meta.get("cleargate") or "?"))
    else:
        versions.append("cleargate not run (not built when this was written)")
    versions.append("nginx %s" % (meta.get("nginx") or "not installed"))
    versions.append("HAProxy %s" % (meta.get("haproxy") or "not installed"))
    out.append("Measured with %s. Each gateway runs as the current user on loopback ports, configured "
               "the usual way (below), in front of the same origin, `interop/conformance/origin.py` "
               "(HTTP/1.1 keep-alive, an HTML page with ETag, Last-Modified, Cache-Control, ranges, "
               "gzip and conditional requests; it logs every request head it receives), and, for "
               "HTTPWookiee's reverse-proxy tests, of HTTPWookiee's backend under `/proxy`. Each suite "
               "run is bounded by a time limit.\n" % ", ".join(versions))
    skipped = [t for k, t, *_ in SUITES if k not in ran_suites]
    if skipped:
        out.append("Not run this time (missing from the suites folder): %s.\n" % ", ".join(skipped))

    verdicts, sections = {}, []
    for key, title, parser, rev_key, about in SUITES:
        if key in ran_suites:
            suite_section(key, title, parser, rev_key, about, sections, verdicts)

    out.append("## Summary\n")
    out.append("Failed tests per suite (fewer is better; the sections below give the totals and each failure).\n")
    out.append("| suite | cleargate | nginx | HAProxy |")
    out.append("| --- | --- | --- | --- |")
    for title, failed in verdicts.items():
        out.append("| %s | %s |" % (title, " | ".join(str(failed[s]) if s in failed else "—" for s in SERVERS)))
    out.append("")
    out.extend(sections)

    out.append("## Configurations\n")
    out.append("Every gateway routes `/proxy` to HTTPWookiee's backend, `/down` to a port where nothing "
               "listens, and the rest to the origin; a second listener takes h2c with prior knowledge "
               "for h2spec (cleargate accepts h2c on any listener; nginx and HAProxy need a listener of "
               "their own). Ports as names.\n")
    for name, lang in (("cleargate.toml", "toml"), ("nginx.conf", "nginx"), ("haproxy.cfg", "haproxy")):
        p = path("doc-" + name)
        if os.path.exists(p):
            out.append("%s:\n" % {"cleargate.toml": "cleargate", "nginx.conf": "nginx", "haproxy.cfg": "HAProxy"}[name])
            out.append("```%s\n%s```\n" % (lang, open(p).read()))

    with open(doc, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    print("conformance: wrote %s" % os.path.relpath(doc))
    for title, failed in verdicts.items():
        print("  %-30s %s" % (title, ", ".join("%s %s failed" % (NAMES[s], failed[s]) for s in SERVERS if s in failed)))

    if os.environ.get("CONFORMANCE_STRICT") == "1":
        worse = [t for t, f in verdicts.items() if "cleargate" in f and all(
            f["cleargate"] > f[o] for o in ("nginx", "haproxy") if o in f) and any(o in f for o in ("nginx", "haproxy"))]
        if worse:
            print("conformance: cleargate failed more tests than nginx and HAProxy in: " + ", ".join(worse))
            sys.exit(1)


if __name__ == "__main__":
    main()
