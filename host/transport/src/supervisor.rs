//! The reconnect supervisor: one task per link that dials, serves, and
//! decides what happens after each connection ends (relay-contract §6.2,
//! §7.2).

use std::sync::Arc;

use hermes_protocol::action::ActionResult;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::connection::{self, Control, Ended};
use crate::inbound::InboundQueue;
use crate::shared::Shared;
use crate::state::LinkState;

/// Close code a connector uses for a missing, invalid, expired or revoked
/// token.
pub(crate) const CLOSE_UNAUTHORIZED: u16 = 4401;

/// How a connection ended, reduced to what the redial rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndKind {
    /// No WebSocket came up (refused, timed out, TLS, HTTP error).
    DialFailed,
    /// Closed with 4401.
    Unauthorized {
        after_descriptor: bool,
        expired: bool,
    },
    /// Anything else after the upgrade.
    Other,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Immediate,
    Backoff,
    Revoked,
}

/// The 4401 rules of §6.2 as a small state machine.
#[derive(Debug, Default)]
pub(crate) struct RedialRules {
    /// A post-handshake 4401 was seen; the next connection is the one fresh
    /// try. Another (non-`expired`) 4401 on it means revoked.
    provisional: bool,
    /// Immediate re-dials in a row. Capped so a connector that answers every
    /// fresh token with `expired` (clock skew) cannot make us spin.
    immediate_streak: u32,
}

/// At most this many immediate re-dials in a row before the ladder applies.
const MAX_IMMEDIATE: u32 = 2;

impl RedialRules {
    /// A connection completed its handshake and then served for a stable
    /// while (the backoff's `stable_after`). If it was the fresh try after a
    /// post-handshake 4401, that try succeeded: the suspicion is cleared, so
    /// a 4401 hours later gets its own fresh retry instead of latching
    /// revoked. A 4401 soon after the fresh handshake still latches (§6.2).
    /// A stable connection also ends any streak of immediate re-dials.
    pub(crate) fn on_stable_connection(&mut self) {
        self.provisional = false;
        self.immediate_streak = 0;
    }

    pub(crate) fn on_end(&mut self, end: EndKind) -> Next {
        let next = match end {
            EndKind::Unauthorized { expired: true, .. } => Next::Immediate,
            EndKind::Unauthorized { .. } if self.provisional => return Next::Revoked,
            EndKind::Unauthorized {
                after_descriptor: true,
                ..
            } => {
                self.provisional = true;
                Next::Immediate
            }
            // Before any descriptor: a cold-start race (not provisioned yet).
            EndKind::Unauthorized {
                after_descriptor: false,
                ..
            } => Next::Backoff,
            EndKind::Other => {
                self.provisional = false;
                Next::Backoff
            }
            // The fresh try has not happened yet; keep waiting for it.
            EndKind::DialFailed => Next::Backoff,
        };
        if next == Next::Immediate && self.immediate_streak < MAX_IMMEDIATE {
            self.immediate_streak += 1;
            Next::Immediate
        } else {
            self.immediate_streak = 0;
            Next::Backoff
        }
    }
}

