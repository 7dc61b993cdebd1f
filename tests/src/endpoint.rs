//! Pool members as real processes (`tests/upstreams/endpoint.py`): started on a port of their
//! own, killed (SIGKILL: every connection dies with it) and started again on the same port.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// How a member answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with its name (special paths aside).
    Answers,
    /// Reads every request and never answers.
    Hangs,
    /// Answers every request 503.
    Unavailable,
}

/// One pool member process.
pub struct Endpoint {
    pub name: String,
    pub port: u16,
    behaviour: Behaviour,
    child: Option<Child>,
}

/// A free port *below* the kernel's ephemeral range (32768+): a member that is killed and started
/// again must find its port free, and while it is down an outgoing connection of another test could
/// otherwise take that port as its source port.
pub fn stable_port() -> u16 {
    for _ in 0..1000 {
        let port = 27_000 + (uuid::Uuid::new_v4().as_u128() % 5_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 27000..32000");
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("upstreams/endpoint.py")
}

impl Endpoint {
    /// Starts a member on a free port.
    pub fn start(name: &str, behaviour: Behaviour) -> Self {
        let mut e = Self { name: name.to_owned(), port: stable_port(), behaviour, child: None };
        e.restart();
        e
    }

    /// A port nothing listens on, as a member URL (a member that is down from the start).
    pub fn dead_url() -> String {
        format!("http://127.0.0.1:{}/base", stable_port())
    }

    /// `http://127.0.0.1:<port>/base`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/base", self.port)
    }

    /// Starts the process (again) on its port; returns once it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let mode = match self.behaviour {
            Behaviour::Answers => "ok",
            Behaviour::Hangs => "hang",
            Behaviour::Unavailable => "unavailable",
        };
        let mut child = Command::new(std::env::var("CARACAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script())
            .args([&self.name, &self.port.to_string(), mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/upstreams/endpoint.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("endpoint output");
        assert_eq!(line.trim(), "ready", "{} did not start", self.name);
        self.child = Some(child);
    }

    /// SIGKILL: the listener and every open connection die at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.kill();
    }
}
