//! The output caps the host holds a conversion to, checked in the guest so
//! that large but valid input becomes a typed rejection, not a plugin fault.

use crate::{ErrorKind, MessageEvent, Outcome, ReplyRoute};

// The host's default output caps, from the one crate host and SDK share.
pub use hermes_converter_abi::caps::{
    ELEMENT_OVERHEAD as OUTPUT_ELEMENT_OVERHEAD, MAX_EVENT_TEXT_BYTES, MAX_EVENTS,
    MAX_MEDIA as MAX_MEDIA_URLS, MAX_OUTPUT_BYTES,
};

/// The size of a conversion's events as the host measures it against
/// [`MAX_OUTPUT_BYTES`]: every string's bytes plus
/// [`OUTPUT_ELEMENT_OVERHEAD`] per string, per event, per media url and per
/// metadata pair.
pub fn output_size(events: &[MessageEvent]) -> usize {
    let mut size = hermes_converter_abi::OutputSize::default();
    for e in events {
        let src = &e.source;
        size.element();
        size.string(&e.text);
        for m in &e.media {
            size.element();
            size.string(&m.url);
            size.optional(m.content_type.as_deref());
        }
        size.string(&src.platform);
        size.string(&src.chat_id);
        for field in [
            &src.chat_name,
            &src.user_id,
            &src.user_name,
            &src.thread_id,
            &src.chat_topic,
            &src.user_id_alt,
            &src.chat_id_alt,
            &src.scope_id,
            &src.parent_chat_id,
            &src.message_id,
            &src.profile,
            &e.message_id,
            &e.reply_to_message_id,
        ] {
            size.optional(field.as_deref());
        }
        if let Some(p) = &e.prompt_response {
            size.string(&p.prompt_id);
            size.string(&p.option_id);
            size.optional(p.label.as_deref());
            size.optional(p.prompt_message_id.as_deref());
        }
        if let ReplyRoute::FollowUp(kind) = &e.reply_route {
            size.string(kind);
        }
    }
    size.0
}

/// The output caps a conversion must stay within: the host's active ones
/// (`host.limits`, which an operator may have lowered) inside a component,
/// the default ones natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// Events per conversion.
    pub max_events: usize,
    /// Bytes of `text` per event.
    pub max_event_text_bytes: usize,
    /// Bytes of all events, as [`output_size`] measures them.
    pub max_output_bytes: usize,
    /// Media items per event.
    pub max_media: usize,
}

impl OutputCaps {
    /// The host's defaults.
    pub const DEFAULT: Self = Self {
        max_events: MAX_EVENTS,
        max_event_text_bytes: MAX_EVENT_TEXT_BYTES,
        max_output_bytes: MAX_OUTPUT_BYTES,
        max_media: MAX_MEDIA_URLS,
    };

    /// The caps in force for this call.
    pub fn active() -> Self {
        #[cfg(target_arch = "wasm32")]
        return crate::guest::output_caps();
        #[cfg(not(target_arch = "wasm32"))]
        Self::DEFAULT
    }
}

/// `outcome`, or a typed [`ErrorKind::InvalidField`] rejection when its
/// events exceed the host's output caps ([`OutputCaps::active`]). Large but
/// valid input (a 1 MiB SMS body) can legitimately produce more text than
/// the host accepts; as a rejection it is bad input, whereas over-cap output
/// reaching the host is a plugin fault that counts toward quarantine. The
/// SDK's export glue applies this to every conversion (see
/// [`Converter::CHECK_OUTPUT_CAPS`]).
pub fn check_output_caps(outcome: Outcome) -> Outcome {
    check_output_caps_with(outcome, OutputCaps::active())
}

