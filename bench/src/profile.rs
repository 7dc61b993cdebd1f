//! `--profile`: where the governed request spends its time (issue 15, "profile first").
//!
//! Around each measured S3 and S4 window, `perf record` samples the gateway and the control plane
//! (on-CPU, 199 Hz, DWARF call graphs: the release build keeps line tables) and, separately, the
//! scheduler events of both (`perf sched`: for every time a thread ran, how long it had waited
//! off-CPU and how long it then waited runnable for a core). Each on-CPU recording becomes a flame
//! graph (`inferno`) and a table of the top costs — self time by function, and inclusive time by our
//! own functions; each scheduler recording a table per thread name of its scheduling delays —
//! in `<out>/profiles/`. The
//! fixed-rate windows also keep every request's latency, and the profile report shows the worst
//! 100 ms slices, so a periodic stall shows as a pattern in time.
//!
//! Profiling slows what it watches (perf's own sampling, and DWARF stacks copied per sample):
//! absolute figures of a profiled run are not comparable with an unprofiled one; the shares are
//! what this is for.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::hist::quantile;
use crate::load::timeline::{self, Sample, Slice};

/// Sampling frequency of the on-CPU recordings.
const FREQUENCY: &str = "199";
/// Rows of each top-cost table.
const TOP: usize = 15;

/// What `--profile` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Call stacks (on-CPU) and scheduling.
    All,
    /// Scheduling only: cheap enough to leave the latency tail as it is.
    Sched,
}

/// Recordings under way for one window.
pub(crate) struct Window {
    label: String,
    recordings: Vec<Recording>,
}

struct Recording {
    process: String,
    kind: Kind,
    file: PathBuf,
    perf: std::process::Child,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    OnCpu,
    OffCpu,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::OnCpu => "cpu",
            Self::OffCpu => "sched",
        }
    }
}

/// One recording, analysed.
#[derive(Debug)]
pub(crate) struct Profile {
    pub(crate) label: String,
    pub(crate) process: String,
    kind: Kind,
    samples: u64,
    svg: PathBuf,
    top_self: Shares,
    top_ours: Shares,
    /// Scheduler recordings: per thread name, `(thread, runs, p99 sch delay ms, max sch delay ms,
    /// max off-CPU wait ms)`.
    threads: Vec<(String, usize, f64, f64, f64)>,
}

/// Starts recording `processes` (name, pid) for the window `label` (e.g. `S3-1000`).
pub(crate) fn start(dir: &Path, label: &str, processes: &[(&str, u32)], mode: Mode) -> anyhow::Result<Window> {
    std::fs::create_dir_all(dir)?;
    let mut recordings = Vec::new();
    let kinds: &[Kind] = match mode {
        Mode::All => &[Kind::OnCpu, Kind::OffCpu],
        Mode::Sched => &[Kind::OffCpu],
    };
    for &(process, pid) in processes {
        for &kind in kinds {
            let file = dir.join(format!("{label}-{process}-{}.data", kind.name()));
            let mut cmd = Command::new("perf");
            cmd.arg("record").arg("-q").arg("-o").arg(&file).arg("-p").arg(pid.to_string());
            match kind {
                Kind::OnCpu => cmd.args(["-F", FREQUENCY, "--call-graph", "dwarf,8192"]),
                // No stacks: switches are too many to unwind each.
                Kind::OffCpu => cmd.args(["-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-e", "sched:sched_migrate_task"]),
            };
            let perf = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("perf must be installed (Debian: linux-perf)")?;
            recordings.push(Recording { process: process.to_owned(), kind, file, perf });
        }
    }
    // perf attaches asynchronously; give it a moment before the window opens.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Window { label: label.to_owned(), recordings })
}

impl Window {
    /// Stops the recordings and analyses them (flame graphs next to the data files).
    pub(crate) fn finish(mut self) -> anyhow::Result<Vec<Profile>> {
        // Every recording stops at the end of the window, before any analysis.
        for r in &mut self.recordings {
            Command::new("kill").arg("-INT").arg(r.perf.id().to_string()).status()?;
        }
        for r in &mut self.recordings {
            r.perf.wait()?;
        }
        let mut out = Vec::new();
        for r in &self.recordings {
            out.push(analyse(&self.label, r)?);
            // The data files are large and the flame graph holds what they say.
            let _ = std::fs::remove_file(&r.file);
        }
        Ok(out)
    }
}

