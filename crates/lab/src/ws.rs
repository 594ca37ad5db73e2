//! The upgrade faults: `websocket`, a WebSocket echo server (RFC 6455), and `noupgrade`, which
//! answers a request to switch protocols with a plain `200` as an application without
//! WebSocket support on that path would.
//!
//! The echo unmasks each client frame and sends it back unmasked with the same opcode, answers
//! a ping with a pong and a close with a close. A plain request (no `Upgrade`) gets a `200` with
//! a line saying how to connect, so the fault is healthy to ordinary probes.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve::{close_gracefully, Ctx};
use crate::wire::{self, Conn, HeadRead, Request};
use crate::Fault;

/// The largest frame payload the echo takes.
const MAX_PAYLOAD: u64 = 1 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&input))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn asks_websocket(req: &Request) -> bool {
    let upgrade = header(req, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = req
        .headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .any(|(_, v)| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    upgrade && connection
}

/// Serves one connection of `websocket` or `noupgrade`.
pub(crate) async fn connection(mut conn: Conn, ctx: &Ctx) {
    let req = match conn.read_head(None).await {
        Ok(HeadRead::Request(req)) => req,
        _ => return,
    };
    ctx.counters.request();
    let key = header(&req, "sec-websocket-key").map(str::to_string);
    match (asks_websocket(&req), key, ctx.fault) {
        (true, Some(key), Fault::Websocket) => {
            let head = wire::response_head(
                101,
                &[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", &accept_key(&key)),
                ],
            );
            if conn.stream.write_all(&head).await.is_err() {
                return;
            }
            let early = conn.take_buffered();
            let _ = echo(conn.stream, early).await;
        }
        _ => {
            let body = match ctx.fault {
                Fault::Websocket => "a WebSocket echo: connect with Upgrade: websocket\n",
                _ => "no WebSocket here\n",
            };
            let len = body.len().to_string();
            let mut out = wire::response_head(
                200,
                &[
                    ("Content-Type", "text/plain"),
                    ("Content-Length", &len),
                    ("Connection", "close"),
                ],
            );
            out.extend_from_slice(body.as_bytes());
            if conn.stream.write_all(&out).await.is_ok() {
                close_gracefully(conn.stream).await;
            }
        }
    }
}

/// Echoes frames until a close frame, the end of the stream, or a frame it cannot take.
async fn echo(mut stream: TcpStream, mut buf: Vec<u8>) -> io::Result<()> {
    loop {
        // A whole frame in `buf`: header, then the payload.
        let Some((fin_op, payload, used)) = frame(&buf)? else {
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        buf.drain(..used);
        let opcode = fin_op & 0x0f;
        let reply_op = match opcode {
            0x9 => 0x80 | 0xA, // ping: pong
            0xA => continue,   // pong: nothing
            _ => fin_op,
        };
        let mut out = vec![reply_op];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&payload);
        stream.write_all(&out).await?;
        if opcode == 0x8 {
            close_gracefully(stream).await;
            return Ok(());
        }
    }
}

/// Parses one client frame at the start of `buf`: (FIN and opcode byte, unmasked payload,
/// bytes used); `None` when more bytes are needed.
fn frame(buf: &[u8]) -> io::Result<Option<(u8, Vec<u8>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let masked = buf[1] & 0x80 != 0;
    if !masked {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a client frame must be masked",
        ));
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let total = at + 4 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let payload = buf[at..total]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((buf[0], payload, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn masked_frames_are_read_whole_or_not_at_all() {
        let mask = [1u8, 2, 3, 4];
        let payload = b"hello";
        let mut f = vec![0x81, 0x80 | 5];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        assert_eq!(frame(&f[..6]).unwrap(), None);
        let (op, data, used) = frame(&f).unwrap().unwrap();
        assert_eq!((op, data.as_slice(), used), (0x81, &payload[..], f.len()));
        assert!(frame(&[0x81, 5, b'h']).is_err());
    }
}
