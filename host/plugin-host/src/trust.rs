//! The converter trust boundary (conversion.md §3.1): what a plugin's
//! output may claim, checked on every outcome before anything reaches a
//! session.
//!
//! A converter is trusted to turn **its own** forwards into events. So an
//! event may name only a platform the forward's platform may produce, only
//! the forward's profile, and a `follow-up` reply route only with a
//! capability kind granted to the forward's platform. Everything else —
//! a Discord session claimed by an `acme` converter, a Twilio number
//! texted from a Slack forward, a `/stop` aimed at another platform's
//! session — is a fault of the plugin ([`PluginError::Overreach`]), typed,
//! counted and never delivered. Because the check runs before the session
//! layer sees an event, scope and author memory, interrupts and `/stop`
//! only ever act on what passed it.
//!
//! The defaults are the relay's platform families; an operator widens them
//! per platform or per route with `grant_platforms` / `grant_follow_up` in
//! the policy ([`Grant`]).
//!
//! [`PluginError::Overreach`]: crate::PluginError::Overreach

use crate::outcome::{ConvertedEvent, ReplyRoute};
use crate::policy::Grant;

/// The source platforms a forward of `platform` may produce by default.
pub fn default_platforms(platform: &str) -> &'static [&'static str] {
    match platform {
        "discord" => &["discord"],
        "twilio" => &["sms", "whatsapp", "voice"],
        "slack" => &["slack"],
        _ => &[],
    }
}

/// The `follow-up` kinds a forward of `platform` may use by default.
pub fn default_follow_up(platform: &str) -> &'static [&'static str] {
    match platform {
        "discord" => &["discord.interaction_token"],
        "slack" => &["slack.response_url"],
        _ => &[],
    }
}

/// Whether a forward of `forward_platform` may produce an event of
/// `event_platform` under `grant`.
fn platform_allowed(forward_platform: &str, event_platform: &str, grant: &Grant) -> bool {
    let defaults = default_platforms(forward_platform);
    if defaults.is_empty() {
        // Any other platform `P` produces `P` only.
        if event_platform == forward_platform {
            return true;
        }
    } else if defaults.contains(&event_platform) {
        return true;
    }
    grant.platforms.iter().any(|p| p == event_platform)
}

fn follow_up_allowed(forward_platform: &str, kind: &str, grant: &Grant) -> bool {
    default_follow_up(forward_platform).contains(&kind) || grant.follow_up.iter().any(|k| k == kind)
}

/// Checks every event of one outcome against the forward it came from.
/// The first violation rejects the whole outcome (a partial event list is
/// never delivered), with a message naming the event and what it claimed.
pub fn check(
    forward_platform: &str,
    forward_profile: Option<&str>,
    grant: &Grant,
    events: &[ConvertedEvent],
) -> Result<(), String> {
    for (i, e) in events.iter().enumerate() {
        let claimed = e.event.source.platform.as_str();
        if !platform_allowed(forward_platform, claimed, grant) {
            return Err(format!(
                "event {i} claims platform {claimed:?}, which a `{forward_platform}` forward may not produce"
            ));
        }
        if let Some(profile) = e.event.source.profile.as_deref()
            && Some(profile) != forward_profile
        {
            return Err(format!(
                "event {i} claims profile {profile:?}, the forward's is {forward_profile:?}"
            ));
        }
        if let ReplyRoute::FollowUp { kind } = &e.reply_route
            && !follow_up_allowed(forward_platform, kind, grant)
        {
            return Err(format!(
                "event {i} asks for follow-up kind {kind:?}, which is not granted to `{forward_platform}` forwards"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hermes_protocol::event::{MessageEvent, SessionSource};

    use super::*;

    fn event(platform: &str, route: ReplyRoute) -> ConvertedEvent {
        let source = SessionSource {
            platform: platform.to_owned(),
            chat_id: "c".to_owned(),
            ..SessionSource::default()
        };
        ConvertedEvent {
            event: MessageEvent {
                source,
                ..MessageEvent::default()
            },
            reply_route: route,
            media_types: Vec::new(),
            metadata: Vec::new(),
        }
    }

    fn follow_up(kind: &str) -> ReplyRoute {
        ReplyRoute::FollowUp {
            kind: kind.to_owned(),
        }
    }

    #[test]
    fn platforms_stay_in_their_family() {
        let none = Grant::default();
        let ok = |fwd: &str, ev: &str| check(fwd, None, &none, &[event(ev, ReplyRoute::Send)]);
        assert!(ok("discord", "discord").is_ok());
        for ev in ["sms", "whatsapp", "voice"] {
            assert!(ok("twilio", ev).is_ok(), "twilio → {ev}");
        }
        assert!(ok("slack", "slack").is_ok());
        assert!(
            ok("acme", "acme").is_ok(),
            "any other platform produces itself"
        );
        for (fwd, ev) in [
            ("acme", "discord"),
            ("acme", "sms"),
            ("twilio", "twilio"),
            ("twilio", "discord"),
            ("slack", "discord"),
            ("discord", "slack"),
        ] {
            let err = ok(fwd, ev).expect_err("another family");
            assert!(err.contains(ev) && err.contains(fwd), "{err}");
        }
        let granted = Grant {
            platforms: vec!["discord".to_owned()],
            follow_up: Vec::new(),
        };
        assert!(
            check(
                "acme",
                None,
                &granted,
                &[event("discord", ReplyRoute::Send)]
            )
            .is_ok()
        );
    }

    #[test]
    fn follow_up_kinds_need_a_grant() {
        let none = Grant::default();
        let discord = event("discord", follow_up("discord.interaction_token"));
        assert!(check("discord", None, &none, std::slice::from_ref(&discord)).is_ok());
        let slack = event("slack", follow_up("slack.response_url"));
        assert!(check("slack", None, &none, std::slice::from_ref(&slack)).is_ok());
        let stolen = event("acme", follow_up("discord.interaction_token"));
        let err = check("acme", None, &none, std::slice::from_ref(&stolen)).expect_err("no grant");
        assert!(err.contains("discord.interaction_token"), "{err}");
        assert!(
            check(
                "slack",
                None,
                &none,
                &[event("slack", follow_up("discord.interaction_token"))]
            )
            .is_err()
        );
        let granted = Grant {
            platforms: Vec::new(),
            follow_up: vec!["discord.interaction_token".to_owned()],
        };
        assert!(check("acme", None, &granted, &[stolen]).is_ok());
    }

    #[test]
    fn profile_must_be_the_forwards_and_one_bad_event_rejects_all() {
        let none = Grant::default();
        let mut e = event("discord", ReplyRoute::Send);
        e.event.source.profile = Some("coder".to_owned());
        assert!(check("discord", Some("coder"), &none, std::slice::from_ref(&e)).is_ok());
        assert!(check("discord", None, &none, std::slice::from_ref(&e)).is_err());
        assert!(check("discord", Some("other"), &none, std::slice::from_ref(&e)).is_err());
        let good = event("discord", ReplyRoute::Send);
        let bad = event("discord", follow_up("slack.response_url"));
        let err = check("discord", None, &none, &[good, bad]).expect_err("second is bad");
        assert!(err.starts_with("event 1"), "{err}");
    }
}
