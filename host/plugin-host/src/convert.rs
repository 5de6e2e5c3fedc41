//! One conversion: route, input checks, admission, a fresh sandbox on the
//! calling task, the trust boundary, and the mapping of what happened to an
//! [`Outcome`].

use super::*;
use crate::bindings::GuestOutcome;
use crate::reuse::{InstanceKey, Role};

impl PluginHost {
    /// The lane `forward` is converted in, known before any guest runs: the
    /// plugin its platform (and profile) enters through — the one asked for
    /// the tenant key where tenant routes exist — or the platform when no
    /// plugin routes it. Forwards of one conversation always share a lane.
    pub fn lane_of(&self, forward: &PassthroughForward) -> Arc<str> {
        match self
            .table()
            .entry_plugin(&forward.platform, forward.profile.as_deref())
        {
            Some(entry) => Arc::clone(&entry.plugin.name),
            None => Arc::from(forward.platform.as_str()),
        }
    }

    /// Convert one forward. Waits for a free worker (backpressure), runs the
    /// conversion in a fresh sandbox, and never fails other than through
    /// [`Outcome::Failed`].
    pub async fn convert(&self, forward: &PassthroughForward) -> Conversion {
        self.convert_inner(forward, None).await
    }

    /// [`convert`](Self::convert) with `config` on top of the configuration
    /// the policy gives the routed plugin (a key in both takes `config`'s
    /// value): what `hermes-gateway convert --config key=value` does.
    pub async fn convert_with_config(
        &self,
        forward: &PassthroughForward,
        config: BTreeMap<String, String>,
    ) -> Conversion {
        self.convert_inner(forward, Some(Arc::new(config))).await
    }

    async fn convert_inner(
        &self,
        forward: &PassthroughForward,
        config_override: Option<ConfigMap>,
    ) -> Conversion {
        let limits = &self.inner.config.limits;
        let table = self.table();
        let platform = forward.platform.as_str();
        let profile = forward.profile.as_deref();
        let Some(entry) = table.entry_plugin(platform, profile) else {
            return no_route(platform, None);
        };
        // Input caps, before any guest runs.
        if let Some((kind, message)) = input_reject(forward, limits) {
            entry.plugin.stats.record_rejected();
            return Conversion::new(
                Some(&entry.plugin.name),
                None,
                Outcome::Rejected { kind, message },
            );
        }
        drop(entry);
        let request = Arc::new(bindings::Request::new(forward));
        let conversion = self.convert_routed(&table, &request, config_override).await;
        // Every route, however it was reached (by platform, or by the
        // tenant the plugin named), gets its shadow or canary here.
        if table.policy.has_experiments() {
            self.with_experiment(&request, conversion).await
        } else {
            conversion
        }
    }

    /// Routes `request` (by platform and profile, then by tenant where the
    /// policy routes by tenant) and converts it.
    async fn convert_routed(
        &self,
        table: &Arc<crate::table::Table>,
        request: &Arc<bindings::Request>,
        config_override: Option<ConfigMap>,
    ) -> Conversion {
        let limits = &self.inner.config.limits;
        let platform = request.platform();
        let profile = request.profile();
        // Whether `tenant` is what the plugin's `tenant-of` answered.
        let mut tenant_asked = false;
        let (tenant, target) = if table.routes_by_tenant(platform) {
            let now = Instant::now();
            let usable = |p: &LoadedPlugin| p.stats.check(now).is_ok();
            let Some(asked) = table.tenant_plugin(platform, profile, usable) else {
                return no_route(platform, None);
            };
            if usable(&asked.plugin) {
                let (table, request, config_override) = (
                    Arc::clone(table),
                    Arc::clone(request),
                    config_override.clone(),
                );
                let plugin = Arc::clone(&asked.plugin);
                let step = self
                    .admitted(&plugin, None, async {
                        (self.inner)
                            .tenant_then_convert(&table, &request, asked, config_override)
                            .await
                    })
                    .await;
                match step {
                    Step::Done(conversion) => return conversion,
                    Step::Routed { tenant, target } => {
                        tenant_asked = true;
                        (tenant, Some(target))
                    }
                }
            } else {
                // Every converter of the platform sits out a quarantine: the
                // route by platform and profile alone is the best we know.
                (None, table.resolve(platform, profile, None))
            }
        } else {
            (None, table.resolve(platform, profile, None))
        };
        let Some(target) = target else {
            return no_route(platform, tenant);
        };
        let plugin = Arc::clone(&target.plugin);
        let probe_every = limits.quarantine.probe_every;
        if let Err(remaining) = plugin.stats.admit(Instant::now(), probe_every) {
            return self.inner.failed(
                &plugin.stats,
                &plugin.name,
                tenant,
                PluginError::Quarantined { remaining },
            );
        }
        let config = with_extra(&target.config, config_override.as_deref());
        let step = self
            .admitted(&plugin, tenant.clone(), async {
                let inner = &self.inner;
                Step::Done(match target.isolation {
                    Isolation::PerRequest => {
                        inner.convert_fresh(request, &target, config, tenant).await
                    }
                    Isolation::PerTenant => {
                        inner
                            .convert_warm(request, &target, config, tenant, tenant_asked)
                            .await
                    }
                })
            })
            .await;
        match step {
            Step::Done(conversion) => conversion,
            Step::Routed { tenant, .. } => no_route(platform, tenant),
        }
    }

