//! `pontoon-bench` as a user runs it: the binary against its own mock store (a child
//! process on a port the kernel picks), killed by PID when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pontoon-bench");

/// The mock store; killed and reaped on drop.
struct Mock {
    child: Child,
    addr: String,
    /// Kept open: a closed pipe would make the mock's next write to stderr fail.
    stderr: BufReader<ChildStderr>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mock() -> Mock {
    let mut child = Command::new(BIN)
        .args(["mock-server", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the mock store");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    // From here on a failed assertion still kills the child (the guard's drop).
    let mut m = Mock {
        child,
        addr: String::new(),
        stderr,
    };
    let mut line = String::new();
    m.stderr
        .read_line(&mut line)
        .expect("read the mock's address");
    m.addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("an address")
        .to_string();
    assert!(
        m.addr.starts_with("127.0.0.1:"),
        "unexpected first line {line:?}"
    );
    m
}

/// Runs the load generator with `args` (10 s at most); returns (success, stdout, stderr).
fn bench(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pontoon-bench");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("poll pontoon-bench").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pontoon-bench {args:?} ran for more than 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `put` against the mock with a JSON summary: `clients` tasks for `duration` seconds or
/// `total` requests, whichever ends first.
fn put_json(m: &Mock, clients: u32, duration: &str, total: u64) -> (bool, String, String) {
    bench(&[
        "--endpoints",
        &m.addr,
        "--clients",
        &clients.to_string(),
        "--json",
        "--duration",
        duration,
        "put",
        "--total",
        &total.to_string(),
    ])
}

fn json_field(out: &str, field: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {out}"))
}

#[test]
fn duration_ends_a_run_that_total_would_not() {
    let m = mock();
    let (ok, out, err) = put_json(&m, 4, "0.5", 1_000_000_000);
    assert!(ok, "stderr: {err}");
    let elapsed = json_field(&out, "elapsed_secs");
    assert!(
        (0.5..5.0).contains(&elapsed),
        "ran {elapsed} s for --duration 0.5"
    );
    let done = json_field(&out, "ok");
    assert!(done > 0.0 && done < 1e9, "{done} requests");
    assert_eq!(json_field(&out, "errors"), 0.0);
}

#[test]
fn total_still_ends_a_run_before_its_duration() {
    let m = mock();
    let (ok, out, err) = put_json(&m, 2, "60", 300);
    assert!(ok, "stderr: {err}");
    assert_eq!(json_field(&out, "ok"), 300.0);
}

#[test]
fn a_duration_that_is_not_a_positive_number_is_refused() {
    for bad in ["0", "-1", "nan", "inf"] {
        let (ok, _, err) = bench(&[&format!("--duration={bad}"), "put"]);
        assert!(!ok, "--duration {bad} accepted");
        assert!(
            err.contains("--duration must be a positive number of seconds"),
            "--duration {bad}: {err}"
        );
    }
}
