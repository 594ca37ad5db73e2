//! The stored responses: in memory, bounded by bytes (headers and bodies both count), each
//! key holding the variants its `Vary` asks for. Whole responses only: a body is stored once it
//! has arrived complete and within `max_object`; nothing partial is ever kept.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::StatusCode;

use crate::policy::{self, Stored};

/// What every entry costs beyond its key, headers and body (the bookkeeping), in bytes.
const OVERHEAD: usize = 256;

/// One stored response, for the request header values it was made for.
#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    /// The response's header fields as stored (hop-by-hop ones already removed).
    pub headers: HeaderMap,
    pub body: Bytes,
    pub stored: Stored,
    /// The fields named by `Vary`, with the values the request that brought it had.
    pub vary: Vec<(HeaderName, Option<String>)>,
}

impl Entry {
    /// A response as it may be stored, with the request's values for its `Vary` fields.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        stored: Stored,
        req: &HeaderMap,
    ) -> Entry {
        let vary = policy::vary_names(&headers)
            .unwrap_or_default()
            .into_iter()
            .map(|n| {
                let v = policy::vary_value(req, &n);
                (n, v)
            })
            .collect();
        Entry {
            status,
            headers,
            body,
            stored,
            vary,
        }
    }

    /// True when a request with these headers is one this variant answers.
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| policy::vary_value(req, name) == *value)
    }

    /// The bytes it holds.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        self.body.len() + headers + OVERHEAD
    }
}

/// The variants stored for one key (one URI), newest first.
#[derive(Debug, Default)]
struct Variants {
    list: Vec<Arc<Entry>>,
}

impl Variants {
    fn size(&self, key: &str) -> u32 {
        let bytes: usize = self.list.iter().map(|e| e.size()).sum::<usize>() + key.len();
        bytes.min(u32::MAX as usize) as u32
    }
}

/// What [`Store::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    Stored,
    /// The response is larger than `max_object`.
    TooLarge,
    /// A server error never replaces a good stored response: the good one stays.
    KeptGood,
}

/// The bounded store.
pub struct Store {
    entries: moka::sync::Cache<Arc<str>, Arc<Variants>>,
    max_object: usize,
    max_variants: usize,
}

