//! The connector's steps one at a time, for callers that time and report each step (the
//! doctor): TCP connect alone, then the HTTP/1.1 handshake over any stream, plain or TLS.
//!
//! [`crate::connect`] does both steps at once for the gateway; these functions classify failures
//! the same way, so a cause seen by the doctor means what it means in the gateway's log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cause::{Cause, Failure, Phase};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{
    classify_connect_error, classify_hyper_error, Conn, ConnectOptions, CountingIo, IoStats,
};

/// Opens a TCP connection to `addr` within `timeout`.
pub async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(classify_connect_error(&e).with_endpoint(addr.to_string())),
        Err(_) => Err(Failure::new(Cause::Timeout, Phase::Connect)
            .with_endpoint(addr.to_string())
            .with_detail(format!("no connection within {timeout:?}"))),
    }
}

/// Performs the HTTP/1.1 handshake over an open stream to `addr`; the stream's bytes are
/// counted from here on, so a failure knows whether the server had started to answer.
pub async fn handshake_http1<IO>(
    io: IO,
    addr: SocketAddr,
    opts: &ConnectOptions,
) -> Result<Conn, Failure>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let stats = Arc::new(IoStats::default());
    let io = TokioIo::new(CountingIo::new(io, stats.clone()));
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(opts.max_response_header_bytes.max(8192))
        .handshake(io)
        .await
        .map_err(|e| {
            classify_hyper_error(&e, Phase::Connect, &stats, false).with_endpoint(addr.to_string())
        })?;
    tokio::spawn(async move {
        // The error, if any, also reaches the pending request, which classifies it.
        let _ = conn.await;
    });
    let now = Instant::now();
    Ok(Conn {
        sender,
        stats,
        addr,
        created: now,
        uses: 0,
        last_used: now,
    })
}
