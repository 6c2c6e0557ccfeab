//! `serve`: the reference HTTP server over every documented route.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use credstore::gateway::{Gateway, GatewaySettings};
use credstore::mail::{
    Courier, CourierSettings, MailError, Mailer, ResetMail, SmtpMailer, SmtpSettings,
};

use crate::{CliResult, Failure, Global};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Deliver reset mails over SMTP: `smtp://host[:port]` (STARTTLS;
    /// required unless the host is loopback), `smtps://host[:port]`
    /// (implicit TLS), `smtps://user@host` with the password in
    /// CREDSTORE_SMTP_PASSWORD; `?tls=required|opportunistic|none`.
    #[arg(
        long,
        value_name = "URL",
        env = "CREDSTORE_SMTP_URL",
        hide_env_values = true
    )]
    pub smtp: Option<String>,
    /// The From address of reset mails (with --smtp), e.g.
    /// `Shop <no-reply@shop.example>`.
    #[arg(long, value_name = "ADDR", env = "CREDSTORE_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// A PEM file of CA certificates the SMTP server's certificate may
    /// chain to, besides Mozilla's roots.
    #[arg(long, value_name = "FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Base of the reset links in mails: `<base>/api/v1/<shop>/customers/reset-password/<token>`,
    /// or a template with `{token}` (and `{shop}`). Default http://127.0.0.1:8080.
    #[arg(long, value_name = "URL", env = "CREDSTORE_RESET_LINK_BASE")]
    pub reset_link_base: Option<String>,
    /// Also write each reset mail as `<reset_id>.json` in this folder
    /// (`{to, token, reset_id, expires_at, link}`, mode 0600): a development
    /// mailer. Without it and without --smtp, mails are logged without the
    /// token and dropped.
    #[arg(long)]
    pub mail_outbox: Option<PathBuf>,
    /// Reset mails sent at once (SMTP connections).
    #[arg(long, default_value_t = 8)]
    pub mail_concurrency: usize,
    /// Seconds before the first retry of a mail that failed for now (then
    /// doubling, jittered, up to --mail-retry-max, until the token expires).
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub mail_retry_min: f64,
    /// Longest wait in seconds between two attempts at a mail.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub mail_retry_max: f64,
    /// Seed the seeds' example parties when absent (app 396 / acme12aa,
    /// customer 811111 johndoe@email.com), show WCF dates at -0500, and
    /// accept seed 003's placeholder bearer for the demo customer only.
    #[arg(long)]
    pub demo: bool,
    /// Seconds a request's headers may take to arrive (also how long an
    /// idle keep-alive connection stays open).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub header_timeout: f64,
    /// Seconds a request's body may take to arrive.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub body_timeout: f64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Address of the admin port (`/health/alive`, `/health/ready`,
    /// `/metrics`), never the public one; `off` for none. Default
    /// 127.0.0.1:9464, or a free loopback port (printed) when --listen asks
    /// for port 0.
    #[arg(long, value_name = "ADDR|off", env = "CREDSTORE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Collect no metrics: no recorder is installed and the admin port
    /// serves health and readiness only.
    #[arg(long)]
    pub no_metrics: bool,
    /// Not ready (503 on /health/ready) while a reset mail has been due
    /// for longer than this without being delivered (a stuck courier); 0
    /// leaves the mail queue out of readiness.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    pub mail_stuck_after: f64,
    /// Milliseconds a password change's commit may wait, before the
    /// write-ahead log's sync, for other password changes whose new hash is
    /// underway, so that one sync covers several (fewer syncs, more latency
    /// for them; writes that hash nothing never wait; see
    /// `Config::with_commit_delay`). 0: never waits.
    #[arg(long, default_value_t = 25.0, value_name = "MS")]
    pub commit_delay_ms: f64,
    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "CREDSTORE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How `serve` writes its log lines (standard error).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, the
    /// event's fields (a request's `method`, `route`, `status`,
    /// `latency_ms`), `target`.
    Json,
}

