//! Step 1, URL sanity: what the doctor is asked to check, and the usual slips in typing it.
//!
//! A URL that cannot be checked at all (an unknown scheme, no host) is an input error; a slip
//! that still leaves a usable URL (no scheme, a stray space, the wrong port for the scheme,
//! copy-paste leftovers at the end) is reported and the run goes on.

use serde::Serialize;

/// The URL as the doctor will use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// What was given, untouched.
    pub input: String,
    /// The URL used, after the repairs the slips describe.
    pub url: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, as sent.
    pub path: String,
    /// Plain-words remarks on the input; empty when it is clean.
    pub slips: Vec<String>,
}

impl Target {
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }

    /// The `Host` header: the port is left out when it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port(&self.scheme) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The host as an IP address, when it is one (no lookup needed).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// Parses `input` into a target, or says why it cannot be checked.
pub fn parse(input: &str) -> Result<Target, String> {
    let mut slips = Vec::new();
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("the URL is empty".into());
    }
    if trimmed.len() != input.len() {
        slips.push("the URL had spaces around it; they were removed".into());
    }
    let mut text = trimmed.to_string();
    if text.contains(char::is_whitespace) {
        slips.push(
            "the URL contains a space: it was encoded as %20, but a stray space often means \
             two things were pasted together"
                .into(),
        );
        text = text.replace(char::is_whitespace, "%20");
    }
    if let Some(hash) = text.find('#') {
        slips.push("the #fragment is never sent to the server; it was left out".into());
        text.truncate(hash);
    }
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = match lower.find("://") {
        Some(i) => (lower[..i].to_string(), &text[i + 3..]),
        None => {
            if lower.starts_with("http:/") || lower.starts_with("https:/") {
                return Err("the scheme needs two slashes: http:// or https://".into());
            }
            slips.push("the URL has no scheme; http:// was assumed".into());
            ("http".to_string(), text.as_str())
        }
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "the scheme `{scheme}` is not checked here: use http:// or https://"
        ));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => {
            slips.push(
                "the URL carries credentials (user:password@); the doctor does not send them"
                    .into(),
            );
            host
        }
        None => authority,
    };
    let (host, port) = split_host_port(authority)?;
    let default = default_port(&scheme);
    let port = match port {
        Some(p) => p,
        None => default,
    };
    if scheme == "https" && port == 80 {
        slips.push("https on port 80: that port usually speaks plain HTTP".into());
    }
    if scheme == "http" && port == 443 {
        slips.push("http on port 443: that port usually speaks TLS; did you mean https://?".into());
    }
    if let Some(last) = path.chars().last() {
        if path.len() > 1 && ")]},;'\">.".contains(last) {
            slips.push(format!(
                "the URL ends in `{last}`: often a leftover of the text it was copied from"
            ));
        }
    }
    let url = format!(
        "{scheme}://{}{}",
        if port == default {
            bracket(&host)
        } else {
            format!("{}:{port}", bracket(&host))
        },
        path
    );
    Ok(Target {
        input: input.to_string(),
        url,
        scheme,
        host,
        port,
        path,
        slips,
    })
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or("the IPv6 address has no closing `]`")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected `{after}` after the IPv6 address")),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return Err(format!(
            "`{host}` is not a valid host name (letters, digits, `-` and `.` only)"
        ));
    }
    let port = match port {
        None => None,
        Some("") => return Err("the port after `:` is empty".into()),
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` is not a port number (1 to 65535)"))?,
        ),
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, url: &str, slips: usize) {
        let t = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(t.url, url, "{input}");
        assert_eq!(t.slips.len(), slips, "{input}: {:?}", t.slips);
    }

    #[test]
    fn urls_and_slips() {
        check("http://example.com/", "http://example.com/", 0);
        check(
            "https://Example.com:8443/a?b=1",
            "https://example.com:8443/a?b=1",
            0,
        );
        check("example.com/x", "http://example.com/x", 1);
        check("  http://example.com", "http://example.com/", 1);
        check("http://example.com/a b", "http://example.com/a%20b", 1);
        check("https://example.com:80/", "https://example.com:80/", 1);
        check("http://example.com:443/", "http://example.com:443/", 1);
        check("http://example.com/page).", "http://example.com/page).", 1);
        check("http://[::1]:8080/", "http://[::1]:8080/", 0);
        check("http://u:p@example.com/#top", "http://example.com/", 2);
        assert_eq!(
            parse("http://[::1]:8080/").unwrap().host_header(),
            "[::1]:8080"
        );
        assert_eq!(parse("https://a.test/").unwrap().host_header(), "a.test");
    }

    #[test]
    fn input_errors() {
        for bad in [
            "",
            "ftp://example.com/",
            "http://",
            "http://example.com:99999/",
            "http://exa mple.com:x/",
            "http:/example.com",
            "http://exa_mple!.com/",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