    /// Runs `work` once `plugin` may run another conversion (its
    /// [`Admission`](admission::Admission): its own share of the
    /// conversion slots and its own bounded line) and a slot is free, with
    /// the outer timeout.
    ///
    /// `work` runs right here, on the calling task's thread: no hand-off to
    /// another thread and back. It cannot hold the thread for long: the
    /// guest yields to the runtime every CPU slice (see `budget.rs`), no
    /// blocking WASI call is linked, and the slots bound how many run at
    /// once.
    pub(crate) async fn admitted(
        &self,
        plugin: &Arc<LoadedPlugin>,
        tenant: Option<String>,
        work: impl Future<Output = Step>,
    ) -> Step {
        let inner = &self.inner;
        let outer = inner.config.limits.outer_timeout;
        let _place = match plugin.stats.admission.enter().await {
            Ok(place) => place,
            Err(e) => return Step::Done(inner.failed(&plugin.stats, &plugin.name, tenant, e)),
        };
        let Ok(_slot) = inner.permits.acquire().await else {
            let e = PluginError::Unavailable("closed".to_owned());
            return Step::Done(inner.failed(&plugin.stats, &plugin.name, tenant, e));
        };
        match tokio::time::timeout(outer, work).await {
            Ok(step) => step,
            // The guest's CPU budget stops wasm code, so this is a badly
            // overloaded machine: counted, never a fault (see `failed`).
            // Dropping the call drops its store.
            Err(_) => Step::Done(inner.failed(
                &plugin.stats,
                &plugin.name,
                tenant,
                PluginError::Timeout { after: outer },
            )),
        }
    }
}

/// The routed configuration with `extra` on top, or the routed one itself.
fn with_extra(routed: &ConfigMap, extra: Option<&BTreeMap<String, String>>) -> ConfigMap {
    match extra {
        None => Arc::clone(routed),
        Some(extra) => {
            let mut merged = (**routed).clone();
            merged.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            Arc::new(merged)
        }
    }
}

/// What one job on a worker came to.
pub(crate) enum Step {
    /// The conversion is over.
    Done(Conversion),
    /// The tenant key is known and routes to another plugin (or another
    /// configuration), which converts in a job of its own.
    Routed {
        tenant: Option<String>,
        target: Resolved,
    },
}

fn no_route(platform: &str, tenant: Option<String>) -> Conversion {
    Conversion::new(
        None,
        tenant,
        Outcome::Failed(PluginError::NoRoute {
            platform: platform.to_owned(),
        }),
    )
}

/// The input caps checked before any guest runs.
fn input_reject(forward: &PassthroughForward, limits: &Limits) -> Option<(RejectKind, String)> {
    if forward.body.is_empty() {
        Some((RejectKind::EmptyBody, "the body is empty".to_owned()))
    } else if forward.body.len() > limits.max_body_bytes {
        Some((
            RejectKind::PayloadTooLarge,
            format!(
                "the body is {} bytes, at most {} allowed",
                forward.body.len(),
                limits.max_body_bytes
            ),
        ))
    } else {
        None
    }
}

