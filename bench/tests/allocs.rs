//! The media loop's own stages allocate nothing per packet once warm, what str0m allocates
//! per forwarded packet stays about one buffer, and the heap does not fault pages back in
//! per turn (the figures themselves are in bench/RESULTS.md).

use std::process::Command;

fn field(text: &str, key: &str) -> f64 {
    let v = text.split(&format!("\"{key}\":")).nth(1).and_then(|r| r.split([',', '}']).next()).and_then(|v| v.parse().ok());
    v.unwrap_or_else(|| panic!("no {key} in {text}"))
}

fn run(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_allocs"))
        // A long warm-up: each subscriber's NACK history ring grows during the first seconds
        // of its stream and its pages fault in once; after that nothing should.
        .args(["--subscribers", "20", "--packets", "600", "--warmup", "700", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_loop_allocates_nothing_per_packet_on_either_backend() {
    for (extra, backend) in [(&[][..], "IoUring"), (&["--epoll"][..], "Epoll")] {
        let text = run(extra);
        assert!(text.contains(&format!("\"backend\":\"{backend}\"")), "{text}");
        assert!(field(&text, "forwarded") >= 12000.0, "{text}");
        // Freed datagrams stay in the heap rather than going back to the kernel after each
        // turn (glibc's default trimming costs about one page fault per 7-20 packets here).
        assert!(field(&text, "page_faults_per_packet") < 0.005, "{text}");
        // Receive ring, send slots, GSO ordering and the hand-off reuse their buffers. A send
        // slot may still be added if the kernel is slow to complete one, hence "at most 2".
        assert!(field(&text, "io_allocs") <= 2.0, "{text}");
        assert_eq!(field(&text, "handoff_allocs"), 0.0, "{text}");
        // str0m builds one datagram per forwarded packet (plus its periodic RTCP and the
        // receive side's few per incoming packet, spread over 20 subscribers). A second
        // allocation per subscriber in the fan-out would push this past 2.
        let core = field(&text, "core_allocs_per_packet");
        assert!((1.0..1.8).contains(&core), "{text}");
    }
}

#[test]
fn allocs_refuses_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_allocs")).args(["--packets", "5000"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1400"));
}
