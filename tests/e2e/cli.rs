//! The operator CLIs as built binaries: `caracal-admin` sets a zone up from files, governs a
//! request and ends it; its errors name the server's refusal and never the token; and the runtime
//! CLI `caracal` carries no admin command, nor `caracal-admin` a runtime one (seed 000's trust
//! boundary between local lifecycle and product management).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use caracal_e2e::Stack;
use caracal_e2e::cli::run_cli;
use caracal_e2e::infra::{free_port, scratch_dir};
use caracal_e2e::stack::{ALLOW_POLICY, Demo, sid_of};
use serde_json::json;

#[tokio::test]
async fn caracal_admin_sets_up_a_zone_from_files_governs_a_request_and_revokes_its_session() {
    let s = Stack::start().await;
    let dir = scratch_dir("cli-admin");
    let token_file = dir.join("admin.token");
    let token_path = token_file.to_str().unwrap();

    let boot = s.caracal_admin(&["bootstrap", "--save", token_path], &[("CARACAL_BOOTSTRAP_TOKEN", &s.bootstrap_token)]).await.expect(0);
    let admin = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert!(admin.starts_with("cat_"), "the saved token is an admin token");
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600, "the token file is the owner's only");
    assert!(!boot.all().contains(&admin), "a saved token is not printed too: {boot:?}");
    assert_eq!(boot.json()["scope"], "global");

    let env = [("CARACAL_ADMIN_TOKEN_FILE", token_path)];
    let zone = s.caracal_admin(&["zones", "create", "--name", "cli"], &env).await.expect(0).json();
    let z = zone["id"].as_str().unwrap().to_owned();
    let app = s.caracal_admin(&["apps", "create", "--zone", &z, "--name", "agent"], &env).await.expect(0).json();
    let resource = "https://api.cli.test/tools";
    let resource_file = dir.join("resource.json");
    std::fs::write(
        &resource_file,
        json!({
            "identifier": resource,
            "upstream_url": format!("{}/base", s.upstream.url()),
            "scopes": ["tools.read"],
            "operations": [{"method": "GET", "path": "/items/**", "scope": "tools.read"}]
        })
        .to_string(),
    )
    .unwrap();
    let created = s.caracal_admin(&["resources", "create", "--zone", &z, "--file", resource_file.to_str().unwrap()], &env).await.expect(0);
    assert_eq!(created.json()["identifier"], resource);
    let listed = s.caracal_admin(&["resources", "list", "--zone", &z], &env).await.expect(0);
    assert!(listed.stdout.contains(resource) && listed.stdout.starts_with("ID"), "a list is a table: {listed:?}");

    let rego = dir.join("policy.rego");
    std::fs::write(&rego, ALLOW_POLICY).unwrap();
    let apply = ["policies", "apply", "--zone", &z, "--name", "main", "--file", rego.to_str().unwrap(), "--activate"];
    let version = s.caracal_admin(&apply, &env).await.expect(0).stdout.trim().to_owned();
    let sets = s.admin_ok("GET", &format!("/v1/zones/{z}/policy-sets"), &admin, None, 200).await;
    assert_eq!(sets["items"].as_array().unwrap().len(), 1, "one set, created by name");
    assert_eq!(sets["items"][0]["active_version_id"], version.as_str(), "the printed version is the active one");
    let again = s.caracal_admin(&apply, &env).await.expect(0).stdout.trim().to_owned();
    assert_ne!(again, version, "a second apply uploads a new version");
    let sets = s.admin_ok("GET", &format!("/v1/zones/{z}/policy-sets"), &admin, None, 200).await;
    assert_eq!(sets["items"].as_array().unwrap().len(), 1, "and finds the set by its name");

    let d = Demo {
        zone_id: z.clone(),
        app_id: app["id"].as_str().unwrap().to_owned(),
        secret: app["client_secret"].as_str().expect("the client secret is shown once").to_owned(),
        resource: resource.to_owned(),
        policy_set_id: sets["items"][0]["id"].as_str().unwrap().to_owned(),
        admin: admin.clone(),
    };
    let session = s.session(&d).await;
    let m = s.gateway_mandate(&d, &session, "tools.read").await;
    let granted = s.governed("GET", "/items/1", &m, resource).await;
    assert_eq!(granted.status, 200, "governed by what caracal-admin set up: {}", granted.text);
    let next = s.gateway_mandate(&d, &session, "tools.read").await;

    let revoked = s.caracal_admin(&["sessions", "revoke", "--zone", &z, &sid_of(&session)], &env).await.expect(0).json();
    assert_eq!(revoked["status"], "revoked");
    s.wait_gateway_metric("caracal_gateway_revocation_messages_total", 1.0, Duration::from_secs(5)).await;
    let refused = s.governed("GET", "/items/1", &next, resource).await;
    assert_eq!(refused.status, 401, "the revoked session's mandate is refused: {}", refused.text);
    assert_eq!(refused.body["error_description"], "session revoked");
    assert_eq!(s.mint_gateway(&d, &session, "tools.read").await.status, 401, "and nothing more is minted from it");

    let verify = s.caracal_admin(&["audit", "verify", "--zone", &z], &env).await.expect(0).json();
    assert_eq!(verify["ok"], true);
}

