//! Running a client script (Node.js or Python) to its end or its deadline,
//! and reading the cases it reports: each script runs its cases and prints
//! one JSON line `{"cases": {name: {"ok": true, ...}}}`, and the Rust test
//! asserts on what each case saw, so a client that "works" with the wrong
//! content fails.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// After its deadline a script gets SIGTERM (Playwright closes Chromium on
/// it) and this long to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The variables that would send a client's loopback calls through a proxy
/// of the developer's environment.
pub const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

pub struct Finished {
    /// `None`: stopped at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Exited by itself, with success.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Both streams, labelled, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `command` (stdin closed, stdout and stderr captured) until it exits
/// or `timeout` passes; then it gets SIGTERM and, [`STOP_GRACE`] later,
/// SIGKILL. Blocking: call it from `spawn_blocking` in async tests.
pub fn run_until(mut command: Command, timeout: Duration) -> Finished {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + STOP_GRACE;
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub struct ScriptRun {
    /// `cases` of the script's JSON line.
    pub cases: serde_json::Map<String, Value>,
    /// Everything it printed, for failure messages.
    pub output: String,
}

/// The `cases` of the last line of `stdout` that is JSON.
fn result_cases(stdout: &str) -> Option<serde_json::Map<String, Value>> {
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .and_then(|v| v["cases"].as_object().cloned())
}

/// Runs a script that reports cases ([`run_until`]), asserts that it
/// exited well within `timeout`, and returns its cases; `label` names it in
/// failure messages.
pub fn run_case_script(command: Command, label: &str, timeout: Duration) -> ScriptRun {
    let finished = run_until(command, timeout);
    let output = finished.output();
    let Some(status) = finished.status else {
        panic!("{label} was stopped after {timeout:?}\n{output}");
    };
    assert!(status.success(), "{label} exited with {status}\n{output}");
    let cases = result_cases(&finished.stdout)
        .unwrap_or_else(|| panic!("{label} printed no JSON result\n{output}"));
    ScriptRun { cases, output }
}

/// `a.b.0.c` into a JSON value (`Null` when absent).
pub fn pointer(value: &Value, path: &str) -> Value {
    let pointer = format!("/{}", path.replace('.', "/"));
    value.pointer(&pointer).cloned().unwrap_or(Value::Null)
}

/// Collects every failed expectation of a run, so one report shows all of a
/// client's problems (with each failed case's wire exchanges) at once.
pub struct Checks<'a> {
    run: &'a ScriptRun,
    client: &'a str,
    failures: Vec<String>,
    shown: Vec<String>,
}

impl<'a> Checks<'a> {
    pub fn new(client: &'a str, run: &'a ScriptRun) -> Self {
        Checks {
            run,
            client,
            failures: Vec::new(),
            shown: Vec::new(),
        }
    }

    /// The case's result; a case the script reports as failed (the client
    /// threw) is a failure, shown with its error and exchanges.
    pub fn case(&mut self, name: &str) -> Value {
        let case = self.run.cases.get(name).cloned().unwrap_or(Value::Null);
        if case.is_null() {
            self.fail(name, "the script did not run this case".into());
        } else if case["ok"] != true {
            self.fail(name, format!("the case threw: {}", case["error"]));
        }
        case
    }

    pub fn check(&mut self, name: &str, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(name, what());
        }
    }

    /// `case[key] == expected`.
    pub fn eq(&mut self, name: &str, case: &Value, key: &str, expected: Value) {
        let actual = pointer(case, key);
        self.check(name, actual == expected, || {
            format!("{key}: expected {expected}, got {actual}")
        });
    }

    pub fn contains(&mut self, name: &str, case: &Value, key: &str, needle: &str) {
        let actual = pointer(case, key);
        self.check(
            name,
            actual.as_str().is_some_and(|s| s.contains(needle)),
            || format!("{key}: expected a string containing {needle:?}, got {actual}"),
        );
    }

    /// A number above zero (integer or not).
    pub fn positive(&mut self, name: &str, case: &Value, key: &str) {
        let actual = pointer(case, key);
        self.check(name, actual.as_f64().is_some_and(|n| n > 0.0), || {
            format!("{key}: expected a positive number, got {actual}")
        });
    }

    /// An integer above zero.
    pub fn positive_integer(&mut self, name: &str, case: &Value, key: &str) {
        let actual = pointer(case, key);
        self.check(name, actual.as_u64().is_some_and(|n| n > 0), || {
            format!("{key}: expected a positive integer, got {actual}")
        });
    }

    pub fn non_empty_string(&mut self, name: &str, case: &Value, key: &str) {
        let actual = pointer(case, key);
        self.check(name, actual.as_str().is_some_and(|s| !s.is_empty()), || {
            format!("{key}: expected a non-empty string, got {actual}")
        });
    }

    /// An array of at least `min` items, or a count of at least `min`.
    pub fn at_least(&mut self, name: &str, case: &Value, key: &str, min: usize) {
        let actual = pointer(case, key);
        let n = actual
            .as_array()
            .map(Vec::len)
            .or_else(|| actual.as_u64().and_then(|n| usize::try_from(n).ok()));
        self.check(name, n.is_some_and(|n| n >= min), || {
            format!("{key}: expected at least {min}, got {actual}")
        });
    }

    pub fn fail(&mut self, name: &str, what: String) {
        self.failures
            .push(format!("[{}/{name}] {what}", self.client));
        if !self.shown.iter().any(|n| n == name) {
            self.shown.push(name.to_owned());
        }
    }

    /// Panics with every failure, each failed case in full, and what the
    /// script logged besides its JSON line.
    pub fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let mut report = format!(
            "{} expectation(s) failed for {}:\n  {}\n",
            self.failures.len(),
            self.client,
            self.failures.join("\n  ")
        );
        for name in &self.shown {
            let case = self.run.cases.get(name).unwrap_or(&Value::Null);
            report.push_str(&format!(
                "\n=== case {name} ===\n{}\n",
                serde_json::to_string_pretty(case).unwrap()
            ));
        }
        // The JSON line is above, case by case.
        let logged: String = self
            .run
            .output
            .lines()
            .filter(|line| result_cases(line).is_none())
            .collect::<Vec<_>>()
            .join("\n");
        report.push_str(&format!("\n=== script output ===\n{logged}"));
        panic!("{report}");
    }
}
