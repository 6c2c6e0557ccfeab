//! The `credstore` command: the reference server and the operator's admin
//! commands, on one data directory or (`--postgres URL`) on a PostgreSQL
//! database that any number of servers and admin commands share.

/// `println!` that ends the command quietly, with exit status 141 (what a
/// shell reports for SIGPIPE), once standard output is closed, as in
/// `credstore log | head`: Rust ignores SIGPIPE, and `println!` panics on
/// the broken pipe instead.
macro_rules! outln {
    () => {
        $crate::print_line(format_args!(""))
    };
    ($($t:tt)*) => {
        $crate::print_line(format_args!($($t)*))
    };
}

mod admin;
mod dump;
mod import;
mod secret_file;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use credstore::{Argon2Params, Config, Store};

/// jemalloc rather than glibc's malloc: under load the server's many
/// short-lived allocations (requests, records, sled's pages) cost glibc's
/// malloc ~15% of the CPU, and the histograms of the metrics recorder
/// (samples kept until the next upkeep) made it worse. mimalloc was as fast
/// but kept ~3x the memory across the blocking pool's threads. The library
/// leaves the choice to its host.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// credstore: an embeddable credential store's server and admin commands.
#[derive(Parser, Debug)]
#[command(name = "credstore", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Data directory of the store.
    #[arg(
        long,
        global = true,
        default_value = "./credstore-data",
        env = "CREDSTORE_DATA"
    )]
    pub data: PathBuf,
    /// The store in a PostgreSQL database instead of `--data`
    /// (`postgresql://user[:password]@host[:port]/dbname`): several servers
    /// and admin commands may use it at once. Needs `--secret-file`.
    #[arg(
        long,
        global = true,
        env = "CREDSTORE_POSTGRES_URL",
        hide_env_values = true,
        value_name = "URL",
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(PostgresUrl(s.to_owned()))
    )]
    pub postgres: Option<PostgresUrl>,
    /// With `--postgres` and `sslmode=require` in its URL: the CA
    /// certificates (PEM) that the server's certificate must chain to,
    /// instead of Mozilla's roots. The chain and the host name are always
    /// checked.
    #[arg(
        long,
        global = true,
        env = "CREDSTORE_POSTGRES_CA",
        value_name = "FILE"
    )]
    pub postgres_ca: Option<PathBuf>,
    /// File holding the store secret (64 hex characters). Default: `<data dir>.secret`.
    #[arg(long, global = true, env = "CREDSTORE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Argon2 parameters for new hashes as `M,T,P` (memory KiB, passes, lanes).
    /// Default: 19456,2,1 (RFC 9106 / OWASP).
    #[arg(long, global = true, value_name = "M,T,P", env = "CREDSTORE_ARGON2")]
    pub argon2: Option<String>,
    /// Create a new data directory with zstd-compressed pages: about 30%
    /// less disk space, slower writes and reads, and a slow first start
    /// after a long run (README, "Footprint"). An existing store keeps what
    /// it was created with; `compact --pages on|off` changes it.
    #[arg(long, global = true, env = "CREDSTORE_COMPRESS_PAGES")]
    pub compress_pages: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve every documented route over HTTP.
    Serve(serve::ServeArgs),
    /// Partner apps.
    #[command(subcommand)]
    App(admin::AppCommand),
    /// Customers.
    #[command(subcommand)]
    Customer(admin::CustomerCommand),
    /// Password resets.
    #[command(subcommand)]
    Reset(admin::ResetCommand),
    /// The reset mail queue.
    #[command(subcommand)]
    Mail(admin::MailCommand),
    /// Remove expired and used resets and idle login guards (used salts are kept).
    Purge,
    /// Check the store's integrity; exit 0 only when it is sound.
    Check,
    /// Recover the store (as any command does when it opens it); with
    /// `--truncate-at-corruption`, accept losing the write-ahead log's
    /// records after a damaged one.
    Recover(admin::RecoverArgs),
    /// Rewrite the store's files in key order, giving back the space sled
    /// wastes as a store grows (run it with no server on the store; it
    /// needs room for a copy). `--pages on|off` turns page compression
    /// on or off.
    Compact(admin::CompactArgs),
    /// Print the event log.
    Log(admin::LogArgs),
    /// Print counts and sizes.
    Stats,
    /// Write every record of the store to FILE as JSON Lines (a backup, or
    /// to move a store to PostgreSQL); run it with no server writing.
    Dump(dump::DumpArgs),
    /// Load a dump into an empty store (on disk or `--postgres`) with the
    /// secret it was made under; refused, changing nothing, otherwise.
    Restore(dump::DumpArgs),
    /// Compute the ChangePassword digest of the ASP.NET format (SPEC §6.4).
    Digest(admin::DigestArgs),
}

