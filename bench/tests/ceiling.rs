//! The ceiling tool runs every path and reports a rate for each (its speed is a benchmark,
//! recorded in bench/RESULTS.md, not asserted here).

use std::process::Command;

#[test]
fn ceiling_measures_every_send_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_ceiling")).args(["--seconds", "0.2", "--json", "--sinks", "4"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for path in ["send_to", "connected socket", "distinct destinations", "GSO"] {
        let line = text.split("},{").find(|l| l.contains(path)).unwrap_or_else(|| panic!("no {path} in {text}"));
        let pps: f64 = line.split("\"pps\":").nth(1).and_then(|r| r.split(',').next()).and_then(|v| v.parse().ok()).unwrap();
        assert!(pps > 0.0, "{path}: {pps}");
    }
}
