//! The file provider: a policy document on disk, watched, swapped in whole.
//!
//! Why a swap and not a lock: a call reads its policy on its own task, and a
//! reload must never make it wait. The validated document lives behind an
//! `ArcSwap`, and each thread keeps the snapshot it last used, checked
//! against a generation counter (one atomic load): a lookup takes no lock
//! and writes no shared memory, and a
//! reload builds a new snapshot aside and stores it in one atomic step, so a
//! call sees the old document or the new one, never a mix.
//!
//! Why keep the last good document: a half-saved or mistyped file is an
//! ordinary event in an operator's day, not a reason to change what calls
//! run under. A rejected edit changes nothing; it is counted
//! ([`ReloadStats::rejected`]), kept as [`ReloadStats::last_error`] and
//! reported to the `on_reload` callback with its file, key, field, line and
//! column.
//!
//! The file is watched through the platform's notification API (`notify`:
//! inotify, FSEvents, ...); where none works (some network and container
//! file systems), or when asked, it is polled. The directory is watched, not
//! the file, so an editor's "write a temporary file, rename it over" is seen
//! like an in-place write.

// A `DocumentError` is big, and returned only when a document is rejected.
#![allow(clippy::result_large_err)]

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use recourse_core::policy::ChangedFields;
use recourse_core::PolicyKey;

use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};
use crate::providers::document::{DocumentError, KnownNames, PolicyDocument};
use crate::providers::snapshot::Snapshot;
use crate::static_provider::StaticProvider;

/// How the file is watched.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Watch {
    /// The platform's notifications, falling back to polling every
    /// `poll_interval` where they do not work (the default).
    Notify,
    /// Polling every `poll_interval` (compares contents).
    Poll,
    /// Not watched: only [`FileProvider::reload`] reads the file again.
    Off,
}

/// What a reload did, as told to the `on_reload` callback.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ReloadEvent {
    /// A new document took effect.
    Applied {
        /// Documents applied so far, the first load included.
        generation: u64,
        /// Keys with their own policy.
        keys: usize,
        /// Keys whose policy normalization clamped, with the fields.
        clamped: Vec<(String, ChangedFields)>,
    },
    /// The new document was rejected; the last good one keeps serving.
    Rejected {
        /// Why, naming file, key, field, line and column.
        error: DocumentError,
        /// Rejected documents so far.
        rejected: u64,
    },
}

/// Counters of a [`FileProvider`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadStats {
    /// Documents applied, the first load included.
    pub generation: u64,
    /// Documents rejected (each left the last good one serving).
    pub rejected: u64,
    /// The latest rejection, cleared when a document is applied.
    pub last_error: Option<DocumentError>,
    /// Whether the file is polled (asked for, or notifications failed).
    pub polling: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Callback = Box<dyn Fn(&ReloadEvent) + Send + Sync>;

struct Shared {
    path: PathBuf,
    current: Snapshot,
    /// The last applied text, and the last rejected one (not reported
    /// twice: one save may raise several events).
    last_text: Mutex<(Option<String>, Option<String>)>,
    generation: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<DocumentError>>,
    on_reload: Option<Callback>,
    known: KnownNames,
}