fn analyse(label: &str, r: &Recording) -> anyhow::Result<Profile> {
    if r.kind == Kind::OffCpu {
        let out =
            Command::new("perf").args(["sched", "timehist", "-i"]).arg(&r.file).stderr(Stdio::null()).output().context("perf sched")?;
        let threads = delays(&String::from_utf8_lossy(&out.stdout));
        let runs = threads.iter().map(|t| t.1 as u64).sum();
        return Ok(Profile {
            label: label.to_owned(),
            process: r.process.clone(),
            kind: r.kind,
            samples: runs,
            svg: PathBuf::new(),
            top_self: Vec::new(),
            top_ours: Vec::new(),
            threads,
        });
    }
    let script = Command::new("perf")
        // `--no-inline`: resolving inlined frames runs addr2line per address (minutes per window).
        .args(["script", "--no-inline", "-i"])
        .arg(&r.file)
        .stderr(Stdio::null())
        .output()
        .context("perf script")?;
    let mut folded = Vec::new();
    {
        use inferno::collapse::Collapse as _;
        let mut opts = inferno::collapse::perf::Options::default();
        opts.include_tid = false;
        inferno::collapse::perf::Folder::from(opts).collapse(BufReader::new(&script.stdout[..]), &mut folded)?;
    }
    let folded = String::from_utf8_lossy(&folded).into_owned();
    // The folded stacks stay next to the flame graph (not committed): every frame, for the questions
    // a flame graph trimmed to a pixel cannot answer (who calls the allocator).
    std::fs::write(r.file.with_extension("folded"), &folded)?;
    let svg = r.file.with_extension("svg");
    let mut opts = inferno::flamegraph::Options::default();
    // Frames narrower than a pixel are left out: a tenth of the file, nothing readable lost.
    opts.min_width = 1.0;
    opts.title = format!("{label} {} ({})", r.process, if r.kind == Kind::OnCpu { "on-CPU" } else { "scheduler switches" });
    let lines: Vec<&str> = folded.lines().collect();
    if !lines.is_empty() {
        inferno::flamegraph::from_lines(&mut opts, lines.iter().copied(), std::fs::File::create(&svg)?)?;
    }
    let (samples, top_self, top_ours) = tops(&folded);
    Ok(Profile { label: label.to_owned(), process: r.process.clone(), kind: r.kind, samples, svg, top_self, top_ours, threads: Vec::new() })
}

/// Per thread name (the digits of a numbered pool folded into `#`), from `perf sched timehist`'s
/// lines (`time [cpu] name[tid] wait sch_delay run`): how often it ran, the p99 and max of its
/// scheduling delay (runnable, waiting for a core) and its longest off-CPU wait, worst delay first.
fn delays(timehist: &str) -> Vec<(String, usize, f64, f64, f64)> {
    let mut by: HashMap<String, (Vec<f64>, f64)> = HashMap::new();
    for line in timehist.lines() {
        // `time [cpu] <name, may hold spaces>[tid] wait delay run`.
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || !cols[1].starts_with('[') {
            continue;
        }
        let (wait, delay) = (cols[cols.len() - 3], cols[cols.len() - 2]);
        let (Ok(wait), Ok(delay)) = (wait.parse::<f64>(), delay.parse::<f64>()) else { continue };
        let task = cols[2..cols.len() - 3].join(" ");
        let Some(name) = task.rsplit_once('[').map(|(n, _)| n) else { continue };
        let name: String = name.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
        let e = by.entry(name).or_default();
        e.0.push(delay);
        e.1 = e.1.max(wait);
    }
    let mut rows: Vec<(String, usize, f64, f64, f64)> = by
        .into_iter()
        .map(|(name, (mut d, wait))| {
            d.sort_by(f64::total_cmp);
            let max = *d.last().unwrap_or(&0.0);
            (name, d.len(), quantile(&d, 0.99).unwrap_or(max), max, wait)
        })
        .collect();
    rows.sort_by(|a, b| b.3.total_cmp(&a.3));
    rows
}

/// Frames with their share of the weight, heaviest first.
type Shares = Vec<(String, f64)>;

