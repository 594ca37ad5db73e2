//! The running lab: one listener per fault, its accept loop and connection tasks, counters, the
//! summary table, and shutdown.
//!
//! Task ownership is a tree so nothing outlives the [`Lab`]: the lab's `JoinSet` owns one accept
//! task per fault, and each accept task owns a `JoinSet` of its connection tasks. Shutdown tells
//! the accept tasks to stop and waits for them; each one drops its listener and aborts and awaits
//! its connections. Dropping the lab without shutdown aborts the accept tasks, whose dropped
//! `JoinSet`s abort the connections. What a connection does is in `serve.rs`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::serve::{self, Counters, Ctx};
use crate::{Fault, LabOptions, Stats};

/// How many of its own connections `unaccepted` tries to park in its accept queue.
const UNACCEPTED_FILLERS: usize = 4;
/// How long each of those connects may take; on loopback a completing one takes microseconds,
/// and one that does not complete in this time had its SYN dropped: the queue is full.
const FILLER_CONNECT_TIMEOUT: Duration = Duration::from_millis(50);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

struct Entry {
    fault: Fault,
    addr: SocketAddr,
    ctx: Arc<Ctx>,
}

/// A set of running faults. Stop it with [`Lab::shutdown`]; dropping it also stops every task.
pub struct Lab {
    entries: Vec<Entry>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// `unaccepted`'s listening sockets (never accepted from) and `refused`'s bound, never
    /// listening sockets, kept open for the lab's lifetime.
    parked_listeners: Vec<Socket>,
    /// The lab's own connections filling those accept queues.
    parked_fillers: Vec<std::net::TcpStream>,
    /// The CA of the TLS faults' certificates, when any TLS fault runs.
    ca_pem: Option<String>,
}

impl Lab {
    /// Starts every fault in `faults`, each on its port (0 = ephemeral), on `host`.
    ///
    /// `refused` ports are reserved by a socket bound without listening, held as long as the lab
    /// runs, so that no other listener can be handed the port it reports as dead.
    pub async fn start(faults: &[(Fault, u16)], host: IpAddr, opts: LabOptions) -> io::Result<Lab> {
        validate(&opts)?;
        let (stop, _) = watch::channel(false);
        let mut lab = Lab {
            entries: Vec::with_capacity(faults.len()),
            stop,
            tasks: JoinSet::new(),
            parked_listeners: Vec::new(),
            parked_fillers: Vec::new(),
            ca_pem: None,
        };
        let certs = if faults.iter().any(|(f, _)| f.tls()) {
            Some(crate::tls::LabCerts::new(host)?)
        } else {
            None
        };
        lab.ca_pem = certs.as_ref().map(|c| c.ca_pem.clone());
        let mut addrs: Vec<Option<SocketAddr>> = vec![None; faults.len()];
        let mut ctxs = Vec::with_capacity(faults.len());
        for &(fault, _) in faults {
            ctxs.push(Arc::new(Ctx {
                fault,
                opts: opts.clone(),
                counters: Counters::default(),
                tls: certs.as_ref().and_then(|c| c.config_for(fault)),
            }));
        }

        // If anything fails, `lab` is dropped on return, which aborts what was started.
        for (i, &(fault, port)) in faults.iter().enumerate() {
            let want = SocketAddr::new(host, port);
            let started = match fault {
                Fault::Refused => continue,
                Fault::Unaccepted => lab.park_unaccepted(want).await,
                _ => lab.listen(want, ctxs[i].clone()).await,
            };
            addrs[i] = Some(started.map_err(|e| context(fault, want, e))?);
        }
        for (i, &(fault, port)) in faults.iter().enumerate() {
            if fault == Fault::Refused {
                let want = SocketAddr::new(host, port);
                let (addr, socket) = dead_port(want).map_err(|e| context(fault, want, e))?;
                lab.parked_listeners.push(socket);
                addrs[i] = Some(addr);
            }
        }

        for ((&(fault, _), addr), ctx) in faults.iter().zip(addrs).zip(ctxs) {
            if let Some(addr) = addr {
                lab.entries.push(Entry { fault, addr, ctx });
            }
        }
        Ok(lab)
    }

    /// Starts every fault on an ephemeral port of 127.0.0.1.
    pub async fn start_all(opts: LabOptions) -> io::Result<Lab> {
        let faults: Vec<(Fault, u16)> = Fault::ALL.iter().map(|f| (*f, 0)).collect();
        Lab::start(&faults, IpAddr::V4(Ipv4Addr::LOCALHOST), opts).await
    }

    /// The lab's CA certificate (PEM), which signed the certificates of `expired` and
    /// `wrongname`; a gateway must trust it to tell those faults apart. `None` when no TLS
    /// fault runs.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where `fault` is served (the first one, if it was started twice).
    pub fn addr(&self, fault: Fault) -> Option<SocketAddr> {
        self.entries
            .iter()
            .find(|e| e.fault == fault)
            .map(|e| e.addr)
    }