impl Shared {
    /// Reads the file; applies it when it changed and is valid. A text
    /// rejected before is not counted or reported again.
    fn reload(&self) -> Result<bool, DocumentError> {
        let mut last_text = self
            .last_text
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let read = std::fs::read_to_string(&self.path).map_err(|e| {
            Some(
                DocumentError::from_message(format!("cannot read the file: {e}"))
                    .in_file(&self.path),
            )
        });
        let result = read.and_then(|text| {
            if last_text.0.as_deref() == Some(text.as_str()) {
                return Ok(None);
            }
            if last_text.1.as_deref() == Some(text.as_str()) {
                // Already rejected and reported.
                return Err(None);
            }
            if text.trim().is_empty() {
                // Most likely a write in progress (truncated, not yet
                // written); an intentionally empty document has a comment
                // or `{}`.
                return Err(Some(
                    DocumentError::from_message(
                        "empty file (a write in progress?); an empty document needs at least a comment or `{}`",
                    )
                    .in_file(&self.path),
                ));
            }
            let format = crate::providers::document::Format::of_path(&self.path);
            match PolicyDocument::parse(&text, format).and_then(|d| d.validate_with(&self.known)) {
                Ok(valid) => Ok(Some((text, valid))),
                Err(e) => {
                    last_text.1 = Some(text);
                    Err(Some(e.in_file(&self.path)))
                }
            }
        });
        match result {
            Ok(None) => Ok(false),
            Ok(Some((text, valid))) => {
                let keys = valid.provider.len();
                self.current.store(valid.provider);
                *last_text = (Some(text), None);
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.tell(&ReloadEvent::Applied {
                    generation,
                    keys,
                    clamped: valid.clamped,
                });
                Ok(true)
            }
            Err(None) => Err(lock(&self.last_error).clone().unwrap_or_else(|| {
                DocumentError::from_message("rejected before").in_file(&self.path)
            })),
            Err(Some(error)) => {
                let rejected = self.rejected.fetch_add(1, Ordering::AcqRel) + 1;
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.clone());
                self.tell(&ReloadEvent::Rejected {
                    error: error.clone(),
                    rejected,
                });
                Err(error)
            }
        }
    }

    fn tell(&self, event: &ReloadEvent) {
        if let Some(f) = &self.on_reload {
            // A panicking callback must not stop the watcher.
            let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| f(event)));
        }
    }
}

/// Policies from a document file, watched and swapped in atomically.
///
/// A key's own policy answers with source `file`; the document's default
/// with source `default`.
///
/// ```no_run
/// use recourse::providers::FileProvider;
/// let provider = FileProvider::open("policies.toml")?;
/// let executor = recourse::Executor::builder().provider(provider).build();
/// # Ok::<(), recourse::providers::DocumentError>(())
/// ```
pub struct FileProvider {
    shared: Arc<Shared>,
    polling: bool,
    /// Dropping the watcher closes its channel, which ends the reload thread.
    _watcher: Option<Box<dyn Watcher + Send + Sync>>,
}

