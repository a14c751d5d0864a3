//! `conndoc man [--out DIR]` (hidden): the manual pages, generated from the CLI definition
//! (clap_mangen) so they never drift from `--help`. With `--out` it writes `conndoc.1` and one
//! `conndoc-SUBCOMMAND.1` per subcommand (what the .deb ships); without it prints one page.

use super::usage;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Write every page into this directory (created if missing) instead of printing one.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The page to print: a subcommand's name (default: the conndoc(1) overview).
    #[arg(value_name = "COMMAND", conflicts_with = "out")]
    pub page: Option<String>,
}

pub fn run(a: Args, cli: clap::Command) -> anyhow::Result<u8> {
    let pages = pages(cli)?;
    if let Some(dir) = a.out {
        write_pages(&dir, &pages)?;
        return Ok(0);
    }
    let want = match &a.page {
        None => "conndoc.1".to_string(),
        Some(p) => format!("conndoc-{p}.1"),
    };
    let Some((_, text)) = pages.iter().find(|(f, _)| *f == want) else {
        return Err(usage(format!("no manual page for {:?}", a.page.unwrap_or_default())));
    };
    super::diagnose::write_out(&String::from_utf8_lossy(text))?;
    Ok(0)
}

/// `--out DIR`: every page into DIR. What the user got wrong — DIR a symbolic link (dangling
/// or not), a non-directory, a page's path a link or special file — is exit 2 and checked
/// for every page before one is written; a failing write (a full disk) is exit 3.
fn write_pages(dir: &Path, pages: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    use conndoc_files::WriteError;
    let shown = dir.display();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            let to = std::fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_default();
            let state = if dir.exists() { "" } else { ", which does not exist" };
            return Err(usage(format!(
                "--out {shown}: it is a symbolic link (to {to}{state}); conndoc never writes through one: give the directory itself"
            )));
        }
        // An existing non-directory (a file, /dev/zero) is the user's mistake: exit 2, not 3.
        Ok(m) if !m.is_dir() => return Err(usage(format!("--out {shown}: not a directory"))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("create {shown}: {}", conndoc_files::os_error_text(&e)))?;
        }
        Err(e) => return Err(usage(format!("--out {shown}: {}", conndoc_files::os_error_text(&e)))),
    }
    // Refuse before writing any page, so a refusal leaves no half-updated set behind.
    for (file, _) in pages {
        let p = dir.join(file);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(usage(WriteError::Symlink { path: p }.to_string()));
            }
            Ok(m) if !m.is_file() => {
                return Err(usage(format!("cannot write {}: not a regular file", p.display())));
            }
            _ => {}
        }
    }
    for (file, text) in pages {
        // write_private checks again on the descriptor (O_NOFOLLOW): a link made since is refused too.
        match conndoc_files::write_private(dir.join(file), text) {
            Ok(()) => {}
            Err(e @ WriteError::Io { .. }) => return Err(e.into()),
            Err(e) => return Err(usage(e.to_string())),
        }
    }
    Ok(())
}

/// Every page as (file name, roff text): the overview and each visible subcommand.
pub fn pages(cli: clap::Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let version = cli.get_version().unwrap_or_default().to_string();
    let source = format!("conndoc {version}");
    let mut pages = Vec::new();
    let mut top = Vec::new();
    let man = Man::new(cli.clone()).source(&source).manual("conndoc manual");
    man.render_title(&mut top)?;
    man.render_name_section(&mut top)?;
    man.render_synopsis_section(&mut top)?;
    man.render_description_section(&mut top)?;
    man.render_options_section(&mut top)?;
    man.render_subcommands_section(&mut top)?;
    overview_sections().to_writer(&mut top)?;
    man.render_version_section(&mut top)?;
    pages.push((man.get_filename(), top));
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = Man::new(sub.clone()).source(&source).manual("conndoc manual");
        let mut page = Vec::new();
        man.render(&mut page)?;
        let mut extra = Roff::default();
        see_also(&mut extra);
        extra.to_writer(&mut page)?;
        pages.push((man.get_filename(), page));
    }
    Ok(pages)
}

/// What `--help` cannot say: exit status, environment, where the rest is documented.
fn overview_sections() -> Roff {
    let mut r = Roff::default();
    r.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "the target is healthy (check: every target is)"),
        ("1", "the diagnosis is done and the target fails; the verdict's cause code says why"),
        ("2", "bad input or usage, explained in one line on stderr"),
        ("3", "conndoc itself failed, or its output could not be written (\"writing stdout: ...\"); a reader that closes the pipe early (| head) is no failure: the status stays the command's"),
    ] {
        r.control("TP", []).text([bold(code)]).text([roman(meaning)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in [
        ("CONNDOC_LOG", "which log events are written to stderr: a level (info, debug) or per-crate directives such as conndoc_watch=debug,warn. Default: info for watch, warnings for the other commands."),
        ("NO_COLOR", "no colour in text output (as --no-color)."),
        ("REDISCLI_AUTH", "the Redis password when neither the URL nor --password-file gives one."),
        ("CONNDOC_SSH_COMMAND", "the command used instead of ssh for --ssh, split like a shell would."),
        ("HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY", "used by the alert deliveries of watch only; every probe connects to the target itself. A password in a proxy URL goes to the proxy alone."),
        ("CONNDOC_FIREWALL_TIMEOUT", "the deadline of reading the firewall rules (default: --timeout within 2-10 s); a read that runs out is listed under skipped as read only in part."),
    ] {
        r.control("TP", []).text([bold(name)]).text([roman(meaning)]);
    }
    r.control("SH", ["SECRETS"]);
    r.text([roman(
        "Passwords, tokens and URL credentials print as <redacted> in every output, log line, error, database row and alert.",
    )]);
    see_also(&mut r);
    r
}

fn see_also(r: &mut Roff) {
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("conndoc"),
        roman("(1), "),
        bold("ss"),
        roman("(8), "),
        bold("traceroute"),
        roman("(1). The cause catalogue and the report format: /usr/share/doc/conndoc/ (causes.md, report.md), or docs/ in the source."),
    ]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_page_per_visible_subcommand_and_the_overview() {
        let cli = clap::Command::new("conndoc")
            .version("9.9")
            .subcommand(clap::Command::new("diagnose").about("Diagnose."))
            .subcommand(clap::Command::new("man").hide(true));
        let pages = super::pages(cli).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["conndoc.1", "conndoc-diagnose.1"]);
        let top = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(top.contains(".SH \"EXIT STATUS\""), "{top}");
        assert!(top.contains("CONNDOC_LOG"), "{top}");
        assert!(top.contains("conndoc 9.9"), "{top}");
    }
}
