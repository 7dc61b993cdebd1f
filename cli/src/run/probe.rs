//! Readiness checks over loopback, without a client library: an HTTP `GET` that must answer 200, a
//! Redis `PING`, an open port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    Some(s)
}

/// Whether `GET http://127.0.0.1:<port><path>` answers 200.
pub(crate) fn http_ok(port: u16, path: &str) -> bool {
    let Some(mut s) = connect(port) else { return false };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200")
}

/// Whether a Redis on `port` answers `PING`.
pub(crate) fn redis_ping(port: u16) -> bool {
    let Some(mut s) = connect(port) else { return false };
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Sends `SHUTDOWN NOSAVE` to a Redis on `port` (it closes the connection without an answer).
pub(crate) fn redis_shutdown(port: u16) {
    if let Some(mut s) = connect(port) {
        let _ = s.write_all(b"SHUTDOWN NOSAVE\r\n");
        let _ = s.read(&mut [0u8; 64]);
    }
}

/// Whether something accepts connections on `port`.
pub(crate) fn port_open(port: u16) -> bool {
    connect(port).is_some()
}
