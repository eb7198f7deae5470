//! A throwaway PostgreSQL cluster of its own (`initdb` in a temporary directory, a private
//! port), for `sundial bench --db private` and for the tests that stop PostgreSQL under a node.
//! Its settings are a production server's, not the shared CI server's: autovacuum on, 512 MB
//! of shared buffers, durable commits ([`Cluster::SETTINGS`]).
//!
//! Std only: `tests/pg_restart.rs` includes this file with `#[path]`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running private cluster; stopped (immediate) and deleted when dropped.
pub(crate) struct Cluster {
    dir: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
}

impl Cluster {
    /// The server settings every private cluster starts with (`-c name=value`).
    pub(crate) const SETTINGS: [(&'static str, &'static str); 8] = [
        ("autovacuum", "on"),
        ("shared_buffers", "512MB"),
        ("max_connections", "200"),
        ("synchronous_commit", "on"),
        ("fsync", "on"),
        ("max_wal_size", "4GB"),
        ("listen_addresses", "127.0.0.1"),
        ("shared_preload_libraries", "pg_stat_statements"),
    ];

    /// Runs `initdb` (as the `postgres` user when we are root: initdb refuses root) and starts
    /// the cluster on a free port.
    pub(crate) fn create() -> io::Result<Cluster> {
        let initdb = pg_bin("initdb")?;
        let pg_ctl = pg_bin("pg_ctl")?;
        let dir = std::env::temp_dir().join(format!("sundial-pg-{}-{}", std::process::id(), free_port()?));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            checked("chown", Command::new("chown").arg("postgres:postgres").arg(&dir).output()?)?;
        }
        let data = dir.join("data");
        checked("initdb", as_postgres(&initdb, &["-D", &path_str(&data), "-A", "trust", "-U", "postgres"])?)?;
        let c = Cluster { dir, port: free_port()?, pg_ctl };
        c.start()?;
        Ok(c)
    }

    fn data(&self) -> String {
        path_str(&self.dir.join("data"))
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub(crate) fn start(&self) -> io::Result<()> {
        let mut opts = format!("-p {} -k {}", self.port, self.dir.display());
        for (k, v) in Self::SETTINGS {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = path_str(&self.dir.join("log"));
        checked(
            "pg_ctl start",
            as_postgres(&self.pg_ctl, &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"])?,
        )
    }

    /// Stops the cluster (fast shutdown).
    #[allow(dead_code)] // tests/pg_restart.rs stops PostgreSQL under a node
    pub(crate) fn stop(&self) -> io::Result<()> {
        checked("pg_ctl stop", as_postgres(&self.pg_ctl, &["-D", &self.data(), "-m", "fast", "-w", "stop"])?)
    }

    /// `postgres://postgres@127.0.0.1:PORT/{db}`.
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.pg_ctl, &["-D", &self.data(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed PostgreSQL's server binary `name`.
fn pg_bin(name: &str) -> io::Result<PathBuf> {
    let missing = || io::Error::other(format!("PostgreSQL's {name} not found under /usr/lib/postgresql/*/bin"));
    let newest = std::fs::read_dir("/usr/lib/postgresql")?.filter_map(|e| e.ok()).map(|e| e.path()).max();
    let p = newest.ok_or_else(missing)?.join("bin").join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(missing())
    }
}

fn as_postgres(tool: &Path, args: &[&str]) -> io::Result<Output> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    cmd.args(args).output()
}

fn checked(what: &str, out: Output) -> io::Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
