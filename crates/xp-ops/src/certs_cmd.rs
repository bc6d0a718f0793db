//! `xp-ops certs ...`: a cluster CA and per-node certificates for `XP_TLS_CERT`, `XP_TLS_KEY`
//! and `XP_TLS_CA` (mTLS between nodes, operators and the runner).

use std::path::PathBuf;

use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a new CA in DIR (`ca.pem`, `ca.key`; the key is owner-only: keep it offline).
    InitCa {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate for a node (or an operator) signed by the CA in --ca-dir, valid for
    /// server and client authentication, into --out (`<name>.pem`, `<name>.key`, `ca.pem`).
    Issue {
        #[arg(long)]
        ca_dir: PathBuf,
        /// The node's name (the certificate's common name and file names).
        #[arg(long)]
        name: String,
        /// A DNS name or IP address the node is reached at (the host of its XP_API_BASE_URL;
        /// add 127.0.0.1 and localhost for local checks). Repeat for each.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn fail(e: certs::CertError) -> Failure {
    let code = match e {
        certs::CertError::Exists { .. } | certs::CertError::Invalid(_) => 2,
        certs::CertError::Io { .. } => 4,
    };
    Failure(code, e.to_string())
}

pub fn run(cmd: CertsCommand) -> Result<(), Failure> {
    match cmd {
        CertsCommand::InitCa { dir } => {
            let ca = certs::Ca::generate().map_err(fail)?;
            ca.write(&dir).map_err(fail)?;
            out!(
                "created a CA in {}: {} (give to every node as XP_TLS_CA) and {} (keep it private)",
                dir.display(),
                certs::CA_CERT,
                certs::CA_KEY
            );
            Ok(())
        }
        CertsCommand::Issue { ca_dir, name, hosts, out } => {
            let ca = certs::Ca::load(&ca_dir).map_err(fail)?;
            let f = certs::write_node(&out, &ca, &name, &hosts).map_err(fail)?;
            // The env file takes absolute paths only.
            let abs =
                |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
            let f = certs::NodeFiles { cert: abs(&f.cert), key: abs(&f.key), ca: abs(&f.ca) };
            out!(
                "issued {name} for {}:\n  XP_TLS_CERT={}\n  XP_TLS_KEY={}\n  XP_TLS_CA={}",
                hosts.join(", "),
                f.cert.display(),
                f.key.display(),
                f.ca.display()
            );
            Ok(())
        }
    }
}