/// [`check_output_caps`] against given caps.
pub fn check_output_caps_with(outcome: Outcome, caps: OutputCaps) -> Outcome {
    let Outcome::Events(events) = &outcome else {
        return outcome;
    };
    let reject = |message: String| Outcome::error(ErrorKind::InvalidField, message);
    if events.len() > caps.max_events {
        return reject(format!(
            "{} events exceed the limit of {}",
            events.len(),
            caps.max_events
        ));
    }
    for e in events {
        if e.text.len() > caps.max_event_text_bytes {
            return reject(format!(
                "text exceeds {} bytes ({} bytes)",
                caps.max_event_text_bytes,
                e.text.len()
            ));
        }
        if e.media.len() > caps.max_media {
            return reject(format!(
                "{} media items exceed the limit of {}",
                e.media.len(),
                caps.max_media
            ));
        }
    }
    let size = output_size(events);
    if size > caps.max_output_bytes {
        return reject(format!(
            "the events exceed {} bytes ({size} bytes)",
            caps.max_output_bytes
        ));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatType, Media, Source};

    fn event(text: &str) -> MessageEvent {
        MessageEvent::new(text, Source::new("p", "c", ChatType::Dm), ReplyRoute::Send)
    }

    fn kind(outcome: &Outcome) -> Option<ErrorKind> {
        match outcome {
            Outcome::Error(e) => Some(e.kind),
            _ => None,
        }
    }

    #[test]
    fn text_over_the_cap_is_an_invalid_field_rejection() {
        let at_cap = Outcome::event(event(&"x".repeat(MAX_EVENT_TEXT_BYTES)));
        assert_eq!(
            check_output_caps(at_cap.clone()),
            at_cap,
            "exactly at the cap passes"
        );
        let over = check_output_caps(Outcome::event(event(&"x".repeat(MAX_EVENT_TEXT_BYTES + 1))));
        assert_eq!(kind(&over), Some(ErrorKind::InvalidField));
        let Outcome::Error(e) = over else {
            unreachable!()
        };
        assert!(e.message.starts_with("text exceeds"), "{}", e.message);
    }

    #[test]
    fn counts_and_total_size_are_capped() {
        let many = Outcome::Events((0..=MAX_EVENTS).map(|_| event("a")).collect());
        assert_eq!(
            kind(&check_output_caps(many)),
            Some(ErrorKind::InvalidField)
        );
        let mut media = event("m");
        media.media = vec![Media::url("u"); MAX_MEDIA_URLS + 1];
        assert_eq!(
            kind(&check_output_caps(Outcome::event(media))),
            Some(ErrorKind::InvalidField)
        );
        // Five events each under the text cap but together over the total.
        let big = Outcome::Events(
            (0..5)
                .map(|_| event(&"x".repeat(MAX_EVENT_TEXT_BYTES)))
                .collect(),
        );
        assert_eq!(kind(&check_output_caps(big)), Some(ErrorKind::InvalidField));
        let fine = Outcome::Events((0..MAX_EVENTS).map(|_| event("a")).collect());
        assert_eq!(check_output_caps(fine.clone()), fine);
    }

    #[test]
    fn lowered_caps_turn_output_into_a_rejection_not_a_fault() {
        let lowered = OutputCaps {
            max_event_text_bytes: 4,
            ..OutputCaps::DEFAULT
        };
        let outcome = Outcome::event(event("hello"));
        assert_eq!(
            check_output_caps(outcome.clone()),
            outcome,
            "fits the defaults"
        );
        assert_eq!(
            kind(&check_output_caps_with(outcome, lowered)),
            Some(ErrorKind::InvalidField)
        );
    }

    #[test]
    fn output_size_charges_overhead_per_item() {
        let e = event("abc");
        // event + text + platform + chat_id
        let base = 4 * OUTPUT_ELEMENT_OVERHEAD + 3 + 1 + 1;
        assert_eq!(output_size(std::slice::from_ref(&e)), base);
        let mut with_url = e;
        with_url.media.push(Media::url("uu"));
        assert_eq!(
            output_size(std::slice::from_ref(&with_url)),
            base + 2 * OUTPUT_ELEMENT_OVERHEAD + 2
        );
        with_url.media[0].content_type = Some("image/png".to_owned());
        assert_eq!(
            output_size(&[with_url]),
            base + 3 * OUTPUT_ELEMENT_OVERHEAD + 2 + 9
        );
    }
}
