//! The report: headline ratios and targets first, then every figure; written as Markdown, JSON and an
//! SVG latency plot.

pub(crate) mod markdown;
mod ratios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::run::Plan;
use crate::scenarios::Results;
use crate::scenarios::rate::{RateRecord, Target};
pub(crate) use ratios::{Ratios, TargetCheck};

/// The original Caracal's published governed throughput, per vCPU.
pub(crate) const ORIGINAL_GOVERNED_RPS_PER_VCPU: f64 = 33.0;

/// Where and with what the run happened.
#[derive(Debug, Serialize)]
pub(crate) struct Environment {
    pub(crate) cores: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) git_commit: Option<String>,
    pub(crate) binaries: String,
    pub(crate) nginx: Option<String>,
    pub(crate) envoy: Option<String>,
}

impl Environment {
    /// Reads the machine's facts.
    pub(crate) fn detect(nginx: Option<String>, envoy: Option<String>, bin_dir: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        // Only the end is trimmed: a porcelain line starts with a significant space (" M file").
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
        };
        // Binaries built from a tree with uncommitted changes are not that commit: say which files differ.
        let changed = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| dirty_files(&s)).unwrap_or_default();
        let git_commit = git(&["rev-parse", "--short", "HEAD"])
            .map(|c| if changed.is_empty() { c } else { format!("{c} (+ uncommitted changes to {changed})") });
        Self {
            cores: caracal_shared::config_env::available_cores(),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            git_commit,
            binaries: bin_dir.display().to_string(),
            nginx,
            envoy,
        }
    }
}

/// The files of `git status --porcelain` output, at most three named.
fn dirty_files(porcelain: &str) -> String {
    let files: Vec<&str> = porcelain.lines().filter_map(|l| l.get(3..)).collect();
    match files.len() {
        0 => String::new(),
        1..=3 => files.join(", "),
        n => format!("{} and {} more files", files[..3].join(", "), n - 3),
    }
}

/// Everything one run produced.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) date: String,
    pub(crate) generated_at: String,
    pub(crate) environment: Environment,
    pub(crate) plan: Plan,
    pub(crate) ratios: Ratios,
    pub(crate) targets: Vec<TargetCheck>,
    pub(crate) results: Results,
    pub(crate) peak_rss_mib: BTreeMap<String, f64>,
    pub(crate) skipped: Vec<String>,
    pub(crate) wall_seconds: f64,
}

impl Report {
    /// Assembles the report and derives ratios and target checks.
    pub(crate) fn build(
        environment: Environment,
        plan: Plan,
        results: Results,
        rss_kib: Vec<(String, u64)>,
        skipped: Vec<String>,
        wall: Duration,
    ) -> Self {
        let now = chrono::Utc::now();
        let ratios = Ratios::compute(&plan, &results, environment.cores);
        let targets = ratios.targets();
        Self {
            date: now.format("%Y-%m-%d").to_string(),
            generated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            environment,
            plan,
            ratios,
            targets,
            results,
            peak_rss_mib: rss_kib.into_iter().map(|(n, k)| (n, k as f64 / 1024.0)).collect(),
            skipped,
            wall_seconds: wall.as_secs_f64(),
        }
    }

    /// The file stem: the date, marked when the run was a smoke run or ran only some scenarios (so a
    /// partial run never overwrites the day's full report).
    pub(crate) fn stem(&self) -> String {
        let mut stem = self.date.clone();
        if self.plan.smoke {
            stem.push_str("-smoke");
        }
        if let Some(only) = &self.plan.only {
            stem.push_str("-only-");
            stem.push_str(&only.join("-"));
        }
        stem
    }

    /// The fixed-rate runs at the reference rate (the highest planned), in run order: what the
    /// latency plots and the latency-over-time table show.
    pub(crate) fn reference_runs(&self) -> impl Iterator<Item = &RateRecord> {
        let rate = self.ratios.at_rate;
        self.results.rate.iter().filter(move |r| r.run.mode == crate::load::Mode::Fixed { rate })
    }
}

/// The fixed-rate record of `target` at `rate`.
pub(crate) fn fixed(results: &Results, target: Target, rate: f64) -> Option<&RateRecord> {
    results.rate.iter().find(|r| r.target == target && r.run.mode == crate::load::Mode::Fixed { rate })
}

/// The saturation record of `target`.
pub(crate) fn saturation(results: &Results, target: Target) -> Option<&RateRecord> {
    results.rate.iter().find(|r| r.target == target && r.run.mode == crate::load::Mode::Saturation)
}

/// Writes `<stem>.md`, `.json` and `.svg` into `dir`.
pub(crate) fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let stem = report.stem();
    let md = dir.join(format!("{stem}.md"));
    let json = dir.join(format!("{stem}.json"));
    let svg = dir.join(format!("{stem}.svg"));
    let over_time = dir.join(format!("{stem}-over-time.svg"));
    std::fs::write(&md, markdown::render(report))?;
    std::fs::write(&json, serde_json::to_string_pretty(report)?)?;
    crate::plot::latency_svg(report, &svg)?;
    crate::plot::over_time_svg(report, &over_time)?;
    Ok(vec![md, json, svg, over_time])
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_dirty_files() {
        assert_eq!(super::dirty_files(""), "");
        assert_eq!(super::dirty_files(" M Cargo.lock\n"), "Cargo.lock");
        assert_eq!(super::dirty_files(" M a\n M b\nM  c\n M d\n M e\n"), "a, b, c and 2 more files");
    }
}
