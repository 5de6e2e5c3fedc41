//! Typed errors: what went wrong in one conversion ([`PluginError`]) and why a
//! file or a policy could not be loaded ([`LoadError`]).

use std::path::PathBuf;
use std::time::Duration;

/// Why a conversion failed. Every variant is contained: the host and every
/// other conversion carry on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The guest trapped (`unreachable`, out-of-bounds access, stack
    /// overflow, …). `guest_output` is what it wrote to stdout/stderr
    /// (bounded).
    #[error("guest trapped: {message}")]
    Trap {
        /// The trap and its wasm backtrace.
        message: String,
        /// Captured guest stdout + stderr, truncated.
        guest_output: String,
    },
    /// The guest ran past its epoch deadline, or the outer timeout fired.
    #[error("guest timed out after {after:?}")]
    Timeout {
        /// The deadline it exceeded.
        after: Duration,
    },
    /// The guest asked for more linear memory than its per-call cap and
    /// could not carry on without it.
    #[error("guest exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The guest returned something the host refuses (too many events, text
    /// too long, output too large).
    #[error("guest returned bad output: {0}")]
    BadOutput(String),
    /// The guest panicked; the message is the one its panic hook logged (or
    /// std's default hook wrote to stderr).
    #[error("guest panicked: {message}")]
    Panic {
        /// The panic message and location.
        message: String,
    },
    /// The plugin faulted repeatedly and is skipped until its backoff ends.
    #[error("plugin quarantined for another {remaining:?} after repeated faults")]
    Quarantined {
        /// Time left in quarantine.
        remaining: Duration,
    },
    /// No loaded plugin converts this platform.
    #[error("no plugin routes platform `{platform}`")]
    NoRoute {
        /// The forward's platform.
        platform: String,
    },
    /// The plugin was built against a WIT version this host cannot run.
    #[error(
        "plugin built against hermes:converter@{plugin_version}, this host implements versions {host_version}"
    )]
    Incompatible {
        /// The version the plugin imports/exports.
        plugin_version: String,
        /// The version this host implements.
        host_version: String,
    },
    /// Instantiation failed for a reason other than the above (resource
    /// limits, pool exhausted).
    #[error("could not instantiate the plugin: {0}")]
    Instantiate(String),
    /// The host is shutting down or its worker pool is gone.
    #[error("plugin host unavailable: {0}")]
    Unavailable(String),
    /// The guest's output claimed more than its route is granted
    /// (conversion.md §3.1): an event for another platform or profile, or
    /// a reply route whose capability kind the forward's platform does not
    /// grant. Nothing of the output is delivered.
    #[error("guest output overreaches its grant: {0}")]
    Overreach(String),
    /// The plugin already has as many forwards waiting as its queue holds:
    /// this one is not converted now (it is the plugin's own backlog, so
    /// other plugins' forwards are not held behind it).
    #[error("plugin overloaded: {waiting} forwards already waiting for it")]
    Overloaded {
        /// Forwards waiting for this plugin when this one arrived.
        waiting: usize,
    },
}

impl PluginError {
    /// A short stable name for metrics and logs (`trap`, `timeout`, …).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Trap { .. } => FailureKind::Trap,
            Self::Timeout { .. } => FailureKind::Timeout,
            Self::MemoryLimit { .. } => FailureKind::MemoryLimit,
            Self::BadOutput(_) => FailureKind::BadOutput,
            Self::Panic { .. } => FailureKind::Panic,
            Self::Quarantined { .. } => FailureKind::Quarantined,
            Self::NoRoute { .. } => FailureKind::NoRoute,
            Self::Incompatible { .. } => FailureKind::Incompatible,
            Self::Instantiate(_) => FailureKind::Instantiate,
            Self::Unavailable(_) => FailureKind::Unavailable,
            Self::Overreach(_) => FailureKind::Overreach,
            Self::Overloaded { .. } => FailureKind::Overloaded,
        }
    }

    /// Whether this failure is the plugin misbehaving, which counts toward
    /// quarantine. Typed rejections are not errors at all; host-side
    /// conditions (no route, quarantine itself, shutdown) never count.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Self::Trap { .. }
                | Self::Timeout { .. }
                | Self::MemoryLimit { .. }
                | Self::BadOutput(_)
                | Self::Panic { .. }
                | Self::Overreach(_)
        )
    }
}

/// The kinds of [`PluginError`], for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum FailureKind {
    Trap,
    Timeout,
    MemoryLimit,
    BadOutput,
    Panic,
    Quarantined,
    NoRoute,
    Incompatible,
    Instantiate,
    Unavailable,
    Overreach,
    Overloaded,
}

