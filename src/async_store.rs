//! [`AsyncStore`]: the store's operations for async hosts (feature `tokio`).
//!
//! Every [`Store`] method blocks: argon2 (10–25 ms a hash), `fdatasync`, and
//! with the PostgreSQL backend a client that panics when used on an async
//! worker thread. Called from an async handler they stall the runtime's
//! workers, so every other request of the host waits. `AsyncStore` runs
//! operations that hash, scan or sweep on tokio's blocking pool instead.
//! Those that may hash a password first wait, asynchronously, for one of the
//! store's hashing slots ([`crate::Config::with_hashing_limit`], shared with
//! the router), and give it back as soon as the hash is done, so that a
//! flood of logins neither parks blocking threads nor delays operations
//! that hash nothing. Point operations that hash nothing (reads of one
//! customer, app or reset, token checks, reset requests, flag changes) run
//! on the worker that polls them when the store is on disk with its
//! write-ahead log: a few microseconds of work, whose commits return once
//! logged; the call then awaits, without a thread, the one syncing task
//! that makes them durable (`durable.rs`), and returns only then, as the
//! blocking call would. Other stores (PostgreSQL, temporary) run them on
//! the blocking pool too.
//!
//! Arguments are owned (they move to another thread). The last handle drops
//! its store on the blocking pool too (a clean close makes a checkpoint).

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{
    App, AppKey, BoxId, Customer, CustomerKey, Event, FlagsUpdate, ImportedCustomer, IssuedReset,
    Login, NewCustomer, Password, Reset, ResetDetails, ResetToken, ResetUpdate, UserCode,
    ValidToken,
};
use crate::ops::{SignedPasswordChange, Store};
use crate::store::IntegrityReport;

/// The store for async hosts: the same operations as [`Store`], run off the
/// executor. A cheap `Clone`; build it once from an opened [`Store`].
///
/// ```no_run
/// # async fn host(store: credstore::Store) -> Result<(), credstore::Error> {
/// use credstore::{AsyncStore, Password};
///
/// let store = AsyncStore::new(store);
/// // In an axum handler, say: no worker thread blocks on argon2.
/// let login = store.login("johndoe@email.com", Password::new("pass12345")?).await?;
/// # let _ = login; Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Always `Some` until dropped (on the blocking pool).
    store: Option<Store>,
    /// Syncs for the point operations run on the worker (`None`: the
    /// store's commits cannot be deferred).
    syncer: Option<Arc<crate::durable::Syncer>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The syncer holds a handle of the store too.
        let store = (self.store.take(), self.syncer.take());
        // Dropping the last handle of a store closes it (a checkpoint):
        // blocking I/O, which must not happen on an async worker.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            drop(rt.spawn_blocking(move || drop(store)));
        }
    }
}

impl std::fmt::Debug for AsyncStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncStore")
            .field("store", &self.inner.store)
            .finish()
    }
}

impl AsyncStore {
    /// Wraps an opened store (open it with [`AsyncStore::open`] from async
    /// code: opening recovers the log, which blocks).
    pub fn new(store: Store) -> Self {
        let syncer = crate::durable::Syncer::for_store(&store);
        Self {
            inner: Arc::new(Inner {
                store: Some(store),
                syncer,
            }),
        }
    }

    /// [`Store::open`] on the blocking pool.
    pub async fn open(
        path: impl Into<std::path::PathBuf>,
        secret: crate::StoreSecret,
        config: crate::Config,
    ) -> Result<Self> {
        let path = path.into();
        let store = tokio::task::spawn_blocking(move || Store::open(path, &secret, config))
            .await
            .map_err(joined)??;
        Ok(Self::new(store))
    }

    /// The blocking store (for the router, or for work already on a
    /// blocking thread).
    pub fn store(&self) -> &Store {
        // Only `Drop` takes it out.
        self.inner.store.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// Runs `f` on the blocking pool; with `hashes`, once a hashing slot is
    /// free (held until the first hash is done).
    fn run<T: Send + 'static>(
        &self,
        hashes: bool,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send + 'static {
        let store = self.store().clone();
        async move {
            let permit = if hashes {
                Some(
                    store
                        .hashing_admission()
                        .acquire_owned()
                        .await
                        .map_err(|_| closed())?,
                )
            } else {
                None
            };
            tokio::task::spawn_blocking(move || match permit {
                Some(p) => crate::crypto::admit_hashing(Box::new(p), || f(&store)),
                None => f(&store),
            })
            .await
            .map_err(joined)?
        }
    }

