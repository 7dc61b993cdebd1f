//! `tokens list|create|revoke`: admin tokens (a global admin token only).

use serde_json::json;

use super::{Ctx, page_query, print_once};
use crate::args::TokensCmd;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: TokensCmd) -> Result<(), CliError> {
    match cmd {
        TokensCmd::List(page) => {
            let v = ctx.api.get(&["v1", "admin-tokens"], &page_query(&page)).await?;
            ctx.out.list(&v, &["id", "name", "scope", "zone_id", "created_by", "created_at", "revoked_at"]);
        }
        TokensCmd::Create { name, zone, save } => {
            let body = match zone {
                Some(zone) => json!({ "name": name, "scope": "zone", "zone_id": zone }),
                None => json!({ "name": name, "scope": "global" }),
            };
            let answer = ctx.api.post(&["v1", "admin-tokens"], Some(&body)).await?;
            print_once(ctx, answer, "token", save.save.as_deref())?;
        }
        TokensCmd::Revoke { id } => {
            ctx.api.delete(&["v1", "admin-tokens", &id]).await?;
            ctx.out.note(&format!("admin token {id} revoked"));
        }
    }
    Ok(())
}
