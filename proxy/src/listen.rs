//! Listening sockets that outlive a process. A socket is bound at start-up and registered
//! in pingora's `ListenFds` under its configured address; on SIGQUIT pingora sends the
//! table to the process being started with `--upgrade`, which takes each socket from it
//! instead of binding. Connections waiting to be accepted are never refused: both
//! processes hold the same socket until the old one stops accepting.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use pingora::server::ListenFds;
use socket2::{Domain, Protocol, Socket, Type};

/// Connections waiting to be accepted, as pingora's own listeners allow.
const LISTEN_BACKLOG: i32 = 65_535;

/// A listening socket of a service: bound already, or to be inherited at start.
#[derive(Debug)]
pub struct Listening {
    addr: String,
    socket: Option<TcpListener>,
    /// Opened already: the socket has its owner.
    opened: bool,
}

impl Listening {
    /// A socket bound at start-up (so a taken address fails start-up with its error).
    pub fn bound(addr: &str, socket: TcpListener) -> Listening {
        Listening {
            addr: addr.to_owned(),
            socket: Some(socket),
            opened: false,
        }
    }

    /// A socket to take from the process being upgraded when the service starts.
    pub fn inherited(addr: &str) -> Listening {
        Listening {
            addr: addr.to_owned(),
            socket: None,
            opened: false,
        }
    }

    /// The configured address: the key the socket is handed over under.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The socket to accept on, non-blocking and registered in `fds` so a later upgrade
    /// hands it on: the one bound at start-up, else the one the old process handed over
    /// under this address, else (an address the old process did not listen on) one
    /// `bind` makes now. A second call fails.
    pub fn open(
        &mut self,
        fds: Option<&ListenFds>,
        bind: impl FnOnce(&str) -> io::Result<TcpListener>,
    ) -> io::Result<TcpListener> {
        if std::mem::replace(&mut self.opened, true) {
            return Err(io::Error::other(format!("{} is open already", self.addr)));
        }
        let inherited = fds.and_then(|fds| fds.lock().get(&self.addr).copied());
        let socket = match (self.socket.take(), inherited) {
            (Some(socket), _) => socket,
            (None, Some(fd)) => adopt(fd),
            (None, None) => {
                tracing::info!(addr = %self.addr, "no socket was handed over for this address: binding it");
                bind(&self.addr)?
            }
        };
        socket.set_nonblocking(true)?;
        if let Some(fds) = fds
            && inherited != Some(socket.as_raw_fd())
        {
            fds.lock().add(self.addr.clone(), socket.as_raw_fd());
        }
        Ok(socket)
    }
}

/// Takes ownership of a listening socket pingora received from the old process.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> TcpListener {
    // SAFETY: `fd` is a listening socket pingora received over the upgrade socket
    // (SCM_RIGHTS) and holds only as a number in its table, for handing on; nothing else
    // in this process owns it. Each service's `Listening` opens once and each address
    // belongs to one service, so this is its only owner, as in pingora's own listeners.
    unsafe { TcpListener::from_raw_fd(fd) }
}

/// A non-blocking listening socket on the first address `addr` names that can be bound,
/// with `SO_REUSEADDR` (a restart need not wait out the old connections' `TIME_WAIT`).
pub fn bind_tcp(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match bind_one(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{addr} names no address"))))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use pingora::server::Fds;

    fn table() -> ListenFds {
        Arc::new(parking_lot::Mutex::new(Fds::new()))
    }

    #[test]
    fn a_bound_socket_is_registered_for_handing_on() {
        let fds = table();
        let socket = bind_tcp("127.0.0.1:0").unwrap();
        let raw = socket.as_raw_fd();
        let mut listening = Listening::bound("127.0.0.1:0", socket);
        let open = listening.open(Some(&fds), |_| unreachable!()).unwrap();
        assert_eq!(open.as_raw_fd(), raw);
        assert_eq!(fds.lock().get("127.0.0.1:0"), Some(&raw));
        assert!(
            listening
                .open(Some(&fds), |_| Err(io::Error::other("gone")))
                .is_err()
        );
    }

    #[test]
    fn an_inherited_socket_is_taken_from_the_table_not_bound() {
        let fds = table();
        let old = bind_tcp("127.0.0.1:0").unwrap();
        let addr = old.local_addr().unwrap().to_string();
        // What the old process hands over: the number of a socket this process now holds.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(old);
        fds.lock().add(addr.clone(), raw);
        let mut listening = Listening::inherited(&addr);
        let open = listening
            .open(Some(&fds), |_| panic!("must not bind"))
            .unwrap();
        assert_eq!(open.as_raw_fd(), raw);
        assert_eq!(open.local_addr().unwrap().to_string(), addr);
        let client = std::net::TcpStream::connect(&addr).unwrap();
        drop(client);
    }

    #[test]
    fn an_address_the_old_process_did_not_have_is_bound_fresh() {
        let fds = table();
        let mut listening = Listening::inherited("127.0.0.1:0");
        let open = listening.open(Some(&fds), bind_tcp).unwrap();
        assert_eq!(fds.lock().get("127.0.0.1:0"), Some(&open.as_raw_fd()));
    }
}
