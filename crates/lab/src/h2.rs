//! HTTP/2 (h2c, prior knowledge) fault upstreams, written frame by frame over raw TCP.
//!
//! Just enough of RFC 9113 to answer a gateway's requests and to refuse some of them the two
//! ways a server may without having processed them: `RST_STREAM(REFUSED_STREAM)` on a stream, or
//! `GOAWAY` whose last stream id is below the request's. Request header blocks are not decoded
//! (nothing here depends on them); the response head is the one-byte HPACK `:status: 200`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;

/// How the server treats requests.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum H2Mode {
    /// Answers every request with 200.
    Ok,
    /// Refuses every other request (the 1st, 3rd, ...) with `RST_STREAM(REFUSED_STREAM)`.
    RefuseEveryOther,
    /// On every other connection (the 1st, 3rd, ...), answers the first request with
    /// `GOAWAY(last_stream_id = 0)` and closes; other connections are served.
    GoawayEveryOther,
}

/// Counters of an h2 fault server.
#[derive(Debug, Default)]
pub struct H2Stats {
    pub connections: AtomicU64,
    /// Requests that arrived completely (refused ones included).
    pub requests: AtomicU64,
    /// Requests answered with 200.
    pub answered: AtomicU64,
    pub refused: AtomicU64,
    pub goaways: AtomicU64,
}

/// A running h2c fault server; stops when dropped.
pub struct H2Lab {
    pub addr: SocketAddr,
    pub stats: Arc<H2Stats>,
    tasks: JoinSet<()>,
}

impl H2Lab {
    pub async fn start(mode: H2Mode) -> io::Result<H2Lab> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(H2Stats::default());
        let mut tasks = JoinSet::new();
        let st = stats.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let n = st.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let st = st.clone();
                conns.spawn(async move {
                    let _ = serve(stream, mode, n, &st).await;
                });
            }
        });
        Ok(H2Lab { addr, stats, tasks })
    }
}

impl Drop for H2Lab {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn serve(mut s: TcpStream, mode: H2Mode, conn_no: u64, stats: &H2Stats) -> io::Result<()> {
    let mut preface = [0u8; 24];
    s.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Ok(());
    }
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    let mut first_request = true;
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await?;
        let request_done = match kind {
            SETTINGS if flags & ACK == 0 => {
                s.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
                false
            }
            PING if flags & ACK == 0 => {
                s.write_all(&frame(PING, ACK, 0, &payload)).await?;
                false
            }
            HEADERS | DATA | CONTINUATION => flags & END_STREAM != 0,
            GOAWAY => return Ok(()),
            _ => false,
        };
        if !request_done {
            continue;
        }
        let n = stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
        match mode {
            H2Mode::GoawayEveryOther if first_request && conn_no % 2 == 1 => {
                stats.goaways.fetch_add(1, Ordering::Relaxed);
                let mut p = 0u32.to_be_bytes().to_vec();
                p.extend_from_slice(&0u32.to_be_bytes());
                s.write_all(&frame(GOAWAY, 0, 0, &p)).await?;
                s.shutdown().await?;
                return Ok(());
            }
            H2Mode::RefuseEveryOther if n % 2 == 1 => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                s.write_all(&frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes()))
                    .await?;
            }
            _ => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
                // HPACK static table index 8 is `:status: 200`.
                let mut out = frame(HEADERS, END_HEADERS, stream, &[0x88]);
                out.extend(frame(DATA, END_STREAM, stream, b"ok from h2\n"));
                s.write_all(&out).await?;
            }
        }
        first_request = false;
    }
}
