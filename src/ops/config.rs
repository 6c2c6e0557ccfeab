use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::{Argon2Params, PasswordPolicy};
use crate::model::{Clock, SystemClock};
use crate::store::{Durability, FailPoint};

/// Lock-out after repeated failed logins.
///
/// The bound holds under any concurrency: each login reserves one attempt
/// of the budget before its password is verified, so at most
/// `max_failures` wrong passwords are ever verified per lock window. Emails
/// that no customer has count and lock the same way. Failures are forgotten
/// after [`crate::FAILURE_MEMORY`] without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock the account (default 5; 0 counts as 1).
    pub max_failures: u32,
    /// How long the lock lasts (default 15 minutes).
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

/// How a store behaves. Build with [`Config::default`] and the `with_*` methods.
#[derive(Clone)]
pub struct Config {
    pub(crate) durability: Durability,
    pub(crate) argon2: Argon2Params,
    pub(crate) policy: PasswordPolicy,
    pub(crate) lockout: LockoutPolicy,
    pub(crate) token_ttl: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) first_box_id: u64,
    pub(crate) cache_capacity: u64,
    pub(crate) defer_replay_bytes: u64,
    pub(crate) fail_point: Option<FailPoint>,
    pub(crate) hashing_limit: usize,
    pub(crate) commit_delay: Duration,
    pub(crate) compress_pages: bool,
    pub(crate) postgres_ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("durability", &self.durability)
            .field("argon2", &self.argon2)
            .field("policy", &self.policy)
            .field("lockout", &self.lockout)
            .field("token_ttl", &self.token_ttl)
            .field("clock", &self.clock)
            .field("first_box_id", &self.first_box_id)
            .field("cache_capacity", &self.cache_capacity)
            .field("defer_replay_bytes", &self.defer_replay_bytes)
            .field("hashing_limit", &self.hashing_limit)
            .field("commit_delay", &self.commit_delay)
            .field("compress_pages", &self.compress_pages)
            .field("postgres_ca_file", &self.postgres_ca_file)
            .finish_non_exhaustive()
    }
}

/// The default commit delay ([`Config::with_commit_delay`]): with 8
/// password updates at once on 2 cores, hashes end ~8 ms apart, and a
/// 25 ms wait gathers ~4 of them into one sync.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(25);

impl Default for Config {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            argon2: Argon2Params::default(),
            policy: PasswordPolicy::default(),
            lockout: LockoutPolicy::default(),
            token_ttl: Duration::from_secs(60 * 60),
            clock: Arc::new(SystemClock),
            first_box_id: 1,
            cache_capacity: 64 * 1024 * 1024,
            defer_replay_bytes: 1 << 20,
            fail_point: None,
            hashing_limit: std::thread::available_parallelism().map_or(2, |n| n.get()),
            commit_delay: DEFAULT_COMMIT_DELAY,
            compress_pages: false,
            postgres_ca_file: None,
        }
    }
}

impl Config {
    /// Cheap argon2 parameters and otherwise defaults: for tests only.
    pub fn for_tests() -> Self {
        Self::default().with_argon2(Argon2Params::insecure_for_tests())
    }

