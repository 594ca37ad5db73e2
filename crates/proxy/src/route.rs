//! Routing: host and path prefix to an upstream. Routes naming the host win over routes for any
//! host; among those, the longest path prefix wins.

use crate::log::Text;
use config::RouteConfig;

#[derive(Debug)]
pub struct Route {
    pub host: Option<String>,
    pub path: String,
    /// Index into the gateway's upstream list.
    pub upstream: usize,
    /// Index of the route in the configuration.
    pub index: usize,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: &[RouteConfig], upstream_index: impl Fn(&str) -> usize) -> Router {
        let mut routes: Vec<Route> = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                host: r.host.clone(),
                path: r.path.clone(),
                upstream: upstream_index(&r.upstream),
                index,
            })
            .collect();
        // Longest prefix first, so the first match is the best one.
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        Router { routes }
    }

    /// The route for `host` (lowercase, no port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        let matching = |want_host: bool| {
            self.routes
                .iter()
                .filter(move |r| match &r.host {
                    Some(h) => want_host && h == host,
                    None => !want_host,
                })
                .find(|r| path.starts_with(&r.path))
        };
        matching(true).or_else(|| matching(false))
    }
}

/// The host of a `Host` header or authority: lowercased, without port or trailing dot; held
/// in place when short.
pub fn normalize_host(raw: &str) -> Text {
    let raw = raw.trim();
    // Cut at ASCII bytes only, which never sit inside a longer UTF-8 sequence: every index
    // below is a char boundary.
    let bytes = raw.as_bytes();
    let host = if bytes.first() == Some(&b'[') {
        // IPv6 literal: keep the brackets' content.
        let rest = &raw[1..];
        rest.bytes()
            .position(|b| b == b']')
            .map_or(rest, |end| &rest[..end])
    } else {
        match bytes.iter().rposition(|&b| b == b':') {
            Some(colon) if bytes[colon + 1..].iter().all(u8::is_ascii_digit) => &raw[..colon],
            _ => raw,
        }
    };
    let kept = host.len() - host.bytes().rev().take_while(|&b| b == b'.').count();
    match crate::log::Inline::new(&host[..kept]) {
        Some(mut inline) => {
            inline.make_ascii_lowercase();
            Text::from(inline)
        }
        None => Text::from(host[..kept].to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let r = |host: Option<&str>, path: &str, up: &str| RouteConfig {
            host: host.map(str::to_string),
            path: path.into(),
            upstream: up.into(),
            retry: config::RetryConfig::default(),
            cache: false,
        };
        let routes = vec![
            r(None, "/", "default"),
            r(None, "/api", "api"),
            r(None, "/api/v2", "api2"),
            r(Some("shop.example"), "/", "shop"),
        ];
        Router::new(&routes, |name| {
            ["default", "api", "api2", "shop"]
                .iter()
                .position(|n| *n == name)
                .unwrap()
        })
    }

    fn check(host: &str, path: &str, expect: Option<usize>) {
        assert_eq!(
            router().find(host, path).map(|r| r.upstream),
            expect,
            "{host}{path}"
        );
    }

    #[test]
    fn longest_prefix_and_host_first() {
        check("x", "/", Some(0));
        check("x", "/api/users", Some(1));
        check("x", "/api/v2/users", Some(2));
        check("shop.example", "/api", Some(3));
        check("evil.example", "/api", Some(1));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host(" Host.:"), "host");
        assert_eq!(normalize_host("[::1"), "::1");
        assert_eq!(normalize_host("a:b"), "a:b");
    }

    /// The byte-wise cut gives what the reading by chars gave, on generated hosts mixing the
    /// bytes it cuts at with letters, digits, spaces and non-ASCII characters.
    #[test]
    fn the_byte_wise_cut_agrees_with_the_reading_by_chars() {
        fn by_chars(raw: &str) -> String {
            let raw = raw.trim();
            let host = if let Some(rest) = raw.strip_prefix('[') {
                rest.split(']').next().unwrap_or(rest)
            } else {
                raw.rsplit_once(':').map_or(raw, |(h, p)| {
                    if p.chars().all(|c| c.is_ascii_digit()) {
                        h
                    } else {
                        raw
                    }
                })
            };
            host.trim_end_matches('.').to_ascii_lowercase()
        }
        let alphabet = [
            "[",
            "]",
            ":",
            ".",
            "a",
            "Z",
            "0",
            "9",
            " ",
            "\t",
            "é",
            "\u{a0}",
            "ß",
            "-",
            "x1",
            // Long enough that some hosts are not held in place.
            "Long-Label-Of-Twelve",
        ];
        let mut rng = fastrand::Rng::with_seed(0x4057);
        for _ in 0..5000 {
            let len = rng.usize(0..10);
            let raw: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            assert_eq!(normalize_host(&raw), by_chars(&raw), "{raw:?}");
        }
    }
}
