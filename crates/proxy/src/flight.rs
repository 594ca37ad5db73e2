//! Coalescing on caching routes: while one request for a key is on its way upstream (the
//! leader), the other requests for that key (followers) wait for it instead of making their own.
//! Once the leader's answer turns out storable, a task reads its body into the flight and every
//! client, the leader's included, is fed from the flight as the body arrives (not after it has
//! ended); at its clean end the response is stored. When the leader's answer cannot be shared
//! (not storable, an error, a 304 that freshened a copy, or the leader gave up), the followers
//! are woken to look in the store again and go upstream on their own, and a key found
//! uncacheable is not coalesced for [`PASS_FOR`], so its requests are not made to queue.
//!
//! Memory: a flight holds the body only up to `max_object` while it may still be stored; a body
//! of unknown length that grows past it is no longer stored, and from then on the flight keeps
//! only what its slowest reader has yet to read, and the reading task waits for readers once
//! that reaches `max_object`. At most [`Flights::limit`] flights run at once; past it, requests
//! simply are not coalesced.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, Phase};
use http::header::HeaderMap;
use http::StatusCode;

/// How long a key whose answer could not be stored goes without coalescing.
pub(crate) const PASS_FOR: Duration = Duration::from_secs(30);

/// The flights in progress, by key, and the keys not coalesced for now.
pub(crate) struct Flights {
    map: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
    pass: Mutex<HashMap<Arc<str>, Instant>>,
    /// The most flights at once.
    pub limit: usize,
    /// The most body bytes one flight holds.
    max_object: usize,
}

/// What a request on a caching route is to the flight for its key.
pub(crate) enum Joined {
    /// The first: it goes upstream, and its answer may feed the others.
    Lead(Leader),
    /// Another request is on its way upstream for this key: wait for it.
    Follow(Arc<Flight>),
    /// Not coalesced (the key is passed, or too many flights run).
    Alone,
}

impl Flights {
    pub(crate) fn new(limit: usize, max_object: u64) -> Flights {
        Flights {
            map: Mutex::new(HashMap::new()),
            pass: Mutex::new(HashMap::new()),
            limit: limit.max(1),
            max_object: max_object.min(usize::MAX as u64) as usize,
        }
    }

    /// Joins the flight for `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>) -> Joined {
        if self.passed(key) {
            return Joined::Alone;
        }
        let mut map = lock(&self.map);
        if let Some(flight) = map.get(key) {
            return Joined::Follow(flight.clone());
        }
        if map.len() >= self.limit {
            return Joined::Alone;
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State {
                cap: self.max_object.max(1),
                ..State::default()
            }),
        });
        map.insert(key.clone(), flight.clone());
        Joined::Lead(Leader {
            flights: self.clone(),
            key: key.clone(),
            flight,
            settled: false,
        })
    }

    /// How many flights run now.
    pub(crate) fn running(&self) -> usize {
        lock(&self.map).len()
    }

    fn passed(&self, key: &str) -> bool {
        let pass = lock(&self.pass);
        pass.get(key).is_some_and(|until| Instant::now() < *until)
    }

    /// The key's answer could not be stored: its requests go upstream each on its own for a
    /// while. `false` clears that (its answer is storable again).
    pub(crate) fn set_pass(&self, key: &Arc<str>, pass: bool) {
        let mut map = lock(&self.pass);
        if !pass {
            map.remove(key);
            return;
        }
        let now = Instant::now();
        if map.len() >= 4 * self.limit.max(1024) {
            map.retain(|_, until| *until > now);
            if map.len() >= 4 * self.limit.max(1024) {
                map.clear();
            }
        }
        map.insert(key.clone(), now + PASS_FOR);
    }

    fn remove(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = lock(&self.map);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The leader's hold on its flight. Dropped without [`Leader::share`] (an error, an answer
/// that cannot be stored, a leader that gave up), it lets the followers go on their own.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: Arc<str>,
    flight: Arc<Flight>,
    settled: bool,
}

