//! The configuration in use, and changing it without a restart.
//!
//! A [`Gateway`] is one configuration, built whole and never changed. [`Live`] holds the one
//! in use and swaps it on reload (SIGHUP, `POST /api/reload`): each request takes the gateway
//! current when it starts and finishes on it, so requests in flight end on the configuration
//! they began with, and the next request on the same keep-alive connection already sees the new
//! one. Finding the current gateway costs a request one atomic load: each worker thread keeps
//! the last one it saw with its generation number, and takes the lock only when the number
//! moved.
//!
//! What lasts across configurations is carried by [`Gateway::build`]: every upstream whose
//! settings did not change (with its pools, health, ejections and DNS answers), the log, the
//! TLS acceptor (serving the new certificates), the connection limit. Here, the listeners:
//! those no longer configured stop accepting (their open connections go on), new ones are bound
//! once per worker and handed to each worker's event loop; and the background tasks: a new
//! upstream's health checks and DNS refresh start on worker 0, a removed one's stop.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cause::Level;
use config::{Config, ListenerConfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use upstream::Upstream;

use crate::conn::Edge;
use crate::Gateway;

/// What a reload kept, started and stopped, filled by [`Gateway::build`].
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Upstreams whose settings did not change: same pools, health and ejections.
    pub(crate) kept: Vec<String>,
    /// Upstreams new or changed: new endpoints state.
    pub(crate) started: Vec<String>,
    /// Upstreams of the old configuration that the new one has not kept.
    pub(crate) removed: Vec<String>,
    /// Settings that changed in the file but only take effect at the next start.
    pub(crate) restart_needed: Vec<&'static str>,
}

/// The settings that a reload cannot change, named as in the file, when they differ.
pub(crate) fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.workers != new.workers {
        out.push("workers");
    }
    if old.admin != new.admin {
        out.push("[admin]");
    }
    if old.log != new.log {
        out.push("[log]");
    }
    if old.acme != new.acme {
        out.push("[acme]");
    }
    if old.resolver != new.resolver {
        out.push("[resolver]");
    }
    if old.limits.max_client_connections != new.limits.max_client_connections {
        out.push("max_client_connections");
    }
    out
}

/// What a reload did, as the API answers it and the log line says it.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    /// The configuration's number: 0 at start, one more for each reload.
    pub generation: u64,
    pub upstreams_kept: Vec<String>,
    pub upstreams_started: Vec<String>,
    pub upstreams_removed: Vec<String>,
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    pub restart_needed: Vec<&'static str>,
}

impl ReloadOutcome {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "reloaded": true,
            "generation": self.generation,
            "upstreams": {
                "kept": self.upstreams_kept,
                "started": self.upstreams_started,
                "removed": self.upstreams_removed,
            },
            "listeners": {
                "added": self.listeners_added,
                "removed": self.listeners_removed,
            },
            "restart_needed": self.restart_needed,
        })
    }
}

/// A listening address as bound, with the accept loops serving it (one per worker).
struct Bound {
    /// `None` for a listener given to [`Live::serve`] beyond those configured (tests).
    config: Option<ListenerConfig>,
    addr: SocketAddr,
    stops: Vec<CancellationToken>,
    /// A duplicate of each worker's socket, handed to a new binary on upgrade.
    #[cfg(unix)]
    sockets: Vec<std::os::fd::OwnedFd>,
}

/// A duplicate of a listening socket's descriptor (it stays open while the original serves).
#[cfg(unix)]
fn dup_socket<S: std::os::fd::AsFd>(s: &S) -> Option<std::os::fd::OwnedFd> {
    s.as_fd().try_clone_to_owned().ok()
}

/// A listener bound by a reload, for one worker's event loop.
struct Added {
    listener: std::net::TcpListener,
    stop: CancellationToken,
}

/// What a listener adds to its connections, without the worker's tracker.
#[derive(Clone, Default)]
struct EdgeSpec {
    tls: bool,
    redirect_https: Option<u16>,
    hsts: Option<http::HeaderValue>,
}

impl EdgeSpec {
    fn edge(&self, tracker: &TaskTracker) -> Arc<Edge> {
        Arc::new(Edge {
            tls: self.tls,
            redirect_https: self.redirect_https,
            hsts: self.hsts.clone(),
            tracker: Some(tracker.clone()),
        })
    }
}

