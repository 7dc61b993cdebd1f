//! Micro-benchmarks of the per-request hot path (`cargo bench -p caracal-bench --bench hot_path`).
//!
//! - `token/peek+claims`: split the bearer, decode its claims, check use/iss/aud/target (gateway).
//! - `token/verify_es256`: the ES256 signature check against a parsed key (gateway and STS).
//! - `revocation/gateway_view_*`: the gateway's revocation view, a mandate's four anchors checked
//!   against 10,000 revoked ones (miss: the common case; hit). `revocation/sts_roots_*`: the STS's
//!   revoked-root set, looked up on every exchange (1,000 revoked roots).
//! - `headers/upstream_request`: request hygiene and credential injection toward the upstream.
//! - `policy/evaluate_allow`: one `caracal_sts::policy::evaluate` of the bench's allow policy on
//!   the STS's input shape (conversion in and out included).
//! - `upstream/single_resolve` vs `upstream/pool_peer_3`: the gateway's choice of peer for one fixed
//!   upstream (`upstream::resolve`) and for a pool of three (`Pools::peer`: cached pool, round robin,
//!   in-flight hold), and `directive/parse_{single,pool_3}`: the directive's JSON without and with the
//!   three endpoints. Their differences are the pool's own cost per request, next to S7's CPU ratio.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use caracal_gateway::phases::auth::{check_claims, peek};
use caracal_gateway::phases::egress::{Egress, SystemResolver};
use caracal_gateway::phases::headers::{Outbound, upstream_request};
use caracal_gateway::phases::pool::{Pools, RequestKey};
use caracal_gateway::phases::upstream::{self, Credential, SafePeer};
use caracal_shared::Claims;
use caracal_shared::exchange::UpstreamDirective;
use caracal_shared::jws::{Compact, SigningKey};
use caracal_shared::mandate::{SubType, Use};
use caracal_shared::pool::Endpoint;
use caracal_shared::revocation::{RevocationView, Revoked};
use caracal_sts::revoked::RevokedRoots;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pingora::http::RequestHeader;
use serde_json::json;

const ISSUER: &str = "http://127.0.0.1:8080";
const RESOURCE: &str = "https://bench.local";

const ALLOW_POLICY: &str = r#"package caracal.authz

import rego.v1

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["bench-allow"], "diagnostics": []} if {
	input.principal.type == "Application"
}
"#;

fn claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: "app-0190f3a1".into(),
        aud: vec![ISSUER.into()],
        exp: 4_000_000_000,
        iat: 1_700_000_000,
        jti: uuid::Uuid::now_v7().to_string(),
        zone_id: "zone-0190f3a1".into(),
        client_id: "app-0190f3a1".into(),
        scope: "bench.read".into(),
        sid: uuid::Uuid::now_v7().to_string(),
        root_sid: uuid::Uuid::now_v7().to_string(),
        token_use: Use::Gateway,
        sub_type: SubType::Application,
        target: vec![RESOURCE.into()],
        agent_session_id: None,
        delegation_edge_id: None,
        delegation_path: vec![],
        delegation_chain: vec![],
        hop_count: None,
        delegation_graph_epoch: None,
        approval_id: None,
        mcp_calls: vec![],
    }
}

fn token(c: &mut Criterion) {
    let (key, _) = SigningKey::generate("bench-k1").expect("key");
    let token = key.sign(&claims()).expect("sign");
    let verifying = key.verifying_key();
    let mut g = c.benchmark_group("token");
    g.bench_function("peek+claims", |b| {
        b.iter(|| {
            let p = peek(black_box(&token)).expect("well formed");
            check_claims(&p, ISSUER, RESOURCE).expect("claims hold");
        })
    });
    g.bench_function("verify_es256", |b| {
        b.iter(|| Compact::parse(black_box(&token)).and_then(|c| c.verify(&verifying)).expect("verifies"))
    });
    g.finish();
}