impl Store {
    /// A store of at most `capacity` bytes, keeping no response above `max_object` bytes and
    /// at most `max_variants` variants of one URI.
    pub fn new(capacity: u64, max_object: u64, max_variants: usize) -> Store {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &Arc<str>, v: &Arc<Variants>| v.size(key))
            .build();
        Store {
            entries,
            max_object: max_object.min(u32::MAX as u64) as usize,
            max_variants: max_variants.max(1),
        }
    }

    /// The key of a request as it is forwarded: scheme, host and target.
    pub fn key(scheme: &str, host: &str, path_and_query: &str) -> Arc<str> {
        Arc::from(format!(
            "{scheme}://{}{path_and_query}",
            host.to_ascii_lowercase()
        ))
    }

    /// The most bytes a response may have to be stored.
    pub fn max_object(&self) -> usize {
        self.max_object
    }

    /// The stored response for this request, when there is one (fresh or not).
    pub fn lookup(&self, key: &str, req: &HeaderMap) -> Option<Arc<Entry>> {
        let variants = self.entries.get(key)?;
        variants.list.iter().find(|e| e.matches(req)).cloned()
    }

    /// Stores `entry` under `key`, in place of the variant it matches.
    pub fn insert(&self, key: Arc<str>, entry: Entry) -> Inserted {
        if entry.body.len() > self.max_object {
            return Inserted::TooLarge;
        }
        let previous = self.entries.get(&key);
        let mut list: Vec<Arc<Entry>> = Vec::new();
        if let Some(old) = &previous {
            let same_vary = |e: &Entry| {
                e.vary.len() == entry.vary.len()
                    && e.vary.iter().zip(&entry.vary).all(|(a, b)| a.0 == b.0)
            };
            for e in &old.list {
                // A variant this response replaces: the same request values.
                let replaced = same_vary(e) && e.vary == entry.vary;
                if replaced && entry.status.is_server_error() && !e.status.is_server_error() {
                    return Inserted::KeptGood;
                }
                // A changed `Vary` makes the other variants unreachable: they go.
                if !replaced && same_vary(e) {
                    list.push(e.clone());
                }
            }
        }
        list.insert(0, Arc::new(entry));
        list.truncate(self.max_variants);
        self.entries.insert(key, Arc::new(Variants { list }));
        Inserted::Stored
    }

    /// A 304 confirmed a stored response: its fields are updated and its age starts again.
    pub fn freshen(
        &self,
        key: Arc<str>,
        entry: &Entry,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        options: &policy::Options,
    ) -> Arc<Entry> {
        let mut headers = entry.headers.clone();
        policy::update_headers(&mut headers, not_modified);
        let stored = Stored::new(request_time, response_time, entry.status, &headers, options);
        let fresh = Entry {
            status: entry.status,
            headers,
            body: entry.body.clone(),
            stored,
            vary: entry.vary.clone(),
        };
        let fresh = Arc::new(fresh);
        let previous = self.entries.get(&key);
        let mut list = vec![fresh.clone()];
        if let Some(old) = previous {
            list.extend(old.list.iter().filter(|e| e.vary != fresh.vary).cloned());
        }
        self.entries.insert(key, Arc::new(Variants { list }));
        fresh
    }

    /// True when something is stored under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Forgets every variant stored under `key` (an unsafe method's answer, a purge).
    pub fn invalidate(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// Forgets everything whose key starts with `prefix`; how many keys went.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let keys: Vec<Arc<str>> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        for k in &keys {
            self.entries.invalidate(k);
        }
        keys.len()
    }

    /// The bytes held now (after pending evictions have run).
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// How many keys are stored now.
    pub fn keys(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::headers;

    fn entry(
        status: u16,
        resp: &[(&str, &str)],
        body: &'static [u8],
        req: &[(&str, &str)],
    ) -> Entry {
        let resp = headers(resp);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let status = StatusCode::from_u16(status).unwrap();
        let stored = Stored::new(now, now, status, &resp, &policy::Options::default());
        Entry::new(
            status,
            resp,
            Bytes::from_static(body),
            stored,
            &headers(req),
        )
    }

    #[test]
    fn variants_by_vary_and_a_changed_vary_replaces_them() {
        let store = Store::new(1 << 20, 1 << 16, 8);
        let key = Store::key("http", "Example.test", "/a?x=1");
        assert_eq!(&*key, "http://example.test/a?x=1");
        let vary = [("cache-control", "max-age=60"), ("vary", "accept-language")];
        assert_eq!(
            store.insert(
                key.clone(),
                entry(200, &vary, b"en", &[("accept-language", "en")])
            ),
            Inserted::Stored
        );
        store.insert(
            key.clone(),
            entry(200, &vary, b"fr", &[("accept-language", "fr")]),
        );
        let en = store
            .lookup(&key, &headers(&[("accept-language", "en")]))
            .unwrap();
        assert_eq!(&en.body[..], b"en");
        let fr = store
            .lookup(&key, &headers(&[("accept-language", "fr")]))
            .unwrap();
        assert_eq!(&fr.body[..], b"fr");
        assert!(store.lookup(&key, &headers(&[])).is_none());
        // Same request values: replaced, not added.
        store.insert(
            key.clone(),
            entry(200, &vary, b"en2", &[("accept-language", "en")]),
        );
        let en = store
            .lookup(&key, &headers(&[("accept-language", "en")]))
            .unwrap();
        assert_eq!(&en.body[..], b"en2");
        assert!(store
            .lookup(&key, &headers(&[("accept-language", "fr")]))
            .is_some());
        // A response without Vary: the old variants cannot be reached any more.
        store.insert(
            key.clone(),
            entry(200, &[("cache-control", "max-age=60")], b"all", &[]),
        );
        let any = store
            .lookup(&key, &headers(&[("accept-language", "fr")]))
            .unwrap();
        assert_eq!(&any.body[..], b"all");
        store.invalidate(&key);
        assert!(store.lookup(&key, &headers(&[])).is_none());
    }

    #[test]
    fn a_server_error_never_replaces_a_good_copy_and_large_ones_are_not_kept() {
        let store = Store::new(1 << 20, 8, 8);
        let key = Store::key("http", "a", "/");
        let cc = [("cache-control", "max-age=60")];
        store.insert(key.clone(), entry(200, &cc, b"good", &[]));
        assert_eq!(
            store.insert(key.clone(), entry(503, &cc, b"down", &[])),
            Inserted::KeptGood
        );
        assert_eq!(
            &store.lookup(&key, &headers(&[])).unwrap().body[..],
            b"good"
        );
        assert_eq!(
            store.insert(key.clone(), entry(200, &cc, b"far too large", &[])),
            Inserted::TooLarge
        );
    }

    #[test]
    fn memory_stays_within_the_capacity() {
        static BODY: [u8; 4096] = [b'x'; 4096];
        let capacity = 64 * 1024;
        let store = Store::new(capacity, 8192, 8);
        for i in 0..200 {
            let key = Store::key("http", "a", &format!("/{i}"));
            let resp = headers(&[("cache-control", "max-age=60")]);
            let now = SystemTime::now();
            let stored = Stored::new(now, now, StatusCode::OK, &resp, &policy::Options::default());
            store.insert(
                key,
                Entry::new(
                    StatusCode::OK,
                    resp,
                    Bytes::from_static(&BODY),
                    stored,
                    &HeaderMap::new(),
                ),
            );
        }
        let held = store.bytes();
        assert!(held <= capacity, "{held} bytes held");
        assert!(held >= capacity / 2, "{held} bytes held");
        assert!(store.keys() < 200);
    }

    #[test]
    fn a_304_freshens_the_stored_fields() {
        let store = Store::new(1 << 20, 1 << 16, 8);
        let key = Store::key("http", "a", "/");
        store.insert(
            key.clone(),
            entry(
                200,
                &[("cache-control", "max-age=1"), ("x-test", "old")],
                b"body",
                &[],
            ),
        );
        let old = store.lookup(&key, &headers(&[])).unwrap();
        let later = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_100);
        let fresh = store.freshen(
            key.clone(),
            &old,
            &headers(&[("cache-control", "max-age=60"), ("x-test", "new")]),
            later,
            later,
            &policy::Options::default(),
        );
        assert_eq!(fresh.headers["x-test"], "new");
        assert_eq!(&fresh.body[..], b"body");
        assert!(fresh.stored.is_fresh(later));
        assert_eq!(
            store.lookup(&key, &headers(&[])).unwrap().headers["x-test"],
            "new"
        );
        assert_eq!(store.purge_prefix("http://a/"), 1);
        assert!(store.lookup(&key, &headers(&[])).is_none());
    }
}
