//! The store's test hook: [`FailPoint`], asked at named points inside
//! transactions (and by operations outside them).

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, StorageError};

/// A test hook: see [`crate::Config::with_fail_point`].
#[doc(hidden)]
#[derive(Clone)]
pub struct FailPoint(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl FailPoint {
    /// Fires wherever `f(name)` is true.
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn fires(&self, name: &str) -> bool {
        (self.0)(name)
    }

    /// The storage error an injected failure at `name` is, while `doing`
    /// (`"running a transaction"`, `"running an operation"`), when the
    /// hook fires there.
    pub(crate) fn check(
        fp: Option<&FailPoint>,
        doing: &'static str,
        name: &'static str,
    ) -> Result<(), Error> {
        match fp {
            Some(fp) if fp.fires(name) => Err(Error::Storage(StorageError::new(
                doing,
                format!("injected failure at {name}"),
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for FailPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FailPoint")
    }
}