impl Inner {
    /// The tenant key from `asked`, the final route, and — when
    /// that is the same plugin with the same configuration — the conversion
    /// in the same instance (a guest may have cached what `config` answered
    /// during tenant-of, so another configuration gets a fresh instance).
    async fn tenant_then_convert(
        &self,
        table: &Table,
        req: &bindings::Request,
        asked: Resolved,
        config_override: Option<ConfigMap>,
    ) -> Step {
        let limits = &self.config.limits;
        let plugin = &asked.plugin;
        let cx = CallContext {
            plugin: Arc::clone(&plugin.name),
            stats: Some(Arc::clone(&plugin.stats)),
            tenant: None,
            config: Arc::clone(&asked.config),
        };
        HostCounts::bump(&self.counts.instances_created);
        let mut sandbox = match Sandbox::new(&self.engine, &plugin.pre, limits, cx).await {
            Ok(s) => s,
            Err(e) => return Step::Done(self.failed(&plugin.stats, &plugin.name, None, e)),
        };
        plugin.stats.record_tenant_of();
        let tenant = match sandbox.tenant_of(req).await {
            Ok(t) => t,
            Err(e) => return Step::Done(self.failed(&plugin.stats, &plugin.name, None, e)),
        };
        let Some(target) = table.resolve(req.platform(), req.profile(), tenant.as_deref()) else {
            return Step::Done(no_route(req.platform(), tenant));
        };
        let config = with_extra(&target.config, config_override.as_deref());
        let per_tenant = target.isolation == Isolation::PerTenant;
        if per_tenant || !Arc::ptr_eq(&target.plugin, plugin) || *config != *asked.config {
            return Step::Routed { tenant, target };
        }
        let probe_every = limits.quarantine.probe_every;
        if let Err(remaining) = target.plugin.stats.admit(Instant::now(), probe_every) {
            let e = PluginError::Quarantined { remaining };
            return Step::Done(self.failed(&plugin.stats, &plugin.name, tenant, e));
        }
        sandbox.set_tenant(tenant.clone(), config);
        Step::Done(self.convert_in(sandbox, req, &target, tenant).await.0)
    }

    /// Convert in a fresh instance of `target`.
    pub(crate) async fn convert_fresh(
        &self,
        req: &bindings::Request,
        target: &Resolved,
        config: ConfigMap,
        tenant: Option<String>,
    ) -> Conversion {
        let plugin = &target.plugin;
        let cx = CallContext {
            plugin: Arc::clone(&plugin.name),
            stats: Some(Arc::clone(&plugin.stats)),
            tenant: tenant.clone(),
            config,
        };
        HostCounts::bump(&self.counts.instances_created);
        match Sandbox::new(&self.engine, &plugin.pre, &self.config.limits, cx).await {
            Ok(sandbox) => self.convert_in(sandbox, req, target, tenant).await.0,
            Err(e) => self.failed(&plugin.stats, &plugin.name, tenant, e),
        }
    }

    /// Convert in `sandbox`, then check the output against the caps and the
    /// trust boundary ([`trust`]) before anything is handed on. The sandbox
    /// comes back only when the call ended cleanly (an event, an ignore or a
    /// typed rejection that passed every check): a failed instance is never
    /// used again.
    async fn convert_in(
        &self,
        mut sandbox: Sandbox,
        req: &bindings::Request,
        target: &Resolved,
        tenant: Option<String>,
    ) -> (Conversion, Option<Sandbox>) {
        let limits = &self.config.limits;
        let plugin = &target.plugin;
        let outcome = sandbox.convert(req).await;
        let fail = |e| {
            (
                self.failed(&plugin.stats, &plugin.name, tenant.clone(), e),
                None,
            )
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return fail(e),
        };
        let outcome = match outcome.check(limits) {
            Ok(o) => o,
            Err(why) => return fail(PluginError::BadOutput(why)),
        };
        let outcome = match outcome {
            GuestOutcome::Events(events) => {
                let profile = req.profile();
                if let Err(why) = trust::check(req.platform(), profile, &target.grant, &events) {
                    return fail(PluginError::Overreach(why));
                }
                plugin.stats.record_events(events.len());
                Outcome::Events(events)
            }
            GuestOutcome::Ignored(reason) => {
                if reason.len() > 64 {
                    let why = "ignore reason longer than 64 bytes".to_owned();
                    return fail(PluginError::BadOutput(why));
                }
                plugin.stats.record_ignored();
                Outcome::Ignored(reason)
            }
            GuestOutcome::Rejected { kind, mut message } => {
                plugin.stats.record_rejected();
                message.truncate(message.floor_char_boundary(1024));
                Outcome::Rejected { kind, message }
            }
        };
        (
            Conversion::new(Some(&plugin.name), tenant, outcome),
            Some(sandbox),
        )
    }

