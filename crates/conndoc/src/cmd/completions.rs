//! `conndoc completions SHELL`: the shell completion script, generated from the CLI definition
//! (clap_complete), on stdout. Packaged in the .deb; by hand:
//! `conndoc completions bash > ~/.local/share/bash-completion/completions/conndoc`.

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(a: Args, cli: clap::Command) -> anyhow::Result<u8> {
    let mut cli = visible(cli);
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cli, "conndoc", &mut out);
    super::diagnose::write_out(&String::from_utf8(out)?)?;
    Ok(0)
}

/// The command without its hidden subcommands: clap_complete's bash script offers them
/// otherwise (and clap has no way to remove a subcommand, so the top level is rebuilt).
fn visible(cli: clap::Command) -> clap::Command {
    let mut top = clap::Command::new("conndoc").version(env!("CARGO_PKG_VERSION")).args(cli.get_arguments().cloned());
    if let Some(a) = cli.get_about() {
        top = top.about(a.clone());
    }
    top.subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}
