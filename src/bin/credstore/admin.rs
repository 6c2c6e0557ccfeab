//! Admin commands. Secrets are read from standard input, never from the
//! command line (where `ps` would show them), and printed only when created.

use std::io::BufRead;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use credstore::{
    AppKey, CompactPages, CustomerFlags, FlagsUpdate, NewCustomer, Password, ResetDetails, Store,
    Timestamp,
};
use zeroize::Zeroize;

use crate::{CliResult, Failure, Global};

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app with a new random key (printed once).
    Add(AppArgs),
    /// Import an app with its existing key, read from standard input.
    Import(AppArgs),
    /// List apps.
    List,
    /// Disable an app: it can no longer authenticate.
    Disable {
        /// The app's user_code.
        user_code: u32,
    },
    /// Enable a disabled app.
    Enable {
        /// The app's user_code.
        user_code: u32,
    },
}

#[derive(Args, Debug)]
pub struct AppArgs {
    /// The app's number (`user_code`).
    #[arg(long)]
    user_code: u32,
    /// Display name.
    #[arg(long)]
    name: String,
    /// Shop key for path-scoped routes (e.g. `acme12aa`).
    #[arg(long)]
    shop: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CustomerCommand {
    /// Register a customer; the password is read from standard input.
    Add(CustomerAddArgs),
    /// Import customers from JSON Lines (FILE, or `-` for standard input).
    Import(crate::import::ImportArgs),
    /// Show a customer (no secrets).
    Show {
        /// box_id or email address.
        who: String,
    },
    /// Set some of a customer's flags.
    SetFlags(SetFlagsArgs),
}

#[derive(Args, Debug)]
pub struct CustomerAddArgs {
    /// Email address.
    #[arg(long)]
    email: String,
    /// First name.
    #[arg(long, default_value = "")]
    first_name: String,
    /// Last name.
    #[arg(long, default_value = "")]
    last_name: String,
    /// Mark the customer as having to change the password at first login.
    #[arg(long)]
    must_change_password: bool,
}

#[derive(Args, Debug)]
pub struct SetFlagsArgs {
    /// The customer's box_id.
    box_id: u64,
    #[arg(long)]
    /// is_active
    active: Option<bool>,
    #[arg(long)]
    /// is_enable
    enable: Option<bool>,
    #[arg(long)]
    /// is_business
    business: Option<bool>,
    #[arg(long)]
    /// is_vip
    vip: Option<bool>,
    #[arg(long)]
    /// must_change_password
    must_change_password: Option<bool>,
}

#[derive(Subcommand, Debug)]
pub enum ResetCommand {
    /// Issue a reset token for a customer; prints the reset id, token and expiry.
    Issue {
        /// The customer's email.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MailCommand {
    /// List the queued reset mails, the next due first (never a token).
    List {
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// First sequence number to show (default: show the newest entries).
    #[arg(long)]
    from: Option<u64>,
    /// Most entries to show (at most 10,000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Args, Debug)]
pub struct DigestArgs {
    /// The partner app's user_code, as sent in `UserName`.
    #[arg(long)]
    user_name: String,
    /// The salt, a number of at least 9 digits.
    #[arg(long, allow_negative_numbers = true)]
    salt: i64,
    /// `User.UserName` (the customer's email).
    #[arg(long)]
    user_user_name: String,
    /// `User.Email`.
    #[arg(long)]
    user_email: String,
    /// `User.Key` (the customer's key).
    #[arg(long)]
    user_key: String,
    /// Read `app_key` and then `UserNewPassword` from standard input, one per line,
    /// instead of the options below.
    #[arg(long, conflicts_with_all = ["app_key", "new_password"])]
    stdin: bool,
    /// The app key (visible to other local users in `ps`: prefer --stdin).
    #[arg(long)]
    app_key: Option<String>,
    /// `UserNewPassword` (prefer --stdin).
    #[arg(long)]
    new_password: Option<String>,
}

fn read_line(what: &str) -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure(format!("cannot read the {what} from standard input: {e}")))?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return Err(Failure(format!("expected the {what} on standard input")));
    }
    Ok(line)
}

fn print_app(a: &credstore::App) {
    outln!(
        "{}\t{}\t{}\t{}\tcreated {}",
        a.user_code,
        a.shop_key.as_deref().unwrap_or("-"),
        if a.enabled { "enabled" } else { "disabled" },
        a.name,
        a.created_at
    );
}

pub fn app(g: &Global, cmd: AppCommand) -> CliResult {
    let store = g.open()?;
    match cmd {
        AppCommand::Add(a) => {
            let (app, key) = store.create_app(a.user_code, &a.name, a.shop.as_deref())?;
            print_app(&app);
            outln!("app_key: {}", key.expose_secret());
            eprintln!("(the key is shown only now; the store keeps it sealed)");
        }
        AppCommand::Import(a) => {
            let mut text = read_line("app key")?;
            let key = AppKey::new(text.clone());
            text.zeroize();
            let app = store.import_app(a.user_code, &a.name, a.shop.as_deref(), &key?)?;
            print_app(&app);
        }
        AppCommand::List => {
            for a in store.apps()? {
                print_app(&a);
            }
        }
        AppCommand::Disable { user_code } => print_app(&store.set_app_enabled(user_code, false)?),
        AppCommand::Enable { user_code } => print_app(&store.set_app_enabled(user_code, true)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_customer(c: &credstore::Customer) {
    let f = c.flags;
    outln!("box_id: {}", c.box_id);
    outln!("email: {}", c.email);
    outln!("name: {} {}", c.first_name, c.last_name);
    outln!(
        "flags: is_active={} is_enable={} is_business={} is_vip={} must_change_password={}",
        f.is_active,
        f.is_enable,
        f.is_business,
        f.is_vip,
        f.must_change_password
    );
    outln!("enrolment_date: {}", c.enrolment_date);
    outln!(
        "activation_date: {}",
        c.activation_date
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into())
    );
    outln!("credential_version: {}", c.credential_version);
    outln!("failed_logins: {}", c.failed_logins);
    if let Some(u) = c.locked_until {
        outln!("locked_until: {u}");
    }
}

pub fn customer(g: &Global, cmd: CustomerCommand) -> CliResult {
    if let CustomerCommand::Import(args) = cmd {
        return crate::import::run(g, args);
    }
    let store = g.open()?;
    match cmd {
        CustomerCommand::Add(a) => {
            let password = Password::new(read_line("password")?)?;
            let mut new = NewCustomer::new(a.email, a.first_name, a.last_name, password);
            new.flags = CustomerFlags {
                must_change_password: a.must_change_password,
                ..CustomerFlags::default()
            };
            let (c, key) = store.register(new)?;
            print_customer(&c);
            outln!("customer_key: {}", key.expose_secret());
        }
        CustomerCommand::Show { who } => {
            let c = match who.parse::<u64>() {
                Ok(id) => store.customer(id)?,
                Err(_) => store.customer_by_email(&who)?,
            };
            print_customer(&c);
            let info = store.password_hash_info(c.box_id)?;
            outln!("password_scheme: {:?} {:?}", info.scheme, info.params);
        }
        CustomerCommand::SetFlags(a) => {
            let update = FlagsUpdate {
                is_active: a.active,
                is_enable: a.enable,
                is_business: a.business,
                is_vip: a.vip,
                must_change_password: a.must_change_password,
            };
            if update == FlagsUpdate::default() {
                return Err(Failure("nothing to set: pass at least one of --active, --enable, --business, --vip, --must-change-password".into()));
            }
            print_customer(&store.set_flags(a.box_id, update)?);
        }
        CustomerCommand::Import(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reset(g: &Global, cmd: ResetCommand) -> CliResult {
    let store = g.open()?;
    match cmd {
        ResetCommand::Issue { email } => {
            let issued = store
                .request_reset(&email, ResetDetails::default())
                .map_err(|e| match e {
                    credstore::Error::NotFound(_) => {
                        Failure(format!("no customer with email {email}"))
                    }
                    credstore::Error::Throttled => Failure(format!(
                        "a reset for {email} was issued less than a minute ago; try again later"
                    )),
                    e => Failure(e.to_string()),
                })?;
            outln!("reset_id: {}", issued.reset.id);
            outln!("token: {}", issued.token.expose_secret());
            outln!("expires_at: {}", issued.reset.expires_at);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn mail(g: &Global, cmd: MailCommand) -> CliResult {
    let store = g.open()?;
    match cmd {
        MailCommand::List { limit } => {
            let s = store.mail_queue_summary()?;
            outln!(
                "queued: {} (due now: {}, retrying: {})",
                s.queued,
                s.due,
                s.retrying
            );
            for m in store.mail_queue(limit)? {
                outln!(
                    "{}	box_id={}	{}	{}	shop={}	queued {}	attempts {}	next {}	expires {}	{}",
                    m.reset_id,
                    m.box_id,
                    m.to,
                    m.lang.locale(),
                    m.shop,
                    m.created_at,
                    m.attempts,
                    m.next_attempt_at,
                    m.expires_at,
                    m.last_error.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn purge(g: &Global) -> CliResult {
    let store = g.open()?;
    let resets = store.purge_resets()?;
    let guards = store.purge_login_guards()?;
    outln!("purged {resets} expired or used resets and {guards} idle login guards");
    Ok(ExitCode::SUCCESS)
}

pub fn check(g: &Global) -> CliResult {
    let store = g.open()?;
    let r = store.check_integrity()?;
    outln!(
        "{} customers, {} apps, {} events checked",
        r.customers,
        r.apps,
        r.events
    );
    if r.is_sound() {
        outln!("sound");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &r.problems {
            outln!("problem: {p}");
        }
        Err(Failure(format!(
            "{} integrity problems found",
            r.problems.len()
        )))
    }
}

/// `compact`: rewrite the store's files in key order.
#[derive(Args, Debug)]
pub struct CompactArgs {
    /// Page compression of the compacted store: `keep` what it was made
    /// with, or turn it `on` (about a third smaller) or `off`.
    #[arg(long, value_enum, default_value_t = Pages::Keep)]
    pub pages: Pages,
}

/// [`CompactArgs::pages`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    Keep,
    On,
    Off,
}

pub fn compact(g: &Global, a: CompactArgs) -> CliResult {
    if g.on_postgres() {
        return Err(Failure(
            "compact rewrites a store on disk; PostgreSQL reclaims its own space \
             (autovacuum, or VACUUM FULL)"
                .into(),
        ));
    }
    let pages = match a.pages {
        Pages::Keep => CompactPages::Keep,
        Pages::On => CompactPages::Compressed,
        Pages::Off => CompactPages::Uncompressed,
    };
    let done = Store::compact(&g.data, pages).map_err(|e| {
        Failure(format!(
            "cannot compact the store at {}: {e}",
            g.data.display()
        ))
    })?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    outln!(
        "compacted {}: {} records, {:.1} MiB -> {:.1} MiB of data files ({}), in {:.1?}",
        g.data.display(),
        done.records,
        mib(done.bytes_before),
        mib(done.bytes_after),
        if done.compressed {
            "compressed pages"
        } else {
            "uncompressed pages"
        },
        done.took
    );
    Ok(ExitCode::SUCCESS)
}

/// `recover`: reopen the store, recovering its write-ahead log.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// When a record in the middle of the write-ahead log is damaged and
    /// valid records follow it (media corruption, which every other command
    /// refuses), accept losing them: the log ends before the damage. Says
    /// how many records were dropped.
    #[arg(long)]
    pub truncate_at_corruption: bool,
}

pub fn recover(g: &Global, a: RecoverArgs) -> CliResult {
    if g.on_postgres() {
        // The server keeps its own log; opening checks the schema and secret.
        drop(g.open()?);
        outln!("nothing to recover: a store on PostgreSQL has no write-ahead log of its own");
        return Ok(ExitCode::SUCCESS);
    }
    if !g.data.join("conf").is_file() {
        return Err(Failure(format!(
            "there is no store at {} (nothing was created)",
            g.data.display()
        )));
    }
    if !a.truncate_at_corruption {
        // Opening recovers; a damaged log is refused, saying where.
        drop(g.open()?);
        outln!("recovered; the write-ahead log has no damage");
        return Ok(ExitCode::SUCCESS);
    }
    let secret = crate::secret_file::load_or_create(&g.secret_path(), &g.data)?;
    let (store, truncated) =
        Store::recover_truncating_log(&g.data, &secret, g.config()?).map_err(|e| {
            Failure(format!(
                "cannot recover the store at {}: {e}",
                g.data.display()
            ))
        })?;
    // Closing makes the recovered state a checkpoint.
    store.flush()?;
    match truncated {
        Some(t) => outln!(
            "dropped {} records of the write-ahead log (records {} to {}, from {} offset {}): \
             the changes they held are lost",
            t.dropped_records(),
            t.first_dropped,
            t.last_dropped,
            t.file,
            t.offset
        ),
        None => outln!("dropped 0 records: the write-ahead log has no damage"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(g: &Global, a: LogArgs) -> CliResult {
    let store = g.open()?;
    let events = match a.from {
        Some(from) => store.events(from, a.limit)?,
        None => store.last_events(a.limit)?,
    };
    for e in &events {
        let who = match (e.box_id, e.user_code) {
            (Some(b), _) => format!("box_id={b}"),
            (None, Some(u)) => format!("user_code={u}"),
            _ => String::new(),
        };
        outln!("{}\t{}\t{:?}\t{:?}\t{who}", e.seq, e.at, e.kind, e.outcome);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(g: &Global) -> CliResult {
    let store = g.open()?;
    let r = store.check_integrity()?;
    let last = store.last_events(1)?.pop().map(|e| (e.seq, e.at));
    outln!("customers: {}", r.customers);
    outln!("apps: {}", r.apps);
    outln!("events: {}", r.events);
    let mail = store.mail_queue_summary()?;
    outln!("mail_queued: {}", mail.queued);
    outln!("mail_due: {}", mail.due);
    outln!("mail_retrying: {}", mail.retrying);
    if let Some(t) = mail.oldest {
        outln!("mail_oldest_queued: {t}");
    }
    if let Some((seq, at)) = last {
        outln!("last_event: #{seq} at {at}");
    }
    let on_disk = store.size_on_disk()?;
    let records = store.record_bytes()?;
    outln!("size_on_disk_bytes: {on_disk}");
    outln!("record_bytes: {records}");
    if records > 0 {
        // How much of the disk the records themselves take: `compact` brings
        // a store grown by random inserts back down (README, "Footprint").
        outln!(
            "size_on_disk_per_record_byte: {:.2}",
            on_disk as f64 / records as f64
        );
    }
    outln!("now: {}", Timestamp(time_now_ms()));
    Ok(ExitCode::SUCCESS)
}

fn time_now_ms() -> i64 {
    use credstore::Clock;
    credstore::SystemClock.now().as_millis()
}

pub fn digest(a: DigestArgs) -> CliResult {
    let (app_key, mut new_password) = if a.stdin {
        (read_line("app key")?, read_line("new password")?)
    } else {
        match (a.app_key, a.new_password) {
            (Some(k), Some(p)) => (k, p),
            _ => {
                return Err(Failure(
                    "pass --app-key and --new-password, or --stdin".into(),
                ));
            }
        }
    };
    let key = AppKey::new(app_key)?;
    let d = credstore::change_password_digest(
        &key,
        &a.user_name,
        a.salt,
        &a.user_user_name,
        &a.user_email,
        &a.user_key,
        &new_password,
    );
    new_password.zeroize();
    outln!("{d}");
    Ok(ExitCode::SUCCESS)
}
