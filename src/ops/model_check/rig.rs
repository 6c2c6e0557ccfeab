//! The store under test and what a crash keeps of it, on either backend.

use std::path::PathBuf;
use std::sync::Arc;

use super::{FIRST_BOX_ID, LOCK_FOR, MAX_FAILURES, PASSWORDS, TTL};
use crate::model::{ManualClock, StoreSecret, Timestamp};
use crate::ops::{Config, LockoutPolicy, Store, engine_options};
use crate::store::faults::{self, Crash, FaultyData, MemDir, MemoryState};

/// The backend a model check runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    /// sled behind the write-ahead log, through the fault layer: a crash
    /// keeps only what was synced.
    Sled,
    /// The memory backend, every transaction's body run twice: a crash
    /// keeps everything committed (nothing is ever unsynced). The fuzz
    /// target runs on sled only.
    #[cfg_attr(not(test), allow(dead_code))]
    Memory,
}

/// Where the store's bytes live between a crash and the reopen.
enum Media {
    Sled {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        generation: usize,
        wal: MemDir,
        data: Arc<FaultyData>,
    },
    Memory(MemoryState),
}

pub(super) struct Rig {
    pub clock: ManualClock,
    secret: StoreSecret,
    media: Media,
    store: Option<Store>,
    pub bcrypt: Vec<String>,
}

fn config(clock: &ManualClock) -> Config {
    Config::for_tests()
        .with_clock(Arc::new(clock.clone()))
        .with_first_box_id(FIRST_BOX_ID)
        .with_lockout(LockoutPolicy {
            max_failures: MAX_FAILURES,
            lock_for: LOCK_FOR,
        })
        .with_token_ttl(TTL)
}

impl Rig {
    pub fn new(on: On) -> Self {
        let media = match on {
            On::Sled => {
                let tmp = tempfile::tempdir().unwrap();
                let wal = MemDir::new();
                let data = Arc::new(FaultyData::new(&wal));
                Media::Sled {
                    root: tmp.path().to_path_buf(),
                    _tmp: tmp,
                    generation: 0,
                    wal,
                    data,
                }
            }
            On::Memory => Media::Memory(MemoryState::new()),
        };
        let mut rig = Rig {
            clock: ManualClock::new(Timestamp(1_800_000_000_000)),
            secret: StoreSecret::from_bytes([0x3c; 32]),
            media,
            store: None,
            bcrypt: PASSWORDS
                .iter()
                .map(|p| bcrypt::hash(p, 4).unwrap())
                .collect(),
        };
        rig.open();
        rig
    }

    fn open(&mut self) {
        let config = config(&self.clock);
        let keys = crate::crypto::Keys::derive(&self.secret);
        let opts = engine_options(&keys, &config);
        let engine = match &self.media {
            Media::Sled {
                root,
                generation,
                wal,
                data,
                ..
            } => faults::open(&root.join(format!("data{generation}")), opts, wal, data),
            Media::Memory(state) => faults::open_memory(state, opts),
        };
        self.store = Some(Store::from_parts(engine.unwrap(), keys, config));
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// A crash: on sled, the log keeps only what was synced, sled only what
    /// its last good checkpoint synced; in memory, what was committed. Then
    /// the store is opened again.
    pub fn crash_and_reopen(&mut self) {
        if let Media::Sled {
            root,
            generation,
            wal,
            data,
            ..
        } = &mut self.media
        {
            let kept = wal.crash(Crash::DropUnsynced);
            let sled = data.durable();
            // The old process's store goes (its close writes to the old
            // files, which the crash has already left behind).
            self.store = None;
            *generation += 1;
            FaultyData::restore(&sled, &root.join(format!("data{generation}")));
            *wal = kept;
            *data = Arc::new(FaultyData::new(wal));
        } else {
            self.store = None;
        }
        self.open();
    }
}
