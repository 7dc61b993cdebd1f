//! The Markdown report: ratios and targets first, then the tables behind them, then the method.

use std::fmt::Write as _;

use crate::load::{Mode, RunSummary};
use crate::report::Report;
use crate::scenarios::drill::Drill;
use crate::scenarios::pool::Pool;
use crate::scenarios::rate::RateRecord;

/// Processes whose CPU per 1,000 requests the report shows, in column order.
const CPU_COLUMNS: [&str; 9] =
    ["gateway", "control-plane", "pingora-proxy", "nginx", "envoy", "upstream", "postgres", "redis", "load-generator"];

/// Renders the whole report.
pub(crate) fn render(r: &Report) -> String {
    let mut s = String::new();
    let kind = if r.plan.smoke { "smoke run (tiny counts: checks the harness, not the numbers)" } else { "full run" };
    let env = &r.environment;
    let _ = writeln!(s, "# Caracal bench, {} ({kind})\n", r.date);
    let _ = writeln!(
        s,
        "{} cores ({}), Linux {}, commit {}, binaries `{}`. Everything (load generator, proxies, Caracal, upstream, Postgres, Redis) \
         shares these cores on loopback; all scenarios ran in one {:.0} s run against the same upstream.\n",
        env.cores,
        env.cpu_model,
        env.kernel,
        env.git_commit.as_deref().unwrap_or("?"),
        env.binaries,
        r.wall_seconds
    );
    headline(&mut s, r);
    targets(&mut s, r);
    if !r.results.rate.is_empty() {
        fixed_rate(&mut s, r);
        over_time(&mut s, r);
        saturation(&mut s, r);
        cpu(&mut s, r);
    }
    scale_out(&mut s, r);
    ledger(&mut s, r);
    streaming(&mut s, r);
    revocation(&mut s, r);
    if let Some(p) = &r.results.pool {
        pool(&mut s, p);
    }
    drills(&mut s, r);
    scaling(&mut s, r);
    curves(&mut s, r);
    redis_failover(&mut s, r);
    method(&mut s, r);
    s
}

fn headline(s: &mut String, r: &Report) {
    let x = &r.ratios;
    let _ = writeln!(s, "## Headline\n\n| figure | value |\n|---|---|");
    let rate = x.at_rate;
    let rows = [
        (format!("S3 − S2 (Pingora) latency at {rate:.0} req/s, p50 / p99"), pair_ms(x.s3_minus_s2_p50_ms, x.s3_minus_s2_p99_ms)),
        (
            format!("S3 − S2j (Envoy jwt_authn) latency at {rate:.0} req/s, p50 / p99"),
            pair_ms(x.s3_minus_s2j_p50_ms, x.s3_minus_s2j_p99_ms),
        ),
        (format!("S3 − S2n (nginx) latency at {rate:.0} req/s, p50 / p99"), pair_ms(x.s3_minus_s2n_p50_ms, x.s3_minus_s2n_p99_ms)),
        ("saturation S3 / S2 (Pingora)".into(), pct(x.saturation_s3_over_s2)),
        ("saturation S3 / S2j (Envoy jwt_authn)".into(), pct(x.saturation_s3_over_s2j)),
        ("saturation S3 / S2n (nginx)".into(), pct(x.saturation_s3_over_s2n)),
        ("saturation S3x2 (two gateways, two control planes, same cores) / S3".into(), pct(x.s3x2_over_s3)),
        (
            format!("S4 governed req/s vs the original's published {:.0} (33 per vCPU × {})", x.original_governed_rps, r.environment.cores),
            match (x.s4_saturation_rps, x.s4_over_original) {
                (Some(v), Some(o)) => format!("{v:.0} req/s ({o:.1}×)"),
                _ => "not measured".into(),
            },
        ),
        ("S5 64 MiB download, gateway / Pingora bytes/s".into(), pct(x.s5_gateway_over_s2_bytes)),
        ("S5 64 MiB download, gateway / nginx bytes/s".into(), pct(x.s5_gateway_over_s2n_bytes)),
        ("S6(a) revoke returned → request denied, p99".into(), opt_ms(x.s6a_p99_ms)),
        ("S6(b) revoke returned → open SSE stream cut".into(), x.s6b_streams_cut.clone()),
        ("S6(c) revoke returned → another STS instance refuses to mint, p99".into(), opt_ms(x.s6c_p99_ms)),
        (
            format!("S7 gateway CPU per request, pool of 3 / one fixed upstream (S7g / S3), {rate:.0} req/s · saturation"),
            format!("{} · {}", pct(x.s7_pool_cpu_ratio), pct(x.s7_pool_cpu_ratio_saturation)),
        ),
        (
            "Failover drill through the gateway: client-visible errors, p99".into(),
            match (x.drill_gateway_errors, x.drill_gateway_p99_ms) {
                (Some(e), Some(p)) => format!("{e} errors, p99 {p:.2} ms"),
                _ => "not measured".into(),
            },
        ),
        (
            "load generator ceiling (S1 saturation)".into(),
            x.generator_ceiling_rps.map_or("not measured".into(), |v| format!("{v:.0} req/s")),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push('\n');
}

fn targets(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Targets\n\n| target | measured | |\n|---|---|---|");
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(s, "| {} | {} | {verdict} |", t.goal, t.measured);
    }
    s.push('\n');
}

fn fixed_rate(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "## S1–S4 at fixed rates\n\nLatency in ms, corrected for coordinated omission (timed from each request's intended send time \
         when the system made it late).\n\n| | target | rate | achieved req/s | p50 | p90 | p99 | p99.9 | max | requests | errors | unsent |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for rec in r.results.rate.iter().filter(|x| matches!(x.run.mode, Mode::Fixed { .. })) {
        let Mode::Fixed { rate } = rec.run.mode else { continue };
        let l = &rec.run.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {rate:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            rec.scenario,
            rec.label,
            rec.run.achieved_rps,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            rec.run.requests,
            errors(rec),
            rec.run.unsent
        );
    }
    s.push('\n');
}

