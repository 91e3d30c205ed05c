//! The command line every demo binary shares: `--backend process|thread|cluster|both`, and
//! `--cluster-url` for the cluster.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::cluster::{cluster_url, serve_if_node, LocalCluster, NODES, NODE_WORKERS};
use crate::{section, Backend, DemoResult, Section, SECTIONS};

/// The `--backend` option.
///
/// # Examples
///
/// ```
/// use cf_demos::{Backend, BackendChoice};
/// assert_eq!(BackendChoice::Both.backends(), [Backend::Process, Backend::Thread]);
/// assert_eq!(BackendChoice::Thread.backends(), [Backend::Thread]);
/// assert_eq!(BackendChoice::Cluster.backends(), [Backend::Cluster]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// ProcessPoolExecutor only.
    Process,
    /// ThreadPoolExecutor only.
    Thread,
    /// ClusterExecutor only, on local nodes the demo starts (needs a NATS server).
    Cluster,
    /// Both local pools, process pool first.
    Both,
}

impl BackendChoice {
    /// The backends to run, in order.
    #[must_use]
    pub fn backends(self) -> &'static [Backend] {
        match self {
            BackendChoice::Process => &[Backend::Process],
            BackendChoice::Thread => &[Backend::Thread],
            BackendChoice::Cluster => &[Backend::Cluster],
            BackendChoice::Both => Backend::LOCAL,
        }
    }
}

#[derive(Debug, Parser)]
struct Args {
    /// Which pool to run the demo on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    backend: BackendChoice,
    /// The NATS server for `--backend cluster` [default: $CF_CLUSTER_URL, else $CF_NATS_URL,
    /// else nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    cluster_url: Option<String>,
}

/// What a demo runs on: the backends, and the local cluster while it runs on one.
struct Setup {
    backends: &'static [Backend],
    _cluster: Option<LocalCluster>,
}

/// Serves as a node if started as one; otherwise parses the command line and, for
/// `--backend cluster`, starts the local nodes (reporting on stderr).
fn setup(name: &'static str, about: String) -> Result<Setup, String> {
    serve_if_node();
    let matches = Args::command().name(name).about(about).get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let backends = args.backend.backends();
    let cluster = if backends.contains(&Backend::Cluster) {
        let url = cluster_url(args.cluster_url.as_deref());
        let cluster = LocalCluster::start(&url, &[])?;
        eprintln!(
            "{name}: {NODES} local nodes of {NODE_WORKERS} workers (pids {:?}) serve pool {} on {url}",
            cluster.node_pids(),
            crate::cluster::DEMO_POOL
        );
        Some(cluster)
    } else {
        None
    };
    Ok(Setup {
        backends,
        _cluster: cluster,
    })
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
    let setup = match setup(
        section.binary,
        format!(
            "Chapter 27, section {}: {}. Shows {}.",
            section.number, section.title, section.shows
        ),
    ) {
        Ok(setup) => setup,
        Err(e) => return report(binary, Err(e.into())),
    };
    let mut out = io::stdout().lock();
    let result = heading(section, &mut out)
        .map_err(Into::into)
        .and_then(|()| section.run(setup.backends, &mut out));
    report(binary, result)
}

/// The `main` of `tour`: every section in the chapter's order, each under a heading.
pub fn tour_main() -> ExitCode {
    let setup = match setup(
        "tour",
        "Chapter 27 (ProcessPoolExecutor and Futures), all ten sections in order.".into(),
    ) {
        Ok(setup) => setup,
        Err(e) => return report("tour", Err(e.into())),
    };
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
            section.run(setup.backends, &mut out)?;
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
