//! An upstream that answers with canned bytes, chosen by the request path, for the response
//! framing cases the lab's faults do not cover; `/echo` answers with the request exactly as it
//! arrived, so a test can see what the gateway forwarded. Connections are kept alive (except
//! after a close-delimited answer), and accepted connections are counted, so a test can tell
//! whether the gateway reused one.

// Shared by several test binaries; each uses a part.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Canned {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The canned answer for `path`, and whether the connection closes after it.
fn answer(path: &str) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let close = match path {
        "/te-cl-short" => {
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            );
            out.extend(chunk(b"hello world"));
            out.extend_from_slice(b"0\r\n\r\n");
            false
        }
        "/te-cl-long" => {
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            out.extend(chunk(b"hello"));
            out.extend_from_slice(b"0\r\n\r\n");
            false
        }
        "/te-gzip" => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nNOT-GZIP");
            true
        }
        "/te-gzip-chunked" => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
            out.extend(chunk(b"NOT-GZIP"));
            out.extend_from_slice(b"0\r\n\r\n");
            false
        }
        "/cl-list" => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello");
            false
        }
        "/cl-twice" => {
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            );
            false
        }
        "/many-headers" => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n");
            for i in 0..300 {
                out.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\nhello");
            false
        }
        "/overflow-chunk" => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            out.extend_from_slice(b"10000000000000000\r\nabc\r\n0\r\n\r\n");
            true
        }
        _ => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            false
        }
    };
    (out, close)
}

/// Reads one request (head and body, framed by length or chunks); `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut tmp = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("\r\ntransfer-encoding: chunked");
    let end = loop {
        if let Some(n) = length {
            if buf.len() >= head_end + n {
                break head_end + n;
            }
        } else if chunked {
            if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                break head_end + i + 5;
            }
        } else {
            break head_end;
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    Some(buf.drain(..end).collect())
}

async fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        let line =
            String::from_utf8_lossy(&req[..req.iter().position(|b| *b == b'\r').unwrap_or(0)])
                .into_owned();
        let path = line
            .split(' ')
            .nth(1)
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap_or("/");
        let (out, close) = if path == "/echo" {
            let mut out =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", req.len()).into_bytes();
            out.extend_from_slice(&req);
            (out, false)
        } else {
            answer(path)
        };
        if s.write_all(&out).await.is_err() || close {
            return;
        }
    }
}

pub async fn start() -> Canned {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    Canned {
        addr,
        connections,
        task,
    }
}