    /// Runs a point operation that hashes nothing: on the calling worker,
    /// its commits deferred and awaited (see the module's doc), or on the
    /// blocking pool when the store cannot defer them. Returns once what
    /// it wrote is durable; if that sync failed, the store's error (it is
    /// in its failed state: whether the change survives is unknown).
    fn point<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send + 'static {
        let store = self.store().clone();
        let syncer = self.inner.syncer.clone();
        async move {
            let Some(syncer) = syncer else {
                return tokio::task::spawn_blocking(move || f(&store))
                    .await
                    .map_err(joined)?;
            };
            let (out, deferred) = store
                .deferring(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&store))));
            if let Some(d) = deferred
                && syncer.durable(d).await.is_err()
            {
                // The failed state's error (no I/O in that state), or, if
                // the syncing task failed otherwise, a sync of its own.
                tokio::task::spawn_blocking(move || store.sync_deferred())
                    .await
                    .map_err(joined)??;
            }
            out.map_err(|_| {
                Error::Internal(crate::error::InternalError::new(
                    "running an operation",
                    "the operation panicked",
                ))
            })?
        }
    }

    // ------------------------------------------------------ hashing ones

    /// [`Store::register`].
    pub async fn register(&self, new: NewCustomer) -> Result<(Customer, CustomerKey)> {
        self.run(true, move |s| s.register(new)).await
    }

    /// [`Store::login`].
    pub async fn login(&self, email: impl Into<String>, password: Password) -> Result<Login> {
        let email = email.into();
        self.run(true, move |s| s.login(&email, &password)).await
    }

    /// [`Store::update_password`].
    pub async fn update_password(
        &self,
        box_id: BoxId,
        key: CustomerKey,
        current_email: impl Into<String>,
        new_password: Password,
    ) -> Result<Customer> {
        let email = current_email.into();
        self.run(true, move |s| {
            s.update_password(box_id, &key, &email, &new_password)
        })
        .await
    }

    /// [`Store::change_password`].
    pub async fn change_password(
        &self,
        box_id: BoxId,
        new_password: Password,
        expected_version: u64,
    ) -> Result<Customer> {
        self.run(true, move |s| {
            s.change_password(box_id, &new_password, expected_version)
        })
        .await
    }

    /// [`Store::change_password_signed`].
    pub async fn change_password_signed(&self, req: SignedPasswordChange) -> Result<Customer> {
        self.run(true, move |s| s.change_password_signed(&req))
            .await
    }

    /// [`Store::reset_password`].
    pub async fn reset_password(
        &self,
        token: ResetToken,
        expected_email: Option<String>,
        new_password: Password,
    ) -> Result<Customer> {
        self.run(true, move |s| {
            s.reset_password(&token, expected_email.as_deref(), &new_password)
        })
        .await
    }

    /// [`Store::reset_password_by_id_and_update`] (with
    /// `ResetUpdate::default()`, [`Store::reset_password_by_id`]).
    pub async fn reset_password_by_id(
        &self,
        id: impl Into<String>,
        token: ResetToken,
        new_password: Password,
        update: ResetUpdate,
    ) -> Result<Reset> {
        let id = id.into();
        self.run(true, move |s| {
            s.reset_password_by_id_and_update(&id, &token, &new_password, &update)
        })
        .await
    }

    // -------------------------------------------- customers, no hashing

    /// [`Store::import_customer`].
    pub async fn import_customer(&self, imp: ImportedCustomer) -> Result<(Customer, CustomerKey)> {
        self.point(move |s| s.import_customer(imp)).await
    }

    /// [`Store::customer`].
    pub async fn customer(&self, box_id: BoxId) -> Result<Customer> {
        self.point(move |s| s.customer(box_id)).await
    }

    /// [`Store::customer_by_email`].
    pub async fn customer_by_email(&self, email: impl Into<String>) -> Result<Customer> {
        let email = email.into();
        self.point(move |s| s.customer_by_email(&email)).await
    }

    /// [`Store::authenticate_customer`].
    pub async fn authenticate_customer(&self, box_id: BoxId, key: CustomerKey) -> Result<Customer> {
        self.point(move |s| s.authenticate_customer(box_id, &key))
            .await
    }

    /// [`Store::set_flags`].
    pub async fn set_flags(&self, box_id: BoxId, update: FlagsUpdate) -> Result<Customer> {
        self.point(move |s| s.set_flags(box_id, update)).await
    }

    /// [`Store::change_email`].
    pub async fn change_email(
        &self,
        box_id: BoxId,
        key: CustomerKey,
        new_email: impl Into<String>,
    ) -> Result<(Customer, CustomerKey)> {
        let email = new_email.into();
        self.point(move |s| s.change_email(box_id, &key, &email))
            .await
    }

    // ------------------------------------------------------------- apps

    /// [`Store::create_app`].
    pub async fn create_app(
        &self,
        user_code: UserCode,
        name: impl Into<String>,
        shop_key: Option<String>,
    ) -> Result<(App, AppKey)> {
        let name = name.into();
        self.point(move |s| s.create_app(user_code, &name, shop_key.as_deref()))
            .await
    }

    /// [`Store::authenticate_app`].
    pub async fn authenticate_app(&self, user_code: UserCode, key: AppKey) -> Result<App> {
        self.point(move |s| s.authenticate_app(user_code, &key))
            .await
    }

    /// [`Store::authenticate_app_key`].
    pub async fn authenticate_app_key(&self, key: AppKey) -> Result<App> {
        self.run(false, move |s| s.authenticate_app_key(&key)).await
    }

    /// [`Store::app`].
    pub async fn app(&self, user_code: UserCode) -> Result<App> {
        self.point(move |s| s.app(user_code)).await
    }

    /// [`Store::apps`].
    pub async fn apps(&self) -> Result<Vec<App>> {
        self.run(false, Store::apps).await
    }

    /// [`Store::set_app_enabled`].
    pub async fn set_app_enabled(&self, user_code: UserCode, enabled: bool) -> Result<App> {
        self.point(move |s| s.set_app_enabled(user_code, enabled))
            .await
    }

    // ----------------------------------------------------------- resets

    /// [`Store::request_reset`].
    pub async fn request_reset(
        &self,
        email: impl Into<String>,
        details: ResetDetails,
    ) -> Result<IssuedReset> {
        let email = email.into();
        self.point(move |s| s.request_reset(&email, details)).await
    }

    /// [`Store::request_reset_by_mail`]: the reset and its mail, queued
    /// together for a [`crate::mail::Courier`].
    pub async fn request_reset_by_mail(
        &self,
        email: impl Into<String>,
        details: ResetDetails,
        mail: crate::MailRequest,
    ) -> Result<Reset> {
        let email = email.into();
        self.point(move |s| s.request_reset_by_mail(&email, details, &mail))
            .await
    }

    /// [`Store::check_reset_token`].
    pub async fn check_reset_token(&self, token: ResetToken) -> Result<ValidToken> {
        self.point(move |s| s.check_reset_token(&token)).await
    }

    /// [`Store::reset`].
    pub async fn reset(&self, id: impl Into<String>) -> Result<Reset> {
        let id = id.into();
        self.point(move |s| s.reset(&id)).await
    }

    /// [`Store::update_reset`].
    pub async fn update_reset(&self, id: impl Into<String>, update: ResetUpdate) -> Result<Reset> {
        let id = id.into();
        self.point(move |s| s.update_reset(&id, update)).await
    }

    /// [`Store::revoke_reset`].
    pub async fn revoke_reset(&self, id: impl Into<String>) -> Result<()> {
        let id = id.into();
        self.point(move |s| s.revoke_reset(&id)).await
    }

    /// [`Store::purge_resets`].
    pub async fn purge_resets(&self) -> Result<usize> {
        self.run(false, Store::purge_resets).await
    }

    /// [`Store::purge_login_guards`].
    pub async fn purge_login_guards(&self) -> Result<usize> {
        self.run(false, Store::purge_login_guards).await
    }

    // ---------------------------------------------------- log and upkeep

    /// [`Store::events`].
    pub async fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>> {
        self.run(false, move |s| s.events(from, limit)).await
    }

    /// [`Store::trim_events`].
    pub async fn trim_events(&self, before: u64) -> Result<usize> {
        self.run(false, move |s| s.trim_events(before)).await
    }

    /// [`Store::check_integrity`].
    pub async fn check_integrity(&self) -> Result<IntegrityReport> {
        self.run(false, Store::check_integrity).await
    }

    /// [`Store::flush`].
    pub async fn flush(&self) -> Result<()> {
        self.run(false, Store::flush).await
    }
}