fn saturation(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "## S1–S4 at saturation\n\n{} connections, closed loop, {:.0} s measured; latency is service time (ms).\n\n\
         | | target | req/s | p50 | p99 | p99.9 | max | requests | errors |\n|---|---|---|---|---|---|---|---|---|",
        r.plan.saturation_connections,
        r.plan.duration.as_secs_f64()
    );
    for rec in r.results.rate.iter().filter(|x| x.run.mode == Mode::Saturation) {
        let l = &rec.run.latency;
        let note = if rec.run.pool_exhausted { " (mandate pool ran out: shorter window)" } else { "" };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}{note} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            rec.scenario,
            rec.label,
            rec.run.achieved_rps,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            rec.run.requests,
            errors(rec)
        );
    }
    if !r.results.premint.is_empty() {
        let rates: Vec<String> = r.results.premint.iter().map(|p| format!("{:.0}", p.per_second)).collect();
        let drains: Vec<String> = r.results.premint.iter().map(|p| format!("{:.1}", p.ledger_drain_s)).collect();
        let _ = writeln!(
            s,
            "\nS3 mandates were pre-minted before each timed window (8 connections): {} mandates/s; each window then waited for \
             the audit ledger to file the pre-mint's evidence ({} s) so that it measures the steady state, not the catching up.",
            rates.join(", "),
            drains.join(", ")
        );
    }
    s.push('\n');
}