/// Total weight, the heaviest leaf frames, and the heaviest of our own frames (inclusive, each
/// counted once per stack), each as a share of the total.
fn tops(folded: &str) -> (u64, Shares, Shares) {
    let mut total = 0u64;
    let mut leaf: HashMap<String, u64> = HashMap::new();
    let mut ours: HashMap<String, u64> = HashMap::new();
    for line in folded.lines() {
        let Some((stack, n)) = line.rsplit_once(' ') else { continue };
        let Ok(n) = n.parse::<u64>() else { continue };
        total += n;
        let frames: Vec<&str> = stack.split(';').collect();
        if let Some(last) = frames.last() {
            *leaf.entry(short(last)).or_default() += n;
        }
        let mut seen: Vec<String> = Vec::new();
        for f in frames.iter().filter(|f| f.starts_with("caracal_")) {
            let name = short(f);
            if !seen.contains(&name) {
                *ours.entry(name.clone()).or_default() += n;
                seen.push(name);
            }
        }
    }
    let share = |m: HashMap<String, u64>| {
        let mut v: Vec<(String, f64)> = m.into_iter().map(|(k, n)| (k, n as f64 * 100.0 / total.max(1) as f64)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(TOP);
        v
    };
    (total, share(leaf), share(ours))
}

/// A frame without its generic arguments and hash, at most 110 characters.
fn short(frame: &str) -> String {
    let mut out = String::with_capacity(frame.len());
    let mut depth = 0usize;
    for c in frame.chars() {
        match c {
            '<' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("<…>");
                }
            }
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.trim_end_matches("::{{closure}}").to_owned();
    let out = match out.rfind("::h") {
        Some(i) if out[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) && out.len() - i == 19 => out[..i].to_owned(),
        _ => out,
    };
    out.chars().take(110).collect()
}

/// The worst 100 ms slices of a fixed-rate window (by p99, then max): where a stall would show.
#[derive(Debug)]
pub(crate) struct Slices {
    pub(crate) label: String,
    /// Worst first, at most ten.
    worst: Vec<Slice>,
    /// The median slice's p99: a stall is a slice far above it.
    median_p99: f64,
    /// The median spacing of the slow slices, when there are four or more: a steady spacing is a
    /// periodic stall.
    period_hint: Option<f64>,
}

/// The worst 100 ms slices of `samples` ([`crate::load::timeline::slices`]).
pub(crate) fn slices(label: &str, samples: &[Sample]) -> Slices {
    let all = timeline::slices(samples);
    let stalls = timeline::stalls(&all);
    let gaps: Vec<f64> = stalls.slow.windows(2).map(|w| (w[1].start_ms - w[0].start_ms) as f64 / 1000.0).collect();
    let period_hint = (gaps.len() >= 3).then(|| {
        let mut g = gaps.clone();
        g.sort_by(f64::total_cmp);
        g[g.len() / 2]
    });
    let median_p99 = stalls.median_p99;
    let mut worst = all;
    worst.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms).then(b.max_ms.total_cmp(&a.max_ms)));
    worst.truncate(10);
    Slices { label: label.to_owned(), worst, median_p99, period_hint }
}

