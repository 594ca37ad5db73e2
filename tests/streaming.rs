//! 100 MiB through the gateway in each direction, with memory bounded by small buffers.
//!
//! This is its own test binary so that the process's peak memory reflects this test alone.

mod common;

use bytes::Bytes;
use common::*;
use futures_stream::ChunkStream;
use http::Request;
use http_body_util::BodyExt;

const SIZE: u64 = 100 * 1024 * 1024;

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

mod futures_stream {
    //! A request body that produces `total` bytes in 64 KiB frames, never holding more.
    use bytes::Bytes;
    use http_body::{Body, Frame};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct ChunkStream {
        pub left: u64,
        pub chunk: Bytes,
    }

    impl Body for ChunkStream {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len() as u64) as usize;
            self.left -= n as u64;
            Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_with_bounded_memory() {
    let top = "[limits]\nmax_request_body_bytes = \"1GiB\"\n";
    let h = start(top).await;
    let before = peak_rss_kib();

    // Download: the lab streams /bytes/N; count what arrives, frame by frame.
    let stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("/f/ok/bytes/{SIZE}"))
        .header("host", "gw.test")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, SIZE);

    // Upload: a chunked 100 MiB body; the lab reports how many bytes it received.
    let stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = ChunkStream {
        left: SIZE,
        chunk: Bytes::from(vec![b'u'; 64 * 1024]),
    };
    let req = Request::post("/f/ok/upload")
        .header("host", "gw.test")
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(echo["body_bytes"], SIZE);

    let grown_mib = (peak_rss_kib() - before) / 1024;
    eprintln!("peak memory growth while moving 200 MiB: {grown_mib} MiB");
    assert!(
        grown_mib < 40,
        "peak memory grew by {grown_mib} MiB while moving 200 MiB"
    );
    let line = h
        .wait_line(|l| l["kind"] == "access" && l["path"] == "/f/ok/upload")
        .await;
    assert_eq!(line["bytes_in"], SIZE);
    h.stop().await;
}