/// The latency over time at the reference rate: per target, the typical and the worst 100 ms
/// slice, and how many slices stood far above the typical one (a stall).
fn over_time(s: &mut String, r: &Report) {
    let rate = r.ratios.at_rate;
    let runs: Vec<&RateRecord> = r.reference_runs().filter(|x| !x.run.over_time.is_empty()).collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Latency over time at {rate:.0} req/s

The p99 of every 100 ms of the measured window ([{}-over-time.svg]({}-over-time.svg)): \
         a stall is a slice far above the median one; a periodic stall repeats at a steady spacing.\n\n\
         | | target | median slice p99 | worst slice p99 | worst slice max | slices > 4 × median (and > 2 ms) | at (s) |\n|---|---|---|---|---|---|---|",
        r.stem(),
        r.stem()
    );
    for rec in runs {
        let stalls = crate::load::timeline::stalls(&rec.run.over_time);
        let median = stalls.median_p99;
        let worst = rec.run.over_time.iter().max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms)).expect("not empty");
        let high: Vec<String> = stalls.slow.iter().map(|x| format!("{:.1}", x.start_ms as f64 / 1e3)).collect();
        let at = if high.len() > 12 { format!("{} …", high[..12].join(", ")) } else { high.join(", ") };
        let _ = writeln!(
            s,
            "| {} | {} | {median:.2} | {:.2} | {:.2} | {} | {at} |",
            rec.scenario,
            rec.label,
            worst.p99_ms,
            worst.max_ms,
            high.len()
        );
    }
    s.push('\n');
}

fn cpu(s: &mut String, r: &Report) {
    let _ =
        writeln!(s, "## CPU seconds per 1,000 requests\n\nuser + system time from `/proc/<pid>/stat` over each run (warm-up included).\n");
    let _ = writeln!(s, "| | run | {} |\n|---|---|{}", CPU_COLUMNS.join(" | "), "---|".repeat(CPU_COLUMNS.len()));
    for rec in &r.results.rate {
        let mode = match rec.run.mode {
            Mode::Fixed { rate } => format!("{rate:.0} req/s"),
            Mode::Saturation => "saturation".into(),
        };
        let cells: Vec<String> = CPU_COLUMNS.iter().map(|c| rec.cpu_s_per_1k.get(*c).map_or("".into(), |v| format!("{v:.3}"))).collect();
        let _ = writeln!(s, "| {} | {mode} | {} |", rec.scenario, cells.join(" | "));
    }
    let rss: Vec<String> = r.peak_rss_mib.iter().map(|(k, v)| format!("{k} {v:.1} MiB")).collect();
    let _ = writeln!(s, "\nPeak RSS (VmHWM): {}.\n", rss.join(", "));
}

fn scale_out(s: &mut String, r: &Report) {
    let Some(x) = &r.results.scale_out else { return };
    let _ = writeln!(
        s,
        "## S3x2: two gateways and two control planes\n\nS3 at saturation through a second control plane and gateway as well as the \
         bench's own, on the same Postgres and Redis and the same cores: {} connections to each, each gateway with mandates from \
         its own control plane. Both pairs share this machine, so the ratio to S3 is the cost of running two, not what a second \
         machine adds.\n\n| gateway | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|",
        x.runs[0].connections
    );
    for (name, run) in ["the bench's", "the second"].iter().zip(&x.runs) {
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            run.achieved_rps,
            run.latency.p50_ms,
            run.latency.p99_ms,
            run_errors(run)
        );
    }
    let _ = writeln!(
        s,
        "| together | {:.0} | | | |\n\nCPU of all four processes: {:.3} s per 1,000 requests; S3x2 / S3 saturation: {}.\n",
        x.achieved_rps,
        x.cpu_s_per_1k,
        pct(r.ratios.s3x2_over_s3)
    );
}

fn streaming(s: &mut String, r: &Report) {
    let Some(st) = &r.results.streaming else { return };
    let _ = writeln!(
        s,
        "## S5 streaming\n\n{} trials per target, fresh connection each, medians.\n\n\
         | target | 64 MiB download MiB/s | SSE first event ms | SSE {} events total ms | events/s | failures |\n|---|---|---|---|---|---|",
        r.plan.stream_repeats, r.plan.sse_events
    );
    for (d, e) in st.downloads.iter().zip(&st.sse) {
        let failures = d.failures.len() + e.failures.len();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {failures} |",
            d.label,
            num(d.mib_per_s, 1),
            num(e.first_event_ms, 2),
            num(e.total_ms, 1),
            num(e.events_per_s, 0)
        );
    }
    if !st.open.is_empty() {
        let _ = writeln!(
            s,
            "\n{} SSE streams opened {} at a time, each held {:.0} s after its first event (the gateway: one mandate each, minted \
             beforehand); resident memory (`VmRSS`) of the proxy once every stream delivered its first event.\n\n\
             | target | streams open | RSS before MiB | RSS with all open MiB | KiB per stream | sockets held | failures |\n|---|---|---|---|---|---|---|",
            r.plan.open_streams,
            crate::scenarios::streaming::OPENING,
            r.plan.open_hold.as_secs_f64()
        );
        for o in &st.open {
            let before = o.rss_before_kib.map(|k| k as f64 / 1024.0);
            let _ = writeln!(
                s,
                "| {} | {} of {} | {} | {} | {} | {} | {}{} |",
                o.label,
                o.opened,
                o.streams,
                num(before, 1),
                num(o.rss_open_mib(), 1),
                num(o.kib_per_stream(), 1),
                o.sockets_open.map_or_else(String::new, |n| n.to_string()),
                o.failed,
                if o.failures.is_empty() { String::new() } else { format!(" ({})", o.failures.join("; ")) }
            );
        }
    }
    s.push('\n');
}

