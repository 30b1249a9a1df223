//! The upstream MPTCP packetdrill scripts (`../shared/conformance/packetdrill-mptcp`, from the
//! multipath-tcp/packetdrill project, GPL-2.0, read from that path and never copied here),
//! played against the engine: the same packets in, the same packets expected out (see
//! `packetdrill/run.rs` for what is compared and which differences the RFC allows).
//!
//! Every script has a verdict pinned in `tests/snapshots/packetdrill.txt`: `pass`, with the
//! allowed deviations listed line by line, or `n/a` with the reason it does not concern the
//! engine (a socket-API detail of Linux, say). A script that fails is never pinned: the test
//! fails. `UPDATE_SNAPSHOTS=1` rewrites the file after a change that is meant;
//! `PACKETDRILL_ONLY=name` plays one script and prints its report.

#[path = "packetdrill/run.rs"]
mod run;
#[path = "packetdrill/script.rs"]
mod script;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the third-party conformance material is: `$MPBOND_CONFORMANCE`, or a `shared/conformance`
/// next to one of the repository's ancestors (the workplace layout), or `/work/shared/conformance`.
fn conformance_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("MPBOND_CONFORMANCE") {
        return Some(PathBuf::from(d));
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .flat_map(|a| {
            [
                a.join("shared/conformance"),
                a.join("../shared/conformance"),
            ]
        })
        .chain([PathBuf::from("/work/shared/conformance")])
        .find(|d| d.join("packetdrill-mptcp").is_dir())
}

/// Scripts that do not concern the engine, and why.
fn not_applicable(name: &str) -> Option<&'static str> {
    match name.rsplit('/').next().unwrap_or("") {
        "unconnected_read.pkt" => Some(
            "a read on a socket that was never connected: the engine has no connection \
             before connect() or accept(), so there is nothing to read from",
        ),
        _ => None,
    }
}

fn scripts(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for set in ["snapshot-d57954e", "index-newer"] {
        let Ok(groups) = std::fs::read_dir(dir.join(set)) else {
            continue;
        };
        for g in groups.flatten() {
            let Ok(files) = std::fs::read_dir(g.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "pkt") {
                    let name = format!(
                        "{set}/{}/{}",
                        g.file_name().to_string_lossy(),
                        f.file_name().to_string_lossy()
                    );
                    out.push((name, p));
                }
            }
        }
    }
    out.sort();
    out
}

/// mpbond's own scripts, in the same language (behaviours the upstream ones do not cover).
fn our_scripts() -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/packetdrill/ours");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pkt"))
        .map(|p| {
            let name = format!(
                "ours/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            (name, p)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn our_packetdrill_scripts() {
    let all = our_scripts();
    assert!(!all.is_empty(), "no script in tests/packetdrill/ours");
    for (name, path) in &all {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lines = script::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = run::run(&lines);
        assert!(report.failure.is_none(), "{name}: {:?}", report.failure);
        println!("{name}: pass {:?}", report.deviations);
    }
}

#[test]
fn upstream_packetdrill_scripts() {
    let Some(dir) = conformance_dir().map(|d| d.join("packetdrill-mptcp")) else {
        eprintln!(
            "SKIPPED: packetdrill MPTCP scripts not found (set MPBOND_CONFORMANCE to the \
             shared/conformance directory)"
        );
        return;
    };
    let only = std::env::var("PACKETDRILL_ONLY").ok();
    let all = scripts(&dir);
    assert!(
        all.len() >= 49,
        "only {} scripts found in {}",
        all.len(),
        dir.display()
    );
    let mut table = String::new();
    let mut failed = Vec::new();
    for (name, path) in &all {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        if let Some(why) = not_applicable(name) {
            let _ = writeln!(table, "{name}: n/a: {why}");
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lines = script::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = run::run(&lines);
        if let Some(f) = &report.failure {
            failed.push(format!("{name}: {f}"));
        }
        let verdict = if report.failure.is_some() {
            "FAIL"
        } else {
            "pass"
        };
        let _ = writeln!(table, "{name}: {verdict}");
        for d in &report.deviations {
            let _ = writeln!(table, "    {d}");
        }
    }
    if only.is_some() {
        println!("{table}");
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        return;
    }
    assert!(failed.is_empty(), "scripts failed:\n{}", failed.join("\n"));
    let snap = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/packetdrill.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !snap.exists() {
        std::fs::create_dir_all(snap.parent().unwrap_or(Path::new("."))).unwrap_or(());
        std::fs::write(&snap, &table).unwrap_or_else(|e| panic!("{e}"));
    }
    let pinned = std::fs::read_to_string(&snap).unwrap_or_default();
    assert_eq!(
        table, pinned,
        "the verdicts changed (UPDATE_SNAPSHOTS=1 rewrites tests/snapshots/packetdrill.txt if meant)"
    );
}
