//! The upstream watch: the one way to end a forwarded request from outside Pingora's proxy loop.
//!
//! Pingora's loop has no cancellation hook, and its `read_timeout` bounds every read alike (an idle
//! SSE stream would trip it). So each forwarded request gets one small task, armed when the
//! upstream connection is handed over (`connected_to_upstream`), that shuts the upstream socket
//! down when:
//!
//! * no response header arrived within `UPSTREAM_RESPONSE_HEADER_TIMEOUT` of the request's last
//!   byte ([`Trip::HeaderTimeout`] → 504 `internal_error` "upstream timeout");
//! * a sized body (`Content-Length`) stayed silent for `UPSTREAM_BODY_IDLE_TIMEOUT`
//!   ([`Trip::BodyIdle`], counted as `upstream_errors`);
//! * an open stream (SSE, chunked, close-delimited, upgraded) hangs from a revoked anchor
//!   ([`Trip::Revoked`], counted only as a stream cut). Open streams have no idle limit.
//!
//! Shutting a socket down by descriptor is only safe while the descriptor is this request's
//! connection. Two rules make a stray cut impossible:
//!
//! * **Disarm before the pool.** [`UpstreamWatch::disarm`] takes the socket out under the same
//!   lock the trip holds while it shuts down, so once it returns no shutdown can follow. It runs
//!   at the end of the body (`eos`), at a header with no body, and first thing in
//!   `error_while_proxy`, `fail_to_proxy` and `logging`; Pingora returns a connection to its pool
//!   only after the body ended, i.e. after the disarm.
//! * **Same socket, not just same number.** The socket's kernel cookie (`SO_COOKIE`, unique per
//!   socket, never reused) is taken when the watch is armed and compared right before the
//!   shutdown, so a descriptor number the kernel already recycled for another socket is left
//!   alone. Without a cookie (non-Linux), the watch never cuts.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caracal_shared::revocation::RevocationView;
use tokio::sync::Notify;

/// Why the watch ended a request (first cause wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Trip {
    /// No response header within the header timeout.
    HeaderTimeout = 1,
    /// A sized body went silent for the body idle timeout.
    BodyIdle = 2,
    /// An anchor of the request was revoked while the response was open.
    Revoked = 3,
}

impl Trip {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::HeaderTimeout),
            2 => Some(Self::BodyIdle),
            3 => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// What the response looks like to the watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the response header.
    AwaitingHeader = 0,
    /// A body of declared length is being read: idle limit.
    SizedBody = 1,
    /// A body that may stay open: no idle limit, revocations cut it.
    OpenStream = 2,
    /// Nothing left to watch.
    Done = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::AwaitingHeader,
            1 => Self::SizedBody,
            2 => Self::OpenStream,
            _ => Self::Done,
        }
    }
}

/// The deadlines a watch enforces.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub header: Duration,
    pub body_idle: Duration,
}

/// Revocation inputs for open streams.
pub struct Anchors {
    pub view: Arc<RevocationView>,
    pub anchors: Arc<Vec<String>>,
}

/// The socket a watch may shut down, with its identity.
struct Socket {
    fd: RawFd,
    cookie: u64,
}

struct Shared {
    /// `Some` while the watch may act on the socket; taken by a trip or by [`UpstreamWatch::disarm`].
    socket: Mutex<Option<Socket>>,
    phase: AtomicU8,
    /// Milliseconds since `origin` of the last byte that moved (request body out, response body in).
    progress_ms: AtomicU64,
    origin: Instant,
    /// `0` or a [`Trip`].
    tripped: AtomicU8,
    wake: Notify,
}