fn joined(_: tokio::task::JoinError) -> Error {
    Error::Internal(crate::error::InternalError::new(
        "running an operation on the blocking pool",
        "the operation panicked or the runtime is shutting down",
    ))
}

fn closed() -> Error {
    Error::Internal(crate::error::InternalError::new(
        "waiting for a hashing slot",
        "the hashing admission was closed",
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::AsyncStore;
    use crate::model::{Lang, MailRequest, ResetDetails};
    use crate::store::faults::{Faults, Op};
    use crate::{Error, NewCustomer, Password, Store};

    /// The façade over a store whose log lives in memory with fault
    /// injection, `customers` customers in it, and a 2-worker runtime.
    fn faulty(
        customers: u32,
    ) -> (
        AsyncStore,
        Faults,
        tokio::runtime::Runtime,
        tempfile::TempDir,
    ) {
        let (store, faults, tmp) = Store::faulty_for_tests();
        for n in 0..customers {
            let password = Password::new("async-password-1").unwrap();
            store
                .register(NewCustomer::new(email(n), "A", "S", password))
                .unwrap();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        (AsyncStore::new(store), faults, rt, tmp)
    }

    fn email(n: u32) -> String {
        format!("async{n}@example.com")
    }

    fn mail() -> MailRequest {
        MailRequest {
            lang: Lang::En,
            shop: "s1".into(),
        }
    }

    /// A point write returns once durable, as the blocking call does: with
    /// syncs that take 200 ms, the reset's mail is in the queue as another
    /// thread reads it (durable changes only) the moment the call returns.
    #[test]
    fn a_point_write_returns_once_its_change_is_durable() {
        let (facade, faults, rt, _tmp) = faulty(1);
        faults.slow_syncs(Duration::from_millis(200));
        let reset = rt
            .block_on(facade.request_reset_by_mail(email(0), ResetDetails::default(), mail()))
            .unwrap();
        assert_eq!(facade.store().mail_queue(10).unwrap().len(), 1);
        let found = rt.block_on(facade.reset(reset.id.clone())).unwrap();
        assert_eq!(found.id, reset.id);
    }

    /// When the sync of a point write fails, the call fails with the
    /// store's own error (it must be reopened; whether the change survives
    /// is unknown), never `Ok`; reads go on.
    #[test]
    fn a_point_write_whose_sync_fails_returns_the_stores_error() {
        let (facade, faults, rt, _tmp) = faulty(1);
        faults.fail_next(Op::WalSync);
        let err = rt
            .block_on(facade.request_reset(email(0), ResetDetails::default()))
            .unwrap_err();
        assert_eq!(faults.fired().map(|f| f.op), Some(Op::WalSync));
        assert!(
            matches!(&err, Error::Storage(s) if s.must_reopen()),
            "{err}"
        );
        let customer = rt.block_on(facade.customer_by_email(email(0))).unwrap();
        assert_eq!(customer.email.as_str(), email(0));
    }

    /// 64 point writes at once from async tasks: each returns `Ok` once
    /// durable, they share syncs (5 ms each; one per write would be 64),
    /// and the throttle holds for 64 requests at once for one customer.
    #[test]
    fn sixty_four_point_writes_at_once_share_syncs_and_keep_the_throttle() {
        let (facade, faults, rt, _tmp) = faulty(65);
        faults.slow_syncs(Duration::from_millis(5));
        let syncs = facade.store().log_stats().syncs;
        let all = (0..64).map(|n| {
            let facade = facade.clone();
            tokio::spawn(async move {
                facade
                    .request_reset_by_mail(email(n), ResetDetails::default(), mail())
                    .await
            })
        });
        let done: Vec<_> = rt.block_on(async {
            let mut out = Vec::new();
            for task in all.collect::<Vec<_>>() {
                out.push(task.await.unwrap());
            }
            out
        });
        assert!(done.iter().all(Result::is_ok));
        assert_eq!(facade.store().mail_queue(100).unwrap().len(), 64);
        let used = facade.store().log_stats().syncs - syncs;
        assert!(used <= 32, "{used} syncs for 64 writes");

        let again = (0..64).map(|_| {
            let facade = facade.clone();
            tokio::spawn(async move {
                facade
                    .request_reset(email(64), ResetDetails::default())
                    .await
                    .map(|issued| issued.reset.id)
            })
        });
        let issued: Vec<_> = rt.block_on(async {
            let mut out = Vec::new();
            for task in again.collect::<Vec<_>>() {
                out.push(task.await.unwrap());
            }
            out
        });
        // One reset issued; the other 63 throttled.
        assert_eq!(issued.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(
            issued
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(Error::Throttled))),
            "{issued:?}"
        );
    }
}
