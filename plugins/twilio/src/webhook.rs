//! Twilio Messaging and Voice webhooks.

use hermes_converter_sdk::form::{self, Form};
use hermes_converter_sdk::{
    ChatType, ConvertError, ErrorKind, Media, MessageEvent, Outcome, ReplyRoute, Request, Source,
};

/// The media type Twilio posts.
pub const FORM: &str = "application/x-www-form-urlencoded";

const WHATSAPP_PREFIX: &str = "whatsapp:";

/// Convert one webhook request.
pub fn convert(req: &Request) -> Result<Outcome, ConvertError> {
    req.body_text(FORM)?;
    let form = form::parse(&req.body)?;

    // A delivery report for a message we sent, posted to the same URL.
    let status = form.get("SmsStatus").is_some_and(|s| s != "received");
    if form.contains_key("MessageStatus") || status {
        return Ok(Outcome::ignored("status_callback"));
    }
    let voice = form.contains_key("CallSid") && !form.contains_key("MessageSid");
    let sid_key = if voice { "CallSid" } else { "MessageSid" };
    let (sid, from, to) = match (
        required(&form, sid_key),
        required(&form, "From"),
        required(&form, "To"),
    ) {
        (Ok(sid), Ok(from), Ok(to)) => (sid, from, to),
        (a, b, c) => {
            return Err(
                ConvertError::earliest([a.err(), b.err(), c.err()].into_iter().flatten())
                    .unwrap_or_else(|| ConvertError::new(ErrorKind::MissingField, "missing field")),
            );
        }
    };
    let (user, whatsapp) = match from.strip_prefix(WHATSAPP_PREFIX) {
        Some(number) => (number, true),
        None => (from, false),
    };
    let scope = to.strip_prefix(WHATSAPP_PREFIX).unwrap_or(to);

    let mut media = Vec::new();
    let text = if voice {
        let speech = form.get("SpeechResult").filter(|s| !s.is_empty());
        let digits = form.get("Digits").filter(|d| !d.is_empty());
        match speech.or(digits) {
            Some(text) => text,
            None => return Ok(Outcome::ignored("call_start")),
        }
    } else {
        media = media_of(&form)?;
        form.get("ButtonPayload")
            .or_else(|| form.get("Body"))
            .unwrap_or("")
    };

    let platform = if voice {
        "voice"
    } else if whatsapp {
        "whatsapp"
    } else {
        "sms"
    };
    let message_id = Some(sid.to_owned());
    let source = Source {
        platform: platform.to_owned(),
        chat_id: user.to_owned(),
        chat_type: ChatType::Dm,
        user_id: Some(user.to_owned()),
        user_name: if whatsapp {
            form.get("ProfileName").map(str::to_owned)
        } else {
            None
        },
        scope_id: Some(scope.to_owned()),
        message_id: message_id.clone(),
        ..Source::default()
    };
    let mut event = MessageEvent::new(text, source, ReplyRoute::Send);
    event.message_id = message_id;
    event.media = media;
    Ok(Outcome::event(event))
}

/// The tenant key: the receiving number, without `whatsapp:`.
pub fn tenant_of(req: &Request) -> Option<String> {
    let form = form::parse(&req.body).ok()?;
    let to = form.get("To")?;
    Some(to.strip_prefix(WHATSAPP_PREFIX).unwrap_or(to).to_owned())
}

fn required<'f>(form: &'f Form<'_>, key: &str) -> Result<&'f str, ConvertError> {
    form.get(key)
        .ok_or_else(|| ConvertError::new(ErrorKind::MissingField, format!("missing field `{key}`")))
}

