//! `mpbond bench` end to end: one quick scenario with every contender, its JSON and its chart.
//!
//! Needs root (labs, gateway, nftables); without it the test says so and passes. The figures
//! themselves are the benchmark's business: this checks that each is there, consistent and
//! sane, not how fast anything was.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

use std::process::Command;

use mpbond::lab::testing::{serial, skip_unless_root};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_mpbond");

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

#[test]
fn a_quick_balanced_run_writes_every_figure_for_every_contender_and_a_chart() {
    if skip_unless_root("a_quick_balanced_run_writes_every_figure_for_every_contender_and_a_chart")
    {
        return;
    }
    // The benchmark builds its own lab; holding the lab tests' lock keeps other lab tests off
    // the machine meanwhile.
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("mpbond-bench-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let svg = dir.join("svg");
    let out = Command::new(EXE)
        .args(["bench", "--quick", "--scenario", "balanced", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("balanced") && stdout.contains("targets"),
        "{stdout}"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["quick"], true);
    assert!(report["date"].as_str().unwrap().ends_with('Z'));
    assert!(report["definitions"]["cpu_s_per_gb"].is_string());
    // Every contender is listed; those that can run ran, the others say why not.
    let contenders = report["contenders"].as_array().unwrap();
    let ids: Vec<&str> = contenders
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "tcp",
            "mptcp-kernel",
            "mpbond-kernel-pm",
            "mpbond",
            "mpbond-user"
        ]
    );
    let ran: Vec<&str> = contenders
        .iter()
        .filter(|c| c["available"] == true)
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for c in contenders.iter().filter(|c| c["available"] == false) {
        assert!(c["reason"].is_string(), "{c}");
    }
    assert!(ran.len() >= 4, "{ran:?}");

    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1);
    let s = &scenarios[0];
    assert_eq!(s["name"], "balanced");
    let capacity = num(s, "capacity_bps");
    assert!(capacity > 0.0);
    let lines: Vec<&str> = s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let results = s["results"].as_array().unwrap();
    let got: Vec<&str> = results
        .iter()
        .map(|r| r["contender"].as_str().unwrap())
        .collect();
    assert_eq!(got, ran);
    for r in results {
        check_result(r, s, &lines, ran.len());
    }
    assert!(report["targets"].as_array().is_some_and(|t| !t.is_empty()));

    check_chart(
        &std::fs::read_to_string(svg.join("balanced.svg")).unwrap(),
        ran.len(),
        &lines,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every figure of one contender's result `r` in scenario `s` (lines `lines`, `ran` contenders
/// run) is there and consistent.
fn check_result(r: &Value, s: &Value, lines: &[&str], ran: usize) {
    let capacity = num(s, "capacity_bps");
    let id = r["contender"].as_str().unwrap();
    let goodput = num(r, "goodput_bps");
    assert!(goodput > 0.0, "{id}");
    assert!(
        (num(r, "efficiency") - goodput / capacity).abs() < 1e-9,
        "{id}"
    );
    assert!(num(r, "longest_stall_ms") >= 0.0, "{id}");
    let c = &r["completion"];
    assert_eq!(c["count"], 20, "{id}");
    let (p50, p95, p99) = (num(c, "p50_ms"), num(c, "p95_ms"), num(c, "p99_ms"));
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{id}: {c}");
    for key in ["cpu_s_per_gb", "emulator_cpu_s_per_gb"] {
        let v = num(r, key);
        assert!(v.is_finite() && v >= 0.0, "{id} {key}: {v}");
    }
    assert_eq!(
        r["daemons_cpu_s_per_gb"].is_number(),
        id.starts_with("mpbond"),
        "{id}"
    );
    assert_eq!(r["intact"], true, "{id}");
    // A ratio to every other contender that ran.
    let ratios = r["ratios"].as_object().unwrap();
    assert_eq!(ratios.len(), ran - 1, "{id}");
    for (other, x) in ratios {
        assert!(
            num(x, "goodput") > 0.0 && num(x, "completion_p95") > 0.0,
            "{id}/{other}"
        );
    }
    // Bytes per line: the plain flow stays on its line, the others use both.
    let bytes = r["bytes_per_line"].as_array().unwrap();
    assert_eq!(bytes.len(), 2, "{id}");
    let shares: Vec<f64> = bytes.iter().map(|b| num(b, "downstream_share")).collect();
    assert!(
        (shares.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "{id}: {shares:?}"
    );
    if id == "tcp" {
        let best = s["best_line"].as_str().unwrap();
        let k = lines.iter().position(|l| *l == best).unwrap();
        assert!(shares[k] > 0.95, "tcp: {shares:?}");
    } else {
        assert!(shares.iter().all(|&x| x > 0.2), "{id}: {shares:?}");
    }
    // The chart's data: a throughput sample per interval for every line.
    let series = &r["series"];
    let n = series["t_s"].as_array().unwrap().len();
    assert!(n > 10, "{id}: {n} samples");
    for l in series["lines"].as_array().unwrap() {
        assert_eq!(l["downstream_bps"].as_array().unwrap().len(), n, "{id}");
    }
}

/// The scenario's chart: a panel per contender (`ran`), a polyline per line and their total.
fn check_chart(chart: &str, ran: usize, lines: &[&str]) {
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert_eq!(chart.matches(r#"class="panel""#).count(), ran);
    assert_eq!(chart.matches("<polyline").count(), ran * (lines.len() + 1));
    for l in lines {
        assert_eq!(chart.matches(&format!(r#"data-series="{l}""#)).count(), ran);
    }
}