#[derive(Default)]
struct State {
    listeners: Vec<Bound>,
    /// Per worker: where a reload sends the listeners it bound.
    workers: Vec<Option<mpsc::UnboundedSender<Added>>>,
    /// Worker 0's event loop, where the upstreams' background tasks run, and the shutdown.
    background: Option<(tokio::runtime::Handle, CancellationToken)>,
    /// The running background tasks, one stop per upstream.
    tasks: Vec<(Arc<Upstream>, CancellationToken)>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The gateway this thread saw last: which `Live`, which generation.
    static SEEN: RefCell<Option<(u64, u64, Arc<Gateway>)>> = const { RefCell::new(None) };
}

/// The gateway in use, swapped whole on reload.
pub struct Live {
    id: u64,
    generation: AtomicU64,
    current: RwLock<Arc<Gateway>>,
    /// The file read again on reload.
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl Live {
    /// `path` is the configuration file that a reload reads; without one, only
    /// [`Live::reload_with`] can change the configuration.
    pub fn new(gateway: Arc<Gateway>, path: Option<PathBuf>) -> Arc<Live> {
        Arc::new(Live {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            current: RwLock::new(gateway),
            path,
            state: Mutex::new(State::default()),
        })
    }

    /// Every listening socket serving now, as duplicates, in the order of the configuration's
    /// listeners and with one per worker: what a new binary inherits on upgrade.
    #[cfg(unix)]
    pub fn listening_sockets(&self) -> Vec<std::os::fd::OwnedFd> {
        let gw = self.current();
        let listeners = &gw.config.listeners;
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let order = |b: &Bound| {
            b.config
                .as_ref()
                .and_then(|c| listeners.iter().position(|l| l == c))
                .unwrap_or(usize::MAX)
        };
        let mut bound: Vec<&Bound> = state.listeners.iter().collect();
        bound.sort_by_key(|b| order(b));
        bound
            .iter()
            .flat_map(|b| b.sockets.iter())
            .filter_map(|s| s.try_clone().ok())
            .collect()
    }

    /// The gateway in use now.
    pub fn current(&self) -> Arc<Gateway> {
        let generation = self.generation.load(Ordering::Acquire);
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            if let Some((id, g, gw)) = &*seen {
                if *id == self.id && *g == generation {
                    return gw.clone();
                }
            }
            let gw = self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            *seen = Some((self.id, generation, gw.clone()));
            gw
        })
    }

    /// The configuration's number: 0 at start, one more for each reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads the configuration file again and, when it has no problem, puts it in use. The
    /// problems (`file:line:column: message`) leave the running configuration as it is; each
    /// is logged at WARN.
    pub fn reload(&self) -> Result<ReloadOutcome, Vec<String>> {
        let Some(path) = &self.path else {
            return Err(vec![
                "this gateway was not started from a file; there is nothing to read again"
                    .to_string(),
            ]);
        };
        match Config::load(path) {
            Ok(config) => self.reload_with(config),
            Err(problems) => {
                let lines: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
                self.refused(&lines);
                Err(lines)
            }
        }
    }

    fn refused(&self, problems: &[String]) {
        let logger = self.current().logger.clone();
        for p in problems {
            logger.notice(
                Level::Warn,
                "configuration problem",
                &[("problem", json!(p))],
            );
        }
        logger.notice(
            Level::Warn,
            "configuration not reloaded; the running one stays in use",
            &[("problems", json!(problems.len()))],
        );
    }

    /// Puts `config` in use (it was validated like `check`; the certificate files are read
    /// here). On a problem, nothing changes.
    pub fn reload_with(&self, config: Config) -> Result<ReloadOutcome, Vec<String>> {
        // One reload at a time: the state lock is held throughout.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current();
        let (gw, carried) = match Gateway::build(config, old.logger.clone(), Some(&old)) {
            Ok(built) => built,
            Err(problems) => {
                drop(state);
                self.refused(&problems);
                return Err(problems);
            }
        };
        // Listeners: the ones that stay are those configured alike; the rest are bound anew
        // (before any is closed, so that an address whose options changed never stops
        // answering: SO_REUSEPORT lets both exist for a moment).
        let wanted = &gw.config.listeners;
        let removed: Vec<usize> = (0..state.listeners.len())
            .filter(|&i| {
                state.listeners[i]
                    .config
                    .as_ref()
                    .is_some_and(|c| !wanted.contains(c))
            })
            .collect();
        let added: Vec<ListenerConfig> = wanted
            .iter()
            .filter(|c| {
                !state
                    .listeners
                    .iter()
                    .any(|b| b.config.as_ref() == Some(*c))
            })
            .cloned()
            .collect();
        let workers = state.workers.len().max(1);
        let addrs: Vec<SocketAddr> = added.iter().map(|c| c.addr).collect();
        let sets = match crate::bind_workers(&addrs, workers) {
            Ok(sets) => sets,
            Err(e) => {
                drop(state);
                let problems = vec![e.to_string()];
                self.refused(&problems);
                return Err(problems);
            }
        };
        // From here on the new configuration is in use.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = gw.clone();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;

        let mut listeners_removed = Vec::new();
        for &i in removed.iter().rev() {
            let b = state.listeners.remove(i);
            for s in &b.stops {
                s.cancel();
            }
            listeners_removed.push(b.addr.to_string());
        }
        let mut listeners_added = Vec::new();
        let mut entries: Vec<Bound> = added
            .iter()
            .map(|c| Bound {
                config: Some(c.clone()),
                addr: c.addr,
                stops: Vec::new(),
                #[cfg(unix)]
                sockets: Vec::new(),
            })
            .collect();
        let mut sets = sets.into_iter();
        for w in 0..workers {
            let set = sets.next().unwrap_or_default();
            for (j, listener) in set.into_iter().enumerate() {
                if let Ok(a) = listener.local_addr() {
                    entries[j].addr = a;
                }
                let stop = CancellationToken::new();
                entries[j].stops.push(stop.clone());
                #[cfg(unix)]
                entries[j].sockets.extend(dup_socket(&listener));
                let sender = state.workers.get(w).and_then(|s| s.as_ref());
                if let Some(tx) = sender {
                    let _ = tx.send(Added { listener, stop });
                }
            }
        }
        for e in &entries {
            listeners_added.push(e.addr.to_string());
        }
        // A worker computes an added listener's edge from the table (a redirect points at the
        // first TLS listener's port as bound), which it can read only once this lock is let go.
        state.listeners.extend(entries);

        // Background tasks: a new upstream's start on worker 0; a removed one's stop.
        let mut tasks = std::mem::take(&mut state.tasks);
        tasks.retain(|(u, stop)| {
            let keep = gw.upstreams.iter().any(|n| Arc::ptr_eq(n, u));
            if !keep {
                stop.cancel();
            }
            keep
        });
        if let Some((handle, shutdown)) = state.background.clone() {
            for u in &gw.upstreams {
                if !tasks.iter().any(|(t, _)| Arc::ptr_eq(t, u)) {
                    let stop = shutdown.child_token();
                    let _enter = handle.enter();
                    u.start(stop.clone());
                    tasks.push((u.clone(), stop));
                }
            }
        }
        state.tasks = tasks;
        drop(state);

        let outcome = ReloadOutcome {
            generation,
            upstreams_kept: carried.kept,
            upstreams_started: carried.started,
            upstreams_removed: carried.removed,
            listeners_added,
            listeners_removed,
            restart_needed: carried.restart_needed,
        };
        gw.logger.notice(
            Level::Info,
            "configuration reloaded",
            &[
                ("generation", json!(generation)),
                ("upstreams_kept", json!(outcome.upstreams_kept)),
                ("upstreams_started", json!(outcome.upstreams_started)),
                ("upstreams_removed", json!(outcome.upstreams_removed)),
                ("listeners_added", json!(outcome.listeners_added)),
                ("listeners_removed", json!(outcome.listeners_removed)),
            ],
        );
        if !outcome.restart_needed.is_empty() {
            gw.logger.notice(
                Level::Warn,
                "some changed settings take effect only at the next start; they keep their running values",
                &[("settings", json!(outcome.restart_needed))],
            );
        }
        Ok(outcome)
    }

    /// What the listener at `addr` adds to its connections, from the table.
    fn edge_spec(&self, addr: SocketAddr) -> EdgeSpec {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let https_port = state
            .listeners
            .iter()
            .find(|b| b.config.as_ref().is_some_and(|c| c.tls))
            .map(|b| b.addr.port());
        match state
            .listeners
            .iter()
            .find(|b| b.addr == addr)
            .and_then(|b| b.config.as_ref())
        {
            Some(c) => EdgeSpec {
                tls: c.tls,
                redirect_https: https_port.filter(|_| c.redirect_https),
                hsts: c
                    .hsts
                    .as_deref()
                    .and_then(|h| http::HeaderValue::from_str(h).ok()),
            },
            None => EdgeSpec::default(),
        }
    }

    /// Serves `listeners` until `shutdown` is cancelled, then lets in-flight requests finish for
    /// up to the configured shutdown timeout. This is worker 0, which also runs the upstreams'
    /// background tasks (active health checks, DNS refresh) and keeps the ACME certificate; the
    /// other workers run [`Live::serve_worker`].
    pub async fn serve(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: CancellationToken) {
        let gw = self.current();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.background = Some((tokio::runtime::Handle::current(), shutdown.clone()));
            for upstream in &gw.upstreams {
                let stop = shutdown.child_token();
                upstream.start(stop.clone());
                state.tasks.push((upstream.clone(), stop));
            }
        }
        if gw.config.acme.is_some() {
            tokio::spawn(gw.clone().keep_acme_certificate(shutdown.clone()));
        }
        drop(gw);
        self.serve_worker(0, listeners, shutdown).await;
    }

    /// Serves `listeners` (given in the order of the configuration's listeners) as worker
    /// number `index`, on the runtime of the calling thread, with that worker's upstream pools,
    /// until `shutdown` is cancelled and in-flight requests have finished (or the shutdown
    /// timeout passed). Listeners that a reload adds arrive here too.
    pub async fn serve_worker(
        self: Arc<Self>,
        index: usize,
        listeners: Vec<TcpListener>,
        shutdown: CancellationToken,
    ) {
        upstream::set_worker(index);
        let tracker = TaskTracker::new();
        let (tx, mut rx) = mpsc::unbounded_channel::<Added>();
        let mut stops = Vec::new();
        {
            let gw = self.current();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.workers.len() <= index {
                state.workers.resize_with(index + 1, || None);
            }
            state.workers[index] = Some(tx);
            for (i, l) in listeners.iter().enumerate() {
                let Ok(addr) = l.local_addr() else { continue };
                let stop = CancellationToken::new();
                let at = match state.listeners.iter().position(|b| b.addr == addr) {
                    Some(at) => at,
                    None => {
                        state.listeners.push(Bound {
                            config: gw.config.listeners.get(i).cloned(),
                            addr,
                            stops: Vec::new(),
                            #[cfg(unix)]
                            sockets: Vec::new(),
                        });
                        state.listeners.len() - 1
                    }
                };
                let b = &mut state.listeners[at];
                b.stops.push(stop.clone());
                #[cfg(unix)]
                b.sockets.extend(dup_socket(l));
                stops.push(stop);
            }
        }
        for (listener, stop) in listeners.into_iter().zip(stops) {
            let addr = listener.local_addr().ok();
            let edge = addr.map(|a| self.edge_spec(a)).unwrap_or_default();
            tracker.spawn(self.clone().accept_loop(
                listener,
                edge.edge(&tracker),
                tracker.clone(),
                shutdown.clone(),
                stop,
            ));
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                added = rx.recv() => {
                    let Some(added) = added else { break };
                    let Ok(listener) = TcpListener::from_std(added.listener) else { continue };
                    let edge = listener.local_addr().map(|a| self.edge_spec(a)).unwrap_or_default();
                    tracker.spawn(self.clone().accept_loop(
                        listener,
                        edge.edge(&tracker),
                        tracker.clone(),
                        shutdown.clone(),
                        added.stop,
                    ));
                }
            }
        }
        tracker.close();
        let deadline = self.current().config.shutdown_timeout;
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            self.current().logger.notice(
                Level::Warn,
                "shutdown deadline passed with requests still in flight; they are cut off",
                &[("shutdown_timeout_ms", json!(deadline.as_millis() as u64))],
            );
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        edge: Arc<Edge>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        stop: CancellationToken,
    ) {
        let permits = self.current().permits.clone();
        loop {
            // At the connection limit, new connections wait in the kernel's accept queue.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = stop.cancelled() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, client) = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(ok) => ok,
                    Err(e) => {
                        // Out of descriptors or similar: say so, back off briefly, keep serving.
                        self.current().logger.notice(Level::Error, "accept failed", &[("error", json!(e.to_string()))]);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let live = self.clone();
            let shutdown = shutdown.clone();
            let edge = edge.clone();
            tracker.spawn(async move {
                live.current()
                    .serve_connection(stream, edge, client, shutdown, live)
                    .await;
                drop(permit);
            });
        }
    }
}