/// The admin address: as given, none for `off`, else 127.0.0.1:9464 (or a
/// free loopback port when the public one is picked freely, as tests do).
fn admin_address(args: &ServeArgs) -> Option<String> {
    match args.admin_listen.as_deref().map(str::trim) {
        Some(a) if a.eq_ignore_ascii_case("off") || a.eq_ignore_ascii_case("none") => None,
        Some(a) => Some(a.to_owned()),
        None if args
            .listen
            .rsplit_once(':')
            .is_some_and(|(_, port)| port == "0") =>
        {
            Some("127.0.0.1:0".to_owned())
        }
        None => Some("127.0.0.1:9464".to_owned()),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDSTORE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

fn seconds(name: &str, s: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure(format!(
                "--{name} wants a positive number of seconds, got {s}"
            ))
        })
}

/// Writes each mail as a JSON file; the file holds the token, so the folder is
/// the operator's to protect (it is created with mode 0700).
struct OutboxMailer {
    dir: PathBuf,
}

impl Mailer for OutboxMailer {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        let body = serde_json::json!({
            "to": mail.to(),
            "token": mail.token().expose_secret(),
            "reset_id": mail.reset_id(),
            "expires_at": mail.expires_at().to_rfc3339(),
            "link": mail.link_exposing_token(),
        });
        let name = format!("{}.json", mail.reset_id());
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                // The file holds a live token: readable by its owner only.
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(body.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(&name))
        };
        write().map_err(|e| MailError::new(format!("cannot write to the outbox: {}", e.kind())))?;
        tracing::info!(reset_id = mail.reset_id(), file = %name, "reset mail written to the outbox");
        Ok(())
    }
}

/// Logs that a mail would be sent, without the token or the link.
struct LogMailer;

/// Every configured target in turn (the outbox first: rewriting its file
/// on a retry is harmless). The first failure is the mail's.
struct Targets(Vec<Box<dyn Mailer>>);

impl Mailer for Targets {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        for target in &self.0 {
            target.send(mail)?;
        }
        Ok(())
    }
}

impl Mailer for LogMailer {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        tracing::info!(
            reset_id = mail.reset_id(),
            expires_at = %mail.expires_at(),
            "reset mail (no mailer configured; token not logged; use --mail-outbox to receive it)"
        );
        Ok(())
    }
}

fn outbox(dir: &PathBuf) -> Result<OutboxMailer, Failure> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| {
        Failure(format!(
            "cannot create the mail outbox {}: {e}",
            dir.display()
        ))
    })?;
    Ok(OutboxMailer { dir: dir.clone() })
}

