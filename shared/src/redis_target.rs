//! Where Redis is and how it is trusted: `REDIS_URL` and `REDIS_CA_FILE`, read the same way by
//! both binaries.
//!
//! - Credentials ride in the URL, as the redis crate reads them: `redis://:PASSWORD@host` for
//!   `requirepass`, `redis://USER:PASSWORD@host` for an ACL user. Production refuses a URL without
//!   a password (seed 003: "Use Redis AUTH passwords"): anyone who reaches an open Redis can forge
//!   JTI markers or drop stream entries.
//! - `rediss://` speaks TLS (rustls, TLS ≥ 1.2), verifying the server's certificate and host name
//!   against the system roots, or only against the PEM CAs in `REDIS_CA_FILE` when it is set (a
//!   private CA). The redis crate's `#insecure` fragment is refused: it would switch verification
//!   off, and this build cannot honour it anyway.
//! - Plaintext `redis://` is accepted in production (Redis on the host or a private network), and
//!   the binaries say so at start ([`RedisTarget::is_tls`]).
//!
//! - High availability (`docs/redis.md`): `REDIS_SENTINELS` (`host:port,…`) and
//!   `REDIS_SENTINEL_MASTER` name the Sentinels and the primary's name; the host in `REDIS_URL`
//!   is then ignored, its scheme, credentials and database still apply, and the Sentinels are
//!   spoken to with the same scheme and CA (`REDIS_SENTINEL_PASSWORD` when they require AUTH,
//!   which production demands). `REDIS_MIN_REPLICAS` and `REDIS_REPLICA_TIMEOUT` make the writes
//!   that must survive a failover wait for replicas ([`Durability`]). `REDIS_CLUSTER_NODES`
//!   (`host:port,…`, some of the nodes) speaks to a Redis Cluster instead, with `REDIS_URL`'s
//!   scheme, credentials and CA.
//!
//! Messages and `Debug` never show the URL's password.

use redis::IntoConnectionInfo as _;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};

use crate::config_env::Reader;
pub use crate::redis_primary::Durability;
use crate::redis_primary::Primary;

/// A checked Redis endpoint.
#[derive(Clone)]
pub struct RedisTarget {
    url: String,
    ca_pem: Option<Vec<u8>>,
    sentinels: Option<Sentinels>,
    /// Some nodes of a Redis Cluster (the client learns the rest).
    cluster: Option<Vec<(String, u16)>>,
    durability: Durability,
}

/// The Sentinels that name the primary.
#[derive(Clone)]
struct Sentinels {
    nodes: Vec<(String, u16)>,
    master: String,
    password: Option<String>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("tls", &self.is_tls())
            .field("private_ca", &self.ca_pem.is_some())
            .field("sentinels", &self.sentinels.as_ref().map(|s| s.nodes.len()))
            .field("cluster", &self.cluster.as_ref().map(Vec::len))
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// Reads `REDIS_URL` (required, or `REDIS_URL_FILE`) and `REDIS_CA_FILE`; every problem goes
    /// to `r`.
    pub fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let url = r.required("REDIS_URL").unwrap_or_default();
        let ca_pem = r.ca_file("REDIS_CA_FILE");
        let sentinels = read_sentinels(r, production);
        let cluster = r.optional("REDIS_CLUSTER_NODES").map(|list| nodes(r, "REDIS_CLUSTER_NODES", &list));
        if cluster.is_some() && sentinels.is_some() {
            r.problem("REDIS_CLUSTER_NODES", "set REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both");
        }
        let durability = Durability {
            replicas: r.parse("REDIS_MIN_REPLICAS", 0),
            timeout: r.duration("REDIS_REPLICA_TIMEOUT", Durability::default().timeout),
        };
        let target = Self { url, ca_pem, sentinels, cluster, durability };
        if target.url.is_empty() {
            return target;
        }
        match check(&target.url, production) {
            Err(problem) => r.problem("REDIS_URL", problem),
            Ok(tls) => {
                if !tls && (target.ca_pem.is_some() || r.has_problems_for("REDIS_CA_FILE")) {
                    r.problem("REDIS_CA_FILE", "is only used with a rediss:// REDIS_URL");
                }
            }
        }
        target
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// Whether the primary is found through Sentinels.
    pub fn has_sentinels(&self) -> bool {
        self.sentinels.is_some()
    }

