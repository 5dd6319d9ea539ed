//! `qm-docs`: manual pages and shell completions for `qmd` and `qmadmin`, generated from
//! their command-line definitions, so they never disagree with `--help`; qmadmin's page also
//! explains its commands from its command table, as `help CMD` does.
//!
//! ```sh
//! qm-docs install ~/.local        # man1 pages and bash, zsh and fish completions
//! qm-docs man qmadmin | man -l -   # one page, to standard output
//! qm-docs completions bash qmd     # one script, to standard output
//! ```

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};
use std::path::{Path, PathBuf};

/// qm-docs: writes the manual pages and shell completions of qmd and qmadmin.
#[derive(Parser)]
#[command(name = "qm-docs", version)]
struct Options {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Writes PREFIX/share/man/man1/{qmd,qmadmin}.1 and completions for bash
    /// (PREFIX/share/bash-completion/completions), zsh (PREFIX/share/zsh/site-functions) and
    /// fish (PREFIX/share/fish/vendor_completions.d).
    Install {
        #[arg(value_name = "PREFIX")]
        prefix: PathBuf,
    },
    /// Prints one program's manual page (roff) on standard output.
    Man { program: Program },
    /// Prints one program's completion script for a shell on standard output.
    Completions { shell: Shell, program: Program },
}

#[derive(Clone, Copy, ValueEnum)]
enum Program {
    Qmd,
    Qmadmin,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Qmd => "qmd",
            Program::Qmadmin => "qmadmin",
        }
    }

    fn command(self) -> clap::Command {
        match self {
            Program::Qmd => qm_daemon::options::Options::command(),
            Program::Qmadmin => qm_shell::options::Options::command(),
        }
    }
}

const PROGRAMS: [Program; 2] = [Program::Qmd, Program::Qmadmin];

/// Where each shell looks for completions under a prefix, and the file name it expects.
fn completion_file(prefix: &Path, shell: Shell, program: &str) -> Option<PathBuf> {
    let share = prefix.join("share");
    match shell {
        Shell::Bash => Some(share.join("bash-completion/completions").join(program)),
        Shell::Zsh => Some(share.join("zsh/site-functions").join(format!("_{program}"))),
        Shell::Fish => {
            Some(share.join("fish/vendor_completions.d").join(format!("{program}.fish")))
        }
        _ => None,
    }
}

/// A program's manual page: clap's sections; for qmadmin, its commands from the command table
/// before the examples.
fn man(program: Program, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(program.command());
    if let Program::Qmd = program {
        return man.render(out);
    }
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    commands_section().to_writer(out)?;
    man.render_extra_section(out)?;
    man.render_version_section(out)
}

/// COMMANDS: each qmadmin command as `help CMD` explains it: usage, explanation, options and
/// arguments, example.
fn commands_section() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "The commands qmadmin reads, with their abbreviations in parentheses; at its prompt, \
         help COMMAND shows the same.",
    )]);
    for spec in qm_shell::catalog::COMMANDS {
        roff.control("TP", []).text([bold(spec.usage())]).text([roman(spec.help)]);
        let (options, operands) = spec.option_and_operand_entries();
        for (title, list) in [("Options:", options), ("Arguments:", operands)] {
            if list.is_empty() {
                continue;
            }
            roff.control("RS", []).control("PP", []).text([italic(title)]);
            for (name, meaning) in list {
                roff.control("TP", []).text([bold(name)]).text([roman(meaning)]);
            }
            roff.control("RE", []);
        }
        roff.control("RS", []).control("PP", []).text([italic("Example:")]);
        roff.control("RS", []).control("PP", []).text([bold(spec.example)]);
        roff.control("RE", []).control("RE", []);
    }
    roff
}

fn completions(shell: Shell, program: Program, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut program.command(), program.name(), out);
}

/// Writes a file through `write`, creating its directory; says what it wrote.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    write(&mut file).map_err(fail)?;
    std::io::Write::flush(&mut file).map_err(fail)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn install(prefix: &Path) -> Result<(), String> {
    for program in PROGRAMS {
        let page = prefix.join("share/man/man1").join(format!("{}.1", program.name()));
        write_file(&page, |out| man(program, out))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let path = completion_file(prefix, shell, program.name()).expect("a known shell");
            write_file(&path, |out| {
                completions(shell, program, out);
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn main() {
    let options = Options::parse();
    let result = match options.action {
        Action::Install { prefix } => install(&prefix),
        Action::Man { program } => {
            man(program, &mut std::io::stdout().lock()).map_err(|e| e.to_string())
        }
        Action::Completions { shell, program } => {
            completions(shell, program, &mut std::io::stdout().lock());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("qm-docs: {e}");
        std::process::exit(1);
    }
}
