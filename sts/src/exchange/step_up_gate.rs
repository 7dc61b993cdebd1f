//! Settling a step-up the allowing decisions demand (`docs/policy.md`, "Step-up").
//!
//! An approval a presented mandate carries (inherited from the mint it was narrowed from) settles
//! the demand only if [`step_up::covers`] says it approved this request: same application and
//! policy version, the same lineage, every resource, scope and tier within what was approved.
//! Otherwise a mint is held for a fresh approval (401 `interaction_required`), and the gateway's
//! per-request exchange, which cannot hold a request for a human, is refused.

use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::step_up::{self, holds};

use super::grant::Grant;

impl Sts {
    /// Holds a mint the policy allowed only after a human approval. Returns the approval that
    /// authorizes it: the inherited one when it covers the request, else the consumed hold named
    /// by `approval_id` (or the approved live hold for this exact request). A pending hold answers
    /// 401 `interaction_required`; invalid, expired and rejected approvals count towards the
    /// client's step-up throttle.
    pub(super) async fn step_up_gate(
        &self,
        form: &TokenForm,
        grant: &Grant,
        subject: step_up::Subject<'_>,
        inherited: Option<&str>,
        request_id: &str,
    ) -> Result<Option<String>, StsError> {
        let Some(requirement) = &grant.step_up else { return Ok(inherited.map(str::to_owned)) };
        if let Some(id) = inherited
            && self.inherited_covers(id, &subject, requirement).await?
        {
            return Ok(Some(id.to_owned()));
        }
        let (zone_id, client_id) = (subject.zone_id, subject.application_id);
        if requirement.approver == step_up::Approver::Subject {
            self.require_user_subject(&subject).await?;
        }
        self.limits.step_up_admit(zone_id, client_id).await?;
        let binding = step_up::binding(&subject);
        let hold = match form.approval_id.as_deref() {
            Some(id) => match holds::find(&self.db, zone_id, id).await? {
                Some(h) if h.application_id == client_id && caracal_shared::sig::ct_eq(h.binding.as_bytes(), binding.as_bytes()) => h,
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

    /// A hold reserved for the subject needs a subject to decide it: the request must act for a
    /// federated user (its root authority record is a user's, and the principal is that user).
    async fn require_user_subject(&self, subject: &step_up::Subject<'_>) -> Result<(), StsError> {
        let refuse =
            || StsError::AccessDenied("the policy reserves this approval for the subject, and the request acts for no user".into());
        let Some(root) = subject.authority_record_id else { return Err(refuse()) };
        let user: Option<(String, String)> =
            sqlx::query_as("SELECT session_type, subject_id FROM authority_records WHERE zone_id = $1 AND id = $2")
                .bind(subject.zone_id)
                .bind(root)
                .fetch_optional(&self.db)
                .await?;
        match user {
            Some((kind, sub)) if kind == "user" && sub == subject.principal => Ok(()),
            _ => Err(refuse()),
        }
    }

    /// Whether the approval `id` a presented mandate carries settles `demanded` for `subject`.
    pub(super) async fn inherited_covers(
        &self,
        id: &str,
        subject: &step_up::Subject<'_>,
        demanded: &step_up::Requirement,
    ) -> Result<bool, StsError> {
        let Some(approved) = holds::consumed(&self.db, subject.zone_id, id).await? else {
            tracing::info!(zone_id = subject.zone_id, approval_id = id, "inherited approval is not a consumed hold of this zone");
            return Ok(false);
        };
        match step_up::covers(&approved, subject, demanded) {
            Ok(()) => Ok(true),
            Err(why) => {
                tracing::info!(zone_id = subject.zone_id, approval_id = id, why, "inherited approval does not cover this request");
                Ok(false)
            }
        }
    }

    /// Counts a failed step-up attempt and hands back `err` (or the failure to count it).
    async fn step_up_failed(&self, zone_id: &str, client_id: &str, err: StsError) -> StsError {
        match self.limits.step_up_failure(zone_id, client_id).await {
            Ok(()) => err,
            Err(e) => e,
        }
    }
}
