//! One module per API area; [`run`] picks the bearer the command needs and dispatches.

mod apps;
mod audit;
mod bootstrap;
mod policies;
mod resources;
mod sessions;
mod tokens;
mod zones;

use serde_json::Value;

use crate::args::{Cli, Command, Page};
use crate::client::AdminClient;
use crate::error::CliError;
use crate::output::Out;
use crate::secret::{self, Secret};

const ADMIN_TOKEN_HINT: &str = "--token-file FILE, CARACAL_ADMIN_TOKEN_FILE, --token or CARACAL_ADMIN_TOKEN";

/// What every command gets: the client and where its output goes.
pub(crate) struct Ctx {
    pub(crate) api: AdminClient,
    pub(crate) out: Out,
}

pub(crate) async fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { conn, output, quiet, command } = cli;
    let bearer = match &command {
        // The bootstrap route takes the deployment's bootstrap token, not an admin token.
        Command::Bootstrap(b) => Secret::resolve(
            b.bootstrap_token.clone(),
            b.bootstrap_token_file.as_deref(),
            "bootstrap token",
            "--bootstrap-token-file FILE, CARACAL_BOOTSTRAP_TOKEN_FILE, --bootstrap-token or CARACAL_BOOTSTRAP_TOKEN",
        )?,
        _ => Secret::resolve(conn.token.clone(), conn.token_file.as_deref(), "admin token", ADMIN_TOKEN_HINT)?,
    };
    let ctx = Ctx { api: AdminClient::new(&conn, bearer)?, out: Out { format: output, quiet } };
    match command {
        Command::Bootstrap(args) => bootstrap::run(&ctx, args).await,
        Command::Zones(cmd) => zones::run(&ctx, cmd).await,
        Command::Apps(cmd) => apps::run(&ctx, cmd).await,
        Command::Resources(cmd) => resources::run(&ctx, cmd).await,
        Command::Policies(cmd) => policies::run(&ctx, cmd).await,
        Command::Sessions(cmd) => sessions::run(&ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&ctx, cmd).await,
        Command::Tokens(cmd) => tokens::run(&ctx, cmd).await,
    }
}

/// `?limit=&cursor=` of a list.
pub(crate) fn page_query(page: &Page) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(limit) = page.limit {
        q.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = &page.cursor {
        q.push(("cursor", cursor.clone()));
    }
    q
}

/// Prints an answer that carries a token shown once: whole, or without the token after writing it
/// to `save`.
pub(crate) fn print_once(ctx: &Ctx, mut answer: Value, field: &str, save: Option<&std::path::Path>) -> Result<(), CliError> {
    if let Some(path) = save {
        let token = answer.get(field).and_then(Value::as_str).ok_or_else(|| CliError::Transport(format!("the answer has no `{field}`")))?;
        secret::save(path, token)?;
        if let Some(map) = answer.as_object_mut() {
            map.remove(field);
        }
        ctx.out.note(&format!("{field} saved to {} (mode 0600)", path.display()));
    } else {
        ctx.out.note(&format!("the {field} is shown only this once: keep it now"));
    }
    ctx.out.object(&answer);
    Ok(())
}

/// Reads a JSON file given for a request body.
pub(crate) fn json_file(path: &std::path::Path) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path).map_err(CliError::file(path))?;
    serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", path.display())))
}
