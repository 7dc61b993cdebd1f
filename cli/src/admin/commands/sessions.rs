//! `sessions list|revoke`: root sessions (authority records).

use serde_json::json;

use super::{Ctx, page_query};
use crate::args::SessionsCmd;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: SessionsCmd) -> Result<(), CliError> {
    match cmd {
        SessionsCmd::List { zone, status, page } => {
            let mut query = page_query(&page);
            query.extend(status.map(|s| ("status", s.as_query().to_owned())));
            let v = ctx.api.get(&["v1", "zones", &zone.zone, "authority-records"], &query).await?;
            ctx.out.list(&v, &["authority_record_id", "session_type", "application_id", "subject_id", "status", "expires_at"]);
        }
        SessionsCmd::Revoke { zone, id, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let v = ctx.api.post(&["v1", "zones", &zone.zone, "authority-records", &id, "revoke"], body.as_ref()).await?;
            ctx.out.object(&v);
        }
    }
    Ok(())
}