fn revocation(s: &mut String, r: &Report) {
    let Some(v) = &r.results.revocation else { return };
    let statuses: Vec<String> = v.denial_statuses.iter().map(|(k, n)| format!("{k} × {n}")).collect();
    let _ = writeln!(
        s,
        "## S6 revocation\n\n{} trials, each with its own session: pre-mint gateway mandates, revoke the session, then send one.\n\n\
         - (a) revoke returned → denial received: p50 {}, p99 {}, max {}; denials {}; never denied: {}.\n\
         - (b) open SSE stream through the gateway: {}.\n\
         - (c) a second control plane (another STS instance, told only by `caracal.sessions.revoke`) asked to mint from the revoked \
         session until it refuses: p50 {}, p99 {}, max {}; still minting after {} s: {}.\n",
        v.trials,
        opt_ms(v.denied_p50_ms),
        opt_ms(v.denied_p99_ms),
        opt_ms(v.denied_max_ms),
        if statuses.is_empty() { "none".into() } else { statuses.join(", ") },
        v.not_denied,
        r.ratios.s6b_streams_cut,
        opt_ms(v.other_sts_p50_ms),
        opt_ms(v.other_sts_p99_ms),
        opt_ms(v.other_sts_max_ms),
        crate::scenarios::revocation::REFUSAL_WAIT.as_secs(),
        v.other_sts_not_refused
    );
    for f in v.failures.iter().take(5) {
        let _ = writeln!(s, "- failure: {f}");
    }
    s.push('\n');
}

/// Processes whose CPU per 1,000 requests the S7 table shows; `pool-*` is the three endpoints together.
const POOL_CPU_COLUMNS: [&str; 7] = ["gateway", "control-plane", "pingora-pool", "nginx-pool", "pool-*", "upstream", "load-generator"];