    /// What writes that must survive a failover wait for.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// What weakens failover, said once at start.
    pub fn failover_warning(&self) -> Option<&'static str> {
        (self.sentinels.is_some() && self.durability.replicas == 0).then_some(
            "REDIS_SENTINELS without REDIS_MIN_REPLICAS: a write acknowledged just before a failover can be lost, so a spent mandate could be accepted once more; set REDIS_MIN_REPLICAS to the number of replicas",
        )
    }

    /// Where the primary is found: this address, or whatever the Sentinels name.
    pub fn primary(&self) -> redis::RedisResult<Primary> {
        let info = self.url.as_str().into_connection_info()?;
        let settings = info.redis_settings();
        if let Some(nodes) = &self.cluster {
            let scheme = if self.is_tls() { "rediss" } else { "redis" };
            let mut b = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(|(h, p)| format!("{scheme}://{h}:{p}")))
                // A retried `SET NX` that had landed reads as a replay: fail instead, once.
                .retries(1);
            if let Some(user) = settings.username() {
                b = b.username(user);
            }
            if let Some(password) = settings.password() {
                b = b.password(password);
            }
            if self.is_tls() {
                b = b.tls(redis::TlsMode::Secure);
                if let Some(ca) = &self.ca_pem {
                    b = b.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) });
                }
            }
            return Ok(Primary::cluster(b.build()?, self.durability));
        }
        let Some(s) = &self.sentinels else { return Ok(Primary::fixed(self.client()?, self.durability)) };
        let nodes = s.nodes.iter().map(|(host, port)| match self.is_tls() {
            false => redis::ConnectionAddr::Tcp(host.clone(), *port),
            true => redis::ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None },
        });
        let mut b = SentinelClientBuilder::new(nodes, &s.master, SentinelServerType::Master)?.set_client_to_redis_db(settings.db());
        if let Some(user) = settings.username() {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            b = b.set_client_to_redis_password(password);
        }
        if let Some(password) = &s.password {
            b = b.set_client_to_sentinel_password(password);
        }
        if self.is_tls() {
            b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure).set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if let Some(ca) = &self.ca_pem {
                let certs = || redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) };
                b = b.set_client_to_redis_certificates(certs()).set_client_to_sentinel_certificates(certs());
            }
        }
        Ok(Primary::sentinels(b.build()?, self.durability))
    }

    /// A client for `REDIS_URL`'s address (connections open later, on first use). Behind
    /// Sentinels, use [`Self::primary`].
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca_pem {
            None => redis::Client::open(self.url.as_str()),
            Some(ca) => {
                redis::Client::build_with_tls(self.url.as_str(), redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) })
            }
        }
    }
}

/// `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_PASSWORD`; every problem to `r`.
fn read_sentinels(r: &mut Reader<'_>, production: bool) -> Option<Sentinels> {
    let list = r.optional("REDIS_SENTINELS");
    let master = r.optional("REDIS_SENTINEL_MASTER");
    let password = r.optional("REDIS_SENTINEL_PASSWORD");
    let Some(list) = list else {
        for (name, set) in [("REDIS_SENTINEL_MASTER", master.is_some()), ("REDIS_SENTINEL_PASSWORD", password.is_some())] {
            if set {
                r.problem(name, "is only used with REDIS_SENTINELS");
            }
        }
        return None;
    };
    let nodes = nodes(r, "REDIS_SENTINELS", &list);
    if master.is_none() {
        r.problem("REDIS_SENTINEL_MASTER", "is required with REDIS_SENTINELS: the name the Sentinels monitor the primary under");
    }
    if production && password.is_none() {
        r.problem(
            "REDIS_SENTINEL_PASSWORD",
            "is required in production with REDIS_SENTINELS: whoever can reconfigure an open Sentinel chooses the Redis that JTI checks go to",
        );
    }
    Some(Sentinels { nodes, master: master.unwrap_or_default(), password })
}

/// A comma-separated `host:port` list; each bad entry is a problem for `name`.
fn nodes(r: &mut Reader<'_>, name: &str, list: &str) -> Vec<(String, u16)> {
    let mut nodes = Vec::new();
    for entry in list.split(',').map(str::trim) {
        match entry.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((host, Ok(port))) if !host.is_empty() && port > 0 => nodes.push((host.to_owned(), port)),
            _ => r.problem(name, format!("{entry:?} is not host:port (a comma-separated list)")),
        }
    }
    nodes
}

