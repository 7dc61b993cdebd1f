//! `POST /oauth/2/token`: the three exchanges of this STS.
//!
//! * **session** — client credentials, no subject token ⇒ `use=session`, `aud=[issuer]`; a root
//!   session (authority record) is written so it can be revoked.
//! * **gateway** — client credentials plus the caller's own session mandate as `subject_token`,
//!   with `resource` and `scope` ⇒ `use=gateway`, single use at the gateway. Narrows only: scopes
//!   within the resources', resources within the session's targets (when it has any).
//! * **resource** — the gateway's signed exchange with a gateway mandate as `subject_token` ⇒
//!   `use=resource`, `aud=[resource]`, plus the upstream directive. The operation (method, path) is
//!   checked against an enforced resource's declarations here.
//!
//! Every exchange evaluates the zone's active policy for every resource; nothing is issued without an
//! `allow`, and a missing policy denies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use caracal_shared::exchange::{TOKEN_TYPE_ACCESS_TOKEN, TokenResponse, UpstreamDirective};
use caracal_shared::jws::Compact;
use caracal_shared::mandate::{Claims, SubType, Use};
use caracal_shared::sig;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::policy;
use crate::step_up::{self, holds};
use crate::store::{self, Application, Resource};

/// What the policy granted for one request.
struct Grant {
    /// The granted resources in request order (`None`: a mint that names no resource).
    resources: Vec<Option<Arc<Resource>>>,
    /// The step-up the allowing decisions demand.
    step_up: Option<step_up::Requirement>,
    /// The policy version that decided.
    policy_version_id: Option<String>,
}

impl Grant {
    fn targets(&self) -> Vec<String> {
        self.resources.iter().flatten().map(|r| r.identifier.clone()).collect()
    }
}

/// The HTTP-independent view of a token request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    /// Correlation id (validated `X-Request-Id` or generated).
    pub request_id: &'a str,
    /// HTTP method and path, covered by the gateway signature.
    pub method: &'a str,
    pub path: &'a str,
    /// The gateway signature headers, if any of them was sent.
    pub gateway: Option<GatewaySignature<'a>>,
    /// The raw form body.
    pub body: &'a [u8],
}

/// The three `X-Caracal-Gateway-*` headers; any may be missing.
#[derive(Debug, Default)]
pub struct GatewaySignature<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// `X-Request-Id` as sent; must equal the form's `gateway_request_id`.
    pub request_id_header: Option<&'a str>,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn ttl_for(requested: Option<u64>, default: Duration, cap: u64) -> Result<u64, StsError> {
    match requested {
        None | Some(0) => Ok(default.as_secs()),
        Some(t) if t > cap => Err(StsError::InvalidRequest(format!("ttl_seconds exceeds the {cap} s cap"))),
        Some(t) => Ok(t),
    }
}

impl Sts {
    /// Handles one token request and records its outcome in the metrics.
    pub async fn token(&self, req: TokenRequest<'_>) -> Result<TokenResponse, StsError> {
        let timer = self.metrics.exchange_seconds.start_timer();
        let out = match TokenForm::parse(req.body) {
            Ok(form) => {
                let out = self.token_inner(&req, &form).await;
                self.record(&req, &form, &out).await;
                out
            }
            Err(e) => Err(e),
        };
        timer.observe_duration();
        match &out {
            Ok(_) => {}
            Err(e) => {
                self.metrics.denials.with_label_values(&[e.metric_label()]).inc();
                match e {
                    StsError::Unavailable(cause) | StsError::Internal(cause) | StsError::PolicyEvalFailed(cause) => {
                        tracing::error!(request_id = req.request_id, error = %cause, "token exchange failed")
                    }
                    _ => tracing::info!(request_id = req.request_id, error = %e, "token exchange denied"),
                }
            }
        }
        out
    }

