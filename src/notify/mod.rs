//! The early-access e-mail list: the one piece of personal data Ephemera keeps, and only when
//! the operator turns it on (`notify_db_path`). docs/notify.md has the design.
//!
//! - `address`: what an address is, and its one stored form.
//! - `keys`: the master key file and the keys derived from it.
//! - `store`: the SQLite file: sealed rows, blind index, export, count, key rotation.
//! - `cli`: `ephemera notify export|count|rotate-key`, the only code that decrypts.
//!
//! Its HTTP endpoints are in `notify_routes.rs`, beside the other handlers.
//!
//! The server writes through one thread of its own (`Notifier`): database work never runs on
//! the actors' or the HTTP workers' threads, requests wait in a bounded queue, and every
//! sign-up that arrives while a commit is being synced joins the next commit, so a burst costs
//! one sync per batch instead of one per address.

pub mod address;
pub mod cli;
pub mod keys;
pub mod store;

use std::path::Path;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use address::{Address, AddressError};
use store::{Change, Store, StoreError};

/// Changes that may wait for the writer; past this, requests get 503.
const QUEUE_CAPACITY: usize = 1024;
/// Most changes in one commit.
const MAX_BATCH: usize = 256;
/// How long the WAL may hold recent writes (in the order they came) before the writer, when
/// idle, folds it into the database and empties it.
const WAL_TRUNCATE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The server's handle on the list.
pub struct Notifier {
    topics: Vec<String>,
    queue: Sender<Job>,
    body_deadline: std::time::Duration,
}

struct Job {
    change: Change,
    done: tokio::sync::oneshot::Sender<bool>,
}

/// Why a change was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotWritten {
    /// The queue is full.
    Busy,
    /// The write failed (logged, without the address).
    Failed,
}

impl Notifier {
    /// Opens (creating) the store and starts its writer thread. `None` when `db_path` is empty.
    pub fn start(
        db_path: &str,
        key_path: &str,
        topics: Vec<String>,
        body_deadline: std::time::Duration,
    ) -> Result<Option<Notifier>, StoreError> {
        if db_path.is_empty() {
            return Ok(None);
        }
        let store = Store::open_or_create(Path::new(db_path), Path::new(key_path))?;
        let (queue, jobs) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("notify-writer".into())
            .spawn(move || write_until_closed(store, jobs))
            .map_err(|error| StoreError::File {
                path: db_path.to_owned(),
                error,
            })?;
        Ok(Some(Notifier {
            topics,
            queue,
            body_deadline,
        }))
    }

    /// How long a client may take to send a request's body.
    pub fn body_deadline(&self) -> std::time::Duration {
        self.body_deadline
    }

    /// The topics people may sign up for; the first is the page's default.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Stores `address` for `topic`, answering once the commit is on disk.
    pub async fn sign_up(&self, topic: String, address: Address) -> Result<(), NotWritten> {
        self.write(Change::SignUp { topic, address }).await
    }

    /// Removes `address` from every topic, answering once the commit is on disk.
    pub async fn delete(&self, address: Address) -> Result<(), NotWritten> {
        self.write(Change::Delete { address }).await
    }

    async fn write(&self, change: Change) -> Result<(), NotWritten> {
        let (done, written) = tokio::sync::oneshot::channel();
        match self.queue.try_send(Job { change, done }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(NotWritten::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(NotWritten::Failed),
        }
        match written.await {
            Ok(true) => Ok(()),
            _ => Err(NotWritten::Failed),
        }
    }
}

/// The writer thread: takes whatever is queued (up to `MAX_BATCH`), commits it in one
/// transaction, then answers each. Ends when the server drops its `Notifier`.
fn write_until_closed(mut store: Store, jobs: Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut wal_dirty = false;
    loop {
        let first = match jobs.recv_timeout(WAL_TRUNCATE_EVERY) {
            Ok(job) => job,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if wal_dirty {
                    wal_dirty = !store.truncate_wal();
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        wal_dirty = true;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let changes: Vec<&Change> = batch.iter().map(|job| &job.change).collect();
        let written = match store.apply(&changes) {
            Ok(()) => true,
            Err(error) => {
                // The error names the file and SQLite's reason, never an address.
                tracing::error!(%error, "the e-mail list could not be written");
                false
            }
        };
        for job in batch.drain(..) {
            let _ = job.done.send(written);
        }
    }
}