impl Shared {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Records `why` if nothing was recorded yet; `true` for the first cause.
    fn record(&self, why: Trip) -> bool {
        self.tripped.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Records `why` and shuts the socket down if it is still armed and still the same socket.
    fn trip(&self, why: Trip) -> bool {
        let mut armed = self.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(socket) = armed.take() else { return false };
        let first = self.record(why);
        if same_socket(&socket) {
            let _ = nix::sys::socket::shutdown(socket.fd, nix::sys::socket::Shutdown::Both);
        }
        first
    }
}

/// Whether `socket.fd` still names the socket the watch was armed with.
fn same_socket(socket: &Socket) -> bool {
    socket.cookie != 0 && pingora::protocols::l4::ext::get_socket_cookie(socket.fd).is_ok_and(|c| c == socket.cookie)
}

/// The kernel cookie of `fd` (0: unknown, the watch will not cut).
pub fn cookie_of(fd: RawFd) -> u64 {
    pingora::protocols::l4::ext::get_socket_cookie(fd).unwrap_or(0)
}

/// A request's watch; dropping it disarms it.
pub struct UpstreamWatch {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl UpstreamWatch {
    /// Arms a watch over the upstream socket `fd` (whose cookie is `cookie`). `on_revoked` runs
    /// once if a revocation cuts an open stream.
    pub fn arm(fd: RawFd, cookie: u64, limits: Deadlines, anchors: Anchors, on_revoked: impl FnOnce() + Send + 'static) -> Self {
        let socket = (cookie != 0).then_some(Socket { fd, cookie });
        if socket.is_none() {
            tracing::warn!("upstream socket has no cookie: timeouts and idle-stream cuts cannot end this request");
        }
        let shared = Arc::new(Shared {
            socket: Mutex::new(socket),
            phase: AtomicU8::new(Phase::AwaitingHeader as u8),
            progress_ms: AtomicU64::new(0),
            origin: Instant::now(),
            tripped: AtomicU8::new(0),
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(shared.clone(), limits, anchors, on_revoked));
        Self { shared, task: Some(task) }
    }

    /// A byte moved (request body toward the upstream or response body from it).
    pub fn progress(&self) {
        self.shared.progress_ms.store(self.shared.now_ms(), Ordering::Release);
    }

    /// The response header arrived; `next` is what the watch does until the body ends. Must be
    /// [`Phase::Done`] when no body follows, so the watch is disarmed before Pingora can pool the
    /// connection.
    pub fn header_arrived(&mut self, next: Phase) {
        if next == Phase::Done {
            self.disarm();
            return;
        }
        self.progress();
        self.shared.phase.store(next as u8, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Records a revocation cut found by the body filter; `true` if it is the first cause (count it).
    pub fn record_revoked(&self) -> bool {
        let first = self.shared.record(Trip::Revoked);
        self.disarm_shared();
        first
    }

    /// Why the watch ended the request, if it did.
    pub fn tripped(&self) -> Option<Trip> {
        Trip::from_u8(self.shared.tripped.load(Ordering::Acquire))
    }

    /// Stops watching. Once this returns, the watch never touches the socket again.
    pub fn disarm(&mut self) {
        self.disarm_shared();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    fn disarm_shared(&self) {
        self.shared.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.shared.phase.store(Phase::Done as u8, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl Drop for UpstreamWatch {
    fn drop(&mut self) {
        self.disarm();
    }
}

async fn run(shared: Arc<Shared>, limits: Deadlines, anchors: Anchors, on_revoked: impl FnOnce() + Send + 'static) {
    let mut on_revoked = Some(on_revoked);
    loop {
        let (limit, why) = match shared.phase() {
            Phase::AwaitingHeader => (limits.header, Trip::HeaderTimeout),
            Phase::SizedBody => (limits.body_idle, Trip::BodyIdle),
            Phase::OpenStream => {
                watch_revocations(&shared, &anchors, &mut on_revoked).await;
                return;
            }
            Phase::Done => return,
        };
        let limit_ms = limit.as_millis() as u64;
        let idle_ms = shared.now_ms().saturating_sub(shared.progress_ms.load(Ordering::Acquire));
        if idle_ms >= limit_ms {
            shared.trip(why);
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(limit_ms - idle_ms)) => {}
            () = shared.wake.notified() => {}
        }
    }
}

async fn watch_revocations(shared: &Shared, a: &Anchors, on_revoked: &mut Option<impl FnOnce()>) {
    let mut changes = a.view.subscribe();
    loop {
        if shared.phase() != Phase::OpenStream {
            return;
        }
        if a.view.any_revoked(a.anchors.iter().map(String::as_str)) {
            if shared.trip(Trip::Revoked)
                && let Some(f) = on_revoked.take()
            {
                f();
            }
            return;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = shared.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use caracal_shared::revocation::Revoked;

    use super::*;

    fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    fn limits(header_ms: u64, body_ms: u64) -> Deadlines {
        Deadlines { header: Duration::from_millis(header_ms), body_idle: Duration::from_millis(body_ms) }
    }

    fn anchors(view: &Arc<RevocationView>, a: &str) -> Anchors {
        Anchors { view: view.clone(), anchors: Arc::new(vec![a.to_owned()]) }
    }

    fn view() -> Arc<RevocationView> {
        RevocationView::new(Duration::from_secs(70), false, false)
    }

    /// Whether `c` still carries data to its peer `s`.
    fn alive(c: &mut TcpStream, s: &mut TcpStream) -> bool {
        if c.write_all(b"ping").is_err() {
            return false;
        }
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).is_ok()
    }

    async fn wait_for(w: &UpstreamWatch, trip: Trip) {
        for _ in 0..100 {
            if w.tripped() == Some(trip) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {trip:?}, got {:?}", w.tripped());
    }

    #[tokio::test]
    async fn no_header_within_the_limit_shuts_the_socket_down() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let w = UpstreamWatch::arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), limits(50, 1000), anchors(&view(), "a"), || {});
        wait_for(&w, Trip::HeaderTimeout).await;
        assert!(!alive(&mut c, &mut s), "the socket was shut down");
    }

    #[tokio::test]
    async fn progress_pushes_the_deadline_and_an_open_stream_has_no_idle_limit() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let mut w = UpstreamWatch::arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), limits(80, 80), anchors(&view(), "a"), || {});
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            w.progress();
        }
        assert_eq!(w.tripped(), None, "a request still uploading is not timed out");
        w.header_arrived(Phase::OpenStream);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(w.tripped(), None, "an idle open stream is not cut");
        assert!(alive(&mut c, &mut s));
    }

    #[tokio::test]
    async fn a_silent_sized_body_trips_body_idle() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (c, _s) = pair(&l);
        let mut w = UpstreamWatch::arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), limits(1000, 50), anchors(&view(), "a"), || {});
        w.header_arrived(Phase::SizedBody);
        wait_for(&w, Trip::BodyIdle).await;
    }

