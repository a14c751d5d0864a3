//! Fuzzing the `/proc/PID/cgroup` reader: tests/corpus/cgroup/ holds the layouts of
//! src/cgroup.rs's recorded lines (the lab dockerd's cgroup v1 file whole, Docker's systemd
//! driver, containerd under Kubernetes, CRI-O, podman and its conmon, Docker in Docker, a
//! host process). No panic, no hang, bounded memory; an id found is 64 hex digits on one of
//! the input's lines, and parsing is deterministic.

use conndoc_container::cgroup;
use conndoc_testsupport::fuzz::{check_str, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

#[test]
fn proc_pid_cgroup() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cgroup");
    check_str(&dir, |text| {
        let found = cgroup::parse(text);
        assert_eq!(found, cgroup::parse(text), "deterministic");
        if let Some(c) = found {
            assert!(c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit()), "{c:?}");
            assert!(text.lines().any(|l| l.contains(&c.id)), "{c:?} on no line");
        }
    });
}

#[test]
fn the_lab_dockerd_file_names_its_container() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cgroup/docker-v1-cgroupfs"))
            .unwrap();
    assert!(cgroup::parse(&text).is_some_and(|c| c.id.starts_with("e789749d")));
}
