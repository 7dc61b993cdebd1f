//! The upstream watch: the one way to end a forwarded request from outside Pingora's proxy loop.
//!
//! Pingora's loop has no cancellation hook, and its `read_timeout` bounds every read alike (an idle
//! SSE stream would trip it). So every forwarded request registers its upstream socket with the
//! gateway's one [`Watcher`] when the connection is handed over (`connected_to_upstream`), and the
//! watcher's sweep shuts the socket down when:
//!
//! * no response header arrived within `UPSTREAM_RESPONSE_HEADER_TIMEOUT` of the request's last
//!   byte ([`Trip::HeaderTimeout`] → 504 `internal_error` "upstream timeout");
//! * a sized body (`Content-Length`) stayed silent for `UPSTREAM_BODY_IDLE_TIMEOUT`
//!   ([`Trip::BodyIdle`], counted as `upstream_errors`);
//! * an open stream (SSE, chunked, close-delimited, upgraded) hangs from a revoked anchor
//!   ([`Trip::Revoked`], counted only as a stream cut). Open streams have no idle limit.
//!
//! One sweeping task for all requests, not a task per request: a request only inserts itself in
//! a sharded map and removes itself at the end (no spawn, no timer, no cross-thread wake-up on
//! the hot path). Deadlines are checked every [`Watcher::tick`] (an eighth of the shorter limit,
//! 5–100 ms), so a timeout fires at most one tick late; revocations are checked the moment the
//! revocation view changes.
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
use dashmap::DashMap;

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

/// Runs once if a revocation cuts an open stream (counts and logs the cut).
pub type OnRevoked = Box<dyn FnOnce() + Send>;

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
    anchors: Arc<Vec<String>>,
    on_revoked: Mutex<Option<OnRevoked>>,
    /// This request's deadlines (the resource's own, else the gateway's).
    limits: Deadlines,
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

    /// Cuts an open stream whose anchors were revoked; runs `on_revoked` for the first cause.
    fn cut_if_revoked(&self, view: &RevocationView) {
        if self.phase() == Phase::OpenStream && view.any_revoked(self.anchors.iter().map(String::as_str)) && self.trip(Trip::Revoked) {
            let f = self.on_revoked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some(f) = f {
                f();
            }
        }
    }

    /// Trips the deadline of the current phase if it passed (open streams have none).
    fn check_deadline(&self, limits: &Deadlines) {
        let (limit, why) = match self.phase() {
            Phase::AwaitingHeader => (limits.header, Trip::HeaderTimeout),
            Phase::SizedBody => (limits.body_idle, Trip::BodyIdle),
            Phase::OpenStream | Phase::Done => return,
        };
        let idle_ms = self.now_ms().saturating_sub(self.progress_ms.load(Ordering::Acquire));
        if idle_ms >= limit.as_millis() as u64 {
            self.trip(why);
        }
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

/// Every armed watch of the gateway, swept by one task ([`Watcher::run`]).
pub struct Watcher {
    limits: Deadlines,
    view: Arc<RevocationView>,
    live: DashMap<u64, Arc<Shared>>,
    next_id: AtomicU64,
}

impl Watcher {
    pub fn new(limits: Deadlines, view: Arc<RevocationView>) -> Arc<Self> {
        Arc::new(Self { limits, view, live: DashMap::new(), next_id: AtomicU64::new(0) })
    }

    /// The gateway's deadlines (a resource may set its own, [`Watcher::arm`]).
    pub fn limits(&self) -> Deadlines {
        self.limits
    }

    /// How often deadlines are checked: an eighth of the shorter limit, within 5–100 ms.
    pub fn tick(&self) -> Duration {
        (self.limits.header.min(self.limits.body_idle) / 8).clamp(Duration::from_millis(5), Duration::from_millis(100))
    }

    /// Arms a watch over the upstream socket `fd` (whose cookie is `cookie`) of a request holding
    /// `anchors`, under `limits`. `on_revoked` runs once if a revocation cuts an open stream.
    pub fn arm(
        self: &Arc<Self>,
        fd: RawFd,
        cookie: u64,
        anchors: Arc<Vec<String>>,
        limits: Deadlines,
        on_revoked: OnRevoked,
    ) -> UpstreamWatch {
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
            anchors,
            on_revoked: Mutex::new(Some(on_revoked)),
            limits,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live.insert(id, shared.clone());
        UpstreamWatch { shared, id, watcher: self.clone(), registered: true }
    }

    /// How many requests are being watched.
    pub fn watching(&self) -> usize {
        self.live.len()
    }

    /// One pass: deadlines of every watch, revocations of open streams.
    pub fn sweep(&self) {
        for entry in &self.live {
            entry.check_deadline(&entry.limits);
            entry.cut_if_revoked(&self.view);
        }
    }

    /// Sweeps every tick and at every change of the revocation view, until the view's sender goes.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.view.subscribe();
        let mut ticks = tokio::time::interval(self.tick());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sweep(),
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    for entry in &self.live {
                        entry.cut_if_revoked(&self.view);
                    }
                }
            }
        }
    }
}