    /// How commits reach disk.
    pub fn with_durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Argon2 parameters for new hashes; older hashes are rehashed at login.
    pub fn with_argon2(mut self, p: Argon2Params) -> Self {
        self.argon2 = p;
        self
    }
    /// The password policy applied when a password is set.
    pub fn with_password_policy(mut self, p: PasswordPolicy) -> Self {
        self.policy = p;
        self
    }
    /// Lock-out after failed logins.
    pub fn with_lockout(mut self, l: LockoutPolicy) -> Self {
        self.lockout = l;
        self
    }
    /// Lifetime of reset tokens (default 60 minutes).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }
    /// The clock (inject a [`crate::ManualClock`] in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// The first box_id the store assigns (default 1).
    pub fn with_first_box_id(mut self, id: u64) -> Self {
        self.first_box_id = id;
        self
    }
    /// sled's page cache size in bytes (default 64 MiB).
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }
    /// At open, when at least this many bytes of the write-ahead log must
    /// be replayed (default 1 MiB), the store does not apply them to sled
    /// before it opens: they are read into memory (readable at once), the
    /// log goes on after them, and they reach sled in small batches with
    /// later commits, or all at once at the next [`crate::Store::flush`] or
    /// clean close. Reopening after a crash then costs a read of the log
    /// instead of ~0.1–0.2 s of sled updates per MiB; the price is memory
    /// for those changes until they are applied. `u64::MAX` always
    /// replays first.
    pub fn with_deferred_replay_from(mut self, bytes: u64) -> Self {
        self.defer_replay_bytes = bytes;
        self
    }
    /// At most this many password hashes (argon2 or bcrypt) run at once,
    /// each on one of as many threads of the store's own, started with the
    /// first hashes and ended with the store; more wait, queued, and the
    /// caller's thread sleeps until its hash is done (default: the number
    /// of cores). Each hashing thread keeps one hash's argon2 memory for
    /// reuse, so hashing memory is bounded by `limit` × the argon2 memory
    /// cost (19 MiB by default) however many logins arrive.
    pub fn with_hashing_limit(mut self, limit: usize) -> Self {
        self.hashing_limit = limit.max(1);
        self
    }
    /// Group commit's delay for password changes (default
    /// [`DEFAULT_COMMIT_DELAY`], 25 ms; zero: none): before it syncs the
    /// write-ahead log, the commit of an operation that hashed a new
    /// password waits up to `delay` for the commits of other such
    /// operations whose hash is being computed, so that one sync covers
    /// several — fewer syncs per password change under load, for up to
    /// `delay` more latency on a request that spent tens of milliseconds
    /// hashing already. Only password changes wait, and only while more of
    /// them are underway than hashes may run at once
    /// ([`Config::with_hashing_limit`]: some wait for a slot, so the CPU
    /// keeps hashing during the wait): a lone change never waits, and a
    /// commit that hashes nothing (a reset request, a login) is never
    /// held: while one is underway the sync starts at once. PostgreSQL's `commit_delay`, in
    /// spirit. On-disk stores only (the PostgreSQL backend syncs in
    /// PostgreSQL).
    pub fn with_commit_delay(mut self, delay: Duration) -> Self {
        self.commit_delay = delay;
        self
    }
    /// Whether a new on-disk store compresses its pages with zstd (default
    /// no). 1M customers take 2.2–2.3x their raw bytes in sled instead of
    /// 3.4x (1.5x instead of 2.5x once compacted: [`crate::Store::compact`]),
    /// but every page sled writes is compressed and every page read
    /// from disk decompressed: over HTTP, SkyERP resets ran ~45% slower on
    /// 2 cores, point gets that miss the cache ~2.5x slower, and the first
    /// open after a long run, which reads back what sled wrote since the
    /// last open, took 35 s after importing 1M customers (README,
    /// "Footprint"). A store keeps what it was created with, and this
    /// setting is ignored for an existing store: [`crate::Store::compact`]
    /// with [`crate::CompactPages`] changes it.
    pub fn with_page_compression(mut self, compress: bool) -> Self {
        self.compress_pages = compress;
        self
    }
    /// The CA certificates (a PEM file) that a PostgreSQL server's
    /// certificate must chain to, instead of Mozilla's roots, when the URL
    /// asks for TLS (`sslmode=require`): a private CA, or a provider's own
    /// (RDS, Azure and Cloud SQL publish theirs). The certificate's chain and
    /// its host name are always checked (libpq's `verify-full`). Read when
    /// the store opens; ignored by stores on disk.
    pub fn with_postgres_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.postgres_ca_file = Some(path.into());
        self
    }
    /// Test hook: a predicate asked at named points inside transactions; when
    /// it returns `true` the transaction aborts there with a storage error.
    #[doc(hidden)]
    pub fn with_fail_point(mut self, fp: FailPoint) -> Self {
        self.fail_point = Some(fp);
        self
    }

    /// The argon2 parameters in use.
    pub fn argon2(&self) -> Argon2Params {
        self.argon2
    }
    /// The password policy in use.
    pub fn password_policy(&self) -> PasswordPolicy {
        self.policy
    }
    /// The reset token lifetime.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }
}
