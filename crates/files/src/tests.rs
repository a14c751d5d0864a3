use super::*;
use std::time::{Duration, Instant};

/// A temporary directory removed on drop, also when the test fails.
struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "conndoc-files-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo").arg(p).status().expect("running mkfifo (coreutils)");
    assert!(st.success());
}

#[test]
fn reads_a_regular_file_within_the_limit() {
    let t = Tmp::new("read");
    let f = t.join("a");
    std::fs::write(&f, "hello\n").unwrap();
    assert_eq!(read_to_string(&f, 6).unwrap(), "hello\n");
    let e = read(&f, 5).unwrap_err();
    assert!(matches!(e, ReadError::TooLarge { limit: 5, .. }), "{e}");
    assert_eq!(e.to_string(), format!("cannot read {}: larger than the limit of 5 bytes for this file", f.display()));
}

#[test]
fn proc_files_of_size_zero_are_read() {
    let s = read_to_string("/proc/self/status", limit::SERVER_FILE).unwrap();
    assert!(s.contains("Pid:"));
    assert!(matches!(read("/proc/self/status", 10), Err(ReadError::TooLarge { .. })));
}

#[test]
fn special_files_are_refused_without_reading() {
    let t = Tmp::new("special");
    let e = read(&t.0, 1 << 20).unwrap_err();
    assert!(matches!(e, ReadError::NotRegular { kind: FileKind::Directory, .. }), "{e}");
    assert!(e.to_string().ends_with("it is a directory, not a regular file"), "{e}");
    let e = read("/dev/zero", 1 << 20).unwrap_err();
    assert!(matches!(e, ReadError::NotRegular { kind: FileKind::CharDevice, .. }), "{e}");
    assert!(read("/dev/null", 1 << 20).is_err());
}

#[test]
fn a_fifo_without_writer_does_not_hang() {
    let t = Tmp::new("fifo");
    let f = t.join("fifo");
    mkfifo(&f);
    let start = Instant::now();
    let e = read(&f, 1 << 20).unwrap_err();
    assert!(matches!(e, ReadError::NotRegular { kind: FileKind::Fifo, .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    // Writing to it: no reader, no hang either.
    let e = create_private(&f).unwrap_err();
    assert!(matches!(e, WriteError::NotRegular { kind: FileKind::Fifo, .. }), "{e}");
}

#[test]
fn tails_are_the_last_bytes_and_refuse_devices() {
    let t = Tmp::new("tail");
    let f = t.join("log");
    std::fs::write(&f, "0123456789").unwrap();
    assert_eq!(read_tail(&f, 4).unwrap(), b"6789");
    assert_eq!(read_tail(&f, 100).unwrap(), b"0123456789");
    assert!(matches!(read_tail("/dev/zero", 100), Err(ReadError::NotRegular { .. })));
}

#[test]
fn missing_and_non_utf8_files_say_so() {
    let t = Tmp::new("missing");
    let e = read(t.join("nope"), 10).unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.to_string(), format!("cannot read {}: No such file or directory", t.join("nope").display()));
    std::fs::write(t.join("bin"), [0xff, 0xfe]).unwrap();
    assert!(matches!(read_to_string(t.join("bin"), 10), Err(ReadError::NotUtf8 { .. })));
}

#[test]
fn streams_are_bounded() {
    let zeros = std::io::repeat(0);
    let e = read_stream(zeros, 1000, "standard input").unwrap_err();
    assert_eq!(e.to_string(), "cannot read standard input: larger than the limit of 1000 bytes for this file");
    assert_eq!(read_stream(&b"abc"[..], 3, "x").unwrap(), b"abc");
}

#[test]
fn private_files_are_0600_and_truncated_after_the_checks() {
    let t = Tmp::new("write");
    let f = t.join("out.json");
    write_private(&f, b"first version, longer").unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o600);
    // An existing 0644 file is narrowed to 0600.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&f, b"second").unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"second");
    assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o600);
    // open_private keeps the content.
    drop(open_private(&f).unwrap());
    assert_eq!(std::fs::read(&f).unwrap(), b"second");
}

#[test]
fn never_writes_through_a_symlink_or_a_hard_link() {
    let t = Tmp::new("symlink");
    let victim = t.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = t.join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let e = write_private(&link, b"overwritten").unwrap_err();
    assert!(matches!(e, WriteError::Symlink { .. }), "{e}");
    // A dangling symlink is not followed to create its target either.
    let dangling = t.join("dangling");
    std::os::unix::fs::symlink(t.join("created-by-follow"), &dangling).unwrap();
    assert!(matches!(write_private(&dangling, b"x"), Err(WriteError::Symlink { .. })));
    assert!(!t.join("created-by-follow").exists());
    let hard = t.join("hard");
    std::fs::hard_link(&victim, &hard).unwrap();
    let e = write_private(&hard, b"overwritten").unwrap_err();
    assert!(matches!(e, WriteError::HardLinked { links: 2, .. }), "{e}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let e = write_private(&t.0, b"x").unwrap_err();
    assert!(matches!(e, WriteError::Io { .. } | WriteError::NotRegular { .. }), "{e}");
}

#[test]
fn os_errors_are_named_once() {
    let e = std::io::Error::from_raw_os_error(libc::ENOENT);
    assert_eq!(os_error_text(&e), "No such file or directory");
}
