//! Sizes: the release binaries raw and as `zip -9` Lambda packages, with
//! the aarch64 `bootstrap` when `run.sh --arm64` built one.

use std::path::Path;

use anyhow::{Result, bail};

use crate::bench::Bench;
use crate::report::{Report, mb};

pub async fn run(b: &Bench, rep: &mut Report) -> Result<()> {
    let args = &b.args;
    rep.line("### Sizes (release profile; x86_64 unless said otherwise)");
    rep.line("");
    rep.line("| Binary | Size | zip -9 |");
    rep.line("|---|---:|---:|");
    let mut lambda_zip = None;
    for name in [
        "gigachat-api",
        "gigachat-oauth",
        "gigachat-health",
        "gigachat-proxy",
    ] {
        let path = args.bin_dir.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let zipped = zip_size(&path, &args.work_dir).ok();
                if name == "gigachat-api" {
                    lambda_zip = zipped;
                }
                rep.line(&format!(
                    "| `{name}` | {} | {} |",
                    mb(meta.len()),
                    zipped.map_or_else(|| "zip failed".to_owned(), mb)
                ));
            }
            Err(_) => rep.line(&format!("| `{name}` | not built | |")),
        }
    }
    // The Lambda package: an aarch64 `bootstrap` (run.sh --arm64), else
    // the x86_64 build as a stand-in.
    let arm = args.arm64_bin.as_ref().and_then(|p| {
        Some((
            std::fs::metadata(p).ok()?.len(),
            zip_size(p, &args.work_dir).ok()?,
        ))
    });
    if let Some((size, zipped)) = arm {
        rep.line(&format!(
            "| `gigachat-api`, aarch64-unknown-linux-gnu (Lambda `bootstrap`) | {} | {} |",
            mb(size),
            mb(zipped)
        ));
        lambda_zip = Some(zipped);
    }
    rep.line("");
    if arm.is_some() {
        rep.line("The aarch64 build uses the same release profile, linked with Debian's `gcc-aarch64-linux-gnu` (cargo-lambda links with zig against an older glibc; the size is the same to within the linker's padding).");
    } else {
        rep.line("The Lambda `bootstrap` is `gigachat-api` for aarch64 (cargo-lambda); no aarch64 build was available for this run (`bash bench/run.sh --arm64` makes one), so the x86_64 `gigachat-api` zipped as `bootstrap` stands in for it.");
    }
    rep.line("");
    rep.target(
        if arm.is_some() {
            "Lambda zip (aarch64 `bootstrap`)"
        } else {
            "Lambda zip (x86_64 stand-in)"
        },
        "≤ 5 MB",
        lambda_zip.map_or_else(|| "not built".to_owned(), mb),
        lambda_zip.map(|z| z as f64 <= 5e6),
    );
    Ok(())
}

/// zip -9 of a copy named `bootstrap`, as a Lambda deployment package.
fn zip_size(bin: &Path, work: &Path) -> Result<u64> {
    let dir = work.join("zip");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(bin, dir.join("bootstrap"))?;
    let status = std::process::Command::new("zip")
        .current_dir(&dir)
        .args(["-9", "-q", "-X", "bootstrap.zip", "bootstrap"])
        .status()?;
    if !status.success() {
        bail!("zip failed");
    }
    Ok(std::fs::metadata(dir.join("bootstrap.zip"))?.len())
}