/// Run the link until it is closed, revoked or abandoned.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    mut control: mpsc::Receiver<Control>,
    inbound: Arc<InboundQueue>,
) {
    let tls = match crate::tls::client_config(shared.config.accept_invalid_certs) {
        Ok(tls) => Some(tls),
        Err(e) => {
            error!(error = %e, "relay TLS configuration failed; wss:// dials will fail");
            None
        }
    };
    if shared.config.credentials().is_none() {
        warn!("relay link is unauthenticated (allowed for local development only)");
    }
    let mut backoff = Backoff::new(shared.config.backoff.clone());
    let mut rules = RedialRules::default();
    let done = loop {
        shared.set_state(LinkState::Connecting);
        let ended = connection::run(&shared, tls.as_ref(), &inbound, &mut control).await;
        let kind = match ended {
            Ended::Shutdown(done) => break done,
            Ended::ConsumerGone => break None,
            Ended::DialFailed(detail) => {
                warn!(%detail, "relay dial failed");
                shared.counters.disconnect("dial_failed");
                EndKind::DialFailed
            }
            Ended::Closed {
                handshaken,
                lived,
                peer_close,
                detail,
            } => {
                warn!(%detail, ?lived, "relay connection ended");
                if handshaken && lived >= backoff.stable_after() {
                    backoff.reset();
                    rules.on_stable_connection();
                }
                let reason = match &peer_close {
                    Some((CLOSE_UNAUTHORIZED, _)) => "unauthorized",
                    Some(_) => "peer_closed",
                    None => "lost",
                };
                shared.counters.disconnect(reason);
                match peer_close {
                    Some((CLOSE_UNAUTHORIZED, reason)) => EndKind::Unauthorized {
                        after_descriptor: handshaken,
                        expired: reason == "expired",
                    },
                    _ => EndKind::Other,
                }
            }
        };
        match rules.on_end(kind) {
            Next::Immediate => info!("relay re-dialling at once with a fresh token"),
            Next::Revoked => {
                error!("relay credentials revoked (4401 twice); the relay is disabled");
                shared.set_state(LinkState::Revoked);
                // Pending calls were settled at teardown; future calls see no
                // slot and fail fast. Wait only for shutdown.
                let done = control.recv().await.map(|Control::Close { done }| done);
                finish(done);
                return;
            }
            Next::Backoff => {
                let (attempt, delay) = backoff.next_delay(rand::random::<f64>());
                shared.set_state(LinkState::BackingOff { attempt, delay });
                tokio::select! {
                    biased;
                    ctl = control.recv() => break ctl.map(|Control::Close { done }| done),
                    () = tokio::time::sleep(delay) => {}
                    () = inbound.closed() => break None,
                }
            }
        }
    };
    shared.clear_connection();
    shared.settle_all(ActionResult::connection_lost);
    shared.set_state(LinkState::Closed);
    finish(done);
}

fn finish(done: Option<oneshot::Sender<()>>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLD: EndKind = EndKind::Unauthorized {
        after_descriptor: false,
        expired: false,
    };
    const AFTER: EndKind = EndKind::Unauthorized {
        after_descriptor: true,
        expired: false,
    };
    const EXPIRED: EndKind = EndKind::Unauthorized {
        after_descriptor: true,
        expired: true,
    };

    #[test]
    fn cold_start_4401_retries_with_backoff_forever() {
        let mut rules = RedialRules::default();
        for _ in 0..5 {
            assert_eq!(rules.on_end(COLD), Next::Backoff);
        }
    }

    #[test]
    fn expired_redials_at_once_and_is_never_a_revocation() {
        let mut rules = RedialRules::default();
        assert_eq!(rules.on_end(EXPIRED), Next::Immediate);
        assert_eq!(rules.on_end(EndKind::Other), Next::Backoff);
        assert_eq!(rules.on_end(EXPIRED), Next::Immediate);
    }

    #[test]
    fn second_4401_on_the_fresh_connection_latches_revoked() {
        let mut rules = RedialRules::default();
        assert_eq!(rules.on_end(AFTER), Next::Immediate);
        assert_eq!(rules.on_end(COLD), Next::Revoked);
    }

    #[test]
    fn a_clean_end_on_the_fresh_connection_clears_the_suspicion() {
        let mut rules = RedialRules::default();
        assert_eq!(rules.on_end(AFTER), Next::Immediate);
        assert_eq!(rules.on_end(EndKind::Other), Next::Backoff);
        assert_eq!(rules.on_end(AFTER), Next::Immediate);
    }

    #[test]
    fn a_fresh_connection_that_served_stably_gets_its_own_retry_later() {
        let mut rules = RedialRules::default();
        assert_eq!(rules.on_end(AFTER), Next::Immediate);
        // The fresh connection handshook and ran for hours, then 4401.
        rules.on_stable_connection();
        assert_eq!(
            rules.on_end(AFTER),
            Next::Immediate,
            "a 4401 long after the fresh try succeeded is a new first 4401"
        );
        assert_eq!(rules.on_end(COLD), Next::Revoked);
    }

    #[test]
    fn dial_failures_do_not_spend_the_fresh_try() {
        let mut rules = RedialRules::default();
        assert_eq!(rules.on_end(AFTER), Next::Immediate);
        assert_eq!(rules.on_end(EndKind::DialFailed), Next::Backoff);
        assert_eq!(rules.on_end(AFTER), Next::Revoked);
    }

    #[test]
    fn endless_expired_falls_back_to_the_ladder() {
        let mut rules = RedialRules::default();
        assert_eq!(rules.on_end(EXPIRED), Next::Immediate);
        assert_eq!(rules.on_end(EXPIRED), Next::Immediate);
        assert_eq!(rules.on_end(EXPIRED), Next::Backoff);
        assert_eq!(rules.on_end(EXPIRED), Next::Immediate);
    }
}
