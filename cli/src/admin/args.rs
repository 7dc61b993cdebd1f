//! The command line: global connection options and one subcommand per API area.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Caracal's admin API client: zones, applications, resources, policies, sessions, the audit chain
/// and admin tokens. Lists print a table, single objects JSON (`--output` chooses).
#[derive(Parser)]
#[command(name = "caracal-admin", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) conn: Connection,
    /// Output format (default: table for lists, JSON for single objects).
    #[arg(long, global = true, value_enum)]
    pub(crate) output: Option<Format>,
    /// Print answers and errors only, no notes.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the control plane is and how to authenticate to it.
#[derive(Args)]
pub(crate) struct Connection {
    /// Base URL of the control plane.
    #[arg(long, global = true, env = "CARACAL_URL", default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// Admin token (prefer --token-file: other users can see a command line).
    #[arg(long, global = true, env = "CARACAL_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// File holding the admin token (its first line).
    #[arg(long, global = true, env = "CARACAL_ADMIN_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// PEM CA(s) the control plane's certificate must chain to (a private CA; then the only roots trusted).
    #[arg(long, global = true, env = "CARACAL_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Json,
    Table,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// The deployment's first global admin token, with its BOOTSTRAP_ADMIN_TOKEN (works once).
    Bootstrap(BootstrapArgs),
    /// Zones: the unit of isolation.
    #[command(subcommand)]
    Zones(ZonesCmd),
    /// Applications (OAuth clients) of a zone.
    #[command(subcommand)]
    Apps(AppsCmd),
    /// Resources the gateway protects.
    #[command(subcommand)]
    Resources(ResourcesCmd),
    /// Policy sets and their Rego versions.
    #[command(subcommand)]
    Policies(PoliciesCmd),
    /// Root sessions (authority records).
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// The zone's audit chain.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Admin tokens (global admin only).
    #[command(subcommand)]
    Tokens(TokensCmd),
}

#[derive(Args)]
pub(crate) struct BootstrapArgs {
    /// The control plane's BOOTSTRAP_ADMIN_TOKEN (prefer --bootstrap-token-file).
    #[arg(long, env = "CARACAL_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub(crate) bootstrap_token: Option<String>,
    /// File holding the BOOTSTRAP_ADMIN_TOKEN (its first line).
    #[arg(long, env = "CARACAL_BOOTSTRAP_TOKEN_FILE")]
    pub(crate) bootstrap_token_file: Option<PathBuf>,
    /// Name of the new token.
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) save: Save,
}

/// Where a token shown once goes.
#[derive(Args)]
pub(crate) struct Save {
    /// Write the new token to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub(crate) save: Option<PathBuf>,
}

/// One page of a list.
#[derive(Args)]
pub(crate) struct Page {
    /// Items per page (1..500; the server's default is 200).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    pub(crate) cursor: Option<String>,
}

/// The zone a command works in.
#[derive(Args)]
pub(crate) struct Zone {
    /// Zone id.
    #[arg(long, env = "CARACAL_ZONE")]
    pub(crate) zone: String,
}

#[derive(Subcommand)]
pub(crate) enum ZonesCmd {
    /// List live zones.
    List(Page),
    /// Create a zone (and its first signing key).
    Create {
        #[arg(long)]
        name: String,
        /// `[a-z0-9-]{1,120}`; derived from the name when absent.
        #[arg(long)]
        slug: Option<String>,
    },
    /// Read a zone.
    Get { id: String },
    /// Archive a zone: revokes its sessions, edges, keys and zone tokens.
    Archive { id: String },
}

#[derive(Subcommand)]
pub(crate) enum AppsCmd {
    /// List live applications.
    List {
        #[command(flatten)]
        zone: Zone,
        #[command(flatten)]
        page: Page,
    },
    /// Create an application; its client secret is shown once.
    Create {
        #[command(flatten)]
        zone: Zone,
        #[arg(long)]
        name: String,
        /// A trait the policy may read (repeatable).
        #[arg(long = "trait", value_name = "TRAIT")]
        traits: Vec<String>,
    },
    /// Read an application.
    Get {
        #[command(flatten)]
        zone: Zone,
        id: String,
    },
    /// Generate a new client secret (shown once; the old one stops minting).
    RotateSecret {
        #[command(flatten)]
        zone: Zone,
        id: String,
    },
    /// Archive an application and revoke its sessions.
    Delete {
        #[command(flatten)]
        zone: Zone,
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ResourcesCmd {
    /// List live resources.
    List {
        #[command(flatten)]
        zone: Zone,
        #[command(flatten)]
        page: Page,
    },
    /// Create a resource from a JSON file (the body of `POST /v1/zones/{z}/resources`, docs/providers.md).
    Create {
        #[command(flatten)]
        zone: Zone,
        #[arg(long, value_name = "resource.json")]
        file: PathBuf,
    },
    /// Read a resource.
    Get {
        #[command(flatten)]
        zone: Zone,
        id: String,
    },
    /// Archive a resource.
    Delete {
        #[command(flatten)]
        zone: Zone,
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PoliciesCmd {
    /// List policy sets, with their active version.
    List {
        #[command(flatten)]
        zone: Zone,
        #[command(flatten)]
        page: Page,
    },
    /// Upload a Rego file as a new version of the policy set NAME (created if missing); prints the version id.
    Apply {
        #[command(flatten)]
        zone: Zone,
        /// Policy set name.
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "policy.rego")]
        file: PathBuf,
        /// Make the new version the zone's active policy.
        #[arg(long)]
        activate: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum SessionsCmd {
    /// List root sessions, newest first.
    List {
        #[command(flatten)]
        zone: Zone,
        #[arg(long, value_enum)]
        status: Option<SessionStatus>,
        #[command(flatten)]
        page: Page,
    },
    /// Revoke a root session and everything minted or started under it.
    Revoke {
        #[command(flatten)]
        zone: Zone,
        /// The authority record id (a session mandate's `sid`).
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// A root session's state, as the `?status=` filter spells it.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SessionStatus {
    Active,
    Revoked,
    Expired,
}

impl SessionStatus {
    pub(crate) fn as_query(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Verify the zone's chain (exit 3 when it does not verify).
    Verify {
        #[command(flatten)]
        zone: Zone,
        #[arg(long)]
        from_seq: Option<u64>,
        #[arg(long)]
        to_seq: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokensCmd {
    /// List admin tokens, revoked ones included.
    List(Page),
    /// Create an admin token, global or (with --zone) for one zone; shown once.
    Create {
        #[arg(long)]
        name: String,
        /// Scope the token to this zone.
        #[arg(long)]
        zone: Option<String>,
        #[command(flatten)]
        save: Save,
    },
    /// Revoke an admin token.
    Revoke { id: String },
}
