//! Helpers shared by the examples' test binaries.

use std::io::Write;
use std::process::{Command, Stdio};

/// Lints a Prometheus text exposition with `promtool check metrics` and fails the test on any
/// finding. CI installs promtool (scripts/setup.sh); where it is missing, says so and returns.
pub(crate) fn promtool_check(text: &str) {
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => eprintln!("promtool not found ({e}); exposition not linted"),
    }
}
