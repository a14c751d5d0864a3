//! What the release ships beside the binary, checked with the real tools a user has: the
//! completion scripts loaded into real bash, zsh and fish; the manual pages rendered by
//! `man -l`; and the log lines (`--log-format json` and text) with a secret redacted.
//! A missing shell or man-db is reported ignored (a failure under CI=true).

use conndoc_testsupport::{program, tests, Need, Tests};
use std::net::TcpListener;
mod common;

use common::{conndoc, text, Tmp};
use std::path::{Path, PathBuf};
use std::process::Command;

fn script(dir: &Tmp, shell: &str) -> PathBuf {
    let o = conndoc(&["completions", shell]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let p = dir.join(&format!("conndoc.{shell}"));
    std::fs::write(&p, &o.stdout).unwrap();
    p
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run the shell");
    assert!(o.status.success(), "{:?}: {}{}", cmd, text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn bash_completion_registers_and_completes_subcommands_and_options() {
    let dir = Tmp::new("bash");
    let s = script(&dir, "bash");
    // What bash does on TAB: call the registered function with COMP_WORDS/COMP_CWORD set.
    let out = run(Command::new("bash").arg("--norc").arg("-c").arg(format!(
        "source {}; complete -p conndoc; \
         COMP_WORDS=(conndoc di); COMP_CWORD=1; _conndoc conndoc di conndoc; echo \"sub: ${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(conndoc diagnose --ti); COMP_CWORD=2; _conndoc conndoc --ti diagnose; echo \"opt: ${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(conndoc completions ''); COMP_CWORD=2; _conndoc conndoc '' completions; echo \"arg: ${{COMPREPLY[*]}}\"",
        s.display()
    )));
    assert!(out.contains("-F _conndoc conndoc"), "{out}");
    assert!(out.contains("sub: diagnose\n"), "{out}");
    assert!(out.contains("opt: --timeout\n"), "{out}");
    let arg = out.lines().find(|l| l.starts_with("arg: ")).unwrap();
    for shell in ["bash", "zsh", "fish"] {
        assert!(arg.split(' ').any(|w| w == shell), "{out}");
    }
    // The hidden `man` subcommand is not offered.
    let out = run(Command::new("bash").arg("--norc").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(conndoc ''); COMP_CWORD=1; _conndoc conndoc '' conndoc; echo \"${{COMPREPLY[*]}}\"",
        s.display()
    )));
    assert!(out.split_whitespace().any(|w| w == "listeners"), "{out}");
    assert!(!out.split_whitespace().any(|w| w == "man"), "{out}");
}

fn zsh_completion_registers_with_compinit() {
    let dir = Tmp::new("zsh");
    let s = script(&dir, "zsh");
    let out = run(Command::new("zsh").arg("-f").arg("-c").arg(format!(
        "autoload -U compinit && compinit -u -D && source {} && print -- \"comp: ${{_comps[conndoc]}}\"",
        s.display()
    )));
    assert!(out.contains("comp: _conndoc\n"), "{out}");
}

fn fish_completion_completes_subcommands_and_options() {
    let dir = Tmp::new("fish");
    let s = script(&dir, "fish");
    let out = run(Command::new("fish")
        .arg("--no-config")
        .arg("-c")
        .arg(format!("source {}; complete -C 'conndoc di'; complete -C 'conndoc diagnose --ti'", s.display())));
    assert!(out.lines().any(|l| l.starts_with("diagnose\t")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("--timeout\t")), "{out}");
}

fn render(page: &Path) -> String {
    let o = Command::new("man").arg("-l").arg(page).env("MANWIDTH", "100").output().unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "man -l {}: {err}", page.display());
    // groff warns on malformed requests; a clean page renders without any.
    assert!(!err.contains("warning") && !err.contains("error"), "man -l {}: {err}", page.display());
    // Bold and underline come as overstrikes (`C\bC`, `_\bC`): keep the last character.
    let mut out = String::new();
    for c in text(&o.stdout).chars() {
        if c == '\x08' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

fn man_pages_are_written_for_every_subcommand_and_render() {
    let dir = Tmp::new("man");
    let o = conndoc(&["man", "--out", dir.0.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for want in ["conndoc.1", "conndoc-diagnose.1", "conndoc-watch.1", "conndoc-check.1", "conndoc-completions.1"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n == "conndoc-man.1"), "the hidden subcommand has no page: {names:?}");

    let top = render(&dir.join("conndoc.1"));
    for want in ["NAME", "SYNOPSIS", "EXIT STATUS", "ENVIRONMENT", "CONNDOC_LOG", "conndoc-diagnose(1)", "--log-format"]
    {
        assert!(top.contains(want), "conndoc(1) lacks {want:?}:\n{top}");
    }
    let diag = render(&dir.join("conndoc-diagnose.1"));
    for want in ["conndoc-diagnose", "--timeout", "--password-file", "--path", "SEE ALSO"] {
        assert!(diag.contains(want), "conndoc-diagnose(1) lacks {want:?}:\n{diag}");
    }
    for n in &names {
        render(&dir.join(n));
    }
    // Without --out: the overview on stdout, the same page.
    let o = conndoc(&["man"]);
    assert_eq!(o.stdout, std::fs::read(dir.join("conndoc.1")).unwrap());
    let o = conndoc(&["man", "no-such-command"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// `conndoc check` of a Redis target whose URL holds a password, on a loopback port this test
/// opened and closed again: its log line, in both formats, shows the URL only redacted.
fn check_log_lines_redact_the_password_in_both_formats() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = Tmp::new("log");
    let cfg = dir.join("watch.toml");
    std::fs::write(&cfg, format!("[[target]]\nname = \"cache\"\nurl = \"redis://:S3KRIT@127.0.0.1:{port}\"\n"))
        .unwrap();
    let cfg = cfg.to_str().unwrap();
    let run = |format: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_conndoc"))
            .args(["check", "--config", cfg, "--log-format", format])
            .env("CONNDOC_LOG", "info")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert!(!text(&o.stdout).contains("S3KRIT"), "{}", text(&o.stdout));
        text(&o.stderr)
    };
    let json = run("json");
    assert!(!json.contains("S3KRIT"), "{json}");
    let line = json.lines().find(|l| l.contains("\"name\":\"cache\"")).unwrap_or_else(|| panic!("no log line: {json}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["url"], format!("redis://:<redacted>@127.0.0.1:{port}"), "{v}");
    assert_eq!(v["state"], "down", "{v}");
    assert_eq!(v["level"], "INFO", "{v}");
    let txt = run("text");
    assert!(!txt.contains("S3KRIT"), "{txt}");
    assert!(txt.contains(&format!("url=redis://:<redacted>@127.0.0.1:{port}")), "{txt}");
    // Without CONNDOC_LOG a one-shot command logs nothing at info: its output is the table.
    let o = Command::new(env!("CARGO_BIN_EXE_conndoc")).args(["check", "--config", cfg]).output().unwrap();
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    // A bad filter is bad input: one line, exit 2.
    let o = Command::new(env!("CARGO_BIN_EXE_conndoc"))
        .args(["check", "--config", cfg])
        .env("CONNDOC_LOG", "a==b")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(text(&o.stderr).trim_end().lines().count(), 1, "{}", text(&o.stderr));
}

/// An unparseable or out-of-range CONNDOC_FIREWALL_TIMEOUT is bad input: one line, exit 2.
fn firewall_timeout_env_is_checked() {
    for bad in ["soon", "0", "2h"] {
        let o = Command::new(env!("CARGO_BIN_EXE_conndoc"))
            .args(["diagnose", "tcp://127.0.0.1:9"])
            .env("CONNDOC_FIREWALL_TIMEOUT", bad)
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("CONNDOC_FIREWALL_TIMEOUT"), "{err}");
    }
}

/// The DaemonSet has what the Kubernetes checks need and no more (docs/kubernetes.md):
/// the node's network and PID namespaces, /run/netns read-only with HostToContainer
/// propagation, the documented capabilities added to an empty set, no privileged mode,
/// no API token. Checked as text: no YAML parser is a dependency, and the manifest is
/// written one key per line.
fn kubernetes_daemonset_has_exactly_what_it_needs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let yaml = std::fs::read_to_string(root.join("deploy/kubernetes/conndoc-daemonset.yaml")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/kubernetes.md")).unwrap();
    let lines: Vec<&str> = yaml.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for want in [
        "hostNetwork: true",
        "hostPID: true",
        "automountServiceAccountToken: false",
        "runAsUser: 0",
        "privileged: false",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "add: [\"NET_ADMIN\", \"SYS_ADMIN\"]",
    ] {
        assert_eq!(lines.iter().filter(|l| **l == want).count(), 1, "{want} once in the manifest");
    }
    for never in ["privileged: true", "hostIPC: true", "serviceAccountName:"] {
        assert!(!lines.iter().any(|l| l.starts_with(never)), "{never} in the manifest");
    }
    // The /run/netns mount: read-only, propagating namespaces of pods started later.
    let at = lines.iter().position(|l| *l == "mountPath: /run/netns").expect("a /run/netns mount");
    let mount: Vec<&str> = lines[at..].iter().take_while(|l| !l.starts_with("- name:")).copied().collect();
    assert!(mount.contains(&"readOnly: true") && mount.contains(&"mountPropagation: HostToContainer"), "{mount:?}");
    // The lab's least-privilege runs have exactly the manifest's capabilities.
    for name in ["kube-ipt-nft-wrong-port-least-privilege", "kube-nft-endpoint-failing-least-privilege"] {
        let sc = std::fs::read_to_string(root.join(format!("lab/scenarios/{name}.toml"))).unwrap();
        for set in ["--inh-caps=-all,+net_admin,+sys_admin", "--bounding-set=-all,+net_admin,+sys_admin"] {
            assert!(sc.contains(set), "{name}: runs with {set}, as the DaemonSet");
        }
    }
    // Every capability and host setting is explained in the docs' table.
    for c in [
        "`hostNetwork: true`",
        "`hostPID: true`",
        "`CAP_NET_ADMIN`",
        "`CAP_SYS_ADMIN`",
        "`CAP_NET_RAW`",
        "`CAP_SYS_PTRACE`",
        "`CAP_DAC_READ_SEARCH`",
        "`/run/netns` read-only",
    ] {
        assert!(doc.contains(c), "{c} not documented in docs/kubernetes.md");
    }
}

/// `man --out` at something that is not a directory is bad input: one line, exit 2, nothing written.
fn man_out_not_a_directory_is_bad_input() {
    let dir = Tmp::new("man-out");
    let file = dir.join("plain-file");
    std::fs::write(&file, b"keep").unwrap();
    for out in [file.to_str().unwrap(), "/dev/zero"] {
        let o = conndoc(&["man", "--out", out]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{out}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("not a directory"), "{err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

fn main() {
    let mut t = Tests::new();
    tests!(t, program("bash", "bash"), bash_completion_registers_and_completes_subcommands_and_options);
    tests!(t, program("zsh", "zsh"), zsh_completion_registers_with_compinit);
    tests!(t, program("fish", "fish"), fish_completion_completes_subcommands_and_options);
    tests!(
        t,
        program("man", "man-db").and(program("groff", "groff-base")),
        man_pages_are_written_for_every_subcommand_and_render
    );
    tests!(t, Need::met(), check_log_lines_redact_the_password_in_both_formats);
    tests!(t, Need::met(), man_out_not_a_directory_is_bad_input);
    tests!(t, Need::met(), firewall_timeout_env_is_checked);
    tests!(t, Need::met(), kubernetes_daemonset_has_exactly_what_it_needs);
    t.run()
}
