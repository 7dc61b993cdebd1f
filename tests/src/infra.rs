//! Postgres and Redis on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::pki::TestPki;

/// A free TCP port on 127.0.0.1 (bound then released; the race is negligible on a test box).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// A scratch directory under the target dir, removed by nobody (logs stay for post-mortems).
pub fn scratch_dir(label: &str) -> PathBuf {
    let base = std::env::var_os("CARACAL_TEST_TMP").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("caracal-e2e"));
    let dir = base.join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The admin URL of a Postgres server (env, or a private cluster started once per process).
pub fn postgres_admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| std::env::var("CARACAL_TEST_DATABASE_URL").unwrap_or_else(|_| start_private_postgres())).clone()
}

fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("PG_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    dir.join(name)
}

/// Starts (or reuses) one private cluster for runs without `CARACAL_TEST_DATABASE_URL`. Test
/// processes (nextest runs each test in its own) share it through a lock file, so a run starts
/// one server, not one per test; it is left running for the next run and stopped with `pg_ctl`.
fn start_private_postgres() -> String {
    let base = std::env::var_os("CARACAL_TEST_TMP").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("caracal-e2e"));
    std::fs::create_dir_all(&base).expect("create scratch dir");
    let lock = std::fs::File::create(base.join("pg-shared.lock")).expect("lock file");
    lock.lock().expect("lock the shared Postgres");
    let dir = base.join("pg-shared");
    let port_file = dir.join("port");
    if let Ok(port) = std::fs::read_to_string(&port_file)
        && let Ok(port) = port.trim().parse::<u16>()
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    {
        return format!("postgres://postgres@127.0.0.1:{port}/postgres");
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create pg dir");
    let port = free_port();
    let data = dir.join("data");
    let as_pg = is_root();
    let sh = |script: String| {
        let mut c = if as_pg {
            let mut c = Command::new("su");
            c.args(["postgres", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        run(&mut c);
    };
    if as_pg {
        run(Command::new("chown").args(["postgres:postgres", dir.to_str().unwrap()]));
    }
    sh(format!("{} -D {} -A trust -U postgres -E UTF8 --no-sync >/dev/null", pg_bin("initdb").display(), data.display()));
    sh(format!(
        "{} -D {} -l {}/log -w start -o '-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300' >/dev/null",
        pg_bin("pg_ctl").display(),
        data.display(),
        dir.display(),
        dir.display()
    ));
    std::fs::write(&port_file, port.to_string()).expect("write port file");
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Creates a fresh database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = postgres_admin_url();
    let name = format!("caracal_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.expect("connect to the test Postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).expect("admin URL ends in /<db>");
    let base = base.split('?').next().unwrap().to_owned();
    format!("{base}/{name}")
}

/// How a test's `redis-server` is reached.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// TLS only (`--port 0 --tls-port`), with this PKI's server certificate; clients use
    /// `rediss://` and trust its CA.
    pub tls: Option<TestPki>,
    /// `--requirepass`: the default user's password.
    pub password: Option<String>,
    /// An ACL user `(name, password)` with every permission, for `redis://user:pass@` URLs.
    pub acl_user: Option<(String, String)>,
    /// `--replicaof 127.0.0.1 <port>`: a replica of the primary on that port.
    pub replica_of: Option<u16>,
    /// A Redis Cluster node (`nodes.conf` in its directory, so a restart rejoins).
    pub cluster: bool,
}

/// A private `redis-server`, stopped on drop.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    opts: RedisOptions,
    child: Option<std::process::Child>,
}

impl Redis {
    /// Starts one (plaintext, no password) and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts one as `opts` says and waits until it accepts connections.
    pub fn start_with(opts: RedisOptions) -> Self {
        let dir = scratch_dir("redis");
        let port = free_port();
        let mut r = Self { port, dir, opts, child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        match &self.opts.tls {
            None => cmd.args(["--port", &port]),
            Some(pki) => cmd
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca),
        };
        if let Some(pass) = &self.opts.password {
            cmd.args(["--requirepass", pass]);
        }
        if let Some((user, pass)) = &self.opts.acl_user {
            cmd.args(["--user", user, "on", &format!(">{pass}"), "~*", "&*", "+@all"]);
        }
        if self.opts.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]);
        }
        if let Some(primary) = self.opts.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::fs::File::create(self.dir.join("redis.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// The URL the services use: `redis://` or `rediss://`, with the ACL user's credentials when
    /// there is one, else the default user's password when there is one.
    pub fn url(&self) -> String {
        let userinfo = match (&self.opts.acl_user, &self.opts.password) {
            (Some((user, pass)), _) => format!("{user}:{pass}@"),
            (None, Some(pass)) => format!(":{pass}@"),
            (None, None) => String::new(),
        };
        self.url_with_userinfo(&userinfo)
    }

    /// The URL with `userinfo` (`user:pass@`, `:pass@` or empty) instead of the right one.
    pub fn url_with_userinfo(&self, userinfo: &str) -> String {
        let scheme = if self.opts.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{userinfo}127.0.0.1:{}", self.port)
    }

    /// A client for the test itself (trusting the test CA when the server speaks TLS).
    pub fn client(&self) -> redis::Client {
        match &self.opts.tls {
            None => redis::Client::open(self.url()).expect("redis URL"),
            Some(pki) => {
                let root = std::fs::read(&pki.ca).expect("read CA");
                redis::Client::build_with_tls(self.url(), redis::TlsCertificates { client_tls: None, root_cert: Some(root) })
                    .expect("redis TLS client")
            }
        }
    }

    /// Kills the server (to test fail-closed behaviour).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a stopped server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Where its log is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listening on port {port} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
