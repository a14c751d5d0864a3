//! Records the git commit the engine is built from, so evidence files say which conndoc
//! wrote them (`Evidence.conndoc_version`). Outside a git checkout it is left out.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CONNDOC_GIT_COMMIT");
    if let Some(c) = std::env::var("CONNDOC_GIT_COMMIT").ok().filter(|c| !c.is_empty()) {
        println!("cargo:rustc-env=CONNDOC_GIT_COMMIT={c}");
        return;
    }
    // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
    if let (Some(dir), Some(common)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"])) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={common}/packed-refs");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let p = Path::new(&common).join(&r);
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=CONNDOC_GIT_COMMIT={c}");
    }
}