    /// Convert in a warm instance of `target` for this forward's tenant
    /// (`isolation = "per-tenant"`, `reuse.rs`), or a fresh one that is
    /// kept afterwards. Unless routing already `asked` the plugin, the
    /// tenant comes from the plugin's warm router instance.
    async fn convert_warm(
        &self,
        req: &bindings::Request,
        target: &Resolved,
        config: ConfigMap,
        tenant: Option<String>,
        asked: bool,
    ) -> Conversion {
        let plugin = &target.plugin;
        let reuses = self.config.limits.instance_reuses;
        let key = |role| InstanceKey {
            plugin: Arc::clone(plugin),
            config: Arc::clone(&config),
            profile: req.profile().map(str::to_owned),
            role,
        };
        let tenant = if asked {
            tenant
        } else {
            let router = key(Role::Router);
            let mut sandbox = match self.warm(&router, &config, None).await {
                Ok(s) => s,
                Err(e) => return self.failed(&plugin.stats, &plugin.name, None, e),
            };
            plugin.stats.record_tenant_of();
            match sandbox.tenant_of(req).await {
                Ok(tenant) => {
                    self.idle.put(router, sandbox, reuses);
                    tenant
                }
                Err(e) => {
                    HostCounts::bump(&self.counts.instances_retired);
                    return self.failed(&plugin.stats, &plugin.name, None, e);
                }
            }
        };
        let key = key(Role::Tenant(tenant.clone()));
        let sandbox = match self.warm(&key, &config, tenant.clone()).await {
            Ok(s) => s,
            Err(e) => return self.failed(&plugin.stats, &plugin.name, tenant, e),
        };
        let (conversion, sandbox) = self.convert_in(sandbox, req, target, tenant).await;
        match sandbox {
            Some(sandbox) => self.idle.put(key, sandbox, reuses),
            // A failed call's instance is never used again.
            None => HostCounts::bump(&self.counts.instances_retired),
        }
        conversion
    }

    /// An idle instance for `key`, else a fresh one.
    async fn warm(
        &self,
        key: &InstanceKey,
        config: &ConfigMap,
        tenant: Option<String>,
    ) -> Result<Sandbox, PluginError> {
        if let Some(sandbox) = self.idle.take(key) {
            HostCounts::bump(&self.counts.instances_reused);
            return Ok(sandbox);
        }
        HostCounts::bump(&self.counts.instances_created);
        let cx = CallContext {
            plugin: Arc::clone(&key.plugin.name),
            stats: Some(Arc::clone(&key.plugin.stats)),
            tenant,
            config: Arc::clone(config),
        };
        Sandbox::new(&self.engine, &key.plugin.pre, &self.config.limits, cx).await
    }

    /// Counts a failure (a fault may start a quarantine) and logs it, within
    /// the plugin's log rate: a failure quotes the guest (its panic message,
    /// its output), so it shares the bucket of the plugin's own lines.
    /// The outer timeout is the machine being overloaded, not the plugin
    /// misbehaving: counted, never a fault.
    pub(crate) fn failed(
        &self,
        stats: &PluginStats,
        plugin: &str,
        tenant: Option<String>,
        error: PluginError,
    ) -> Conversion {
        let limits = &self.config.limits;
        let outer =
            matches!(error, PluginError::Timeout { after } if after == limits.outer_timeout);
        let now = Instant::now();
        let q = stats.record_failure(
            error.kind(),
            error.is_fault() && !outer,
            &limits.quarantine,
            now,
        );
        if stats.allow_log_line(now, limits.log_lines_per_second, limits.log_burst) {
            tracing::warn!(plugin, tenant = tenant.as_deref().unwrap_or(""), kind = error.kind().as_str(), error = %error, "plugin conversion failed");
        }
        if let Some(backoff) = q {
            tracing::error!(plugin, ?backoff, "plugin quarantined after repeated faults");
        }
        Conversion::new(Some(plugin), tenant, Outcome::Failed(error))
    }
}
