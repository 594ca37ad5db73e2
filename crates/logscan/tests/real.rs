//! Lines really written by nginx 1.22, Apache httpd 2.4, HAProxy 2.6 and Caddy 2.6 in front of
//! `cleargate lab`, captured by interop/logs.sh (UPDATE_FIXTURES=1): every finding must have a
//! cause that fixtures/real/expected.tsv allows for its location, required locations must have
//! one, and no error line may be unrecognized.

use std::collections::BTreeMap;
use std::path::Path;

use logscan::scan::Scanner;
use logscan::{display, Role};

struct Expect {
    allowed: Vec<String>,
    required: bool,
}

fn expectations(root: &Path) -> BTreeMap<(String, String), Expect> {
    let table = std::fs::read_to_string(root.join("expected.tsv")).expect("expected.tsv");
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let allowed = if c[2] == "-" {
                Vec::new()
            } else {
                c[2].split(',').map(str::to_string).collect()
            };
            (
                (c[0].to_string(), c[1].to_string()),
                Expect {
                    allowed,
                    required: c[3] == "yes",
                },
            )
        })
        .collect()
}

/// Causes of the findings (follow-ups left out) of `path`, with each line.
fn findings(path: &Path) -> (Vec<(String, String)>, u64) {
    let mut out = Vec::new();
    let mut cb = |f: &logscan::Finding<'_>, line: &[u8]| {
        if f.role != Role::FollowUp {
            let upstream = f.upstream.map(|u| display(u, 200)).unwrap_or_default();
            out.push((
                f.cause.as_str().to_string(),
                format!("{upstream}\t{}", display(line, 300)),
            ));
        }
    };
    let mut scanner = Scanner::new(None).with_callback(&mut cb);
    let mut file = std::fs::File::open(path).expect("fixture");
    scanner.read(&mut file, None).expect("read");
    let unrecognized = scanner.summary.unrecognized;
    drop(scanner);
    (out, unrecognized)
}

#[test]
fn real_captures_classify_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real");
    let expected = expectations(&root);
    let mut got: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    let mut unrecognized = 0;
    for server in ["nginx", "apache", "caddy"] {
        for entry in std::fs::read_dir(root.join(server)).expect("server folder") {
            let path = entry.expect("entry").path();
            let loc = path.file_stem().unwrap().to_string_lossy().to_string();
            let (f, u) = findings(&path);
            unrecognized += u;
            got.insert((server.to_string(), loc), f);
        }
    }
    // HAProxy names the backend, `b_<location>`, in every traffic line.
    let (f, u) = findings(&root.join("haproxy/haproxy.log"));
    unrecognized += u;
    for (cause, text) in f {
        let loc = text
            .strip_prefix("b_")
            .and_then(|t| t.split(['/', '\t']).next())
            .unwrap_or("?")
            .to_string();
        got.entry(("haproxy".into(), loc))
            .or_default()
            .push((cause, text));
    }
    assert_eq!(unrecognized, 0, "unrecognized lines in the captures");

    let mut failures = Vec::new();
    let mut checked = 0;
    for (key, e) in &expected {
        let fs = got.get(key).map(Vec::as_slice).unwrap_or_default();
        checked += fs.len();
        for (cause, line) in fs {
            if !e.allowed.contains(cause) {
                failures.push(format!("{}/{}: {cause} not allowed: {line}", key.0, key.1));
            }
        }
        if e.required && fs.is_empty() {
            failures.push(format!("{}/{}: no finding", key.0, key.1));
        }
    }
    for (key, fs) in &got {
        if !expected.contains_key(key) && !fs.is_empty() {
            failures.push(format!("{}/{}: not in expected.tsv", key.0, key.1));
        }
    }
    assert!(checked >= 40, "only {checked} findings checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
