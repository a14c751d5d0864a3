//! Every scenario under lab/scenarios/ as one test: build the fault in network namespaces,
//! run conndoc in the client namespace, check cause and evidence, tear down.

use conndoc_testsupport::Need;
use libtest_mimic::{Arguments, Failed};
use std::path::{Path, PathBuf};

fn main() {
    let mut args = Arguments::from_args();
    // Scenarios mostly wait on timeouts, not CPU: run more at once than there are cores.
    if args.test_threads.is_none() {
        args.test_threads = Some(4);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/scenarios");
    let conndoc = PathBuf::from(env!("CARGO_BIN_EXE_conndoc"));
    let labtool = PathBuf::from(env!("CARGO_BIN_EXE_conndoc-labtool"));
    // Scenarios call the labtool by name.
    let bindir = labtool.parent().expect("binary dir").to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bindir];
    dirs.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(dirs).expect("PATH"));

    let scenarios = match conndoc_lab::Scenario::load_dir(&root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lab: {e}");
            std::process::exit(1);
        }
    };
    // Without root every scenario is reported ignored with the reason; a missing program
    // ignores the scenarios that require it. Under CI=true either is a failure.
    let privileged = match conndoc_lab::can_run() {
        Ok(()) => Need::met(),
        Err(why) => Need::missing(why),
    };
    let ci = conndoc_testsupport::in_ci();
    let trials = scenarios
        .into_iter()
        .map(|s| {
            let name = s.name.clone();
            let mut need = privileged.clone();
            for r in &s.requires {
                if let Err(why) = conndoc_lab::requirement(r) {
                    need = need.and(Need::missing(why));
                }
            }
            let bin = conndoc.clone();
            conndoc_testsupport::trial(name, &need, ci, move || {
                conndoc_lab::run_scenario(&s, &bin).map(|_| ()).map_err(Failed::from)
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
