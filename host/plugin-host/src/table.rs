//! The routing [`Table`] a load builds (see `loader.rs`): the loaded plugins,
//! the platform defaults and the policy's routes resolved against them, and
//! the lookups a conversion makes (entry plugin, tenant plugin, best route).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::bindings::PluginPre;
use crate::error::LoadError;
use crate::policy::{Grant, Isolation, Policy, RouteRule};
use crate::sandbox::ConfigMap;
use crate::stats::PluginStats;

/// What a loaded plugin says about itself, plus where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginDescription {
    /// `describe().name`.
    pub name: String,
    /// `describe().version`.
    pub version: String,
    /// Platforms it converts.
    pub platforms: Vec<String>,
    /// The WIT version it says it was built against.
    pub api_version: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// SHA-256 of the file, hex (for a plugin from a registry: the digest
    /// of its layer).
    pub sha256: String,
    /// The `oci://…@sha256:…` reference it was pulled by, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A loaded, type-checked plugin.
pub(crate) struct LoadedPlugin {
    pub(crate) description: PluginDescription,
    pub(crate) name: Arc<str>,
    pub(crate) pre: PluginPre,
    pub(crate) stats: Arc<PluginStats>,
}

impl LoadedPlugin {
    /// Whether `describe()` listed this platform.
    pub(crate) fn converts(&self, platform: &str) -> bool {
        self.description.platforms.iter().any(|p| p == platform)
    }
}

/// A route as the table resolved it.
pub(crate) struct Route {
    pub(crate) rule: RouteRule,
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) config: ConfigMap,
}

/// Where one forward goes: the plugin, the configuration it reads, and
/// what the policy grants its output beyond the defaults (conversion.md
/// §3.1: the `[platform.P]` grant plus the matched route's).
pub(crate) struct Resolved {
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) config: ConfigMap,
    pub(crate) grant: Grant,
    pub(crate) isolation: Isolation,
    /// A shadow or canary candidate on this route (`experiment.rs`).
    pub(crate) experiment: Option<crate::experiment::Experiment>,
}

impl Route {
    /// The rule matches, and its plugin converts the platform: a
    /// profile-only rule never sends a platform to a plugin that does not
    /// list it.
    fn applies(&self, platform: &str, profile: Option<&str>, tenant: Option<&str>) -> bool {
        self.rule.matches(platform, profile, tenant) && self.plugin.converts(platform)
    }
}

/// A platform's default plugin.
pub(crate) struct Default {
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) config: ConfigMap,
    pub(crate) pinned: bool,
}

/// The routing table: immutable once built, swapped whole on reload.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) by_file: BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    pub(crate) by_name: BTreeMap<String, Arc<LoadedPlugin>>,
    pub(crate) defaults: BTreeMap<String, Default>,
    pub(crate) routes: Vec<Route>,
    /// Platforms with at least one `[[route]]` naming a tenant: only for
    /// these is the tenant key worth a `tenant-of` call.
    pub(crate) tenant_routed: BTreeSet<String>,
    pub(crate) policy: Policy,
}

/// A description of the routing table, for `plugins check` and
/// `GET /plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutingTable {
    /// Platform → default plugin name (pinned by policy or sole claimant).
    pub defaults: BTreeMap<String, String>,
    /// Policy overrides in file order.
    pub routes: Vec<RouteRule>,
}

/// The outcome of a load or reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Every plugin now loaded.
    pub loaded: Vec<PluginDescription>,
    /// Files or policy entries that could not be used (skipped). On reload a
    /// failing file keeps its previous good version, if any.
    #[serde(serialize_with = "errors_as_strings")]
    pub errors: Vec<LoadError>,
    /// Components compiled by cranelift in this load.
    pub compiled: usize,
    /// Components loaded from the compiled-artifact cache.
    pub cache_hits: usize,
    /// Plugins kept from the previous table (file unchanged).
    pub unchanged: usize,
    /// What this load changed against the table it replaced (empty lists
    /// and `false` for the first load).
    pub changes: Changes,
}

/// What a reload changed, by plugin name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Plugins that were not loaded before.
    pub added: Vec<String>,
    /// Plugins that are no longer loaded.
    pub removed: Vec<String>,
    /// Plugins loaded from different bytes (a new version or build).
    pub replaced: Vec<String>,
    /// Whether the policy differs.
    pub policy_changed: bool,
}

impl Changes {
    /// `previous` → `next`, by plugin name and file digest.
    pub(crate) fn between(previous: &Table, next: &Table) -> Self {
        let digest =
            |t: &Table, name: &str| t.by_name.get(name).map(|p| p.description.sha256.clone());
        let changed = |name: &str| digest(previous, name) != digest(next, name);
        let mut changes = Changes {
            policy_changed: previous.policy != next.policy,
            ..Changes::default()
        };
        for name in next.by_name.keys() {
            match digest(previous, name) {
                None => changes.added.push(name.clone()),
                Some(_) if changed(name) => changes.replaced.push(name.clone()),
                Some(_) => {}
            }
        }
        changes.removed = previous
            .by_name
            .keys()
            .filter(|name| !next.by_name.contains_key(*name))
            .cloned()
            .collect();
        changes
    }

    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.replaced.is_empty()
            && !self.policy_changed
    }
}