    /// Evidence of a decided exchange (`token_exchange`): who asked for what, the decision and
    /// the reason code, the mandate's anchors and `jti` on an allow. Never a token or a secret.
    /// Malformed requests and unknown zones leave no row: nothing was decided for anyone.
    /// Refused per-request exchanges are recorded here; allowed ones by the gateway.
    async fn record(&self, req: &TokenRequest<'_>, form: &TokenForm, out: &Result<TokenResponse, StsError>) {
        let Some(tx) = self.evidence.get() else { return };
        if !caracal_shared::mandate::is_valid_id(&form.zone_id) || matches!(out, Err(StsError::InvalidRequest(_) | StsError::ZoneNotFound))
        {
            return;
        }
        // An allowed per-request exchange is evidenced by the gateway's own event for the same
        // request id (it knows the outcome upstream too); one row per governed call, not two.
        if req.gateway.is_some() && out.is_ok() {
            return;
        }
        let class = match (req.gateway.is_some(), form.subject_token.is_some(), form.agent_session_id.is_some()) {
            (true, ..) => "resource_exchange",
            (false, _, true) => "delegated_mint",
            (false, true, false) => "gateway_mint",
            (false, false, false) => "session_mint",
        };
        let mut meta = json!({
            "class": class,
            "application_id": form.application_id,
            "resources": form.resources,
            "requested_scopes": form.scopes,
            "agent_session_id": form.agent_session_id,
            "delegation_edge_id": form.delegation_edge_id,
            "approval_id": form.approval_id,
            "method": form.request_method,
            "path": form.request_path,
        });
        let (decision, status) = match out {
            Ok(resp) => {
                meta["policy_version_id"] = resp.policy_version_id.clone().into();
                if let Ok(c) = Compact::parse(&resp.access_token).and_then(|t| t.claims::<Claims>()) {
                    meta["session_id"] = c.sid.into();
                    meta["root_sid"] = c.root_sid.into();
                    meta["jti"] = c.jti.into();
                    meta["use"] = c.token_use.as_str().into();
                    meta["expires_at"] = c.exp.into();
                    if c.agent_session_id.is_some() {
                        meta["agent_session_id"] = c.agent_session_id.into();
                    }
                }
                ("allow", "complete".to_owned())
            }
            Err(e) => {
                meta["reason"] = e.wire().2.into();
                ("deny", e.metric_label().to_owned())
            }
        };
        let event = caracal_shared::audit::AuditEvent::new(&form.zone_id, "token_exchange", req.request_id, decision, &status, meta);
        caracal_shared::audit::enqueue(tx, event).await;
    }

    async fn token_inner(&self, req: &TokenRequest<'_>, form: &TokenForm) -> Result<TokenResponse, StsError> {
        if let Some(gw) = &req.gateway {
            self.verify_gateway_signature(gw, req, form).await?;
            let subject = form.subject_token.as_deref().ok_or_else(|| StsError::InvalidRequest("subject_token is required".into()))?;
            return self.resource_exchange(form, subject, req.request_id).await;
        }
        let app = self.authenticate(form).await?;
        match (form.subject_token.as_deref(), form.agent_session_id.as_deref(), form.delegation_edge_id.as_deref()) {
            (None, Some(session), Some(edge)) => self.delegated_mint(form, &app, session, edge, req.request_id).await,
            (_, Some(_), None) | (_, None, Some(_)) => {
                Err(StsError::InvalidRequest("agent_session_id and delegation_edge_id go together".into()))
            }
            (Some(_), Some(_), Some(_)) => Err(StsError::InvalidRequest("a delegated mint takes no subject_token".into())),
            (Some(subject), None, None) => self.gateway_mint(form, &app, subject, req.request_id).await,
            (None, None, None) => self.session_mint(form, &app, req.request_id).await,
        }
    }

    /// Client authentication: one generic failure for unknown app, archived app and wrong secret.
    /// A locked-out or over-limit client is refused before its secret is looked at; every bad
    /// credential counts towards a lockout.
    async fn authenticate(&self, form: &TokenForm) -> Result<Arc<Application>, StsError> {
        let (Some(app_id), Some(secret)) = (form.application_id.as_deref(), form.client_secret.as_deref()) else {
            return Err(StsError::InvalidClient);
        };
        self.limits.admit(&form.zone_id, app_id).await?;
        let app = self.catalog.application(&form.zone_id, app_id).await?;
        let presented = sig::sha256(secret.as_bytes());
        match app {
            Some(app) if sig::ct_eq(&app.client_secret_sha256, &presented) => Ok(app),
            _ => {
                self.limits.record_failure(&form.zone_id, app_id).await?;
                Err(StsError::InvalidClient)
            }
        }
    }