/// `MediaUrl0 … MediaUrl{NumMedia-1}` in index order, whatever order the
/// fields arrived in, each with its `MediaContentType<N>` when present.
fn media_of(form: &Form<'_>) -> Result<Vec<Media>, ConvertError> {
    let count = match form.get("NumMedia") {
        None | Some("") => 0,
        Some(n) => n.parse::<usize>().map_err(|_| {
            ConvertError::new(
                ErrorKind::InvalidField,
                "field `NumMedia` must be a non-negative integer",
            )
        })?,
    };
    // Each index must have its field, so the loop cannot run longer than
    // the form is; a huge NumMedia fails at the first absent index.
    let mut media = Vec::new();
    for i in 0..count {
        let url = required(form, &format!("MediaUrl{i}"))?;
        media.push(Media {
            url: url.to_owned(),
            content_type: form.get(&format!("MediaContentType{i}")).map(str::to_owned),
        });
    }
    Ok(media)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn request(body: &str) -> Request {
        Request {
            platform: "twilio".into(),
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn event(body: &str) -> MessageEvent {
        match convert(&request(body)).unwrap() {
            Outcome::Events(mut events) if events.len() == 1 => events.remove(0),
            other => panic!("expected one event, got {other:?}"),
        }
    }

    fn error_kind(body: &str) -> Option<ErrorKind> {
        convert(&request(body)).err().map(|e| e.kind)
    }

    #[test]
    fn media_follow_the_index_not_the_arrival_order() {
        let e = event(
            "MessageSid=MM1&From=%2B1&To=%2B2&NumMedia=2&MediaUrl1=https%3A%2F%2Fb&MediaUrl0=https%3A%2F%2Fa&MediaContentType1=image%2Fpng",
        );
        let urls: Vec<&str> = e.media.iter().map(|m| m.url.as_str()).collect();
        assert_eq!(urls, ["https://a", "https://b"]);
        assert_eq!(e.text, "");
        let types: Vec<Option<&str>> = e.media.iter().map(|m| m.content_type.as_deref()).collect();
        assert_eq!(types, [None, Some("image/png")]);
    }

    #[test]
    fn media_faults() {
        assert_eq!(
            error_kind("MessageSid=M&From=a&To=b&NumMedia=2&MediaUrl0=x"),
            Some(ErrorKind::MissingField)
        );
        assert_eq!(
            error_kind("MessageSid=M&From=a&To=b&NumMedia=99999999999999999999"),
            Some(ErrorKind::InvalidField)
        );
        assert_eq!(
            error_kind("MessageSid=M&From=a&To=b&NumMedia=-1"),
            Some(ErrorKind::InvalidField)
        );
    }

    #[test]
    fn voice_falls_back_from_speech_to_digits() {
        assert_eq!(
            event("CallSid=CA1&From=%2B1&To=%2B2&SpeechResult=&Digits=007").text,
            "007"
        );
        let e = event("CallSid=CA1&From=%2B1&To=%2B2&SpeechResult=hi&Digits=1");
        assert_eq!(
            (e.text.as_str(), e.source.platform.as_str()),
            ("hi", "voice")
        );
        assert_eq!(
            convert(&request("CallSid=CA1&From=a&To=b&Digits=")).unwrap(),
            Outcome::ignored("call_start")
        );
        assert_eq!(
            error_kind("CallSid=CA1&To=b&Digits=1"),
            Some(ErrorKind::MissingField)
        );
    }

    #[test]
    fn received_status_is_a_message() {
        assert_eq!(
            event("SmsStatus=received&MessageSid=S&From=a&To=b&Body=x").text,
            "x"
        );
        assert_eq!(
            convert(&request("SmsStatus=sent&MessageSid=S&From=a&To=b")).unwrap(),
            Outcome::ignored("status_callback")
        );
    }

    #[test]
    fn tenant_is_the_receiving_number() {
        assert_eq!(
            tenant_of(&request("To=whatsapp%3A%2B14155550188&From=x")),
            Some("+14155550188".into())
        );
        assert_eq!(tenant_of(&request("From=x")), None);
    }

    #[test]
    fn envelope_errors_come_first() {
        let mut req = request("a=%FF");
        req.headers = vec![("content-type".into(), "application/json".into())];
        assert_eq!(
            convert(&req).err().map(|e| e.kind),
            Some(ErrorKind::UnsupportedContentType)
        );
        assert_eq!(error_kind(""), Some(ErrorKind::EmptyBody));
    }
}
