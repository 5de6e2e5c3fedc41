//! Canary: a stable share of a route's conversations served by the
//! candidate for real, rolled back when it faults more than the active one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::Experiment;
use crate::convert::Step;
use crate::outcome::{Conversion, Outcome};
use crate::table::Resolved;
use crate::{PluginHost, bindings};

impl PluginHost {
    pub(super) async fn canary(
        &self,
        request: &Arc<bindings::Request>,
        active: Conversion,
        experiment: Experiment,
        target: Resolved,
        (percent, window, margin): (u8, usize, f64),
    ) -> Conversion {
        let exps = &self.inner.experiments;
        let active_fault = matches!(&active.outcome, Outcome::Failed(e) if e.is_fault());
        exps.with(&experiment, "canary", |s| {
            push(&mut s.active_window, active_fault, window)
        });
        if exps.rolled_back(&experiment) {
            return active;
        }
        // Stickiness: the conversation's session key decides, so every
        // message of one conversation goes the same way.
        let Outcome::Events(events) = &active.outcome else {
            return active;
        };
        let Some(first) = events.first() else {
            return active;
        };
        let key = hermes_protocol::session::session_key(
            &first.event.source,
            request.profile(),
            &hermes_protocol::session::SessionKeySettings::default(),
        );
        if bucket(key.as_str()) >= u32::from(percent) {
            return active;
        }
        // On the live path the candidate is held to what the active plugin
        // is: its quarantine, its share of the conversion slots, the outer
        // timeout.
        let plugin = &experiment.candidate;
        let tenant = active.tenant.clone();
        let probe_every = self.inner.config.limits.quarantine.probe_every;
        let candidate = if let Err(remaining) = plugin.stats.admit(Instant::now(), probe_every) {
            let e = crate::PluginError::Quarantined { remaining };
            self.inner.failed(&plugin.stats, &plugin.name, tenant, e)
        } else {
            let step = self
                .admitted(plugin, tenant.clone(), async {
                    Step::Done(
                        self.convert_candidate(request, &experiment, &target, tenant)
                            .await,
                    )
                })
                .await;
            match step {
                Step::Done(conversion) => conversion,
                Step::Routed { .. } => return active,
            }
        };
        let fault = matches!(&candidate.outcome, Outcome::Failed(_));
        let rolled = exps.with(&experiment, "canary", |s| {
            push(&mut s.candidate_window, fault, window);
            if fault {
                s.report.candidate_faulted += 1;
            } else {
                s.report.served += 1;
            }
            let rate = |w: &VecDeque<bool>| {
                w.iter().filter(|f| **f).count() as f64 / w.len().max(1) as f64
            };
            let (theirs, ours) = (rate(&s.candidate_window), rate(&s.active_window));
            let judged = s.candidate_window.len() >= window.min(10);
            if judged && theirs - ours > margin && s.report.rolled_back.is_none() {
                let why = format!(
                    "fault rate {:.0}% over its last {} conversions, {:.0}% for the active plugin (margin {:.0}%)",
                    theirs * 100.0,
                    s.candidate_window.len(),
                    ours * 100.0,
                    margin * 100.0
                );
                s.report.rolled_back = Some(why.clone());
                Some(why)
            } else {
                None
            }
        });
        if let Some(why) = rolled {
            tracing::warn!(route = %experiment.label, candidate = %experiment.candidate.name, "canary rolled back: {why}");
            crate::HostCounts::bump(&self.inner.counts.canary_rollbacks);
        }
        if fault { active } else { candidate }
    }
}

/// Keeps the last `window` outcomes.
fn push(w: &mut VecDeque<bool>, fault: bool, window: usize) {
    w.push_back(fault);
    while w.len() > window {
        w.pop_front();
    }
}

/// A stable 0..100 bucket of a session key (FNV-1a).
fn bucket(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % 100
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(
            bucket("agent:main:discord:dm:1"),
            bucket("agent:main:discord:dm:1")
        );
        let spread: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| bucket(&format!("agent:main:sms:dm:+1555{i}")) / 10)
            .collect();
        assert!(spread.len() >= 8, "{spread:?}");
    }
}
