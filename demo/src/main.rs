//! `cargo run --release -p accel-demo [-- --topology embedded|cluster]`: the platform API with
//! Accel in front of it, on this machine, in one command; Ctrl-C stops everything.
//!
//! # Layout
//!
//! - [`embedded`] (the default): three origin instances sharing an embedded SQLite file,
//!   one sidecar in front of them (`deploy/accel.toml`);
//! - [`cluster`]: the production shape — three origin instances on PostgreSQL, each with
//!   its own sidecar, the sidecars sharing Redis, an edge Accel balancing over them
//!   (`deploy/cluster/`);
//! - [`origins`]: starting origin instances and the shutdown signal they share.
//!
//! Paths are relative to the repository root.

mod cluster;
mod embedded;
mod origins;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `EX_USAGE` from sysexits.h: bad arguments or configuration.
const EXIT_USAGE: u8 = 64;

const USAGE: &str = "usage: accel-demo [--topology embedded|cluster]

  embedded  (default) three origin instances on an embedded SQLite file, one sidecar (:8080)
  cluster   three origin instances on PostgreSQL, each with its own sidecar sharing Redis,
            an edge Accel (:8080) balancing least-connections over the sidecars";

/// Which shape of deployment the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Embedded,
    Cluster,
}

fn main() -> ExitCode {
    let topology = match parse_args(std::env::args().skip(1)) {
        Ok(Some(topology)) => topology,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("accel-demo: {message}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let root = repository_root();
    match topology {
        Topology::Embedded => embedded::main(&root),
        Topology::Cluster => cluster::main(&root),
    }
}

/// The topology asked for; `None` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Topology>, String> {
    let mut topology = Topology::Embedded;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--topology" => args.next().ok_or("--topology needs a value")?,
            other => match other.strip_prefix("--topology=") {
                Some(value) => value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        };
        topology = match value.as_str() {
            "embedded" => Topology::Embedded,
            "cluster" => Topology::Cluster,
            other => return Err(format!("unknown topology {other:?} (embedded or cluster)")),
        };
    }
    Ok(Some(topology))
}

/// The repository root: the current directory when it holds `deploy/accel.toml`, else the
/// one this crate was built from.
fn repository_root() -> PathBuf {
    let here = PathBuf::from(".");
    if here.join("deploy/accel.toml").is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A multi-threaded runtime, or a message saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::{Topology, parse_args};

    fn parse(args: &[&str]) -> Result<Option<Topology>, String> {
        parse_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn the_embedded_topology_is_the_default() {
        assert_eq!(parse(&[]), Ok(Some(Topology::Embedded)));
    }

    #[test]
    fn the_topology_is_named_in_either_form() {
        assert_eq!(parse(&["--topology", "cluster"]), Ok(Some(Topology::Cluster)));
        assert_eq!(parse(&["--topology=embedded"]), Ok(Some(Topology::Embedded)));
        assert_eq!(parse(&["--help"]), Ok(None));
    }

    #[test]
    fn an_unknown_topology_or_argument_is_an_error() {
        assert!(parse(&["--topology", "mesh"]).unwrap_err().contains("mesh"));
        assert!(parse(&["--topology"]).is_err());
        assert!(parse(&["--fast"]).unwrap_err().contains("--fast"));
    }
}