fn errors_as_strings<S: serde::Serializer>(errors: &[LoadError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(errors.iter().map(ToString::to_string))
}

impl LoadReport {
    /// Whether everything loaded cleanly.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Table {
    /// Resolve platform defaults (policy pins, sole claimants, conflicts)
    /// and the policy's routes against the loaded plugins.
    pub(crate) fn resolve_routes(
        &mut self,
        policy_file: &Path,
        previous: &Table,
        report: &mut LoadReport,
    ) {
        let mut claimants: BTreeMap<&str, Vec<&Arc<LoadedPlugin>>> = BTreeMap::new();
        for p in self.by_name.values() {
            for platform in &p.description.platforms {
                claimants.entry(platform.as_str()).or_default().push(p);
            }
        }
        let policy_error = |message| LoadError::Policy {
            file: policy_file.to_owned(),
            message,
        };
        let mut defaults =
            self.pinned_defaults(&claimants, &mut |m| report.errors.push(policy_error(m)));
        let conflicts = self.claimed_defaults(&claimants, previous, &mut defaults);
        report.errors.extend(conflicts);
        let routes = self.routes_of_rules(&mut |m| report.errors.push(policy_error(m)));
        self.defaults = defaults;
        self.routes = routes;
        self.tenant_routed = self
            .routes
            .iter()
            .filter(|r| r.rule.tenant.is_some())
            .filter_map(|r| r.rule.platform.clone())
            .collect();
    }

    /// The policy's `[platform.P]` pins: a named plugin that is loaded and
    /// converts P, or config for P's sole claimant.
    fn pinned_defaults(
        &self,
        claimants: &BTreeMap<&str, Vec<&Arc<LoadedPlugin>>>,
        refuse: &mut impl FnMut(String),
    ) -> BTreeMap<String, Default> {
        let mut defaults = BTreeMap::new();
        for (platform, pin) in &self.policy.platform {
            let config: ConfigMap = Arc::new(pin.config.clone());
            let (plugin, pinned) = match &pin.plugin {
                Some(name) => match self.by_name.get(name) {
                    Some(p) if !p.converts(platform) => {
                        refuse(format!(
                            "[platform.{platform}] pins plugin `{name}`, which does not convert `{platform}` (it lists {:?})",
                            p.description.platforms
                        ));
                        continue;
                    }
                    Some(p) => (p, true),
                    None => {
                        refuse(format!(
                            "[platform.{platform}] pins plugin `{name}`, which is not loaded"
                        ));
                        continue;
                    }
                },
                // Config only: applies to the sole claimant.
                None => match claimants.get(platform.as_str()).map(Vec::as_slice) {
                    Some([only]) => (*only, false),
                    _ => continue,
                },
            };
            let plugin = Arc::clone(plugin);
            defaults.insert(
                platform.clone(),
                Default {
                    plugin,
                    config,
                    pinned,
                },
            );
        }
        defaults
    }

    /// Every platform without a pin goes to its sole claimant. Two claimants
    /// are a conflict (returned); the previous default then keeps serving
    /// while it is still loaded, so a hot swap never breaks a working
    /// platform.
    fn claimed_defaults(
        &self,
        claimants: &BTreeMap<&str, Vec<&Arc<LoadedPlugin>>>,
        previous: &Table,
        defaults: &mut BTreeMap<String, Default>,
    ) -> Vec<LoadError> {
        let mut conflicts = Vec::new();
        for (platform, plugins) in claimants {
            if defaults.contains_key(*platform) {
                continue;
            }
            let chosen = match plugins.as_slice() {
                [only] => Default {
                    plugin: Arc::clone(only),
                    config: ConfigMap::default(),
                    pinned: false,
                },
                [first, second, ..] => {
                    conflicts.push(LoadError::Conflict {
                        platform: (*platform).to_owned(),
                        first: first.description.name.clone(),
                        second: second.description.name.clone(),
                    });
                    let Some(old) = previous.defaults.get(*platform) else {
                        continue;
                    };
                    let Some(p) = self.by_name.get(&*old.plugin.name) else {
                        continue;
                    };
                    Default {
                        plugin: Arc::clone(p),
                        config: Arc::clone(&old.config),
                        pinned: old.pinned,
                    }
                }
                [] => continue,
            };
            defaults.insert((*platform).to_owned(), chosen);
        }
        conflicts
    }

    /// The policy's `[[route]]` rules whose plugin is loaded and converts
    /// the rule's platform, in policy order.
    fn routes_of_rules(&self, refuse: &mut impl FnMut(String)) -> Vec<Route> {
        let mut routes = Vec::new();
        for rule in &self.policy.route {
            match self.by_name.get(&rule.plugin) {
                Some(p) if rule.platform.as_deref().is_some_and(|pl| !p.converts(pl)) => {
                    refuse(format!(
                        "a [[route]] for platform `{}` names plugin `{}`, which does not convert it (it lists {:?})",
                        rule.platform.as_deref().unwrap_or_default(),
                        rule.plugin,
                        p.description.platforms
                    ));
                }
                Some(p) => routes.push(Route {
                    rule: rule.clone(),
                    plugin: Arc::clone(p),
                    config: Arc::new(rule.config.clone()),
                }),
                None => refuse(format!(
                    "a [[route]] names plugin `{}`, which is not loaded",
                    rule.plugin
                )),
            }
        }
        routes
    }

    /// Whether a tenant route could apply to `platform`, i.e. whether its
    /// forwards need a `tenant-of` call before routing.
    pub(crate) fn routes_by_tenant(&self, platform: &str) -> bool {
        self.tenant_routed.contains(platform)
    }

    /// The plugin a forward is charged to before any guest runs (input-cap
    /// rejections, an outer timeout before routing): the tenant-of plugin
    /// when tenant routes exist for the platform, else the final route.
    pub(crate) fn entry_plugin(&self, platform: &str, profile: Option<&str>) -> Option<Resolved> {
        if self.routes_by_tenant(platform) {
            self.tenant_plugin(platform, profile, |_| true)
        } else {
            self.resolve(platform, profile, None)
        }
    }

    /// The plugin asked for the tenant key: the platform's default, else the
    /// best route that does not depend on the tenant. While that plugin is
    /// quarantined (`usable` says no), another loaded plugin that converts
    /// the platform is asked instead — a tenant-routed one first: the
    /// tenant key of a platform is defined by the contract (conversion.md
    /// §1), so any of its converters computes it, and a quarantined default
    /// must not take down the tenants routed to other plugins.
    pub(crate) fn tenant_plugin(
        &self,
        platform: &str,
        profile: Option<&str>,
        usable: impl Fn(&LoadedPlugin) -> bool,
    ) -> Option<Resolved> {
        let first = match self.defaults.get(platform) {
            Some(d) => Some(self.resolved(platform, &d.plugin, &d.config, None)),
            None => self
                .best_route(platform, profile, None)
                .map(|r| self.resolved(platform, &r.plugin, &r.config, Some(&r.rule))),
        };
        if first.as_ref().is_none_or(|r| usable(&r.plugin)) {
            return first;
        }
        self.routes
            .iter()
            .filter(|r| r.rule.platform.as_deref() == Some(platform) && r.plugin.converts(platform))
            .map(|r| &r.plugin)
            .chain(self.by_name.values().filter(|p| p.converts(platform)))
            .find(|p| usable(p))
            .map(|p| Resolved {
                plugin: Arc::clone(p),
                config: ConfigMap::default(),
                grant: Grant::default(),
                isolation: Isolation::default(),
                experiment: None,
            })
            .or(first)
    }

    fn resolved(
        &self,
        platform: &str,
        plugin: &Arc<LoadedPlugin>,
        config: &ConfigMap,
        rule: Option<&RouteRule>,
    ) -> Resolved {
        let mut grant = Grant::default();
        let mut isolation = Isolation::default();
        if let Some(p) = self.policy.platform.get(platform) {
            grant = grant.with(&p.grant_platforms, &p.grant_follow_up);
            isolation = p.isolation;
        }
        if let Some(r) = rule {
            grant = grant.with(&r.grant_platforms, &r.grant_follow_up);
            isolation = r.isolation.unwrap_or(isolation);
        }
        let experiment = crate::experiment::Experiment::of(
            platform,
            plugin,
            rule,
            self.policy.platform.get(platform),
            |name| self.by_name.get(name).cloned(),
        );
        Resolved {
            plugin: Arc::clone(plugin),
            config: Arc::clone(config),
            grant,
            isolation,
            experiment,
        }
    }

    fn best_route(
        &self,
        platform: &str,
        profile: Option<&str>,
        tenant: Option<&str>,
    ) -> Option<&Route> {
        let mut best: Option<&Route> = None;
        for r in &self.routes {
            if r.applies(platform, profile, tenant)
                && best.is_none_or(|b| r.rule.rank() > b.rule.rank())
            {
                best = Some(r);
            }
        }
        best
    }

    /// The plugin and config for a forward once its tenant is known.
    pub(crate) fn resolve(
        &self,
        platform: &str,
        profile: Option<&str>,
        tenant: Option<&str>,
    ) -> Option<Resolved> {
        if let Some(r) = self.best_route(platform, profile, tenant) {
            return Some(self.resolved(platform, &r.plugin, &r.config, Some(&r.rule)));
        }
        self.defaults
            .get(platform)
            .map(|d| self.resolved(platform, &d.plugin, &d.config, None))
    }

    pub(crate) fn describe(&self) -> RoutingTable {
        RoutingTable {
            defaults: self
                .defaults
                .iter()
                .map(|(k, d)| (k.clone(), d.plugin.description.name.clone()))
                .collect(),
            routes: self.routes.iter().map(|r| r.rule.clone()).collect(),
        }
    }
}