impl FailureKind {
    /// Every kind, in counter order.
    pub const ALL: [FailureKind; 12] = [
        Self::Trap,
        Self::Timeout,
        Self::MemoryLimit,
        Self::BadOutput,
        Self::Panic,
        Self::Quarantined,
        Self::NoRoute,
        Self::Incompatible,
        Self::Instantiate,
        Self::Unavailable,
        Self::Overreach,
        Self::Overloaded,
    ];

    /// The metric label (`trap`, `memory_limit`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::BadOutput => "bad_output",
            Self::Panic => "panic",
            Self::Quarantined => "quarantined",
            Self::NoRoute => "no_route",
            Self::Incompatible => "incompatible",
            Self::Instantiate => "instantiate",
            Self::Unavailable => "unavailable",
            Self::Overreach => "overreach",
            Self::Overloaded => "overloaded",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why a plugin file or the policy could not be used. Collected in a
/// [`LoadReport`](crate::LoadReport); the file is skipped, the rest loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A `[[source]]` could not be pulled (or was refused: a tag, a
    /// digest mismatch). The version its repository served before, if any,
    /// keeps serving.
    #[error("{reference}: cannot pull: {message}")]
    Pull {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The OS error.
        message: String,
    },
    /// Not a valid WebAssembly component (or cranelift refused it).
    #[error("{file}: not a loadable component: {message}")]
    Compile {
        /// The file.
        file: PathBuf,
        /// Wasmtime's explanation.
        message: String,
    },
    /// Built against a `hermes:converter` version this host cannot run.
    #[error(
        "{file}: built against hermes:converter@{plugin_version}, but this host implements hermes:converter versions {host_version} (rebuild it with an SDK for one of those)"
    )]
    Incompatible {
        /// The file.
        file: PathBuf,
        /// The version the component uses.
        plugin_version: String,
        /// The version this host implements.
        host_version: String,
    },
    /// The component does not fit the `converter-plugin` world (missing
    /// exports, extra imports the sandbox does not provide, wrong types).
    #[error("{file}: does not match the converter-plugin world: {message}")]
    TypeCheck {
        /// The file.
        file: PathBuf,
        /// What did not match.
        message: String,
    },
    /// `describe()` failed or returned nonsense.
    #[error("{file}: describe() failed: {message}")]
    Describe {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file describes itself with a plugin name that another file is
    /// serving: the serving plugin stays, this file is refused.
    #[error(
        "{refused}: plugin name `{name}` is already served by {serving}; {refused} is not loaded"
    )]
    NameInUse {
        /// The name.
        name: String,
        /// The file that serves the name and keeps serving it.
        serving: PathBuf,
        /// The file refused.
        refused: PathBuf,
    },
    /// Several files describe the same plugin name and none of them was
    /// serving it: none is loaded (a name must identify one file).
    #[error("plugin name `{name}` is claimed by {}; none of them is loaded until one file claims it", .files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" and "))]
    NameClaimedTwice {
        /// The name.
        name: String,
        /// Every file claiming it, sorted.
        files: Vec<PathBuf>,
    },
    /// The file (or the plugins directory) is writable by others or owned
    /// by another user: not loaded.
    #[error("{file}: not loaded: {message}")]
    Untrusted {
        /// The file or directory.
        file: PathBuf,
        /// Who else could write it.
        message: String,
    },
    /// Two plugins claim a platform and the policy does not pin one.
    #[error(
        "platform `{platform}` is claimed by both `{first}` and `{second}`; pin one in the policy with [platform.{platform}] plugin = \"...\""
    )]
    Conflict {
        /// The platform.
        platform: String,
        /// One claimant.
        first: String,
        /// The other claimant.
        second: String,
    },
    /// The policy file is unreadable, malformed, or names unknown plugins.
    #[error("policy {file}: {message}")]
    Policy {
        /// The policy file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Fatal problems creating a [`PluginHost`](crate::PluginHost).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The plugins directory cannot be listed.
    #[error("cannot read plugins directory {dir}: {message}")]
    PluginsDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The plugins directory is writable by others or owned by another user.
    #[error("plugins directory {dir} not used: {message}")]
    UntrustedDir {
        /// The directory.
        dir: PathBuf,
        /// Who else could write it.
        message: String,
    },
    /// Wasmtime refused the engine configuration.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// The WASI or host imports could not be linked.
    #[error("cannot set up the linker: {0}")]
    Linker(String),
    /// The policy file is malformed at startup (on reload, the old policy is
    /// kept instead).
    #[error(transparent)]
    Policy(LoadError),
    /// A worker thread could not be started.
    #[error("cannot start worker threads: {0}")]
    Workers(String),
    /// The file watcher could not be started.
    #[error("cannot watch {path}: {message}")]
    Watch {
        /// What we tried to watch.
        path: PathBuf,
        /// The watcher's error.
        message: String,
    },
}
