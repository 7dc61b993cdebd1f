//! `caracal-bench`: the benchmark harness (its own issue) and, for now, the small echo upstream the
//! local stack and demos put behind the gateway.
//!
//! `caracal-bench echo [ADDR]` (default `127.0.0.1:9000`) answers every request with a JSON echo of
//! its method, path, query and headers, so a demo shows what the upstream received.

mod echo;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") => {
            let addr = args.get(1).map_or("127.0.0.1:9000", String::as_str).parse()?;
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(echo::serve(addr))
        }
        _ => {
            eprintln!("usage: caracal-bench echo [ADDR]");
            std::process::exit(64);
        }
    }
}
