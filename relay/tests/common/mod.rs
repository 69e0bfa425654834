//! What the relay's process-level test suites share: a child process killed on drop and a
//! free loopback port.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::process::Child;

/// A child process, killed and reaped when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both UDP and TCP on loopback right now.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Starts the relay binary on loopback: listening and relaying on 127.0.0.1, TURN port `port`,
/// a thousand relay ports picked from it, then `args`.
pub fn spawn_relay(port: u16, args: &[String]) -> Kill {
    let min = 20000 + (port % 20000);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "-p", &port.to_string()])
        .args(["--min-port", &min.to_string(), "--max-port", &(min + 999).to_string()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("relay binary");
    Kill(child)
}