impl core::fmt::Debug for FileProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileProvider")
            .field("path", &self.shared.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl FileProvider {
    /// Loads `path` and watches it with the defaults (notifications,
    /// polling every second where they fail).
    ///
    /// # Errors
    ///
    /// The file cannot be read or its document is invalid: a provider never
    /// starts without a good document.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DocumentError> {
        Self::builder(path).build()
    }

    /// A builder for `path`.
    pub fn builder(path: impl AsRef<Path>) -> FileProviderBuilder {
        FileProviderBuilder {
            path: path.as_ref().to_path_buf(),
            watch: Watch::Notify,
            poll_interval: Duration::from_secs(1),
            debounce: Duration::from_millis(20),
            on_reload: None,
            known: KnownNames::default(),
        }
    }

    /// Reads the file again now; `Ok(true)` when a changed document was
    /// applied, `Ok(false)` when it had not changed.
    ///
    /// # Errors
    ///
    /// The new document is invalid (the last good one keeps serving).
    pub fn reload(&self) -> Result<bool, DocumentError> {
        self.shared.reload()
    }

    /// The reload counters.
    pub fn stats(&self) -> ReloadStats {
        ReloadStats {
            generation: self.shared.generation.load(Ordering::Acquire),
            rejected: self.shared.rejected.load(Ordering::Acquire),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            polling: self.polling,
        }
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl PolicyProvider for FileProvider {
    /// The current document's policies.
    fn for_each_policy(&self, f: &mut dyn FnMut(&str, &recourse_core::Policy)) {
        self.shared
            .current
            .with(|snapshot| snapshot.for_each_policy(f));
    }

    /// The current document's policy for `key` (source `file`), else its
    /// default (source `default`), else `NotFound`. No lock, no shared write, no
    /// allocation.
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        let mut found = self.shared.current.with(|snapshot| snapshot.policy(key))?;
        if found.source == PolicySource::Static {
            found.source = PolicySource::File;
        }
        Ok(found)
    }

    /// The document's generation: bumped after each swap.
    fn generation(&self) -> Option<u64> {
        Some(self.shared.current.generation())
    }
}

/// Builds a [`FileProvider`].
#[must_use = "call .build() to load the file"]
pub struct FileProviderBuilder {
    path: PathBuf,
    watch: Watch,
    poll_interval: Duration,
    debounce: Duration,
    on_reload: Option<Callback>,
    known: KnownNames,
}

impl core::fmt::Debug for FileProviderBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FileProviderBuilder")
            .field("path", &self.path)
            .field("watch", &self.watch)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl FileProviderBuilder {
    /// How the file is watched (default [`Watch::Notify`]).
    pub fn watch(mut self, watch: Watch) -> Self {
        self.watch = watch;
        self
    }

    /// How often the file is polled when it is (default 1 s; at least
    /// 10 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    /// How long to wait after a change for more before reading (default
    /// 20 ms), so one save is one reload.
    pub fn debounce(mut self, wait: Duration) -> Self {
        self.debounce = wait.min(Duration::from_secs(5));
        self
    }

    /// Called after each reload that applied or rejected a document (and for
    /// the first load), on the watcher's thread.
    pub fn on_reload(mut self, f: impl Fn(&ReloadEvent) + Send + Sync + 'static) -> Self {
        self.on_reload = Some(Box::new(f));
        self
    }

    /// The budget, classifier and trigger names documents may use; a
    /// document naming another is rejected (default: not checked).
    pub fn known_names(mut self, known: KnownNames) -> Self {
        self.known = known;
        self
    }

    /// Loads the file and starts watching it.
    ///
    /// # Errors
    ///
    /// As for [`FileProvider::open`].
    pub fn build(self) -> Result<FileProvider, DocumentError> {
        let shared = Arc::new(Shared {
            path: self.path,
            current: Snapshot::new(StaticProvider::empty()),
            last_text: Mutex::new((None, None)),
            generation: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_error: Mutex::new(None),
            on_reload: self.on_reload,
            known: self.known,
        });
        shared.reload()?;
        let (watcher, polling) = match self.watch {
            Watch::Off => (None, false),
            mode => {
                let (tx, rx) = mpsc::channel();
                let (watcher, polling) = start_watcher(&shared.path, mode, self.poll_interval, tx)
                    .map_err(|e| {
                        DocumentError::from_message(format!("cannot watch the file: {e}"))
                            .in_file(&shared.path)
                    })?;
                let thread_shared = Arc::clone(&shared);
                let debounce = self.debounce;
                std::thread::Builder::new()
                    .name("recourse-policy-file".into())
                    .spawn(move || watch_loop(&thread_shared, &rx, debounce))
                    .map_err(|e| {
                        DocumentError::from_message(format!("cannot start the watcher: {e}"))
                            .in_file(&shared.path)
                    })?;
                (Some(watcher), polling)
            }
        };
        Ok(FileProvider {
            shared,
            polling,
            _watcher: watcher,
        })
    }
}

type Events = mpsc::Sender<notify::Result<notify::Event>>;

/// The platform watcher, or a poll watcher when asked or when it fails.
fn start_watcher(
    path: &Path,
    mode: Watch,
    poll_interval: Duration,
    tx: Events,
) -> notify::Result<(Box<dyn Watcher + Send + Sync>, bool)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if mode == Watch::Notify {
        let native =
            RecommendedWatcher::new(tx.clone(), notify::Config::default()).and_then(|mut w| {
                w.watch(&dir, RecursiveMode::NonRecursive)?;
                Ok(w)
            });
        if let Ok(w) = native {
            return Ok((Box::new(w), false));
        }
    }
    let config = notify::Config::default()
        .with_poll_interval(poll_interval)
        .with_compare_contents(true);
    let mut w = PollWatcher::new(tx, config)?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok((Box::new(w), true))
}

/// Reloads after each burst of events about the file; ends when the watcher
/// (the sender) is dropped with the provider.
fn watch_loop(
    shared: &Shared,
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    debounce: Duration,
) {
    let name = shared.path.file_name().map(ToOwned::to_owned);
    let about_file = |event: &notify::Result<notify::Event>| match event {
        Ok(e) => e.paths.is_empty() || e.paths.iter().any(|p| p.file_name() == name.as_deref()),
        Err(_) => true,
    };
    while let Ok(event) = rx.recv() {
        if !about_file(&event) {
            continue;
        }
        // Let the burst of one save settle (bounded: at most 100 extra
        // events are swallowed before reading).
        for _ in 0..100 {
            match rx.recv_timeout(debounce) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        // Errors are counted and reported by `reload` itself.
        let _ = shared.reload();
    }
}