impl Leader {
    /// Marks the flight as led by a background refresh.
    pub(crate) fn set_background(&self) {
        let mut st = self.flight.lock();
        st.background = true;
        let wake = st.wake();
        drop(st);
        wake.now();
    }

    /// The leader's answer is storable: the followers take it. Returns the flight, for the task
    /// that reads the body into it and for the leader's own reader.
    pub(crate) fn share(mut self, head: Head) -> (Arc<Flight>, Finish) {
        self.settled = true;
        let mut st = self.flight.lock();
        st.head = Some(Arc::new(head));
        st.outcome = Outcome::Shared;
        st.storing = true;
        let wake = st.wake();
        drop(st);
        wake.now();
        let finish = Finish {
            flights: self.flights.clone(),
            key: self.key.clone(),
            flight: self.flight.clone(),
        };
        (self.flight.clone(), finish)
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.flights.remove(&self.key, &self.flight);
        let mut st = self.flight.lock();
        st.outcome = Outcome::Alone;
        let wake = st.wake();
        drop(st);
        wake.now();
    }
}

/// Ends a shared flight: later requests find the store (or go upstream) instead.
pub(crate) struct Finish {
    flights: Arc<Flights>,
    key: Arc<str>,
    flight: Arc<Flight>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.flights.remove(&self.key, &self.flight);
    }
}

/// What a follower's wait for the leader came to.
pub(crate) enum Waited {
    /// The leader's answer, to share.
    Shared(Arc<Head>),
    /// Nothing to share: look in the store again, then go upstream alone.
    Alone,
    /// A background refresh leads: a stale copy may answer at once.
    Background,
}

/// The shared answer's head, as the leader relayed it.
pub(crate) struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The leader's request fields, for the followers' `Vary` match.
    pub request: HeaderMap,
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Outcome {
    #[default]
    Pending,
    Shared,
    Alone,
}

/// How the body ended, once it has.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Complete,
    /// The upstream's body broke: every reader's response is aborted, as the leader's is.
    Broken(Cause, Phase),
}

#[derive(Default)]
struct State {
    outcome: Outcome,
    head: Option<Arc<Head>>,
    /// The body so far, from the chunk numbered `base` on.
    chunks: VecDeque<Bytes>,
    base: usize,
    held: usize,
    total: usize,
    /// Still within `max_object`: everything is kept, to be stored.
    storing: bool,
    end: Option<End>,
    /// Per reader, the number of the next chunk it reads (`None` once it is gone).
    cursors: Vec<Option<usize>>,
    waiting: Vec<Waker>,
    /// The reading task, waiting for readers to make room.
    pump: Option<Waker>,
    /// The most body bytes held (`max_object`).
    cap: usize,
    /// Led by a background refresh, not by a client: requests that may have a stale copy
    /// take it instead of waiting.
    background: bool,
}

/// Wakers taken out of the state, woken once its lock is released (a woken task on another
/// worker would otherwise run straight into the held lock).
#[must_use]
struct Wake(Vec<Waker>);

impl Wake {
    fn now(self) {
        for w in self.0 {
            w.wake();
        }
    }
}

impl State {
    fn wake(&mut self) -> Wake {
        let mut all = std::mem::take(&mut self.waiting);
        all.extend(self.pump.take());
        Wake(all)
    }

    fn wait(&mut self, cx: &mut Context<'_>) {
        if !self.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiting.push(cx.waker().clone());
        }
    }

    /// Once nothing more will be stored, lets go of what every reader has read; the reading
    /// task is to be woken when that made room.
    fn trim(&mut self) -> Option<Waker> {
        if self.storing {
            return None;
        }
        let low = self
            .cursors
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(self.base + self.chunks.len());
        while self.base < low {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            self.held -= c.len();
            self.base += 1;
        }
        if self.held < self.cap {
            return self.pump.take();
        }
        None
    }
}

