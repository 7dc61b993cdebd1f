//! `policies list|apply`: `apply` finds the policy set by name (creating it when missing), uploads
//! the Rego file as a new immutable version and, with `--activate`, makes it the zone's policy.

use serde_json::{Value, json};

use super::{Ctx, page_query};
use crate::args::{Format, PoliciesCmd};
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: PoliciesCmd) -> Result<(), CliError> {
    match cmd {
        PoliciesCmd::List { zone, page } => {
            let v = ctx.api.get(&["v1", "zones", &zone.zone, "policy-sets"], &page_query(&page)).await?;
            ctx.out.list(&v, &["id", "name", "active_version_id", "created_at"]);
        }
        PoliciesCmd::Apply { zone, name, file, activate } => {
            let rego = std::fs::read_to_string(&file).map_err(CliError::file(&file))?;
            let set = find_or_create(ctx, &zone.zone, &name).await?;
            let version =
                ctx.api.post(&["v1", "zones", &zone.zone, "policy-sets", &set, "versions"], Some(&json!({ "rego": rego }))).await?;
            let version_id = id_of(&version)?;
            if activate {
                let body = json!({ "version_id": version_id });
                ctx.api.post(&["v1", "zones", &zone.zone, "policy-sets", &set, "activate"], Some(&body)).await?;
            }
            ctx.out
                .note(&format!("policy set {name} ({set}): version {version_id} uploaded{}", if activate { " and activated" } else { "" }));
            match ctx.out.format {
                Some(Format::Json) => ctx.out.object(&json!({ "policy_set_id": set, "version_id": version_id, "activated": activate })),
                _ => println!("{version_id}"),
            }
        }
    }
    Ok(())
}

/// The id of the zone's policy set called `name`, created when there is none.
async fn find_or_create(ctx: &Ctx, zone: &str, name: &str) -> Result<String, CliError> {
    if let Some(id) = find(ctx, zone, name).await? {
        return Ok(id);
    }
    match ctx.api.post(&["v1", "zones", zone, "policy-sets"], Some(&json!({ "name": name }))).await {
        Ok(set) => id_of(&set),
        // Created by someone else since we looked.
        Err(CliError::Api { code: Some(code), .. }) if code == "policy_set_name_conflict" => {
            find(ctx, zone, name).await?.ok_or_else(|| CliError::Transport(format!("policy set {name} conflicts but is not listed")))
        }
        Err(e) => Err(e),
    }
}

async fn find(ctx: &Ctx, zone: &str, name: &str) -> Result<Option<String>, CliError> {
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "500".to_owned())];
        query.extend(cursor.map(|c| ("cursor", c)));
        let page = ctx.api.get(&["v1", "zones", zone, "policy-sets"], &query).await?;
        let items = page["items"].as_array().map(Vec::as_slice).unwrap_or_default();
        if let Some(set) = items.iter().find(|s| s["name"] == name) {
            return id_of(set).map(Some);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(None),
        }
    }
}

fn id_of(v: &Value) -> Result<String, CliError> {
    v["id"].as_str().map(str::to_owned).ok_or_else(|| CliError::Transport(format!("the answer has no id: {v}")))
}
