//! The command line every demo binary shares: `--backend process|thread|both`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::{section, Backend, DemoResult, Section, SECTIONS};

/// The `--backend` option.
///
/// # Examples
///
/// ```
/// use cf_demos::{Backend, BackendChoice};
/// assert_eq!(BackendChoice::Both.backends(), [Backend::Process, Backend::Thread]);
/// assert_eq!(BackendChoice::Thread.backends(), [Backend::Thread]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// ProcessPoolExecutor only.
    Process,
    /// ThreadPoolExecutor only.
    Thread,
    /// Both, process pool first.
    Both,
}

impl BackendChoice {
    /// The backends to run, in order.
    #[must_use]
    pub fn backends(self) -> &'static [Backend] {
        match self {
            BackendChoice::Process => &[Backend::Process],
            BackendChoice::Thread => &[Backend::Thread],
            BackendChoice::Both => Backend::ALL,
        }
    }
}

#[derive(Debug, Parser)]
struct Args {
    /// Which pool to run the demo on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
}

fn parse_args(name: &'static str, about: String) -> Args {
    let matches = Args::command().name(name).about(about).get_matches();
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn report(name: &str, result: DemoResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `main` of a section's binary: parses `--backend`, runs the section, prints to stdout.
///
/// # Panics
///
/// If `binary` names no section (a bug in the binary).
pub fn main_for(binary: &'static str) -> ExitCode {
    let section = section(binary).unwrap_or_else(|| panic!("no section is named {binary}"));
    let args = parse_args(
        section.binary,
        format!(
            "Chapter 27, section {}: {}. Shows {}.",
            section.number, section.title, section.shows
        ),
    );
    let mut out = io::stdout().lock();
    let result = heading(section, &mut out)
        .map_err(Into::into)
        .and_then(|()| section.run(args.backend.backends(), &mut out));
    report(binary, result)
}

/// The `main` of `tour`: every section in the chapter's order, each under a heading.
pub fn tour_main() -> ExitCode {
    let args = parse_args(
        "tour",
        "Chapter 27 (ProcessPoolExecutor and Futures), all ten sections in order.".into(),
    );
    let start = Instant::now();
    let mut out = io::stdout().lock();
    let result = (|| -> DemoResult {
        writeln!(
            out,
            "Chapter 27: ProcessPoolExecutor and Futures, in Rust with cf ({} sections)",
            SECTIONS.len()
        )?;
        for section in &SECTIONS {
            writeln!(out)?;
            heading(section, &mut out)?;
            section.run(args.backend.backends(), &mut out)?;
        }
        Ok(())
    })();
    eprintln!(
        "tour: {} sections in {:.1}s",
        SECTIONS.len(),
        start.elapsed().as_secs_f64()
    );
    report("tour", result)
}

fn heading(section: &Section, out: &mut dyn Write) -> io::Result<()> {
    let rule = "━".repeat(72);
    writeln!(out, "{rule}")?;
    writeln!(
        out,
        "{:>2}/{}  {}",
        section.number,
        SECTIONS.len(),
        section.title
    )?;
    writeln!(out, "       shows: {}", section.shows)?;
    writeln!(
        out,
        "       cargo run --release -p cf-demos --bin {}",
        section.binary
    )?;
    writeln!(out, "{rule}")
}