fn revocation(c: &mut Criterion) {
    let mut g = c.benchmark_group("revocation");
    let view = RevocationView::new(Duration::from_secs(70), false, false);
    let expires_at = chrono::Utc::now().timestamp() + 3_600;
    let revoked: Vec<Revoked> = (0..10_000).map(|_| Revoked { anchor: uuid::Uuid::now_v7().to_string(), expires_at }).collect();
    view.add(&revoked);
    let live = claims();
    let hit = Claims { root_sid: revoked[5_000].anchor.clone(), ..claims() };
    g.bench_function("gateway_view_miss", |b| b.iter(|| assert!(!view.any_revoked(black_box(&live).anchors()))));
    g.bench_function("gateway_view_hit", |b| b.iter(|| assert!(view.any_revoked(black_box(&hit).anchors()))));

    // Never reloaded, so the staleness bound must exceed the time since the epoch.
    let roots = RevokedRoots::new(Duration::from_secs(100 * 365 * 86_400));
    for r in &revoked[..1_000] {
        roots.insert("zone-0190f3a1", &r.anchor);
    }
    let zone = "zone-0190f3a1";
    g.bench_function("sts_roots_hit", |b| {
        b.iter(|| assert_eq!(roots.is_revoked(black_box(zone), black_box(&revoked[500].anchor)), Some(true)))
    });
    g.bench_function("sts_roots_miss", |b| {
        b.iter(|| assert_eq!(roots.is_revoked(black_box(zone), black_box(&live.root_sid)), Some(false)))
    });
    // A revocation landing while 100 000 anchors are held (a zone archived, a storm of revokes):
    // the cost of one more insert, which the mint path's readers must not wait behind.
    let storm = RevokedRoots::new(Duration::from_secs(100 * 365 * 86_400));
    let many: Vec<String> = (0..100_000).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    storm.insert_many(zone, &many.iter().map(String::as_str).collect::<Vec<_>>());
    let mut next = 0usize;
    g.bench_function("sts_roots_insert_with_100k_held", |b| {
        b.iter(|| {
            next = (next + 1) % many.len();
            storm.insert(black_box(zone), black_box(&many[next]));
        })
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let peer = SafePeer {
        addr: "127.0.0.1:9000".parse().expect("addr"),
        tls: false,
        host: "127.0.0.1".into(),
        authority: "127.0.0.1:9000".into(),
        base_path: String::new(),
        base_query: None,
        credential: Credential::CaracalJwt { header: http::header::AUTHORIZATION, scheme: "Bearer".into() },
        forward_identity: false,
        timeouts: Default::default(),
        http2: false,
    };
    let mandate = "eyJhbGciOiJFUzI1NiJ9.".to_owned() + &"x".repeat(600);
    let inbound = || {
        let mut req = RequestHeader::build("GET", b"/v1/items/42?expand=1", None).expect("request");
        for (k, v) in [
            ("host", "gw.local"),
            ("authorization", "Bearer inbound-gateway-mandate"),
            ("x-caracal-resource", RESOURCE),
            ("x-forwarded-for", "6.6.6.6"),
            ("accept", "application/json"),
            ("user-agent", "agent/1.0"),
            ("baggage", "caracal.zone=z, user=alice"),
        ] {
            req.append_header(k.to_string(), v).expect("header");
        }
        req
    };
    c.bench_function("headers/upstream_request", |b| {
        b.iter_batched(
            inbound,
            |mut req| {
                let out = Outbound {
                    peer: &peer,
                    mandate: &mandate,
                    request_id: "0190f3a1-rid",
                    client_ip: Some("127.0.0.1".into()),
                    tls_downstream: false,
                    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                    tracestate: None,
                };
                upstream_request(&mut req, &out).expect("hygiene");
                req
            },
            BatchSize::SmallInput,
        )
    });
}

fn policy(c: &mut Criterion) {
    let active = caracal_sts::policy::ActivePolicy::new("ps", "v1", caracal_sts::policy::compile(ALLOW_POLICY).expect("policy compiles"));
    let input = json!({
        "schema_version": caracal_sts::policy::INPUT_SCHEMA_VERSION,
        "principal": {"type": "Application", "id": "app-0190f3a1", "zone_id": "zone-0190f3a1", "traits": []},
        "resource": {"type": "Resource", "id": "res-1", "identifier": RESOURCE, "scopes": ["bench.read"]},
        "action": {"id": "TokenExchange", "use": "gateway"},
        "session": {"id": "s1", "root_id": "s0"},
        "context": {
            "requested_scopes": ["bench.read"],
            "subject_claims": {"use": "session", "scope": "", "target": [RESOURCE], "sub": "app-0190f3a1", "sub_type": "application"},
            "request_id": "0190f3a1-rid",
        },
    });
    c.bench_function("policy/input_serde", |b| b.iter(|| regorus::Value::from(black_box(&input).clone())));
    c.bench_function("policy/input_direct", |b| b.iter(|| caracal_sts::policy::engine_value(black_box(&input).clone())));
    c.bench_function("policy/evaluate_allow", |b| {
        b.iter(|| {
            let decision = caracal_sts::policy::evaluate(Some(&active), black_box(&input)).expect("evaluates");
            assert!(decision.allow);
        })
    });
}

fn upstream_choice(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // Private addresses allowed, as in the bench; IP literals, so no name is resolved.
    let egress = Egress::new(true, vec![], Arc::new(SystemResolver), Duration::from_secs(300));
    let urls = ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"];
    let single = UpstreamDirective { url: urls[0].into(), auth_mode: "none".into(), ..Default::default() };
    let pooled = UpstreamDirective {
        endpoints: urls.iter().map(|u| Endpoint { url: (*u).into(), weight: 1, drain: false }).collect(),
        ..single.clone()
    };
    let metrics = caracal_gateway::phases::pool::metrics::UpstreamMetrics::new(&prometheus::Registry::new(), 8).expect("metrics");
    let pools = Pools::new(Duration::from_secs(300), Arc::new(metrics));
    let headers = http::HeaderMap::new();
    let key = RequestKey { headers: &headers, path: "/v1/items/42", sid: "s1", root_sid: "r1", request_id: "0190f3a1-rid" };
    let mut g = c.benchmark_group("upstream");
    g.bench_function("single_resolve", |b| b.iter(|| rt.block_on(upstream::resolve(black_box(&single), &egress)).expect("resolves")));
    // The gateway takes the endpoint set out of the directive it just parsed: a fresh copy per call.
    g.bench_function("pool_peer_3", |b| {
        b.iter_batched(
            || pooled.clone(),
            |mut d| rt.block_on(pools.route(&mut d, RESOURCE, &key, &egress)).expect("picks"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let single_json = serde_json::to_string(&single).expect("serializes");
    let pooled_json = serde_json::to_string(&pooled).expect("serializes");
    let mut g = c.benchmark_group("directive");
    g.bench_function("parse_single", |b| b.iter(|| serde_json::from_str::<UpstreamDirective>(black_box(&single_json)).expect("parses")));
    g.bench_function("parse_pool_3", |b| b.iter(|| serde_json::from_str::<UpstreamDirective>(black_box(&pooled_json)).expect("parses")));
    g.finish();
}

criterion_group!(hot_path, token, revocation, headers, policy, upstream_choice);
criterion_main!(hot_path);
