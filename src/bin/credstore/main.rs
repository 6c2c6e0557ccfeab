//! The `credstore` command: the reference server and the operator's admin
//! commands, on one data directory.

mod admin;
mod import;
mod secret_file;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use credstore::{Argon2Params, Config, Store};

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
    /// File holding the store secret (64 hex characters). Default: `<data dir>.secret`.
    #[arg(long, global = true, env = "CREDSTORE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Argon2 parameters for new hashes as `M,T,P` (memory KiB, passes, lanes).
    /// Default: 19456,2,1 (RFC 9106 / OWASP).
    #[arg(long, global = true, value_name = "M,T,P", env = "CREDSTORE_ARGON2")]
    pub argon2: Option<String>,
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
    /// Print the event log.
    Log(admin::LogArgs),
    /// Print counts and sizes.
    Stats,
    /// Compute the ChangePassword digest of the ASP.NET format (SPEC §6.4).
    Digest(admin::DigestArgs),
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
        let mut config = Config::default();
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
        let secret = secret_file::load_or_create(&self.secret_path(), &self.data)?;
        let store = Store::open(&self.data, &secret, self.config()?).map_err(|e| {
            Failure(format!(
                "cannot open the store at {}: {e}",
                self.data.display()
            ))
        })?;
        Ok(store)
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
        Command::Log(args) => admin::log(&cli.global, args),
        Command::Stats => admin::stats(&cli.global),
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
