//! Building blocks for `benches/conversion.rs`: each step of a conversion,
//! separately timeable, on the same engine configuration, linker and limits
//! as [`PluginHost`](crate::PluginHost).

use std::path::Path;
use std::sync::Arc;

use hermes_protocol::forward::PassthroughForward;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::artifact_cache::ArtifactCache;
use crate::bindings::{self, GuestOutcome, PluginPre};
use crate::engine::Allocator;
use crate::limits::Limits;
use crate::outcome::RejectKind;
use crate::sandbox::{CallContext, ConfigMap, Sandbox, StoreState, block_on};

/// One plugin, compiled and pre-instantiated outside a host.
pub struct BenchPlugin {
    engine: Engine,
    allocator: Allocator,
    linker: Linker<StoreState>,
    pre: PluginPre,
    limits: Limits,
    bytes: Vec<u8>,
    name: Arc<str>,
}

/// What a benchmarked conversion produced, so a benchmark can check it
/// measured the real work (a rejection is a result here, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchOutcome {
    /// This many events, after the host's output checks.
    Events(usize),
    /// A valid request without a message.
    Ignored,
    /// Typed bad input.
    Rejected(RejectKind),
}

impl BenchOutcome {
    /// The manifest's spelling of the outcome: `event`, `ignored`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events(_) => "event",
            Self::Ignored => "ignored",
            Self::Rejected(_) => "error",
        }
    }
}

/// A store and instance kept across calls (what the host deliberately does
/// not do; measured for comparison).
pub struct WarmInstance<'a> {
    plugin: &'a BenchPlugin,
    sandbox: Sandbox,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl BenchPlugin {
    /// Compile `bytes` with the host's engine configuration.
    pub fn new(bytes: Vec<u8>, limits: Limits) -> Result<Self, String> {
        let (engine, allocator) = crate::engine::build(&limits, 1).map_err(err)?;
        let mut linker = crate::engine::linker(&engine).map_err(err)?;
        crate::sandbox::shadow_blocking_clocks(&mut linker).map_err(err)?;
        let component = Component::new(&engine, &bytes).map_err(|e| format!("{e:#}"))?;
        let pre = typed(&engine, &linker, &component)?;
        Ok(Self {
            engine,
            allocator,
            linker,
            pre,
            limits,
            bytes,
            name: Arc::from("bench"),
        })
    }

    /// The allocator the engine got.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// Compile the component from scratch (cranelift).
    pub fn compile(&self) -> Result<(), String> {
        Component::new(&self.engine, &self.bytes)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    /// Load the component through the compiled-artifact cache in `dir`
    /// (read, authenticate, deserialize) and type-check it, as a cached load does.
    pub fn cached_load(&self, dir: &Path, sha256: &str) -> Result<(), String> {
        let cache = ArtifactCache::new(dir.to_owned(), &self.engine)
            .ok_or_else(|| format!("cache directory {} is not private", dir.display()))?;
        let (component, _) = cache
            .load(&self.engine, &self.bytes, sha256)
            .map_err(|e| format!("{e:#}"))?;
        typed(&self.engine, &self.linker, &component).map(drop)
    }

    fn sandbox(&self) -> Result<Sandbox, String> {
        let cx = CallContext {
            plugin: Arc::clone(&self.name),
            stats: None,
            tenant: None,
            config: ConfigMap::default(),
        };
        block_on(Sandbox::new(&self.engine, &self.pre, &self.limits, cx)).map_err(err)
    }

    /// Create a store and instantiate (then drop both).
    pub fn instantiate(&self) -> Result<(), String> {
        self.sandbox().map(drop)
    }

    /// What the host does per forward: fresh store, instantiate, `tenant-of`,
    /// `convert`, output checks and conversion to protocol events, drop.
    /// Errs only on a plugin failure (trap, timeout, bad output).
    pub fn fresh_convert(&self, forward: &PassthroughForward) -> Result<BenchOutcome, String> {
        let req = bindings::Request::new(forward);
        let mut s = self.sandbox()?;
        block_on(s.tenant_of(&req)).map_err(err)?;
        outcome(block_on(s.convert(&req)).map_err(err)?, &self.limits)
    }

    /// A store and instance to call repeatedly.
    pub fn warm(&self) -> Result<WarmInstance<'_>, String> {
        Ok(WarmInstance {
            plugin: self,
            sandbox: self.sandbox()?,
        })
    }
}

impl WarmInstance<'_> {
    /// `convert` on the kept instance, with the same output handling.
    pub fn convert(&mut self, forward: &PassthroughForward) -> Result<BenchOutcome, String> {
        let req = bindings::Request::new(forward);
        outcome(
            block_on(self.sandbox.convert(&req)).map_err(err)?,
            &self.plugin.limits,
        )
    }
}

/// The component type-checked against the bindings of the ABI version it
/// names, as the loader does.
fn typed(
    engine: &Engine,
    linker: &Linker<StoreState>,
    component: &Component,
) -> Result<PluginPre, String> {
    let version = bindings::version_of(engine, component)?
        .unwrap_or_else(|| hermes_converter_abi::CURRENT_VERSION.to_owned());
    let implemented = hermes_converter_abi::implemented_version(&version)
        .ok_or_else(|| format!("built against hermes:converter@{version}"))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    PluginPre::new(implemented, pre).map_err(|e| format!("{e:#}"))
}

/// The host's output handling (events become protocol events under the
/// output caps), reduced to what the benchmark checks.
fn outcome(outcome: bindings::RawOutcome, limits: &Limits) -> Result<BenchOutcome, String> {
    Ok(match outcome.check(limits)? {
        GuestOutcome::Events(e) => BenchOutcome::Events(e.len()),
        GuestOutcome::Ignored(_) => BenchOutcome::Ignored,
        GuestOutcome::Rejected { kind, .. } => BenchOutcome::Rejected(kind),
    })
}