    #[tokio::test]
    async fn a_revocation_cuts_an_open_stream_once() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let v = view();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut w = UpstreamWatch::arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), limits(1000, 1000), anchors(&v, "a"), move || {
            let _ = tx.send(());
        });
        w.header_arrived(Phase::OpenStream);
        v.add(&[Revoked { anchor: "b".into(), expires_at: i64::MAX }]);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(w.tripped(), None, "another anchor does not cut");
        v.add(&[Revoked { anchor: "a".into(), expires_at: i64::MAX }]);
        tokio::time::timeout(Duration::from_secs(1), rx).await.expect("cut within a second").unwrap();
        assert_eq!(w.tripped(), Some(Trip::Revoked));
        assert!(!w.record_revoked(), "the body filter's later finding is not counted again");
        assert!(!alive(&mut c, &mut s));
    }

    #[tokio::test]
    async fn after_disarm_a_revocation_never_touches_the_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let v = view();
        let mut w = UpstreamWatch::arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), limits(1000, 1000), anchors(&v, "a"), || {});
        w.header_arrived(Phase::OpenStream);
        w.disarm();
        v.add(&[Revoked { anchor: "a".into(), expires_at: i64::MAX }]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(w.tripped(), None);
        assert!(alive(&mut c, &mut s), "a disarmed watch (connection back in the pool) leaves the socket alone");
    }

    #[tokio::test]
    async fn a_response_without_body_disarms_at_the_header() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let v = view();
        let mut w = UpstreamWatch::arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), limits(30, 30), anchors(&v, "a"), || {});
        w.header_arrived(Phase::Done);
        v.add(&[Revoked { anchor: "a".into(), expires_at: i64::MAX }]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(w.tripped(), None);
        assert!(alive(&mut c, &mut s));
    }

    #[tokio::test]
    async fn a_recycled_descriptor_number_is_left_alone() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (first, _first_peer) = pair(&l);
        let fd = first.as_raw_fd();
        let v = view();
        let mut w = UpstreamWatch::arm(fd, cookie_of(fd), limits(1000, 1000), anchors(&v, "a"), || {});
        w.header_arrived(Phase::OpenStream);
        // Pingora closes the upstream connection; the kernel hands the number to the next socket.
        drop(first);
        let mut reused = None;
        let mut keep = Vec::new();
        for _ in 0..64 {
            let (c, s) = pair(&l);
            if c.as_raw_fd() == fd {
                reused = Some((c, s));
                break;
            }
            keep.push((c, s));
        }
        let (mut c, mut s) = reused.expect("the descriptor number was reused");
        v.add(&[Revoked { anchor: "a".into(), expires_at: i64::MAX }]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(alive(&mut c, &mut s), "another connection that got the same number must not be shut down");
    }
}
