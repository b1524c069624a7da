//! Node.js and the npm packages the JS-driven tests need. `.ci/setup`
//! installs them; a test that finds them missing or stale runs it itself and
//! then insists, so `cargo test` alone works on a fresh machine.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// Held while `.ci/setup` may run, so two tests of one binary never run it
/// at once (it rewrites `node_modules` and `.venv`).
pub static CI_SETUP: Mutex<()> = Mutex::new(());

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `CI=true`: there a missing tool fails a test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn json_file(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `node --version` as printed (`v22.1.0`); `None` when `node` is not on
/// PATH or does not run.
pub fn node_version() -> Option<String> {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What is missing of Node.js `minimum` (major, minor), which `needed_by`
/// requires, in words; `None` when a new enough `node` is on PATH.
pub fn missing_node(minimum: (u32, u32), needed_by: &str) -> Option<String> {
    let Some(version) = node_version() else {
        return Some("Node.js (`node` on PATH)".into());
    };
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (found < minimum).then(|| {
        format!(
            "Node.js {}.{} or newer (found {version}; {needed_by} needs it)",
            minimum.0, minimum.1
        )
    })
}

/// The version of `package` installed in `dir/node_modules` (`dir` relative
/// to the repository root; an alias such as `ai5` included).
pub fn installed_npm_version(dir: &str, package: &str) -> Option<String> {
    json_file(
        &repo_root()
            .join(dir)
            .join(format!("node_modules/{package}/package.json")),
    )
    .and_then(|p| p["version"].as_str().map(str::to_owned))
}

/// What `npm ci` in `dir` (relative to the repository root) has not
/// installed, in words: node_modules older than `package-lock.json`, or a
/// package of `sections` (`dependencies`, `devDependencies`) of
/// `package.json` missing or at another version than pinned (`"7.0.1"`, or
/// an alias `"npm:ai@5.0.2"`). Empty when all is there.
pub fn missing_npm_packages(dir: &str, sections: &[&str]) -> Vec<String> {
    let dir_path = repo_root().join(dir);
    let lock_is_newer = match (
        modified(&dir_path.join("package-lock.json")),
        modified(&dir_path.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(installed)) => lock > installed,
        _ => true,
    };
    if lock_is_newer {
        return vec![format!(
            "{dir}/node_modules as package-lock.json pins it (`npm ci` there)"
        )];
    }
    let manifest = json_file(&dir_path.join("package.json")).unwrap_or_default();
    let mut missing = Vec::new();
    for section in sections {
        let pinned = manifest[section].as_object().cloned().unwrap_or_default();
        if pinned.is_empty() {
            missing.push(format!("{dir}/package.json with its {section}"));
        }
        for (name, spec) in &pinned {
            let spec = spec.as_str().unwrap_or("?");
            let version = spec.rsplit('@').next().unwrap_or(spec);
            let installed = installed_npm_version(dir, name);
            if installed.as_deref() != Some(version) {
                missing.push(format!(
                    "{dir}/node_modules/{name} {version} (found {}; `npm ci` there)",
                    installed.as_deref().unwrap_or("none")
                ));
            }
        }
    }
    missing
}

/// Runs `.ci/setup` (as `test`, for its message) because of `missing`.
pub fn run_ci_setup(test: &str, missing: &[String]) {
    eprintln!(
        "{test}: missing {}; running .ci/setup (needs the package registries)",
        missing.join(", ")
    );
    let status = Command::new("bash")
        .arg(repo_root().join(".ci/setup"))
        .current_dir(repo_root())
        .status()
        .expect("bash runs .ci/setup");
    assert!(status.success(), ".ci/setup failed; see its output above");
}

/// Runs `.ci/setup` if `missing()` names anything, then insists that it
/// names nothing. Holds [`CI_SETUP`].
pub fn ensure_installed(test: &str, missing: impl Fn() -> Vec<String>) {
    let _setup = CI_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let found_missing = missing();
    if found_missing.is_empty() {
        return;
    }
    run_ci_setup(test, &found_missing);
    let still = missing();
    assert!(
        still.is_empty(),
        "still missing after .ci/setup: {}",
        still.join(", ")
    );
}

/// For tests that drive real npm clients: `true` when Node.js is on PATH and
/// the `dependencies` of each of `npm_dirs` are installed (running
/// `.ci/setup` if only the packages are missing). `false` to skip, which
/// only a machine without Node.js outside CI gets; under `CI=true` that is
/// a failure.
pub fn node_packages_ready(test: &str, npm_dirs: &[&str]) -> bool {
    {
        let _setup = CI_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        if node_version().is_none() {
            assert!(
                !under_ci(),
                "Node.js (`node` on PATH) is missing; .ci/setup installs it"
            );
            eprintln!(
                "SKIPPED {test}: Node.js is not on PATH (run `bash .ci/setup`); under CI=true this fails"
            );
            return false;
        }
    }
    ensure_installed(test, || {
        npm_dirs
            .iter()
            .flat_map(|dir| missing_npm_packages(dir, &["dependencies"]))
            .collect()
    });
    true
}
