//! The PROXY protocol (v1 text and v2 binary, as HAProxy specifies them): an L4 load
//! balancer in front of the proxy opens each connection with a header naming the client's
//! address. On a listener that enables it, every connection must start with one; the
//! address it names is the client's from then on (404 limits, clicks, forwarding headers).
//! Parsing is the `ppp` crate's; this module reads exactly the header off the socket and
//! nothing after it, so the TLS handshake or the first request follows untouched.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ppp::HeaderResult;
use ppp::PartialResult;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header (107 bytes) and a v2 header with room for common TLVs; a longer
/// v2 header is read by its declared length.
const PEEK: usize = 512;
/// The longest v2 header accepted (its length field allows 64 KiB).
const MAX_V2: usize = 4096;
/// First wait between looks at a header that has not fully arrived (load balancers send
/// it in one segment; this is the rare case), doubled up to [`MAX_RETRY`]: a stalled
/// connection costs at most about 20 wake-ups a second.
const RETRY: Duration = Duration::from_millis(2);
/// The longest wait between looks.
const MAX_RETRY: Duration = Duration::from_millis(50);

/// Why a connection's PROXY header was refused (the connection is closed).
#[derive(Debug, Error)]
pub enum ProxyHeaderError {
    /// The connection does not start with a valid header.
    #[error("the connection does not start with a PROXY protocol header: {0}")]
    Invalid(String),
    /// The header did not arrive in time.
    #[error("no complete PROXY protocol header within the deadline")]
    Timeout,
    /// The socket failed or closed.
    #[error("the connection failed while reading its PROXY protocol header")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header at the start of `tcp`, within `limit`, consuming exactly its
/// bytes. Returns the client address it names, or `None` for a header that names none
/// (v1 `UNKNOWN`, v2 `LOCAL`, non-IP families: the socket's peer stands).
pub async fn read_header(
    tcp: &mut TcpStream,
    limit: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let deadline = Instant::now() + limit;
    let mut peek = [0u8; PEEK];
    let mut retry = RETRY;
    loop {
        let n = tokio::time::timeout_at(deadline.into(), tcp.peek(&mut peek))
            .await
            .map_err(|_| ProxyHeaderError::Timeout)??;
        if n == 0 {
            return Err(ProxyHeaderError::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        let seen = &peek[..n];
        // A v2 header longer than the look: read it whole by its declared length.
        if let Some(total) = v2_length(seen)
            && total > PEEK
        {
            if total > MAX_V2 {
                return Err(ProxyHeaderError::Invalid(format!(
                    "a v2 header of {total} bytes is longer than {MAX_V2}"
                )));
            }
            let mut whole = vec![0u8; total];
            tokio::time::timeout_at(deadline.into(), tcp.read_exact(&mut whole))
                .await
                .map_err(|_| ProxyHeaderError::Timeout)??;
            let (_, addr) = parse(&whole)?;
            return Ok(addr);
        }
        let parsed = HeaderResult::parse(seen);
        if parsed.is_incomplete() {
            if n == PEEK || Instant::now() >= deadline {
                return Err(if n == PEEK {
                    ProxyHeaderError::Invalid("no header end in the first bytes".into())
                } else {
                    ProxyHeaderError::Timeout
                });
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
            continue;
        }
        let (len, addr) = parse(seen)?;
        // Consume exactly the header: what follows is the client's.
        let mut consumed = vec![0u8; len];
        tcp.read_exact(&mut consumed).await?;
        return Ok(addr);
    }
}

/// A v2 header's total length, from its fixed part (signature, then the length at 14).
fn v2_length(seen: &[u8]) -> Option<usize> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    if seen.len() < 16 || &seen[..12] != SIGNATURE {
        return None;
    }
    Some(16 + usize::from(u16::from_be_bytes([seen[14], seen[15]])))
}

/// A complete header at the start of `bytes`: its length and the source address.
fn parse(bytes: &[u8]) -> Result<(usize, Option<SocketAddr>), ProxyHeaderError> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => {
            let addr = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Ok((header.header.len(), addr))
        }
        HeaderResult::V2(Ok(header)) => {
            let addr = match (header.command, header.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Ok((header.header.len(), addr))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_name_the_client_and_their_length() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        let (len, addr) = parse(v1).unwrap();
        assert_eq!(&v1[..len], b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n");
        assert_eq!(addr, Some("203.0.113.7:51234".parse().unwrap()));
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n";
        assert_eq!(
            parse(v1).unwrap().1,
            Some("[2001:db8::7]:51234".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), (15, None));

        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:40000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut bytes = v2.clone();
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(v2_length(&bytes), Some(v2.len()));
        let (len, addr) = parse(&bytes).unwrap();
        assert_eq!(len, v2.len());
        assert_eq!(addr, Some("198.51.100.9:40000".parse().unwrap()));
    }

    #[test]
    fn anything_else_is_refused() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(
                parse(bytes).is_err(),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
