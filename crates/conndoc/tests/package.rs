//! The Debian package's metadata ([package.metadata.deb] in this crate's Cargo.toml) stays
//! consistent with the tree, without cargo-deb (a download CI does not make): every asset
//! exists, or is one deploy/deb/build.sh generates; the unit, the config and the docs it
//! names are where the package puts them. The package itself is built and installed by hand
//! (README "Install"), with `dpkg -i` on a real machine.

use std::path::PathBuf;
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deb_metadata() -> toml::Table {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap();
    let t: toml::Table = toml::from_str(&manifest).unwrap();
    t["package"]["metadata"]["deb"].as_table().expect("[package.metadata.deb]").clone()
}

/// (source, destination) of each asset.
fn assets() -> Vec<(String, String)> {
    deb_metadata()["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            assert_eq!(a.len(), 3, "[source, destination, mode]: {a:?}");
            (a[0].as_str().unwrap().to_string(), a[1].as_str().unwrap().to_string())
        })
        .collect()
}

fn dest_of(source: &str) -> String {
    assets().into_iter().find(|(s, _)| s == source).unwrap_or_else(|| panic!("no asset {source}")).1
}

/// Files matching a `dir/*.ext` or plain path, relative to this crate.
fn matches(source: &str) -> Vec<PathBuf> {
    let p = crate_dir().join(source);
    match p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix('*')) {
        Some(suffix) => std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.to_str().is_some_and(|s| s.ends_with(suffix)))
            .collect(),
        None => vec![p].into_iter().filter(|p| p.is_file()).collect(),
    }
}

#[test]
fn every_asset_exists_or_is_built() {
    let build = std::fs::read_to_string(crate_dir().join("../../deploy/deb/build.sh")).unwrap();
    for (source, dest) in assets() {
        if let Some(built) = source.strip_prefix("target/release/") {
            // The binary, or what build.sh writes under $target/release/deb-assets/.
            if built == env!("CARGO_PKG_NAME") {
                continue;
            }
            let rel = built.strip_prefix("deb-assets/").unwrap_or_else(|| panic!("{source}: not built by build.sh"));
            let (dir, file) = rel.split_once('/').unwrap();
            assert!(build.contains(&format!("$assets/{dir}")), "build.sh never writes {source}");
            if !file.starts_with('*') {
                assert!(build.contains(&format!("$assets/{rel}")), "build.sh never writes {source}");
            }
            continue;
        }
        assert!(!matches(&source).is_empty(), "asset {source} (→ {dest}) does not exist");
        assert!(!dest.starts_with('/'), "{dest}: destinations are relative to /");
    }
}

#[test]
fn unit_config_and_docs_agree_with_the_package() {
    assert_eq!(dest_of("target/release/conndoc"), "usr/bin/");
    assert_eq!(dest_of("../../deploy/systemd/conndoc-watch.service"), "lib/systemd/system/");
    assert_eq!(dest_of("../../examples/watch.toml"), "etc/conndoc/watch.toml");
    let meta = deb_metadata();
    let conf: Vec<&str> = meta["conf-files"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(conf, ["/etc/conndoc/watch.toml"]);
    let unit = std::fs::read_to_string(crate_dir().join("../../deploy/systemd/conndoc-watch.service")).unwrap();
    // The unit runs the packaged binary on the packaged config, and links the packaged docs.
    assert!(unit.contains("ExecStart=/usr/bin/conndoc watch --config /etc/conndoc/watch.toml"), "{unit}");
    assert!(unit.contains("ExecStartPre=/usr/bin/conndoc watch --check-config /etc/conndoc/watch.toml"), "{unit}");
    let doc = unit.lines().find_map(|l| l.strip_prefix("Documentation=file:///usr/share/doc/conndoc/")).unwrap();
    assert_eq!(dest_of("../../docs/*.md"), "usr/share/doc/conndoc/");
    assert!(crate_dir().join("../../docs").join(doc).is_file(), "the unit's Documentation= {doc} is not shipped");
}

#[test]
fn the_shipped_config_checks_and_the_generated_assets_are_made() {
    let bin = env!("CARGO_BIN_EXE_conndoc");
    let example = crate_dir().join("../../examples/watch.toml");
    let o = Command::new(bin).args(["watch", "--check-config"]).arg(&example).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = std::env::temp_dir().join(format!("conndoc-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let o = Command::new(bin).args(["man", "--out"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pages = std::fs::read_dir(&dir).unwrap().count();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(pages > 1, "{pages} pages");
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(bin).args(["completions", shell]).output().unwrap();
        assert!(o.status.success() && !o.stdout.is_empty(), "completions {shell}");
    }
}