fn pool(s: &mut String, p: &Pool) {
    let _ = writeln!(
        s,
        "## S7 pool of three endpoints\n\nEndpoints {} (weights {}), each a `caracal-bench upstream` counting what it served. \
         S7p: Pingora pass-through, round robin (`pingora-load-balancing`); S7n: nginx `upstream` block, keep-alive; S7g: the gateway, \
         a resource with the three as `endpoints` (round robin); S3: the gateway with one fixed upstream, alternating with S7g as its \
         reference. Latency in ms (fixed rates: coordinated-omission corrected; saturation: service time).\n\n\
         | | target | run | req/s | p50 | p99 | errors | requests per endpoint | weights followed |\n|---|---|---|---|---|---|---|---|---|",
        p.endpoints.join(", "),
        p.weights.iter().map(u32::to_string).collect::<Vec<_>>().join("/"),
    );
    for rec in &p.records {
        let r = &rec.rate;
        let split = rec.endpoint_requests.as_ref().map_or("–".into(), |c| split_cell(c));
        let followed = match rec.weights_followed {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {split} | {followed} |",
            r.scenario,
            r.label,
            mode_cell(&r.run),
            r.run.achieved_rps,
            r.run.latency.p50_ms,
            r.run.latency.p99_ms,
            errors(r)
        );
    }
    let _ = writeln!(s, "\nCPU seconds per 1,000 requests (user + system, warm-up included):\n");
    let _ = writeln!(s, "| | run | {} |\n|---|---|{}", POOL_CPU_COLUMNS.join(" | "), "---|".repeat(POOL_CPU_COLUMNS.len()));
    for rec in &p.records {
        let cpu = &rec.rate.cpu_s_per_1k;
        let cells: Vec<String> = POOL_CPU_COLUMNS
            .iter()
            .map(|c| match c.strip_suffix('*') {
                Some(prefix) => {
                    let sum: f64 = cpu.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum();
                    format!("{sum:.3}")
                }
                None => cpu.get(*c).map_or("".into(), |v| format!("{v:.3}")),
            })
            .collect();
        let _ = writeln!(s, "| {} | {} | {} |", rec.rate.scenario, mode_cell(&rec.rate.run), cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "\nGateway CPU per request, pool over one fixed upstream (goal ≤ 105%); S3 and S7g alternate, the ratio is of their means \
         and each pair's own shows the noise:\n\n| run | S3 s/1k | S7g s/1k | S7g / S3 | pairs |\n|---|---|---|---|---|"
    );
    for c in &p.cpu_ratios {
        let mode = match c.mode {
            Mode::Fixed { rate } => format!("{rate:.0} req/s"),
            Mode::Saturation => "saturation".into(),
        };
        let pairs: Vec<String> = c.pairs.iter().map(|r| format!("{:.1}%", r * 100.0)).collect();
        let _ =
            writeln!(s, "| {mode} | {:.3} | {:.3} | {:.1}% | {} |", c.fixed_s_per_1k, c.pool_s_per_1k, c.ratio * 100.0, pairs.join(", "));
    }
    s.push('\n');
}

/// `n₁ / n₂ / n₃ (a% / b% / c%)`.
fn split_cell(counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum();
    let n: Vec<String> = counts.iter().map(u64::to_string).collect();
    if total == 0 {
        return n.join(" / ");
    }
    let pc: Vec<String> = counts.iter().map(|c| format!("{:.1}%", *c as f64 * 100.0 / total as f64)).collect();
    format!("{} ({})", n.join(" / "), pc.join(" / "))
}

fn mode_cell(run: &RunSummary) -> String {
    match run.mode {
        Mode::Fixed { rate } => format!("{rate:.0} req/s"),
        Mode::Saturation => "saturation".into(),
    }
}

fn drills(s: &mut String, r: &Report) {
    let ds = &r.results.drills;
    let Some(first) = ds.first() else { return };
    let p = &r.plan.drill;
    let _ = writeln!(
        s,
        "## Failover drill\n\n{:.0} req/s for {:.0} s ({} connections, after {} s warm-up) through a pool of three endpoints; endpoint \
         {} is killed (SIGKILL) at {:.1} s and started again on the same port at {:.1} s. Errors are client-visible (non-2xx and \
         transport). Time to eject: kill → the last client-visible error while the endpoint was down (\"not ejected\" when errors \
         went on to within {} s of its return). Down: from the kill until the restarted process listens. Time to recover: the returned endpoint listening → the first request it served, by its \
         own counter.\n\n\
         | | target | settings | errors (before kill / while down / once back) | p50 | p99 | p99.9 | max | time to eject | \
         restart → listening | time to recover | served by the returned endpoint |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|",
        p.rate,
        p.duration.as_secs_f64(),
        r.plan.connections,
        r.plan.warmup.as_secs_f64(),
        first.killed_endpoint,
        p.kill_at.as_secs_f64(),
        p.restart_at.as_secs_f64(),
        crate::scenarios::drill::STILL_FAILING.as_secs(),
    );
    for d in ds {
        let l = &d.run.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            d.scenario,
            d.label,
            d.settings,
            drill_errors(d),
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            d.eject,
            opt_ms(d.restart_to_listening_ms),
            d.recover_ms.map_or("none within the drill".into(), |v| format!("{v:.2} ms")),
            d.returned_endpoint_served,
        );
    }
    let _ = writeln!(
        s,
        "\nPer second (by intended send time; kill in second {:.0}, restart in second {:.0}):\n",
        p.kill_at.as_secs_f64().floor(),
        p.restart_at.as_secs_f64().floor()
    );
    let mut head = String::from("| s |");
    let mut rule = String::from("|---|");
    for d in ds {
        let _ = write!(head, " {0} requests | {0} errors | {0} p99 ms |", d.scenario);
        rule.push_str("---|---|---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let seconds = ds.iter().map(|d| d.seconds.len()).max().unwrap_or(0);
    for i in 0..seconds {
        let mut row = format!("| {i} |");
        for d in ds {
            match d.seconds.get(i) {
                Some(x) => {
                    let _ = write!(row, " {} | {} | {} |", x.requests, x.errors, num(x.p99_ms, 2));
                }
                None => row.push_str(" | | |"),
            }
        }
        let _ = writeln!(s, "{row}");
    }
    s.push('\n');
}

fn curves(s: &mut String, r: &Report) {
    let points = &r.results.curves;
    let Some(first) = points.first() else { return };
    let _ = writeln!(
        s,
        "## C1: cost over revoked anchors\n\nLive revoked anchors in the views (rows in `revocations`, one zone), then at each size: the \
         gateway's full snapshot reload, S3 at {} ({} connections), and revoke → denied through the gateway and → in the gateway's \
         own view (median of a few trials). Ratios are to the first point, in the same run.\n\n\
         | revoked anchors | gateway reload | gateway RSS | S3 p50 | S3 p99 | gateway CPU / req | control plane CPU / req | revoke → denied | revoke → in the gateway's view |\n\
         |---|---|---|---|---|---|---|---|---|",
        mode_cell(&first.s3.run),
        first.s3.run.connections
    );
    let cpu = |p: &crate::scenarios::curves::revoked::CostPoint, who: &str| p.s3.cpu_s_per_1k.get(who).map(|v| v * 1e3);
    for p in points {
        let l = &p.s3.run.latency;
        let _ = writeln!(
            s,
            "| {} | {:.0} ms | {} | {:.2} ms ({:.2}×) | {:.2} ms ({:.2}×) | {} | {} | {} | {} |",
            p.revoked_anchors,
            p.gateway_reload_ms,
            p.gateway_rss_mib.map_or("—".into(), |v| format!("{v:.1} MiB")),
            l.p50_ms,
            l.p50_ms / first.s3.run.latency.p50_ms,
            l.p99_ms,
            l.p99_ms / first.s3.run.latency.p99_ms,
            relative_us(cpu(p, "gateway"), cpu(first, "gateway")),
            relative_us(cpu(p, "control-plane"), cpu(first, "control-plane")),
            opt_ms(p.denied_p50_ms),
            opt_ms(p.in_view_p50_ms),
        );
    }
    s.push('\n');
}

fn ledger(s: &mut String, r: &Report) {
    let runs = &r.results.ledger;
    let Some(first) = runs.first() else { return };
    let _ = writeln!(
        s,
        "## L1: the audit ledger's cost\n\nS4 (mint + gateway) at saturation ({} connections, {:.0} s) through a control plane and gateway \
         of their own, once per way of deploying the ledger, each on a Redis database of its own so only its ledger files its events. \
         CPU per request counts the variant's processes, Postgres and Redis. A ledger walks the whole chain when it starts (its first \
         tamper sweep: \"start-up sweep\", from ready to done; the window opens after it). Backlog: events not filed when the window \
         closed; filed: how long the ledger then took to file them.\n\n\
         | ledger | req/s | vs the first | CPU / req: gateway | control plane | ledger | Postgres | Redis | total | start-up sweep | backlog | filed | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|",
        first.run.connections, first.run.window_s
    );
    let us = |run: &crate::scenarios::ledger::LedgerRun, who: &str| {
        run.cpu_s_per_1k.get(who).map_or("—".into(), |v| format!("{:.0} µs", v * 1e3))
    };
    for l in runs {
        let total: f64 = l.cpu_s_per_1k.values().sum();
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.1}% | {} | {} | {} | {} | {} | {:.0} µs | {} | {} | {} | {} |",
            l.label,
            l.run.achieved_rps,
            100.0 * l.run.achieved_rps / first.run.achieved_rps,
            us(l, "gateway"),
            us(l, "control-plane"),
            us(l, "ledger"),
            us(l, "postgres"),
            us(l, "redis"),
            total * 1e3,
            l.first_sweep_s.map_or("—".into(), |v| format!("{v:.1} s")),
            l.backlog_at_end.map_or("—".into(), |v| v.to_string()),
            l.drained_s.map_or("—".into(), |v| format!("{v:.1} s")),
            run_errors(&l.run),
        );
    }
    s.push('\n');
}