/// One flight: its outcome, head and body as they arrive.
pub(crate) struct Flight {
    state: Mutex<State>,
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Waits for the leader: the shared head, or what else became of the flight. With
    /// `stale_ok` (the follower has a stale copy to answer with), a flight that a background
    /// refresh leads, or comes to lead, is not waited for.
    pub(crate) async fn head(&self, stale_ok: bool) -> Waited {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            match st.outcome {
                Outcome::Pending if stale_ok && st.background => Poll::Ready(Waited::Background),
                Outcome::Pending => {
                    st.wait(cx);
                    Poll::Pending
                }
                Outcome::Shared => Poll::Ready(match st.head.clone() {
                    Some(h) => Waited::Shared(h),
                    None => Waited::Alone,
                }),
                Outcome::Alone => Poll::Ready(Waited::Alone),
            }
        })
        .await
    }

    /// A reader of the body from its first byte, or `None` when the beginning is no longer
    /// held (the body outgrew what may be stored).
    pub(crate) fn reader(self: &Arc<Self>) -> Option<Reader> {
        let mut st = self.lock();
        if st.base != 0 {
            return None;
        }
        st.cursors.push(Some(0));
        let id = st.cursors.len() - 1;
        Some(Reader {
            flight: self.clone(),
            id,
        })
    }

    /// Adds a chunk read from the upstream; waits first while the held part of a body too
    /// large to store is at its bound.
    pub(crate) async fn push(&self, chunk: Bytes) {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            if !st.storing && st.held >= st.cap && st.cursors.iter().flatten().next().is_some() {
                st.pump = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await;
        let mut st = self.lock();
        st.total += chunk.len();
        st.held += chunk.len();
        st.chunks.push_back(chunk);
        if st.storing && st.total > st.cap {
            st.storing = false;
        }
        let _ = st.trim();
        let wake = st.wake();
        drop(st);
        wake.now();
    }

    /// The body has ended. When it ended complete and within `max_object`, the whole of it.
    pub(crate) fn end(&self, end: End) -> Option<Bytes> {
        let mut st = self.lock();
        if st.end.is_some() {
            return None;
        }
        st.end = Some(end);
        let wake = st.wake();
        let whole = (end == End::Complete && st.storing)
            .then(|| (st.total, st.chunks.iter().cloned().collect::<Vec<Bytes>>()));
        drop(st);
        wake.now();
        // Joined outside the lock: the readers need it meanwhile.
        let (total, chunks) = whole?;
        if chunks.len() == 1 {
            return chunks.into_iter().next();
        }
        let mut all = bytes::BytesMut::with_capacity(total);
        for c in &chunks {
            all.extend_from_slice(c);
        }
        Some(all.freeze())
    }

    /// True when nobody needs the rest of the body: it is too large to store and every reader
    /// has gone.
    pub(crate) fn abandoned(&self) -> bool {
        let st = self.lock();
        !st.storing && st.cursors.iter().all(Option::is_none)
    }
}

/// One client's read of a flight's body.
pub(crate) struct Reader {
    flight: Arc<Flight>,
    id: usize,
}

impl Reader {
    /// The next chunk; `Ready(None)` at the clean end, `Ready(Some(Err))` when it broke.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, End>>> {
        let mut st = self.flight.lock();
        let Some(at) = st.cursors[self.id] else {
            return Poll::Ready(None);
        };
        if at < st.base + st.chunks.len() {
            let chunk = st.chunks[at - st.base].clone();
            st.cursors[self.id] = Some(at + 1);
            let pump = st.trim();
            drop(st);
            if let Some(w) = pump {
                w.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match st.end {
            Some(End::Complete) => Poll::Ready(None),
            Some(broken) => Poll::Ready(Some(Err(broken))),
            None => {
                st.wait(cx);
                Poll::Pending
            }
        }
    }

    /// True once every byte has been read and the body ended complete.
    pub(crate) fn is_end(&self) -> bool {
        let st = self.flight.lock();
        st.end == Some(End::Complete)
            && st.cursors[self.id].is_some_and(|at| at == st.base + st.chunks.len())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut st = self.flight.lock();
        st.cursors[self.id] = None;
        let pump = st.trim();
        drop(st);
        if let Some(w) = pump {
            w.wake();
        }
    }
}