#[tokio::test]
async fn caracal_admin_prints_the_servers_refusal_and_never_the_token() {
    let s = Stack::start().await;
    let wrong = format!("cat_{}", "x".repeat(43));
    let refused = s.caracal_admin(&["--token", &wrong, "zones", "list"], &[]).await.expect(1);
    assert!(refused.stderr.contains("401") && refused.stderr.contains("invalid_admin_token"), "status and error code: {refused:?}");
    assert!(!refused.all().contains(&wrong), "the token is never echoed: {refused:?}");
    assert!(!refused.all().contains("panicked"), "an error, not a panic: {refused:?}");

    let env = [("CARACAL_ADMIN_TOKEN", wrong.as_str())];
    let by_env = s.caracal_admin(&["apps", "list", "--zone", "z1"], &env).await.expect(1);
    assert!(!by_env.all().contains(&wrong), "{by_env:?}");

    let admin = s.bootstrap().await;
    let env = [("CARACAL_ADMIN_TOKEN", admin.as_str())];
    let unknown = s.caracal_admin(&["zones", "get", "no-such-zone"], &env).await.expect(1);
    assert!(unknown.stderr.contains("404") && unknown.stderr.contains("zone_not_found"), "{unknown:?}");
    let zone = s.caracal_admin(&["zones", "create", "--name", "kept"], &env).await.expect(0).json();
    let z = zone["id"].as_str().unwrap();
    s.caracal_admin(&["apps", "delete", "--zone", z, ".."], &env).await.expect(2);
    s.admin_ok("GET", &format!("/v1/zones/{z}"), &admin, None, 200).await;
    let twice = s.caracal_admin(&["bootstrap"], &[("CARACAL_BOOTSTRAP_TOKEN", &s.bootstrap_token)]).await.expect(1);
    assert!(twice.stderr.contains("already_bootstrapped") && !twice.all().contains(&s.bootstrap_token), "{twice:?}");

    let no_token = run_cli("caracal-admin", &["--url", &s.cp_url, "zones", "list"], &[]).await.expect(2);
    assert!(no_token.stderr.contains("no admin token"), "{no_token:?}");
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let down = run_cli("caracal-admin", &["--url", &unreachable, "zones", "list"], &env).await.expect(2);
    assert!(!down.all().contains(&admin) && !down.all().contains("panicked"), "{down:?}");
}

/// The subcommand names a `--help` lists.
fn commands_of(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_runtime_cli_offers_only_run_and_the_admin_cli_no_run() {
    let help = run_cli("caracal", &["--help"], &[]).await.expect(0);
    assert_eq!(commands_of(&help.stdout), ["run", "help"], "caracal offers the local lifecycle only: {help:?}");
    let run = run_cli("caracal", &["run", "--help"], &[]).await.expect(0);
    assert_eq!(commands_of(&run.stdout), ["start", "stop", "status", "help"], "{run:?}");
    for admin_action in [&["zones", "list"][..], &["bootstrap"], &["tokens", "create"], &["policies", "apply"], &["run", "zones"]] {
        let refused = run_cli("caracal", admin_action, &[]).await.expect(2);
        assert!(refused.stderr.contains("unrecognized subcommand"), "caracal {admin_action:?}: {refused:?}");
    }

    let admin_help = run_cli("caracal-admin", &["--help"], &[]).await.expect(0);
    let commands = commands_of(&admin_help.stdout);
    assert!(commands.contains(&"zones".to_owned()) && !commands.contains(&"run".to_owned()), "{admin_help:?}");
    let refused = run_cli("caracal-admin", &["run", "start"], &[]).await.expect(2);
    assert!(refused.stderr.contains("unrecognized subcommand"), "{refused:?}");
}

/// `caracal run stop` for a stack directory, run when the test ends however it ends.
struct StopOnDrop(Vec<String>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(caracal_e2e::procs::binary("caracal")).args(&self.0).output();
    }
}

/// `caracal run <cmd>` on `stack_dir` with `ports` (control plane, gateway, echo, Postgres, Redis).
fn run_args(cmd: &str, stack_dir: &std::path::Path, ports: &[u16]) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), cmd.into(), "--stack-dir".into(), stack_dir.display().to_string()];
    for (flag, port) in ["--cp-port", "--gw-port", "--echo-port", "--pg-port", "--redis-port"].iter().zip(ports) {
        a.extend([(*flag).to_owned(), port.to_string()]);
    }
    a
}

async fn caracal_run(cmd: &str, stack_dir: &std::path::Path, ports: &[u16]) -> caracal_e2e::cli::CliRun {
    let pg_bin = std::env::var("PG_BIN_DIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let args = run_args(cmd, stack_dir, ports);
    run_cli("caracal", &args.iter().map(String::as_str).collect::<Vec<_>>(), &[("PG_BIN_DIR", &pg_bin)]).await
}

#[tokio::test]
async fn caracal_run_starts_reports_and_stops_the_local_stack() {
    let stack_dir = scratch_dir("cli-run").join("stack");
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let _stop = StopOnDrop(run_args("stop", &stack_dir, &ports));

    let started = caracal_run("start", &stack_dir, &ports).await.expect(0);
    for component in ["postgres", "redis", "control-plane", "gateway", "echo"] {
        let line = started.stdout.lines().find(|l| l.starts_with(component)).unwrap_or_else(|| panic!("{component} listed: {started:?}"));
        assert!(line.ends_with("yes"), "{component} ready after start: {line}");
    }
    let ready = reqwest::get(format!("http://127.0.0.1:{}/ready", ports[1])).await.unwrap();
    assert_eq!(ready.status(), 200, "the gateway serves on the port given");
    caracal_run("status", &stack_dir, &ports).await.expect(0);
    let secrets = stack_dir.join("secrets.env");
    assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o600, "the stack's keys are the owner's only");

    caracal_run("stop", &stack_dir, &ports).await.expect(0);
    // Ports as recorded by start: status finds them without flags.
    let down = run_cli("caracal", &["run", "status", "--stack-dir", stack_dir.to_str().unwrap()], &[]).await.expect(3);
    let components: Vec<&str> = down.stdout.lines().skip(1).take(5).collect();
    assert!(components.iter().all(|l| l.ends_with("no")), "everything is down after stop: {down:?}");
}