    async fn verify_gateway_signature(&self, gw: &GatewaySignature<'_>, req: &TokenRequest<'_>, form: &TokenForm) -> Result<(), StsError> {
        let key = self.cfg.gateway_hmac_key.as_deref().ok_or(StsError::InvalidGatewaySignature)?;
        let (Some(ts), Some(nonce), Some(signature)) = (gw.timestamp, gw.nonce, gw.signature) else {
            return Err(StsError::InvalidGatewaySignature);
        };
        let skew = self.cfg.clock_skew.as_secs() as i64;
        let ts_ok = ts.parse::<i64>().is_ok_and(|t| (now().timestamp() - t).abs() <= skew);
        let nonce_ok = (32..=128).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit());
        let correlated = gw.request_id_header.is_some() && gw.request_id_header == form.gateway_request_id.as_deref();
        if !ts_ok || !nonce_ok || !correlated || !sig::verify_gateway_signature(key, ts, nonce, req.method, req.path, req.body, signature) {
            return Err(StsError::InvalidGatewaySignature);
        }
        // Single use of the nonce; Redis failure refuses the exchange.
        let fresh: bool = redis::cmd("SET")
            .arg(format!("caracal:sts:gw-nonce:{nonce}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(2 * skew.max(1))
            .query_async::<Option<String>>(&mut self.redis.clone())
            .await?
            .is_some();
        if fresh { Ok(()) } else { Err(StsError::InvalidGatewaySignature) }
    }

    /// Verifies a presented mandate: signature by a published key of the zone, issuer, audience,
    /// lifetime, and `use`.
    ///
    /// A session mandate is presented again for every mint, so its signature check is remembered,
    /// keyed by the SHA-256 of the exact token bytes (a re-encoded signature is different bytes and
    /// is verified afresh). Only the signature is remembered: expiry, `use` and revocation are
    /// checked on every use.
    async fn verify_subject(&self, zone_id: &str, token: &str, expected: Use) -> Result<Claims, StsError> {
        let memo_key = (expected == Use::Session).then(|| sig::sha256(token.as_bytes()));
        let claims = match memo_key.and_then(|k| self.verified_sessions.get(&k)) {
            Some(known) => Claims::clone(&known),
            None => {
                let claims = self.verify_signature(zone_id, token).await?;
                if let Some(k) = memo_key {
                    self.verified_sessions.insert(k, Arc::new(claims.clone()));
                }
                claims
            }
        };
        if claims.zone_id != zone_id {
            return Err(StsError::InvalidSubjectToken("zone mismatch"));
        }
        let now = now().timestamp();
        if claims.iss != self.cfg.issuer || !claims.aud.contains(&self.cfg.issuer) {
            return Err(StsError::InvalidSubjectToken("issuer or audience mismatch"));
        }
        if claims.exp <= now {
            return Err(StsError::InvalidSubjectToken("expired"));
        }
        if claims.iat > now + self.cfg.clock_skew.as_secs() as i64 {
            return Err(StsError::InvalidSubjectToken("issued in the future"));
        }
        if claims.token_use != expected {
            return Err(StsError::WrongTokenUse(match expected {
                Use::Session => "subject_token must be a session mandate",
                Use::Gateway => "the gateway exchange accepts only gateway mandates",
                _ => "mandate use not accepted here",
            }));
        }
        Ok(claims)
    }

    /// A session mandate presented to the Coordinator by a runtime (agent SDK): verified like a
    /// `subject_token` (signature, issuer, audience, expiry, `use=session`) and not revoked.
    pub async fn verify_runtime_mandate(&self, zone_id: &str, token: &str) -> Result<Claims, StsError> {
        let claims = self.verify_subject(zone_id, token, Use::Session).await?;
        self.require_live_root(zone_id, &claims)?;
        Ok(claims)
    }

    /// Parses `token` and checks its ES256 signature against the zone's published keys.
    async fn verify_signature(&self, zone_id: &str, token: &str) -> Result<Claims, StsError> {
        let compact = Compact::parse(token).map_err(|_| StsError::InvalidSubjectToken("malformed"))?;
        let claims: Claims = compact.claims().map_err(|_| StsError::InvalidSubjectToken("malformed claims"))?;
        if claims.zone_id != zone_id {
            return Err(StsError::InvalidSubjectToken("zone mismatch"));
        }
        let keys = match self.keys.zone(zone_id).await {
            Ok(k) => k,
            Err(StsError::ZoneNotFound) => return Err(StsError::InvalidSubjectToken("unknown zone")),
            Err(e) => return Err(e),
        };
        let key = keys.verifier(&compact.kid).ok_or(StsError::InvalidSubjectToken("unknown signing key"))?;
        compact.verify(key).map_err(|_| StsError::InvalidSubjectToken("signature invalid"))?;
        Ok(claims)
    }

    /// The root session of a presented mandate must not be revoked. (It existed when the mandate
    /// was minted — the signature proves that — and its expiry bounds the mandate's.)
    fn require_live_root(&self, zone_id: &str, claims: &Claims) -> Result<(), StsError> {
        match self.revoked.any_revoked(zone_id, claims.anchors()) {
            Some(false) => Ok(()),
            Some(true) => Err(StsError::SessionInactive),
            None => Err(StsError::Unavailable("the revoked-session view is stale".into())),
        }
    }

    /// Evaluates the policy for each requested resource; returns the granted ones in order, with
    /// the step-up the allowing decisions demand.
    async fn grant(
        &self,
        zone_id: &str,
        resources: &[String],
        check: impl Fn(Option<&Resource>) -> Result<Value, String>,
    ) -> Result<Grant, StsError> {
        let active = self.policies.active(zone_id).await?;
        let mut granted = Vec::new();
        let mut step_up_decls: Vec<Value> = Vec::new();
        let mut first_reason: Option<String> = None;
        let mut candidates: Vec<Option<Arc<Resource>>> = Vec::new();
        if resources.is_empty() {
            candidates.push(None);
        }
        for identifier in resources {
            match self.catalog.resource(zone_id, identifier).await? {
                Some(r) => candidates.push(Some(r)),
                None => {
                    first_reason.get_or_insert_with(|| "resource_not_found".into());
                }
            }
        }
        for resource in candidates {
            let input = match check(resource.as_deref()) {
                Ok(input) => input,
                Err(reason) => {
                    first_reason.get_or_insert(reason);
                    continue;
                }
            };
            let decision = policy::evaluate(active.as_ref().as_deref(), &input)?;
            self.metrics.policy_evaluations.with_label_values(&[if decision.allow { "allow" } else { "deny" }]).inc();
            if decision.allow {
                granted.push(resource);
                let decls = decision.diagnostics.as_array().into_iter().flatten().filter(|d| d.get("step_up_required").is_some());
                step_up_decls.extend(decls.cloned());
            } else {
                first_reason.get_or_insert_with(|| decision.reason().unwrap_or("policy_denied").to_owned());
            }
        }
        if granted.is_empty() {
            return Err(StsError::AccessDenied(match first_reason {
                Some(r) => format!("policy denied ({r})"),
                None => "policy denied".into(),
            }));
        }
        Ok(Grant {
            resources: granted,
            step_up: step_up::requirement(&step_up_decls)?,
            policy_version_id: active.as_ref().as_ref().map(|p| p.version_id.clone()),
        })
    }

    /// Holds a mint the policy allowed only after a human approval. Returns the approval that
    /// authorizes it: the inherited one when the presented mandate was itself approved and covers
    /// the request, else the consumed hold named by `approval_id` (or the approved live hold for
    /// this exact request). A pending hold answers 401 `interaction_required`; invalid, expired
    /// and rejected approvals count towards the client's step-up throttle.
    async fn step_up_gate(
        &self,
        form: &TokenForm,
        grant: &Grant,
        subject: step_up::Subject<'_>,
        inherited: Option<&str>,
        request_id: &str,
    ) -> Result<Option<String>, StsError> {
        let Some(requirement) = &grant.step_up else { return Ok(inherited.map(str::to_owned)) };
        if let Some(id) = inherited {
            return Ok(Some(id.to_owned()));
        }
        let (zone_id, client_id) = (subject.zone_id, subject.application_id);
        self.limits.step_up_admit(zone_id, client_id).await?;
        let binding = step_up::binding(&subject);
        let hold = match form.approval_id.as_deref() {
            Some(id) => match holds::find(&self.db, zone_id, id).await? {
                Some(h) if h.application_id == client_id && sig::ct_eq(h.binding.as_bytes(), binding.as_bytes()) => h,
                _ => return Err(self.step_up_failed(zone_id, client_id, StsError::ApprovalInvalid).await),
            },
            None => holds::open(&self.db, &subject, &binding, requirement, request_id).await?,
        };
        match hold.state.as_str() {
            "approved" if holds::consume(&self.db, zone_id, &hold.id).await? => {
                tracing::info!(request_id, zone_id, approval_id = %hold.id, "step-up approval consumed");
                Ok(Some(hold.id))
            }
            "approved" | "consumed" => Err(StsError::ApprovalConsumed),
            "rejected" => Err(self.step_up_failed(zone_id, client_id, StsError::ApprovalRejected).await),
            "expired" => Err(self.step_up_failed(zone_id, client_id, StsError::ApprovalExpired).await),
            _ => Err(StsError::InteractionRequired(Box::new(hold.challenge()))),
        }
    }

    /// Counts a failed step-up attempt and hands back `err` (or the failure to count it).
    async fn step_up_failed(&self, zone_id: &str, client_id: &str, err: StsError) -> StsError {
        match self.limits.step_up_failure(zone_id, client_id).await {
            Ok(()) => err,
            Err(e) => e,
        }
    }

    /// Claims of a new mandate: issuer, audience `[issuer]`, lifetime from now, fresh `jti` and
    /// `sid`; callers set scope, root, targets and anything inherited.
    fn fresh_claims(&self, zone_id: &str, sub: &str, client_id: &str, token_use: Use, sub_type: SubType, ttl: u64) -> Claims {
        let iat = now().timestamp();
        Claims {
            iss: self.cfg.issuer.clone(),
            sub: sub.to_owned(),
            aud: vec![self.cfg.issuer.clone()],
            exp: iat + ttl as i64,
            iat,
            jti: uuid::Uuid::now_v7().to_string(),
            zone_id: zone_id.to_owned(),
            client_id: client_id.to_owned(),
            scope: String::new(),
            sid: uuid::Uuid::now_v7().to_string(),
            root_sid: String::new(),
            token_use,
            sub_type,
            target: Vec::new(),
            agent_session_id: None,
            delegation_edge_id: None,
            delegation_path: Vec::new(),
            delegation_chain: Vec::new(),
            hop_count: None,
            delegation_graph_epoch: None,
            approval_id: None,
        }
    }

    fn sign(&self, keys: &crate::keys::ZoneKeys, claims: &Claims) -> Result<String, StsError> {
        let signer = keys.signer(now()).ok_or_else(|| StsError::Internal(format!("zone {} has no active signing key", claims.zone_id)))?;
        signer.sign(claims).map_err(|e| StsError::Internal(format!("signing: {e}")))
    }

    async fn session_mint(&self, form: &TokenForm, app: &Application, request_id: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let keys = self.keys.zone(zone_id).await?;
        let ttl = ttl_for(form.ttl_seconds, self.cfg.session_ttl, crate::config::SESSION_TTL_CAP)?;
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                if let Some(r) = resource
                    && !scopes_within(&form.scopes, &r.scopes)
                {
                    return Err("scope_mismatch".into());
                }
                Ok(input(app, zone_id, resource, json!({"id": "TokenExchange", "use": "session"}), None, &form.scopes, request_id))
            })
            .await?;
        let target = granted.targets();
        let subject = step_up::Subject {
            zone_id,
            application_id: &app.id,
            principal: &app.id,
            authority_record_id: None,
            agent_session_id: None,
            delegation_edge_id: None,
            resources: &form.resources,
            scopes: &form.scopes,
            policy_version_id: granted.policy_version_id.as_deref(),
        };
        let approval_id = self.step_up_gate(form, &granted, subject, None, request_id).await?;
        let fresh = self.fresh_claims(zone_id, &app.id, &app.id, Use::Session, SubType::Application, ttl);
        let exp = chrono::DateTime::from_timestamp(fresh.exp, 0).unwrap_or_else(now);
        store::insert_authority_record(&self.db, zone_id, &fresh.sid, &app.id, exp).await?;
        // A session is its own root.
        let claims = Claims { scope: form.scope_claim(), root_sid: fresh.sid.clone(), target: target.clone(), approval_id, ..fresh };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&[Use::Session.as_str()]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }

    async fn gateway_mint(&self, form: &TokenForm, app: &Application, subject: &str, request_id: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let session = self.verify_subject(zone_id, subject, Use::Session).await?;
        if session.client_id != app.id {
            return Err(StsError::InvalidSubjectToken("subject_token belongs to another application"));
        }
        if form.resources.is_empty() {
            return Err(StsError::InvalidRequest("at least one resource is required".into()));
        }
        if !session.target.is_empty()
            && let Some(outside) = form.resources.iter().find(|r| !session.targets(r))
        {
            return Err(StsError::AccessDenied(format!("resource {outside} is outside the session's targets")));
        }
        self.require_live_root(zone_id, &session)?;
        let keys = self.keys.zone(zone_id).await?;
        let ttl = ttl_for(form.ttl_seconds, self.cfg.gateway_ttl, crate::config::DERIVED_TTL_CAP)?;
        let ttl = ttl.min((session.exp - now().timestamp()).max(0) as u64);
        if ttl == 0 {
            return Err(StsError::InvalidSubjectToken("expired"));
        }
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                let r = resource.expect("gateway mints name resources");
                if !scopes_within(&form.scopes, &r.scopes) {
                    return Err("scope_mismatch".into());
                }
                Ok(input(
                    app,
                    zone_id,
                    resource,
                    json!({"id": "TokenExchange", "use": "gateway"}),
                    Some(&session),
                    &form.scopes,
                    request_id,
                ))
            })
            .await?;
        let target = granted.targets();
        // An approved session's approval covers what the session was bound to: its targets and
        // scopes. A session without targets was approved for no resource in particular.
        let covered = !session.target.is_empty() && form.scopes.iter().all(|s| session.scopes().any(|x| x == s));
        let inherited = session.approval_id.as_deref().filter(|_| covered);
        let subject = step_up::Subject {
            zone_id,
            application_id: &app.id,
            principal: &session.sub,
            authority_record_id: Some(&session.root_sid),
            agent_session_id: None,
            delegation_edge_id: None,
            resources: &form.resources,
            scopes: &form.scopes,
            policy_version_id: granted.policy_version_id.as_deref(),
        };
        let approval_id = self.step_up_gate(form, &granted, subject, inherited, request_id).await?;
        let claims = Claims {
            scope: form.scope_claim(),
            root_sid: session.root_sid.clone(),
            target: target.clone(),
            approval_id,
            ..self.fresh_claims(zone_id, &session.sub, &app.id, Use::Gateway, session.sub_type, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&[Use::Gateway.as_str()]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }

    /// The SDK path: a gateway mandate for an agent session, through a delegation edge checked
    /// against the live graph. Narrows only: scopes within the edge's, resources within the edge's,
    /// lifetime within every session and edge on the chain.
    async fn delegated_mint(
        &self,
        form: &TokenForm,
        app: &Application,
        agent_session_id: &str,
        edge_id: &str,
        request_id: &str,
    ) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        if form.resources.is_empty() || form.scopes.is_empty() {
            return Err(StsError::InvalidRequest("a delegated mint names at least one resource and one scope".into()));
        }
        let lineage = crate::delegation::resolve(&self.db, zone_id, &app.id, agent_session_id, edge_id).await?;
        let anchors = lineage.anchors.iter().map(String::as_str).chain([lineage.root_sid.as_str()]);
        match self.revoked.any_revoked(zone_id, anchors) {
            Some(false) => {}
            Some(true) => return Err(StsError::SessionInactive),
            None => return Err(StsError::Unavailable("the revoked-session view is stale".into())),
        }
        if let Some(extra) = form.scopes.iter().find(|s| !lineage.scopes.contains(s)) {
            return Err(StsError::AccessDenied(format!("delegation scope exceeded ({extra})")));
        }
        if !lineage.resources.is_empty()
            && let Some(outside) = form.resources.iter().find(|r| !lineage.resources.contains(r))
        {
            return Err(StsError::AccessDenied(format!("resource {outside} is outside the delegation")));
        }
        let keys = self.keys.zone(zone_id).await?;
        let mut ttl = ttl_for(form.ttl_seconds, self.cfg.gateway_ttl, crate::config::DERIVED_TTL_CAP)?;
        ttl = ttl.min((lineage.expires_at - now()).num_seconds().max(0) as u64);
        if let Some(max) = lineage.max_ttl_seconds {
            ttl = ttl.min(max.max(0) as u64);
        }
        if ttl == 0 {
            return Err(StsError::AccessDenied("delegation refused: the chain expires now".into()));
        }
        let delegation = json!({
            "id": lineage.edge_id, "agent_session_id": lineage.agent_session_id, "path": lineage.path,
            "hop_count": lineage.path.len(), "graph_epoch": lineage.epoch, "scopes": lineage.scopes, "resources": lineage.resources,
        });
        let granted = self
            .grant(zone_id, &form.resources, |resource| {
                let r = resource.expect("delegated mints name resources");
                if !scopes_within(&form.scopes, &r.scopes) {
                    return Err("scope_mismatch".into());
                }
                let mut doc =
                    input(app, zone_id, resource, json!({"id": "TokenExchange", "use": "gateway"}), None, &form.scopes, request_id);
                doc["principal"]["agent_session_id"] = json!(lineage.agent_session_id);
                doc["delegation_edge"] = delegation.clone();
                Ok(doc)
            })
            .await?;
        let target = granted.targets();
        let subject = step_up::Subject {
            zone_id,
            application_id: &app.id,
            principal: &app.id,
            authority_record_id: Some(&lineage.root_sid),
            agent_session_id: Some(&lineage.agent_session_id),
            delegation_edge_id: Some(&lineage.edge_id),
            resources: &form.resources,
            scopes: &form.scopes,
            policy_version_id: granted.policy_version_id.as_deref(),
        };
        let approval_id = self.step_up_gate(form, &granted, subject, None, request_id).await?;
        let claims = Claims {
            approval_id,
            scope: form.scope_claim(),
            root_sid: lineage.root_sid.clone(),
            target: target.clone(),
            agent_session_id: Some(lineage.agent_session_id.clone()),
            delegation_edge_id: Some(lineage.edge_id.clone()),
            hop_count: Some(lineage.path.len() as u32),
            delegation_graph_epoch: Some(lineage.epoch.max(0) as u64),
            delegation_path: lineage.path,
            delegation_chain: lineage.chain,
            ..self.fresh_claims(zone_id, &app.id, &app.id, Use::Gateway, SubType::Application, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        self.metrics.exchanges.with_label_values(&["gateway_delegated"]).inc();
        Ok(response(token, ttl, &claims.scope, target, None, granted.policy_version_id.clone()))
    }

    async fn resource_exchange(&self, form: &TokenForm, subject: &str, request_id: &str) -> Result<TokenResponse, StsError> {
        let zone_id = form.zone_id.as_str();
        let mandate = self.verify_subject(zone_id, subject, Use::Gateway).await?;
        if form.application_id.as_deref() != Some(mandate.client_id.as_str()) {
            return Err(StsError::InvalidSubjectToken("application_id does not match the mandate"));
        }
        let [identifier] = form.resources.as_slice() else {
            return Err(StsError::InvalidRequest("the gateway exchange names exactly one resource".into()));
        };
        let (Some(method), Some(path)) = (form.request_method.as_deref(), form.request_path.as_deref()) else {
            return Err(StsError::InvalidRequest("request_method and request_path are required".into()));
        };
        if !mandate.targets(identifier) {
            return Err(StsError::AccessDenied("the mandate does not target this resource".into()));
        }
        self.require_live_root(zone_id, &mandate)?;
        // Delegated authority is re-checked against the live graph: a suspended session or a
        // revoked edge stops its mandates even before the revocation is announced.
        if let (Some(session), Some(edge)) = (&mandate.agent_session_id, &mandate.delegation_edge_id) {
            crate::delegation::resolve(&self.db, zone_id, &mandate.client_id, session, edge).await?;
        }
        let resource = self
            .catalog
            .resource(zone_id, identifier)
            .await?
            .ok_or_else(|| StsError::AccessDenied("policy denied (resource_not_found)".into()))?;
        let scopes: Vec<String> = mandate.scopes().filter(|s| resource.scopes.iter().any(|r| r == s)).map(str::to_owned).collect();
        if resource.enforced() {
            let op = resource.operations.iter().find(|op| op.matches(method, path)).ok_or_else(|| {
                StsError::OperationNotPermitted(format!(
                    "{} {path} is not a declared operation of this resource",
                    method.to_ascii_uppercase()
                ))
            })?;
            if !scopes.contains(&op.scope) {
                return Err(StsError::OperationNotPermitted(format!("the mandate lacks the scope {:?} this operation requires", op.scope)));
            }
        }
        let keys = self.keys.zone(zone_id).await?;
        let app = Application { id: mandate.client_id.clone(), name: String::new(), client_secret_sha256: vec![], traits: vec![] };
        let action = json!({"id": "TokenExchange", "use": "resource", "method": method.to_ascii_uppercase(), "path": path});
        let requested: Vec<String> = scopes.clone();
        let granted = self
            .grant(zone_id, std::slice::from_ref(identifier), |r| {
                Ok(input(&app, zone_id, r, action.clone(), Some(&mandate), &requested, request_id))
            })
            .await?;
        // The gateway cannot hold a request for a human: an approval must come with the mandate.
        if granted.step_up.is_some() && mandate.approval_id.is_none() {
            return Err(StsError::AccessDenied("step-up required: obtain the approval when minting the gateway mandate".into()));
        }
        let ttl = self.cfg.resource_ttl.as_secs().min((mandate.exp - now().timestamp()).max(1) as u64);
        // Resource mandates inherit the presented mandate's root and delegation, and narrow its scope.
        let claims = Claims {
            aud: vec![resource.identifier.clone()],
            scope: scopes.join(" "),
            root_sid: mandate.root_sid.clone(),
            target: vec![resource.identifier.clone()],
            agent_session_id: mandate.agent_session_id.clone(),
            delegation_edge_id: mandate.delegation_edge_id.clone(),
            delegation_path: mandate.delegation_path.clone(),
            delegation_chain: mandate.delegation_chain.clone(),
            hop_count: mandate.hop_count,
            delegation_graph_epoch: mandate.delegation_graph_epoch,
            approval_id: mandate.approval_id.clone(),
            ..self.fresh_claims(zone_id, &mandate.sub, &mandate.client_id, Use::Resource, mandate.sub_type, ttl)
        };
        let token = self.sign(&keys, &claims)?;
        let directive = self.directive(zone_id, &resource)?;
        self.metrics.exchanges.with_label_values(&[Use::Resource.as_str()]).inc();
        let upstreams = BTreeMap::from([(resource.identifier.clone(), directive)]);
        Ok(response(token, ttl, &claims.scope, vec![resource.identifier.clone()], Some(upstreams), granted.policy_version_id.clone()))
    }
}

impl Sts {
    /// How the gateway must reach and authenticate to the resource's upstream.
    fn directive(&self, zone_id: &str, r: &Resource) -> Result<UpstreamDirective, StsError> {
        let p = &r.credential_placement.0;
        let mut d = UpstreamDirective { url: r.upstream_url.clone(), auth_mode: r.credential_mode.clone(), ..Default::default() };
        match r.credential_mode.as_str() {
            "caracal_jwt" => {
                d.auth_header = Some("Authorization".into());
                d.auth_scheme = Some("Bearer".into());
            }
            "provider_apikey" => {
                let (Some(sealed), Some(kek_id)) = (&r.credential_secret, &r.credential_kek_id) else {
                    return Err(StsError::Internal(format!("resource {} has no provider key", r.id)));
                };
                let kek = self.keys.kek();
                if kek_id != kek.id() {
                    return Err(StsError::Internal(format!("provider key of resource {} is sealed under another ZONE_KEK", r.id)));
                }
                let key = kek
                    .open(&crate::store::provider_secret_aad(zone_id, &r.id), sealed)
                    .and_then(|k| String::from_utf8(k).ok())
                    .ok_or_else(|| StsError::Internal(format!("provider key of resource {} does not decrypt", r.id)))?;
                d.auth_location = Some(p.location.clone().unwrap_or_else(|| "header".into()));
                d.auth_header = p.header.clone();
                d.auth_scheme = p.scheme.clone();
                d.query_param_name = p.query_param.clone();
                d.provider_token = Some(key);
                d.forward_caracal_identity = p.forward_caracal_identity;
            }
            _ => {}
        }
        Ok(d)
    }
}

fn scopes_within(requested: &[String], allowed: &[String]) -> bool {
    requested.iter().all(|s| allowed.contains(s))
}

fn response(
    token: String,
    ttl: u64,
    scope: &str,
    target: Vec<String>,
    upstreams: Option<BTreeMap<String, UpstreamDirective>>,
    policy_version_id: Option<String>,
) -> TokenResponse {
    TokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: ttl,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
        scope: (!scope.is_empty()).then(|| scope.to_owned()),
        target_resources: target,
        upstreams,
        policy_version_id,
    }
}

/// The policy input document (see `docs/policy.md`).
fn input(
    app: &Application,
    zone_id: &str,
    resource: Option<&Resource>,
    action: Value,
    presented: Option<&Claims>,
    requested_scopes: &[String],
    request_id: &str,
) -> Value {
    json!({
        "schema_version": policy::INPUT_SCHEMA_VERSION,
        "principal": {"type": "Application", "id": app.id, "zone_id": zone_id, "traits": app.traits},
        "resource": resource.map(|r| json!({"type": "Resource", "id": r.id, "identifier": r.identifier, "scopes": r.scopes})),
        "action": action,
        "session": presented.map(|c| json!({"id": c.sid, "root_id": c.root_sid})),
        "context": {
            "requested_scopes": requested_scopes,
            "subject_claims": presented.map(|c| json!({
                "use": c.token_use.as_str(), "scope": c.scope, "target": c.target, "sub": c.sub, "sub_type": c.sub_type,
                "approval_id": c.approval_id,
            })),
            "request_id": request_id,
        },
    })
}