/// The profile report: per window and process, the flame graph and the top costs.
pub(crate) fn render(profiles: &[Profile], slices: &[Slices]) -> String {
    let mut s = String::from(
        "# Profiles\n\n`caracal-bench run --profile`: perf samples of the gateway and the control plane during each measured \
         S3/S4 window (on-CPU call stacks at 199 Hz, and the scheduling events of both). Shares are of the \
         process's samples in that window. Profiling slows the processes; compare shares, not absolute figures.\n\n",
    );
    for sl in slices {
        let _ = writeln!(
            s,
            "## {} — latency over time\n\nMedian 100 ms slice p99: {:.2} ms. {}\n\n| slice start (ms) | requests | p99 ms | max ms |\n|---|---|---|---|",
            sl.label,
            sl.median_p99,
            match sl.period_hint {
                Some(p) => format!("Slices with p99 > 4 × the median recur every ≈ {p:.2} s (median spacing)."),
                None => "No recurring slow slices (fewer than four slices above 4 × the median p99).".to_owned(),
            }
        );
        for w in &sl.worst {
            let _ = writeln!(s, "| {} | {} | {:.2} | {:.2} |", w.start_ms, w.requests, w.p99_ms, w.max_ms);
        }
        s.push('\n');
    }
    for p in profiles.iter().filter(|p| p.kind == Kind::OffCpu) {
        let _ = writeln!(
            s,
            "## {} — {} — scheduling\n\n{} runs. Scheduling delay: runnable, waiting for a core (queueing on the shared cores); \
             off-CPU wait: blocked (I/O, a lock, a timer, idle).\n\n| thread | runs | sch delay p99 ms | sch delay max ms | longest off-CPU wait ms |\n|---|---|---|---|---|",
            p.label, p.process, p.samples
        );
        for (name, runs, p99, max, wait) in &p.threads {
            let _ = writeln!(s, "| `{name}` | {runs} | {p99:.3} | {max:.3} | {wait:.1} |");
        }
        s.push('\n');
    }
    for p in profiles.iter().filter(|p| p.kind == Kind::OnCpu) {
        let what = "on-CPU samples";
        let svg = p.svg.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = writeln!(s, "## {} — {} — {}\n\n{} weight in [{svg}]({svg}).\n", p.label, p.process, what, p.samples);
        let _ = writeln!(s, "| self (leaf) | % | | ours, inclusive | % |\n|---|---|---|---|---|");
        for i in 0..TOP.max(p.top_ours.len()) {
            let a = p.top_self.get(i);
            let b = p.top_ours.get(i);
            if a.is_none() && b.is_none() {
                break;
            }
            let cell = |x: Option<&(String, f64)>| x.map_or((String::new(), String::new()), |(n, v)| (format!("`{n}`"), format!("{v:.1}")));
            let (an, av) = cell(a);
            let (bn, bv) = cell(b);
            let _ = writeln!(s, "| {an} | {av} | | {bn} | {bv} |");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_shortened_without_generics_or_hashes() {
        assert_eq!(short("caracal_gateway::phases::verify::run::h0123456789abcdef"), "caracal_gateway::phases::verify::run");
        assert_eq!(short("<alloc::vec::Vec<u8> as core::clone::Clone>::clone"), "<…>::clone");
        assert_eq!(short("tokio::runtime::task::harness::poll<F,S>::{{closure}}"), "tokio::runtime::task::harness::poll<…>");
    }

    #[test]
    fn tops_share_leaves_and_our_frames_once_per_stack() {
        let folded = "main;caracal_gateway::a;caracal_gateway::a;libc::memcpy 3\nmain;caracal_gateway::b;malloc 1\n";
        let (total, leaves, ours) = tops(folded);
        assert_eq!(total, 4);
        assert_eq!(leaves[0], ("libc::memcpy".to_owned(), 75.0));
        assert_eq!(ours[0], ("caracal_gateway::a".to_owned(), 75.0), "counted once though it recurses");
        assert_eq!(ours[1], ("caracal_gateway::b".to_owned(), 25.0));
    }

    #[test]
    fn scheduling_delays_per_thread_name() {
        let timehist = "           time    cpu  task name                       wait time  sch delay   run time\n\
            --------------- ------  ------------------------------  ---------  ---------  ---------\n\
            46180.098153 [0000]  worker-1[7600]    0.500      0.010      0.100\n\
            46180.098208 [0001]  worker-2[7601]    3.000      2.000      0.055\n\
            46180.098215 [0000]  redis[7602]       0.055      0.009      0.006\n\
            46180.098216 [0000]  Pingora HTTP Pr[7603]       0.055      0.001      0.006\n";
        let rows = delays(timehist);
        assert_eq!(rows[0].0, "worker-#");
        assert_eq!((rows[0].1, rows[0].3, rows[0].4), (2, 2.0, 3.0));
        assert_eq!(rows[1].0, "redis");
        assert_eq!(rows[2].0, "Pingora HTTP Pr", "names keep their spaces");
    }

    #[test]
    fn recurring_slow_slices_are_spotted() {
        let samples: Vec<Sample> = (0..20_000u64)
            .map(|i| {
                let intended = Duration::from_micros(i * 1000);
                // Every 2 s, one 100 ms slice is slow.
                let slow = intended.as_millis() % 2000 < 100;
                let latency = Duration::from_micros(if slow { 9_000 } else { 1_000 });
                Sample { intended, answered: intended + latency, latency, failed: false }
            })
            .collect();
        let sl = slices("S3", &samples);
        assert_eq!(sl.period_hint, Some(2.0));
        assert!((sl.median_p99 - 1.0).abs() < 1e-9);
        assert_eq!(sl.worst[0].p99_ms, 9.0);
    }
}
