//! The connector's steps one at a time, for callers that time and report each step (the
//! doctor): TCP connect alone, then the HTTP/1.1 handshake over any stream, plain or TLS.
//!
//! [`crate::connect`] does both steps at once for the gateway; these functions classify failures
//! the same way, so a cause seen by the doctor means what it means in the gateway's log.

use std::net::SocketAddr;
use std::time::Duration;

use cause::{Cause, Failure, Phase};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{classify_connect_error, Conn, ConnectOptions};

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

/// Performs the HTTP handshake over an open stream to `addr` (plain or TLS); the stream's bytes
/// are counted from here on, so a failure knows whether the server had started to answer.
pub async fn handshake_http1<IO>(
    io: IO,
    addr: SocketAddr,
    opts: &ConnectOptions,
) -> Result<Conn, Failure>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    crate::handshake(io, addr, opts).await
}