fn scaling(s: &mut String, r: &Report) {
    for c in &r.results.scaling {
        let Some(first) = c.points.first() else { continue };
        let _ = writeln!(
            s,
            "## {}: cost over {}\n\n{} S3 at {} ({} connections) at each point; ratios are to the first point, in the same run.\n\n\
             | {} | | S3 p50 | S3 p99 | gateway CPU / req | control plane CPU / req | gateway RSS | control plane RSS | errors |\n\
             |---|---|---|---|---|---|---|---|---|",
            c.id,
            c.title,
            c.method,
            mode_cell(&first.s3.run),
            first.s3.run.connections,
            c.unit
        );
        let cpu = |p: &crate::scenarios::curves::Point, who: &str| p.s3.cpu_s_per_1k.get(who).map(|v| v * 1e3);
        let mib = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1} MiB"));
        for p in &c.points {
            let (l, l0) = (&p.s3.run.latency, &first.s3.run.latency);
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} ms ({:.2}×) | {:.2} ms ({:.2}×) | {} | {} | {} | {} | {} |",
                p.size,
                p.note,
                l.p50_ms,
                l.p50_ms / l0.p50_ms,
                l.p99_ms,
                l.p99_ms / l0.p99_ms,
                relative_us(cpu(p, "gateway"), cpu(first, "gateway")),
                relative_us(cpu(p, "control-plane"), cpu(first, "control-plane")),
                mib(p.gateway_rss_mib),
                mib(p.control_plane_rss_mib),
                run_errors(&p.s3.run),
            );
        }
        s.push('\n');
    }
}