    /// Every started fault and its address, in start order.
    pub fn addrs(&self) -> Vec<(Fault, SocketAddr)> {
        self.entries.iter().map(|e| (e.fault, e.addr)).collect()
    }

    /// What `fault`'s listener has seen (summed if it was started twice); zeros if not started.
    pub fn stats(&self, fault: Fault) -> Stats {
        self.entries
            .iter()
            .filter(|e| e.fault == fault)
            .map(|e| e.ctx.counters.snapshot())
            .fold(Stats::default(), |sum, s| Stats {
                connections: sum.connections + s.connections,
                requests: sum.requests + s.requests,
            })
    }

    /// A plain-text table: fault, address, what it does, what a gateway in front should report.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .entries
            .iter()
            .map(|e| {
                let report = match e.fault.provokes() {
                    Some((cause, phase)) => format!("{}@{}", cause.as_str(), phase.as_str()),
                    None => "-".to_string(),
                };
                [
                    e.fault.name().to_string(),
                    e.addr.to_string(),
                    e.fault.describe().to_string(),
                    report,
                ]
            })
            .collect();
        let header = [
            "fault",
            "address",
            "what it does",
            "a gateway should report",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut push_row = |cells: [&str; 4]| {
            let line = format!(
                "{:w0$}  {:w1$}  {:w2$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            out.push_str(line.trim_end());
            out.push('\n');
        };
        push_row(header);
        push_row(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
        for row in &rows {
            push_row(row.each_ref().map(String::as_str));
        }
        out
    }

    /// Stops every listener and every connection task, and waits until they are gone.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        self.parked_fillers.clear();
        self.parked_listeners.clear();
    }

    async fn listen(&mut self, want: SocketAddr, ctx: Arc<Ctx>) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(want).await?;
        let addr = listener.local_addr()?;
        self.tasks
            .spawn(accept_loop(listener, ctx, self.stop.subscribe()));
        Ok(addr)
    }

    /// Binds a listener with the smallest backlog, never accepts, and fills its accept queue
    /// with the lab's own connections. Linux then drops the SYNs of any further connect, so a
    /// gateway's connect hangs until its own timeout.
    async fn park_unaccepted(&mut self, want: SocketAddr) -> io::Result<SocketAddr> {
        let socket = Socket::new(Domain::for_address(want), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&SockAddr::from(want))?;
        socket.listen(0)?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        self.parked_listeners.push(socket);
        for _ in 0..UNACCEPTED_FILLERS {
            match tokio::time::timeout(FILLER_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                // Kept as std sockets: they are never read, so they need no reactor.
                Ok(Ok(stream)) => self.parked_fillers.push(stream.into_std()?),
                // A connect that does not complete means the queue is already full.
                _ => break,
            }
        }
        Ok(addr)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Aborting the accept tasks drops their JoinSets, which aborts their connections.
        self.tasks.abort_all();
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("addrs", &self.addrs()).finish()
    }
}

fn validate(opts: &LabOptions) -> io::Result<()> {
    let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    if !(200..=599).contains(&opts.status) {
        return bad(format!(
            "status {} is not a final status (200-599)",
            opts.status
        ));
    }
    if !(0.0..=1.0).contains(&opts.flaky_fraction) {
        return bad(format!(
            "flaky_fraction {} is not between 0 and 1",
            opts.flaky_fraction
        ));
    }
    Ok(())
}

fn context(fault: Fault, want: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("lab fault {fault} on {want}: {e}"))
}

/// An address where nothing listens: bind it to learn (or check) the port, then release it.
/// A port where nothing listens, reserved for the lab's lifetime: a socket bound to it that
/// never listens. Connects get a refusal (RST), and no other program can be handed the port
/// meanwhile, as could happen with a port merely bound and released.
fn dead_port(want: SocketAddr) -> io::Result<(SocketAddr, Socket)> {
    let socket = Socket::new(Domain::for_address(want), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&want.into())?;
    let addr = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    Ok((addr, socket))
}

/// Accepts connections for one fault until told to stop, then closes the listener and ends
/// every connection task it started.
async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let accept_failed = tokio::select! {
            // A dropped sender means the lab is gone: stop as well.
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    ctx.counters.connection();
                    let ctx = ctx.clone();
                    conns.spawn(async move { serve::connection(stream, &ctx).await });
                    false
                }
                Err(_) => true,
            },
            // Reap finished connections so the set does not grow with the connection count.
            Some(_) = conns.join_next(), if !conns.is_empty() => false,
        };
        if accept_failed {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => break,
                _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}
