//! Build script: puts the git commit into `pushgate --version`.
//!
//! `PUSHGATE_GIT_COMMIT` in the environment wins (a container build has no
//! `.git`); else `git rev-parse --short HEAD`; else `unknown` (a source tarball).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PUSHGATE_GIT_COMMIT");
    let commit = std::env::var("PUSHGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PUSHGATE_GIT_COMMIT={commit}");
    // Built again when HEAD moves (a checkout, or a commit on the branch),
    // not on every source change.
    if let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let head = PathBuf::from(&git_dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(reference) = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_owned()))
        {
            println!(
                "cargo:rerun-if-changed={}",
                PathBuf::from(&common).join(reference).display()
            );
        }
        println!(
            "cargo:rerun-if-changed={}",
            PathBuf::from(&common).join("packed-refs").display()
        );
    }
}