/// `v` µs and its ratio to `base`.
fn relative_us(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{v:.0} µs ({:.2}×)", v / b),
        (Some(v), _) => format!("{v:.0} µs"),
        _ => "—".into(),
    }
}

fn redis_failover(s: &mut String, r: &Report) {
    let Some(f) = &r.results.redis_failover else { return };
    let p = &r.plan.drill;
    let l = &f.run.latency;
    let _ = writeln!(
        s,
        "## S8: Redis failover\n\n{:.0} req/s of governed requests for {:.0} s ({} connections) through a gateway and control plane of \
         their own that find Redis through Sentinels ({}). The primary is killed (SIGKILL) at {:.1} s. Refused: non-2xx answers after \
         the kill. Recovered: the kill → the last refused request answered ([docs/redis.md](../../docs/redis.md)).\n\n\
         | errors before the kill | refused after it | statuses | Sentinels named a new primary | recovered | p50 | p99 | max |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
        p.rate,
        p.duration.as_secs_f64(),
        r.plan.connections,
        f.topology,
        f.killed_at_s,
        f.errors_before_kill,
        f.refused_after_kill,
        run_errors(&f.run),
        f.promoted_ms.map_or("not within the run".into(), |v| format!("{v:.0} ms after the kill")),
        f.recovered_ms.map_or("nothing refused".into(), |v| format!("{v:.0} ms after the kill")),
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
    );
    let _ = writeln!(
        s,
        "| s | requests | errors | p99 ms |
|---|---|---|---|"
    );
    for x in &f.seconds {
        let _ = writeln!(s, "| {} | {} | {} | {} |", x.second, x.requests, x.errors, num(x.p99_ms, 2));
    }
    s.push('\n');
}

/// `total (before / while down / after)`, then the statuses when there are errors.
fn drill_errors(d: &Drill) -> String {
    let split = format!("{} / {} / {}", d.errors_before_kill, d.errors_while_down, d.errors_after_back);
    match run_errors(&d.run).split_once(' ') {
        Some((total, detail)) => format!("{total} ({split}): {}", detail.trim_matches(['(', ')'])),
        None => format!("0 ({split})"),
    }
}