/// Checks `url`; `Ok(is_tls)` or the problem (never quoting the URL).
fn check(url: &str, production: bool) -> Result<bool, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("cannot be parsed: {e}"))?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        _ => return Err("must be a redis:// or rediss:// URL".into()),
    };
    if parsed.fragment().is_some() {
        return Err("must not carry a #fragment (#insecure would switch certificate checks off; use REDIS_CA_FILE for a private CA)".into());
    }
    let info = url.into_connection_info().map_err(|e| format!("cannot be parsed: {e}"))?;
    let has_password = info.redis_settings().password().is_some_and(|p| !p.is_empty());
    if production && !has_password {
        return Err(
            "must carry a password in production: redis://:PASSWORD@host (requirepass) or redis://USER:PASSWORD@host (ACL user)".into()
        );
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config_env::Reader;

    fn read(pairs: &[(&str, &str)], production: bool) -> (RedisTarget, Result<(), crate::config_env::ConfigErrors>) {
        let src: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut r = Reader::new(&src);
        let t = RedisTarget::read(&mut r, production);
        (t, r.finish())
    }

    #[test]
    fn production_needs_a_password_in_the_url() {
        for ok in ["redis://:pw@127.0.0.1:6379", "rediss://caracal:pw@redis.internal:6380/0", "redis://u:p%40ss@h"] {
            let (t, res) = read(&[("REDIS_URL", ok)], true);
            assert!(res.is_ok(), "{ok}: {res:?}");
            assert_eq!(t.is_tls(), ok.starts_with("rediss"));
            t.client().expect("a client is built");
        }
        for bare in ["redis://127.0.0.1:6379", "rediss://caracal@redis.internal", "redis://:@h"] {
            let (_, res) = read(&[("REDIS_URL", bare)], true);
            assert!(res.unwrap_err().mentions("REDIS_URL"), "{bare}");
            assert!(read(&[("REDIS_URL", bare)], false).1.is_ok(), "dev accepts {bare}");
        }
    }

    #[test]
    fn bad_urls_and_misplaced_cas_are_named_without_the_password() {
        for bad in ["http://:hunter2@h", "rediss://:hunter2@h#insecure", "redis://:hunter2@h:port", "redis://:hunter2@h/notadb"] {
            let (_, res) = read(&[("REDIS_URL", bad)], false);
            let errs = res.unwrap_err();
            assert!(errs.mentions("REDIS_URL"), "{bad}: {errs}");
            assert!(!errs.to_string().contains("hunter2"), "{errs}");
        }
        let (_, res) = read(&[("REDIS_URL", "redis://h"), ("REDIS_CA_FILE", "/nonexistent/ca.pem")], false);
        let errs = res.unwrap_err();
        assert!(errs.mentions("REDIS_CA_FILE") && errs.to_string().contains("rediss://"), "{errs}");
        let (t, res) = read(&[("REDIS_URL", "rediss://:secret@h")], false);
        assert!(res.is_ok());
        assert!(!format!("{t:?}").contains("secret"), "Debug hides the URL");
    }

    #[test]
    fn sentinels_need_a_master_name_valid_addresses_and_in_production_a_password() {
        let url = ("REDIS_URL", "redis://:pw@ignored:6379/2");
        let (t, res) = read(&[url, ("REDIS_SENTINELS", "10.0.0.1:26379, s2.internal:26380"), ("REDIS_SENTINEL_MASTER", "caracal")], false);
        assert!(res.is_ok(), "{res:?}");
        assert!(t.has_sentinels());
        assert!(t.failover_warning().is_some(), "no replicas awaited: said at start");
        t.primary().expect("a Sentinel-backed primary is built");
        let errs = read(&[url, ("REDIS_SENTINELS", "10.0.0.1:26379,nohost,:1,h:0,h:99999"), ("REDIS_SENTINEL_PASSWORD", "s3cret")], true)
            .1
            .unwrap_err();
        for bad in ["nohost", "\":1\"", "h:0", "h:99999"] {
            assert!(errs.to_string().contains(bad), "{bad}: {errs}");
        }
        assert!(errs.mentions("REDIS_SENTINEL_MASTER"), "{errs}");
        assert!(!errs.to_string().contains("s3cret"), "{errs}");
        let errs = read(&[url, ("REDIS_SENTINELS", "h:1"), ("REDIS_SENTINEL_MASTER", "m")], true).1.unwrap_err();
        assert!(errs.mentions("REDIS_SENTINEL_PASSWORD"), "production asks the Sentinels for AUTH: {errs}");
        for lone in ["REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"] {
            let errs = read(&[url, (lone, "x")], false).1.unwrap_err();
            assert!(errs.mentions(lone) && errs.to_string().contains("only used with REDIS_SENTINELS"), "{errs}");
        }
    }

    #[test]
    fn a_cluster_is_named_by_some_of_its_nodes_and_excludes_sentinels() {
        let url = ("REDIS_URL", "redis://:pw@ignored:6379");
        let (t, res) = read(&[url, ("REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2:7000")], true);
        assert!(res.is_ok(), "{res:?}");
        t.primary().expect("a cluster client is built");
        let errs = read(&[url, ("REDIS_CLUSTER_NODES", "10.0.0.1"), ("REDIS_SENTINELS", "h:1"), ("REDIS_SENTINEL_MASTER", "m")], false)
            .1
            .unwrap_err();
        assert!(errs.to_string().contains("\"10.0.0.1\" is not host:port"), "{errs}");
        assert!(errs.to_string().contains("not both"), "{errs}");
    }

    #[test]
    fn writes_wait_for_the_replicas_asked_for() {
        let (t, res) = read(&[("REDIS_URL", "redis://h"), ("REDIS_MIN_REPLICAS", "2"), ("REDIS_REPLICA_TIMEOUT", "250ms")], false);
        assert!(res.is_ok(), "{res:?}");
        assert_eq!(t.durability(), Durability { replicas: 2, timeout: std::time::Duration::from_millis(250) });
        assert!(t.failover_warning().is_none(), "no Sentinels: nothing to warn about");
        let (t, _) = read(&[("REDIS_URL", "redis://h")], false);
        assert_eq!(t.durability().replicas, 0, "the primary alone by default");
        let errs = read(&[("REDIS_URL", "redis://h"), ("REDIS_MIN_REPLICAS", "-1"), ("REDIS_REPLICA_TIMEOUT", "0s")], false).1.unwrap_err();
        assert!(errs.mentions("REDIS_MIN_REPLICAS") && errs.mentions("REDIS_REPLICA_TIMEOUT"), "{errs}");
    }
}
