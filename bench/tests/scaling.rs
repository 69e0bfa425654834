//! The scaling tool forwards every packet on one core and on two, and reports both ratios
//! (its speed is a benchmark, recorded in bench/RESULTS.md, not asserted here).

use std::process::Command;

fn field(text: &str, key: &str) -> f64 {
    let v = text.split(&format!("\"{key}\":")).nth(1).and_then(|r| r.split([',', '}']).next()).and_then(|v| v.parse().ok());
    v.unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn scaling_forwards_everything_on_one_and_two_cores() {
    let out = Command::new(env!("CARGO_BIN_EXE_scaling"))
        .args(["--subscribers", "3", "--packets", "100", "--rounds", "1", "--json"])
        .output()
        .unwrap();
    // The tool itself fails when a core forwarded less than 99 % of its packets.
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(field(&text, "cores"), 2.0);
    for key in ["median_ratio", "median_reference_ratio", "median_relative", "best_ratio", "best_reference_ratio", "us_per_packet_one", "us_per_packet_all", "median_unsent_ratio", "median_compute_ratio", "median_memory_ratio"] {
        assert!(field(&text, key) > 0.0, "{key} in {text}");
    }
}

#[test]
fn scaling_refuses_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_scaling")).args(["--rounds", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rounds"));
}