fn method(s: &mut String, r: &Report) {
    let p = &r.plan;
    let _ = writeln!(
        s,
        "## Method\n\n\
         - Load generator: `caracal-bench` (Rust, hyper 1, HTTP/1.1 keep-alive, one connection per worker task). Fixed rate: wrk2-style \
         per-connection schedules over {} connections, {:.1} s warm-up then {:.0} s measured, HDR histogram (µs, 3 digits). \
         Saturation: {} connections closed loop.\n\
         - S1 direct; S2 Pingora 0.9 pass-through (2 threads, same engine as the gateway); S2n nginx (2 workers, upstream keep-alive, \
         no buffering); S2j Envoy `jwt_authn` with a local ES256 JWKS (concurrency 2); S3 `caracal-gateway` (GATEWAY_THREADS=2) with a \
         fresh pre-minted single-use mandate per request (JTI, verification, signed STS exchange, policy); S4 mint a gateway mandate \
         at the STS then call the gateway, timed together. S7: three `caracal-bench upstream` endpoints behind a second Pingora \
         pass-through (round robin), a second nginx (`upstream` block) and the gateway (a resource with three `endpoints`).\n\
         - A request sent on time is timed from when it left (the tokio timer wakes up to 1 ms late: the generator's error); one the \
         system made late is timed from its intended send time.\n\
         - Caracal: dev mode, `GATEWAY_THREADS=2`, the gateway's revocation view on (signed stream consumer + Postgres snapshot), \
         allow-all Rego policy, Postgres and Redis on loopback.\n\
         - Upstream: `caracal-bench upstream` (hyper): ≈ 90-byte JSON, `/bytes/N` streamed from a static buffer, `/sse` one chunk per event.\n\
         - Rates: {}. Envoy: {}. nginx: {}.",
        p.connections,
        p.warmup.as_secs_f64(),
        p.duration.as_secs_f64(),
        p.saturation_connections,
        p.rates.iter().map(|r| format!("{r:.0} req/s")).collect::<Vec<_>>().join(", "),
        r.environment.envoy.as_deref().unwrap_or("not run"),
        r.environment.nginx.as_deref().unwrap_or("not run"),
    );
    if let Some(only) = &r.plan.only {
        let _ = writeln!(s, "- Scenarios run (`--only`): {}.", only.join(", "));
    }
    for skip in &r.skipped {
        let _ = writeln!(s, "- Skipped: {skip}");
    }
}

fn errors(rec: &RateRecord) -> String {
    run_errors(&rec.run)
}

/// `n (k×status, m×transport)`, or `0`.
fn run_errors(run: &RunSummary) -> String {
    if run.errors == 0 {
        return "0".into();
    }
    let mut parts: Vec<String> = run.error_statuses.iter().map(|(k, n)| format!("{n}×{k}")).collect();
    if run.transport_errors > 0 {
        parts.push(format!("{}×transport", run.transport_errors));
    }
    format!("{} ({})", run.errors, parts.join(", "))
}

/// `v` with `digits` decimals, or `–`.
pub(crate) fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), |v| format!("{v:.2} ms"))
}

fn pair_ms(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a:+.2} ms / {b:+.2} ms"),
        _ => "not measured".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), |v| format!("{:.1}%", v * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_format_with_signs_and_gaps() {
        assert_eq!(pair_ms(Some(0.123), Some(-1.5)), "+0.12 ms / -1.50 ms");
        assert_eq!(pair_ms(None, Some(1.0)), "not measured");
        assert_eq!(pct(Some(0.3456)), "34.6%");
        assert_eq!(num(None, 2), "–");
        assert_eq!(num(Some(2.0 / 3.0), 2), "0.67");
        assert_eq!(split_cell(&[1, 1, 2]), "1 / 1 / 2 (25.0% / 25.0% / 50.0%)");
        assert_eq!(split_cell(&[0, 0]), "0 / 0");
    }
}