/// A PostgreSQL connection string; it may hold the database password, so
/// its `Debug` shows nothing of it.
#[derive(Clone)]
pub(crate) struct PostgresUrl(pub String);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresUrl(..)")
    }
}

/// An error for the user: one line, no secrets.
pub(crate) struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

pub(crate) type CliResult = Result<ExitCode, Failure>;

impl Global {
    pub fn config(&self) -> Result<Config, Failure> {
        let mut config = Config::default().with_page_compression(self.compress_pages);
        if let Some(text) = &self.argon2 {
            let parts: Vec<u32> = text
                .split(',')
                .map(|p| p.trim().parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| Failure(format!("--argon2 wants M,T,P numbers, got {text:?}")))?;
            let [m, t, p] = parts[..] else {
                return Err(Failure(format!(
                    "--argon2 wants three numbers M,T,P, got {text:?}"
                )));
            };
            config = config.with_argon2(Argon2Params::new(m, t, p)?);
        }
        if let Some(ca) = &self.postgres_ca {
            config = config.with_postgres_ca_file(ca);
        }
        Ok(config)
    }

    pub fn secret_path(&self) -> PathBuf {
        self.secret_file.clone().unwrap_or_else(|| {
            let mut s = self.data.clone().into_os_string();
            s.push(".secret");
            PathBuf::from(s)
        })
    }

    /// Opens (or creates) the store, creating the secret file only when the
    /// store itself is being created.
    pub fn open(&self) -> Result<Store, Failure> {
        self.open_with(self.config()?)
    }

    /// [`Global::open`] with `config`.
    pub fn open_with(&self, config: Config) -> Result<Store, Failure> {
        if let Some(url) = &self.postgres {
            return self.open_postgres(&url.0, config);
        }
        let secret = secret_file::load_or_create(&self.secret_path(), &self.data)?;
        let store = Store::open(&self.data, &secret, config).map_err(|e| {
            Failure(format!(
                "cannot open the store at {}: {e}",
                self.data.display()
            ))
        })?;
        Ok(store)
    }

    /// The store on PostgreSQL. `--secret-file` is required; when the file
    /// does not exist a new secret is written to it, and removed again
    /// unless the store opens with it (a new database).
    fn open_postgres(&self, url: &str, config: Config) -> Result<Store, Failure> {
        let Some(path) = &self.secret_file else {
            return Err(Failure(
                "--postgres needs --secret-file (the file the store was created with, \
                 or a new one to create a store)"
                    .into(),
            ));
        };
        let created = !path.exists();
        let secret = secret_file::load_or_create_for_database(path)?;
        // The URL is not shown: it may hold the database password.
        Store::open_postgres(url, &secret, config).map_err(|e| {
            if created {
                let _ = std::fs::remove_file(path);
            }
            Failure(format!("cannot open the store on PostgreSQL: {e}"))
        })
    }

    /// Whether the store is on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// One line to standard output; see [`outln`].
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{args}") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // Admin commands show the library's warnings (e.g. a data directory
        // others can read) as plain lines; `serve` sets up its own logging.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("CREDSTORE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .try_init();
    }
    // A failing `serve --log-format json` says so in JSON too.
    let json_logs =
        matches!(&cli.command, Command::Serve(a) if a.log_format == serve::LogFormat::Json);
    let result = match cli.command {
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::App(c) => admin::app(&cli.global, c),
        Command::Customer(c) => admin::customer(&cli.global, c),
        Command::Reset(c) => admin::reset(&cli.global, c),
        Command::Mail(c) => admin::mail(&cli.global, c),
        Command::Purge => admin::purge(&cli.global),
        Command::Check => admin::check(&cli.global),
        Command::Recover(args) => admin::recover(&cli.global, args),
        Command::Compact(args) => admin::compact(&cli.global, args),
        Command::Log(args) => admin::log(&cli.global, args),
        Command::Stats => admin::stats(&cli.global),
        Command::Dump(args) => dump::dump(&cli.global, args),
        Command::Restore(args) => dump::restore(&cli.global, args),
        Command::Digest(args) => admin::digest(args),
    };
    match result {
        Ok(code) => code,
        Err(Failure(msg)) if json_logs => {
            tracing::error!(error = %msg, "credstore serve failed");
            ExitCode::FAILURE
        }
        Err(Failure(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
