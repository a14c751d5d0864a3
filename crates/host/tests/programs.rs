//! `procs::find_program` against real processes: a server that sets its process title
//! (redis-server), and one that renamed its comm. The scan reads a command line only where
//! the comm cannot rule the process out; these prove that renaming either one still finds
//! the program. Without `redis-server` or `bash` the trials are reported ignored (failed
//! under CI=true, see conndoc-testsupport).

use conndoc_host::procs;
use conndoc_testsupport::{program, Tests};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Killed and reaped when dropped, also when an assertion fails.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait (bounded: 10 s) until `ok` holds for the process's comm and argv.
fn wait_for(pid: u32, ok: impl Fn(&str, &[String]) -> bool) -> (String, Vec<String>) {
    for _ in 0..1000 {
        let c = procs::comm(pid).unwrap_or_default();
        let a = procs::cmdline_args(pid);
        if ok(&c, &a) {
            return (c, a);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never reached the awaited comm/argv: {:?} {:?}", procs::comm(pid), procs::cmdline_args(pid));
}

/// redis-server rewrites its argv into a title (`redis-server *:0`): argv[0] is no longer
/// the program's path, its comm still is the program.
fn redis_server_behind_its_title_is_found() {
    // No TCP port (a unix socket of its own instead): nothing is opened on the machine's.
    let dir = conndoc_testsupport::TempDir::new("redis-title");
    let sock = dir.join("r.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--unixsocket")
        .arg(&sock)
        .arg("--dir")
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let child = Kill(child);
    let pid = child.0.id();
    let (comm, args) = wait_for(pid, |_, a| a.first().is_some_and(|a0| a0.contains(' ')));
    assert_eq!(comm, "redis-server");
    assert_ne!(args[0], "redis-server", "the title replaced argv[0]: {args:?}");
    let found = procs::find_program("redis-server", procs::current_netns());
    assert!(found.contains(&(pid, Some(true))), "{pid} not in {found:?}");
}

/// A process that renamed its comm (here bash writing its own /proc/PID/comm, as
/// `prctl(PR_SET_NAME)` does) is still found by its argv[0]; one whose comm is its
/// executable's name is the executable, whatever argv[0] it was given.
fn renamed_comm_is_found_by_argv0() {
    let name = format!("cdrenamed{}", std::process::id());
    let child = Command::new("bash")
        .arg0(&name)
        .args(["-c", "printf worker > /proc/$$/comm; read -r _"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("bash");
    let child = Kill(child);
    let pid = child.0.id();
    let (comm, args) = wait_for(pid, |c, _| c == "worker");
    assert_eq!(args[0], name);
    let found = procs::find_program(&name, None);
    assert_eq!(found, vec![(pid, None)], "comm {comm}, argv {args:?}");
    // Matched by comm too, once its comm is the name.
    assert!(procs::find_program("worker", None).iter().any(|(p, _)| *p == pid));
    // `sleep` started with argv[0] set to the name: its comm is its executable's, so it is
    // sleep (and is not read further).
    let other = Kill(Command::new("sleep").arg0(&name).arg("30").spawn().expect("sleep"));
    let opid = other.0.id();
    wait_for(opid, |c, _| c == "sleep");
    let found = procs::find_program(&name, None);
    assert!(!found.iter().any(|(p, _)| *p == opid), "{found:?}");
    assert!(found.contains(&(pid, None)), "{found:?}");
}

fn main() {
    let mut t = Tests::new();
    t.add(
        "redis_server_behind_its_title_is_found",
        &program("redis-server", "redis-server"),
        redis_server_behind_its_title_is_found,
    );
    t.add("renamed_comm_is_found_by_argv0", &program("bash", "bash"), renamed_comm_is_found_by_argv0);
    t.run();
}