/// A request's watch; dropping it disarms it.
pub struct UpstreamWatch {
    shared: Arc<Shared>,
    id: u64,
    watcher: Arc<Watcher>,
    registered: bool,
}

impl UpstreamWatch {
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
        // A revocation that landed before the header would otherwise wait for the next change.
        self.shared.cut_if_revoked(&self.watcher.view);
    }

    /// Records a revocation cut found by the body filter; `true` if it is the first cause (count it).
    pub fn record_revoked(&mut self) -> bool {
        let first = self.shared.record(Trip::Revoked);
        self.disarm();
        first
    }

    /// Why the watch ended the request, if it did.
    pub fn tripped(&self) -> Option<Trip> {
        Trip::from_u8(self.shared.tripped.load(Ordering::Acquire))
    }

    /// Stops watching. Once this returns, the watch never touches the socket again.
    pub fn disarm(&mut self) {
        self.shared.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        self.shared.phase.store(Phase::Done as u8, Ordering::Release);
        if std::mem::take(&mut self.registered) {
            self.watcher.live.remove(&self.id);
        }
    }
}

impl Drop for UpstreamWatch {
    fn drop(&mut self) {
        self.disarm();
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

    /// A watcher with its sweeping task.
    fn watcher(limits: Deadlines, view: &Arc<RevocationView>) -> Arc<Watcher> {
        let w = Watcher::new(limits, view.clone());
        tokio::spawn(w.clone().run());
        w
    }

    /// Arms a watch over `fd` for anchor "a".
    fn arm(w: &Arc<Watcher>, fd: RawFd) -> UpstreamWatch {
        w.arm(fd, cookie_of(fd), Arc::new(vec!["a".to_owned()]), w.limits(), Box::new(|| {}))
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
        let w = arm(&watcher(limits(50, 1000), &view()), c.as_raw_fd());
        wait_for(&w, Trip::HeaderTimeout).await;
        assert!(!alive(&mut c, &mut s), "the socket was shut down");
    }

    #[tokio::test]
    async fn progress_pushes_the_deadline_and_an_open_stream_has_no_idle_limit() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let mut w = arm(&watcher(limits(80, 80), &view()), c.as_raw_fd());
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
        let mut w = arm(&watcher(limits(1000, 50), &view()), c.as_raw_fd());
        w.header_arrived(Phase::SizedBody);
        wait_for(&w, Trip::BodyIdle).await;
    }

    #[tokio::test]
    async fn a_revocation_cuts_an_open_stream_once() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = pair(&l);
        let v = view();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let watcher = watcher(limits(1000, 1000), &v);
        let mut w = watcher.arm(
            c.as_raw_fd(),
            cookie_of(c.as_raw_fd()),
            Arc::new(vec!["a".to_owned()]),
            watcher.limits(),
            Box::new(move || {
                let _ = tx.send(());
            }),
        );
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
        let mut w = arm(&watcher(limits(1000, 1000), &v), c.as_raw_fd());
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
        let mut w = arm(&watcher(limits(30, 30), &v), c.as_raw_fd());
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
        let mut w = arm(&watcher(limits(1000, 1000), &v), fd);
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

    #[tokio::test]
    async fn a_finished_request_leaves_the_watcher() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (c, _s) = pair(&l);
        let watcher = watcher(limits(1000, 1000), &view());
        let mut sized = arm(&watcher, c.as_raw_fd());
        let dropped = arm(&watcher, c.as_raw_fd());
        assert_eq!(watcher.watching(), 2);
        sized.header_arrived(Phase::SizedBody);
        sized.disarm();
        drop(dropped);
        assert_eq!(watcher.watching(), 0, "disarmed and dropped watches are swept no more");
    }

    #[test]
    fn the_tick_follows_the_shorter_limit_within_bounds() {
        let w = |h, b| Watcher::new(limits(h, b), view()).tick();
        assert_eq!(w(30_000, 60_000), Duration::from_millis(100));
        assert_eq!(w(400, 60_000), Duration::from_millis(50));
        assert_eq!(w(10, 10), Duration::from_millis(5));
    }

    #[tokio::test]
    async fn a_watch_keeps_its_own_deadlines() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (c, _s) = pair(&l);
        // The gateway allows 10 s; this request's resource allows 60 ms.
        let watcher = watcher(limits(10_000, 10_000), &view());
        let w = watcher.arm(c.as_raw_fd(), cookie_of(c.as_raw_fd()), Arc::new(vec![]), limits(60, 10_000), Box::new(|| {}));
        wait_for(&w, Trip::HeaderTimeout).await;
    }
}
