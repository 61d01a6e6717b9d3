//! A raw HTTP/1 client for what reqwest will not send: pipelines, split and malformed
//! heads, trickles.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TestServer;

/// One response as read off the socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub close: bool,
    pub body_len: usize,
}

/// A raw HTTP/1 connection to the proxy.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    served: usize,
}

impl Connection {
    /// A connection to the proxy.
    pub async fn open(server: &TestServer) -> Connection {
        Connection::open_at(&server.proxy).await
    }

    /// A connection to `base` (`http://host:port`).
    pub async fn open_at(base: &str) -> Connection {
        let addr = base.trim_start_matches("http://");
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        stream.set_nodelay(true).unwrap();
        Connection {
            stream,
            buf: Vec::new(),
            served: 0,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("the proxy answers within 5 s")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response (`head`: the request was HEAD, so no body follows).
    pub async fn answer(&mut self, head: bool) -> Answer {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                self.fill().await,
                "connection closed before response {} (buffered: {:?})",
                self.served + 1,
                String::from_utf8_lossy(&self.buf)
            );
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut answer = Answer {
            status,
            location: None,
            close: false,
            body_len: 0,
        };
        let mut chunked = false;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').expect("a header line");
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "location" => answer.location = Some(value.to_owned()),
                "connection" => answer.close = value.eq_ignore_ascii_case("close"),
                "content-length" if !head => answer.body_len = value.parse().unwrap(),
                "transfer-encoding" => chunked = true,
                _ => {}
            }
        }
        assert!(!chunked, "test requests get sized bodies: {text}");
        self.buf.drain(..end);
        while self.buf.len() < answer.body_len {
            assert!(self.fill().await, "connection closed inside a body");
        }
        self.buf.drain(..answer.body_len);
        self.served += 1;
        answer
    }

    /// Whether the proxy closed the connection (after everything it sent was read).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

impl Connection {
    /// The socket, for tests that drive it themselves.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Whether the server ends the connection (EOF or reset) before `deadline`, reading
    /// and dropping whatever it sends first.
    pub async fn ends_within(&mut self, deadline: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(deadline, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}
