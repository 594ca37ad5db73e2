#!/usr/bin/env python3
"""Runs HTTPWookiee's client and reverse-proxy ("server" mode) tests against one gateway.

    wookiee.py SUITE_DIR CONFIG OUT_JSON [match...]

SUITE_DIR is a checkout of HTTPWookiee, CONFIG its configuration file (written by
interop/conformance.sh: the gateway's port, the backend port, the locations). HTTPWookiee's own
backend thread is the origin behind /proxy on the gateway; it is made to listen on 127.0.0.1 only
(upstream binds every address). Each test's outcome, the response class HTTPWookiee gave it and
the gravity of a failure are written to OUT_JSON; nothing is parsed from its text output.
"""
import importlib.util
import json
import os
import sys

suite_dir, config, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
matches = [m.lower() for m in sys.argv[4:]]
os.environ["HTTPWOOKIEE_CONF"] = config
sys.path.insert(0, suite_dir)

import httpwookiee.http.server as wookiee_server  # noqa: E402
from httpwookiee.core.result import TextStatusResult  # noqa: E402
from httpwookiee.core.testrunner import WookieeTestRunner  # noqa: E402

_init = wookiee_server.HttpServerThread.__init__


def _loopback_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.hostip = "127.0.0.1"


wookiee_server.HttpServerThread.__init__ = _loopback_init

spec = importlib.util.spec_from_file_location("wookiee_main", os.path.join(suite_dir, "httpwookiee.py"))
wookiee_main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wookiee_main)  # only definitions: its main is behind __name__ == "__main__"

records = []


def _first_line(err_text):
    lines = [l for l in err_text.splitlines() if l.strip()]
    for l in lines:
        if l.startswith(("AssertionError", "Exception", "socket", "ConnectionResetError", "BrokenPipe")):
            return l.strip()[:200]
    tail = [l for l in lines if not l.startswith(" ")]
    return (tail[-1] if tail else (lines[-1] if lines else "")).strip()[:200]


def _class_name(test):
    return test.__class__.__module__.replace("httpwookiee.", "") + "." + test.__class__.__name__


class RecordingResult(TextStatusResult):
    def _record(self, test, outcome, err=None):
        status = test.getStatus() if hasattr(test, "getStatus") else ""
        gravity = test.getGravity(True) if hasattr(test, "getGravity") else ""
        records.append({
            "test": test._testMethodName,
            "class": _class_name(test),
            "doc": (test.shortDescription() or "").strip(),
            "outcome": outcome,
            "status": status,
            "gravity": gravity if outcome == "fail" else "",
            "message": _first_line(self._exc_info_to_string(err, test)) if err else "",
        })

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail", err)

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        records.append({"test": test._testMethodName, "class": _class_name(test), "doc": "",
                        "outcome": "skip", "status": "", "gravity": "", "message": str(reason)[:200]})


def main():
    filters = {"match": [], "exclude": [], "nums": []}
    classes = wookiee_main.collectTestClasses(os.path.join(suite_dir, "httpwookiee"), filters,
                                              classNamePrefix="httpwookiee")
    if matches:
        classes = [c for c in classes if any(m in c.lower() for m in matches)]
    suite = wookiee_main.collectTestsSuites(classes, {"match": [], "exclude": [], "nums": []})
    runner = WookieeTestRunner(resultclass=RecordingResult, verbosity=1, buffer=True, stream=sys.stderr)
    runner.run(suite)
    with open(out_path, "w") as f:
        json.dump(records, f, indent=1)
    counts = {}
    for r in records:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print("httpwookiee: %s" % ", ".join("%s %d" % kv for kv in sorted(counts.items())))


if __name__ == "__main__":
    main()
    # The backend thread is not a daemon; it has been told to stop. Do not wait on stragglers.
    sys.stdout.flush()
    os._exit(0)
