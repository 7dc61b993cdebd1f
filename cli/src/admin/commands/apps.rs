//! `apps list|create|get|rotate-secret|delete`: a zone's applications.

use serde_json::json;

use super::{Ctx, page_query, print_once};
use crate::args::AppsCmd;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: AppsCmd) -> Result<(), CliError> {
    match cmd {
        AppsCmd::List { zone, page } => {
            let v = ctx.api.get(&["v1", "zones", &zone.zone, "applications"], &page_query(&page)).await?;
            ctx.out.list(&v, &["id", "name", "registration_method", "traits", "expires_at", "created_at"]);
        }
        AppsCmd::Create { zone, name, traits } => {
            let mut body = json!({ "name": name });
            if !traits.is_empty() {
                body["traits"] = json!(traits);
            }
            let answer = ctx.api.post(&["v1", "zones", &zone.zone, "applications"], Some(&body)).await?;
            print_once(ctx, answer, "client_secret", None)?;
        }
        AppsCmd::Get { zone, id } => {
            ctx.out.object(&ctx.api.get(&["v1", "zones", &zone.zone, "applications", &id], &[]).await?);
        }
        AppsCmd::RotateSecret { zone, id } => {
            let answer = ctx.api.post(&["v1", "zones", &zone.zone, "applications", &id, "rotate-secret"], None).await?;
            print_once(ctx, answer, "client_secret", None)?;
        }
        AppsCmd::Delete { zone, id } => {
            ctx.api.delete(&["v1", "zones", &zone.zone, "applications", &id]).await?;
            ctx.out.note(&format!("application {id} archived, its sessions revoked"));
        }
    }
    Ok(())
}