/// Installs the SIGTERM and SIGINT handlers at once and returns the future
/// that completes on the first of them. Called before the server prints that
/// it listens: a signal sent right after that line is a clean stop, never the
/// default action (an abrupt exit, status "killed by signal").
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let installed = |kind, name| {
            signal(kind).map_err(|e| Failure(format!("cannot install the {name} handler: {e}")))
        };
        let mut term = installed(SignalKind::terminate(), "SIGTERM")?;
        let mut int = installed(SignalKind::interrupt(), "SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

pub fn run(g: &Global, args: ServeArgs) -> CliResult {
    init_logging(args.log_format);
    let admin_addr = admin_address(&args);
    // Before anything counts (the courier starts below). Without an admin
    // port nobody could scrape: no recorder, the facade's calls are no-ops.
    let prometheus = if admin_addr.is_some() && !args.no_metrics {
        Some(credstore::metrics::Prometheus::install()?)
    } else {
        None
    };
    let mail_stuck_after = if args.mail_stuck_after == 0.0 {
        None
    } else {
        Some(seconds("mail-stuck-after", args.mail_stuck_after)?)
    };

    let commit_delay = Duration::try_from_secs_f64(args.commit_delay_ms / 1000.0)
        .ok()
        .filter(|d| *d <= Duration::from_secs(1))
        .ok_or_else(|| {
            Failure(format!(
                "--commit-delay-ms wants 0 to 1000 milliseconds, got {}",
                args.commit_delay_ms
            ))
        })?;
    let store = g.open_with(g.config()?.with_commit_delay(commit_delay))?;
    for user_code in credstore::demo::retire_placeholder_app(&store)? {
        tracing::warn!(
            user_code,
            "disabled an app whose key is seed 003's public placeholder bearer"
        );
    }
    let settings = if args.demo {
        let seeded = credstore::demo::seed(&store)?;
        tracing::info!(
            app = seeded.app,
            customer = seeded.customer,
            "demo parties seeded (true = created now)"
        );
        credstore::demo::settings()
    } else {
        GatewaySettings::default()
    };
    let settings = match &args.reset_link_base {
        Some(base) => settings.with_reset_link_base(base.clone()),
        None => settings,
    };
    let mut targets: Vec<Box<dyn Mailer>> = Vec::new();
    if let Some(dir) = &args.mail_outbox {
        targets.push(Box::new(outbox(dir)?));
    }
    if let Some(url) = &args.smtp {
        let Some(from) = &args.mail_from else {
            return Err(Failure("--smtp needs --mail-from ADDR".into()));
        };
        let mut smtp = SmtpSettings::new(url.clone(), from.clone());
        if let Ok(pw) = std::env::var("CREDSTORE_SMTP_PASSWORD") {
            smtp = smtp.with_password(pw);
        }
        if let Some(ca) = &args.smtp_ca_file {
            smtp = smtp.with_ca_file(ca.clone());
        }
        let mailer = SmtpMailer::new(&smtp)?;
        tracing::info!(endpoint = mailer.endpoint(), "reset mails go out over SMTP");
        targets.push(Box::new(mailer));
    }
    if targets.is_empty() {
        tracing::warn!(
            "no --smtp or --mail-outbox: reset mails are logged without their token and dropped"
        );
        targets.push(Box::new(LogMailer));
    }
    let courier = Courier::new(
        store.clone(),
        Targets(targets),
        CourierSettings::new(settings.skyerp.reset_link_base.clone())
            .with_concurrency(args.mail_concurrency.max(1))
            .with_retry(
                seconds("mail-retry-min", args.mail_retry_min)?,
                seconds("mail-retry-max", args.mail_retry_max)?,
            ),
    );
    let courier = courier
        .spawn()
        .map_err(|e| Failure(format!("cannot start the mail courier: {e}")))?;
    let stopper = courier.courier().clone();
    let gateway = Arc::new(Gateway::new(store.clone(), settings));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}")))?;
    let limits = credstore::http::server::ServerLimits {
        header_timeout: seconds("header-timeout", args.header_timeout)?,
        max_connections: args.max_connections.max(1),
        ..Default::default()
    };
    let body_timeout = seconds("body-timeout", args.body_timeout)?;
    let mut admin = credstore::http::admin::Admin::new(
        credstore::readiness::Readiness::new(store.clone()).mail_stuck_after(mail_stuck_after),
    );
    if let Some(p) = prometheus {
        admin = admin.prometheus(p);
    }
    let admin_limits = credstore::http::server::ServerLimits {
        max_connections: 64,
        ..limits
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {}: {e}", args.listen)))?;
        let admin_listener = match &admin_addr {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
                Failure(format!(
                    "cannot listen on {a} (the admin port; --admin-listen ADDR or off): {e}"
                ))
            })?),
            None => None,
        };
        // The SIGTERM/SIGINT handlers are installed before either address is
        // printed: a signal sent right after the banner is a clean stop of
        // both servers, never the default action.
        let signalled = shutdown_signal()?;
        // Both addresses in one write: a reader may stop after the first line.
        let mut banner = format!("credstore listening on http://{}\n", listener.local_addr()?);
        if let Some(l) = &admin_listener {
            banner.push_str(&format!("credstore admin on http://{}\n", l.local_addr()?));
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        drop(out);

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let app = credstore::http::reference_router(gateway, body_timeout);
        let public = credstore::http::server::serve(listener, app, limits, stopped());
        let admin_server = async {
            if let Some(l) = admin_listener {
                credstore::http::server::serve(l, admin.build(), admin_limits, stopped()).await;
            }
        };
        let signal = async {
            signalled.await;
            // Mails in flight finish; the rest stay queued for the next start.
            stopper.stop();
            tracing::info!("shutting down: finishing requests and mails in flight");
            let _ = stop_tx.send(true);
        };
        tokio::join!(public, admin_server, signal);
        Ok::<(), Failure>(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(500));
    if !courier.stop(Duration::from_secs(3)) {
        tracing::warn!(
            "a mail was still in flight after 3 s; it stays queued and may be sent again"
        );
    }
    store.flush()?;
    drop(store);
    tracing::info!("credstore stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
