//! Every frame of relay-contract §3, in both directions.
//!
//! [`GatewayFrame`] is what the gateway sends, [`ConnectorFrame`] what the
//! connector sends. Both implement [`WireFrame`] (encode *and* decode) so the
//! gateway and the stub connector share one definition of the wire.
//!
//! Decoding parses each line exactly once into a JSON object, dispatches on
//! its `type`, and moves the fields out of it. An unknown `type` is not an
//! error: it decodes to an `Unknown` variant the caller counts and ignores.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::action::{Action, ActionResult, RequestId};
use crate::decoder::{DecodeError, DecodeLimits};
use crate::descriptor::{Descriptor, DescriptorError};
use crate::event::MessageEvent;
use crate::forward::{ForwardError, PassthroughForward};
use crate::json::{self, WrongType};

/// A frame type that can be written to and read from one JSON line.
pub trait WireFrame: Sized {
    /// Decode one line (without its `\n`) under the default
    /// [`DecodeLimits`].
    fn decode_line(line: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_line_with(line, &DecodeLimits::default())
    }
    /// Decode one line (without its `\n`) under `limits`.
    fn decode_line_with(line: &[u8], limits: &DecodeLimits) -> Result<Self, DecodeError>;
    /// Encode as compact JSON followed by `\n`.
    fn encode(&self) -> String;
    /// The frame's wire `type`.
    fn frame_type(&self) -> &str;
}

/// One entry of the optional Discord `command_manifest` on `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CommandSpec {
    /// Command name.
    pub name: String,
    /// Command description.
    pub description: String,
    /// Platform-specific option list, passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

/// Gateway → connector (§3.1).
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayFrame {
    /// Announce a fronted identity; first frame(s) after the socket opens.
    Hello {
        /// Platform (default identity: `relay`).
        platform: String,
        /// Bot id (`botId`; default identity: `""`).
        bot_id: String,
        /// Optional Discord command manifest.
        command_manifest: Option<Vec<CommandSpec>>,
    },
    /// A request/response action (§4).
    Outbound {
        /// Correlation id (`requestId`).
        request_id: RequestId,
        /// The action.
        action: Action,
        /// Envelope platform, only for a known concrete platform.
        platform: Option<String>,
        /// Envelope `botId`, only for a known concrete platform.
        bot_id: Option<String>,
    },
    /// Fire-and-forget `/stop` egress.
    Interrupt {
        /// Session to stop.
        session_key: String,
        /// Why; the key is always written (null allowed).
        reason: Option<String>,
    },
    /// Durable receipt of a buffered delivery.
    InboundAck {
        /// The acked `bufferId`.
        buffer_id: String,
    },
    /// Ask the connector to buffer for this instance.
    GoingIdle,
    /// A frame whose `type` this version does not know (counted, ignored).
    Unknown {
        /// The unknown `type`.
        frame_type: String,
    },
}

/// Connector → gateway (§3.2).
// The variants differ in size (an inbound event is a few hundred bytes), but
// a frame is decoded, moved once into its consumer and dropped: boxing would
// cost an allocation per frame for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorFrame {
    /// The connector's capabilities; the first completes the handshake.
    Descriptor(Descriptor),
    /// An inbound message.
    Inbound {
        /// The message.
        event: MessageEvent,
        /// Present when replayed from the connector's buffer: ack it.
        buffer_id: Option<String>,
    },
    /// Result of an outbound action.
    OutboundResult {
        /// The request being answered.
        request_id: RequestId,
        /// The answer.
        result: ActionResult,
    },
    /// Cancel exactly that session's running turn.
    InterruptInbound {
        /// Session to cancel.
        session_key: String,
        /// Chat whose typing indicator to clear.
        chat_id: String,
    },
    /// A sanitized webhook request to convert.
    PassthroughForward {
        /// The request.
        forward: PassthroughForward,
        /// Present when replayed from the connector's buffer: ack it.
        buffer_id: Option<String>,
    },
    /// Completes a pending `going_idle`.
    GoingIdleAck,
    /// A frame whose `type` this version does not know (counted, ignored).
    Unknown {
        /// The unknown `type`.
        frame_type: String,
    },
}

/// Parse a line into its top-level object and `type`, the first step shared
/// by both directions.
fn parse_object(line: &[u8]) -> Result<(String, Map<String, Value>), DecodeError> {
    // Checked separately so invalid UTF-8 gets its own error kind (a binary
    // WebSocket message is treated as UTF-8 text, §2).
    let text = std::str::from_utf8(line).map_err(|_| DecodeError::InvalidUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson {
        line: e.line(),
        column: e.column(),
    })?;
    let Value::Object(mut map) = value else {
        return Err(DecodeError::NotAnObject);
    };
    match map.remove("type") {
        Some(Value::String(t)) => Ok((t, map)),
        _ => Err(DecodeError::MissingType),
    }
}

/// Context for building field errors of one frame.
struct Ctx<'a> {
    frame_type: &'a str,
    buffer_id: Option<&'a str>,
}

impl Ctx<'_> {
    fn bad(&self, field: impl Into<String>) -> DecodeError {
        DecodeError::BadField {
            frame_type: self.frame_type.to_owned(),
            field: field.into(),
            buffer_id: self.buffer_id.map(str::to_owned),
        }
    }

    fn wrong(&self, e: WrongType) -> DecodeError {
        self.bad(e.0)
    }
}

impl WireFrame for GatewayFrame {
    // Nothing the gateway sends carries a body to bound.
    fn decode_line_with(line: &[u8], _limits: &DecodeLimits) -> Result<Self, DecodeError> {
        let (frame_type, mut m) = parse_object(line)?;
        let ctx = Ctx {
            frame_type: &frame_type,
            buffer_id: None,
        };
        let frame = match frame_type.as_str() {
            "hello" => {
                let platform = json::req_str(&mut m, "platform").map_err(|e| ctx.wrong(e))?;
                let bot_id = json::opt_str_strict(&mut m, "botId")
                    .map_err(|e| ctx.wrong(e))?
                    .unwrap_or_default();
                let command_manifest = match m.remove("command_manifest") {
                    None | Some(Value::Null) => None,
                    Some(v) => {
                        Some(serde_json::from_value(v).map_err(|_| ctx.bad("command_manifest"))?)
                    }
                };
                GatewayFrame::Hello {
                    platform,
                    bot_id,
                    command_manifest,
                }
            }
            "outbound" => {
                let request_id = RequestId::from_wire(
                    json::req_str(&mut m, "requestId").map_err(|e| ctx.wrong(e))?,
                );
                let action = match m.remove("action") {
                    Some(v @ Value::Object(_)) => {
                        serde_json::from_value(v).map_err(|_| ctx.bad("action"))?
                    }
                    _ => return Err(ctx.bad("action")),
                };
                let platform =
                    json::opt_str_strict(&mut m, "platform").map_err(|e| ctx.wrong(e))?;
                let bot_id = json::opt_str_strict(&mut m, "botId").map_err(|e| ctx.wrong(e))?;
                GatewayFrame::Outbound {
                    request_id,
                    action,
                    platform,
                    bot_id,
                }
            }
            "interrupt" => GatewayFrame::Interrupt {
                session_key: json::req_str(&mut m, "session_key").map_err(|e| ctx.wrong(e))?,
                reason: json::opt_str_strict(&mut m, "reason").map_err(|e| ctx.wrong(e))?,
            },
            "inbound_ack" => GatewayFrame::InboundAck {
                buffer_id: json::req_str(&mut m, "bufferId").map_err(|e| ctx.wrong(e))?,
            },
            "going_idle" => GatewayFrame::GoingIdle,
            _ => GatewayFrame::Unknown { frame_type },
        };
        Ok(frame)
    }

    fn encode(&self) -> String {
        let fallback = format!("{{\"type\":\"{}\"}}", self.frame_type());
        match self {
            GatewayFrame::Hello {
                platform,
                bot_id,
                command_manifest,
            } => json::to_line(
                &HelloOut {
                    kind: "hello",
                    platform,
                    bot_id,
                    command_manifest: command_manifest.as_deref(),
                },
                &fallback,
            ),
            GatewayFrame::Outbound {
                request_id,
                action,
                platform,
                bot_id,
            } => json::to_line(
                &OutboundOut {
                    kind: "outbound",
                    request_id,
                    action,
                    platform: platform.as_deref(),
                    bot_id: bot_id.as_deref(),
                },
                &fallback,
            ),
            GatewayFrame::Interrupt {
                session_key,
                reason,
            } => json::to_line(
                &InterruptOut {
                    kind: "interrupt",
                    session_key,
                    reason: reason.as_deref(),
                },
                &fallback,
            ),
            GatewayFrame::InboundAck { buffer_id } => json::to_line(
                &AckOut {
                    kind: "inbound_ack",
                    buffer_id,
                },
                &fallback,
            ),
            GatewayFrame::GoingIdle | GatewayFrame::Unknown { .. } => json::to_line(
                &TypeOnly {
                    kind: self.frame_type(),
                },
                &fallback,
            ),
        }
    }

    fn frame_type(&self) -> &str {
        match self {
            GatewayFrame::Hello { .. } => "hello",
            GatewayFrame::Outbound { .. } => "outbound",
            GatewayFrame::Interrupt { .. } => "interrupt",
            GatewayFrame::InboundAck { .. } => "inbound_ack",
            GatewayFrame::GoingIdle => "going_idle",
            GatewayFrame::Unknown { frame_type } => frame_type,
        }
    }
}

impl WireFrame for ConnectorFrame {
    fn decode_line_with(line: &[u8], limits: &DecodeLimits) -> Result<Self, DecodeError> {
        let (frame_type, mut m) = parse_object(line)?;
        // Read bufferId first so that every later error on this frame can
        // still carry it (a deliberately dropped delivery is acked too).
        let buffer_id = match frame_type.as_str() {
            "inbound" | "passthrough_forward" => match m.remove("bufferId") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => {
                    return Err(Ctx {
                        frame_type: &frame_type,
                        buffer_id: None,
                    }
                    .bad("bufferId"));
                }
            },
            _ => None,
        };
        let ctx = Ctx {
            frame_type: &frame_type,
            buffer_id: buffer_id.as_deref(),
        };
        let frame = match frame_type.as_str() {
            // A missing or non-object descriptor is a bad descriptor, not
            // just a bad field: a bad first descriptor fails the handshake at
            // once instead of waiting out its timeout.
            "descriptor" => match m.remove("descriptor") {
                Some(Value::Object(d)) => ConnectorFrame::Descriptor(
                    Descriptor::from_map(d).map_err(DecodeError::BadDescriptor)?,
                ),
                None | Some(Value::Null) => {
                    return Err(DecodeError::BadDescriptor(DescriptorError::MissingKey(
                        "descriptor",
                    )));
                }
                Some(_) => return Err(DecodeError::BadDescriptor(DescriptorError::NotAnObject)),
            },
            "inbound" => {
                let event = json::req_object(&mut m, "event").map_err(|e| ctx.wrong(e))?;
                let event =
                    MessageEvent::from_map(event).map_err(|e| ctx.wrong(e.within("event")))?;
                ConnectorFrame::Inbound { event, buffer_id }
            }
            "outbound_result" => {
                let request_id = RequestId::from_wire(
                    json::req_str(&mut m, "requestId").map_err(|e| ctx.wrong(e))?,
                );
                let result = json::req_object(&mut m, "result").map_err(|e| ctx.wrong(e))?;
                ConnectorFrame::OutboundResult {
                    request_id,
                    result: ActionResult::from_map(result),
                }
            }
            "interrupt_inbound" => ConnectorFrame::InterruptInbound {
                session_key: json::req_str(&mut m, "session_key").map_err(|e| ctx.wrong(e))?,
                // A cancel without a chat id still cancels; only the typing
                // clear needs it.
                chat_id: json::string_or(&mut m, "chat_id", "").map_err(|e| ctx.wrong(e))?,
            },
            "passthrough_forward" => {
                let forward = json::req_object(&mut m, "forward").map_err(|e| ctx.wrong(e))?;
                let forward = PassthroughForward::from_map(forward, limits.max_body_bytes)
                    .map_err(|e| match e {
                        ForwardError::InvalidBodyEncoding => DecodeError::InvalidBodyEncoding {
                            buffer_id: buffer_id.clone(),
                        },
                        ForwardError::PayloadTooLarge { size, limit } => {
                            DecodeError::PayloadTooLarge {
                                buffer_id: buffer_id.clone(),
                                size,
                                limit,
                            }
                        }
                        ForwardError::BadField(f) => ctx.bad(format!("forward.{f}")),
                        ForwardError::NotAnObject => ctx.bad("forward"),
                    })?;
                ConnectorFrame::PassthroughForward { forward, buffer_id }
            }
            "going_idle_ack" => ConnectorFrame::GoingIdleAck,
            _ => ConnectorFrame::Unknown { frame_type },
        };
        Ok(frame)
    }

    fn encode(&self) -> String {
        let fallback = format!("{{\"type\":\"{}\"}}", self.frame_type());
        match self {
            ConnectorFrame::Descriptor(descriptor) => json::to_line(
                &DescriptorOut {
                    kind: "descriptor",
                    descriptor,
                },
                &fallback,
            ),
            ConnectorFrame::Inbound { event, buffer_id } => json::to_line(
                &InboundOut {
                    kind: "inbound",
                    event,
                    buffer_id: buffer_id.as_deref(),
                },
                &fallback,
            ),
            ConnectorFrame::OutboundResult { request_id, result } => json::to_line(
                &ResultOut {
                    kind: "outbound_result",
                    request_id,
                    result,
                },
                &fallback,
            ),
            ConnectorFrame::InterruptInbound {
                session_key,
                chat_id,
            } => json::to_line(
                &InterruptInboundOut {
                    kind: "interrupt_inbound",
                    session_key,
                    chat_id,
                },
                &fallback,
            ),
            ConnectorFrame::PassthroughForward { forward, buffer_id } => json::to_line(
                &ForwardOut {
                    kind: "passthrough_forward",
                    forward,
                    buffer_id: buffer_id.as_deref(),
                },
                &fallback,
            ),
            ConnectorFrame::GoingIdleAck | ConnectorFrame::Unknown { .. } => json::to_line(
                &TypeOnly {
                    kind: self.frame_type(),
                },
                &fallback,
            ),
        }
    }

    fn frame_type(&self) -> &str {
        match self {
            ConnectorFrame::Descriptor(_) => "descriptor",
            ConnectorFrame::Inbound { .. } => "inbound",
            ConnectorFrame::OutboundResult { .. } => "outbound_result",
            ConnectorFrame::InterruptInbound { .. } => "interrupt_inbound",
            ConnectorFrame::PassthroughForward { .. } => "passthrough_forward",
            ConnectorFrame::GoingIdleAck => "going_idle_ack",
            ConnectorFrame::Unknown { frame_type } => frame_type,
        }
    }
}

impl GatewayFrame {
    /// Encode as compact JSON + `\n` (same as [`WireFrame::encode`]).
    pub fn encode(&self) -> String {
        WireFrame::encode(self)
    }

    /// The wire `type`.
    pub fn frame_type(&self) -> &str {
        WireFrame::frame_type(self)
    }
}

impl ConnectorFrame {
    /// Encode as compact JSON + `\n` (same as [`WireFrame::encode`]).
    pub fn encode(&self) -> String {
        WireFrame::encode(self)
    }

    /// The wire `type`.
    pub fn frame_type(&self) -> &str {
        WireFrame::frame_type(self)
    }
}

// Borrowed mirrors used for encoding: serializing straight from references
// avoids building an intermediate `serde_json::Value` per frame.

#[derive(Serialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct HelloOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    platform: &'a str,
    #[serde(rename = "botId")]
    bot_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_manifest: Option<&'a [CommandSpec]>,
}

#[derive(Serialize)]
struct OutboundOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "requestId")]
    request_id: &'a RequestId,
    action: &'a Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a str>,
    #[serde(rename = "botId", skip_serializing_if = "Option::is_none")]
    bot_id: Option<&'a str>,
}

#[derive(Serialize)]
struct InterruptOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session_key: &'a str,
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct AckOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bufferId")]
    buffer_id: &'a str,
}

#[derive(Serialize)]
struct DescriptorOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    descriptor: &'a Descriptor,
}

#[derive(Serialize)]
struct InboundOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'a MessageEvent,
    #[serde(rename = "bufferId", skip_serializing_if = "Option::is_none")]
    buffer_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ResultOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "requestId")]
    request_id: &'a RequestId,
    result: &'a ActionResult,
}

#[derive(Serialize)]
struct InterruptInboundOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session_key: &'a str,
    chat_id: &'a str,
}

#[derive(Serialize)]
struct ForwardOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    forward: &'a PassthroughForward,
    #[serde(rename = "bufferId", skip_serializing_if = "Option::is_none")]
    buffer_id: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::DescriptorError;
    use serde_json::json;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line.trim_end_matches('\n')).unwrap_or(Value::Null)
    }

    #[test]
    fn gateway_frames_use_exact_wire_keys() {
        let hello = GatewayFrame::Hello {
            platform: "relay".into(),
            bot_id: String::new(),
            command_manifest: None,
        };
        assert_eq!(
            hello.encode(),
            "{\"type\":\"hello\",\"platform\":\"relay\",\"botId\":\"\"}\n"
        );
        let interrupt = GatewayFrame::Interrupt {
            session_key: "k".into(),
            reason: None,
        };
        assert_eq!(
            parse(&interrupt.encode()),
            json!({"type": "interrupt", "session_key": "k", "reason": null})
        );
        let ack = GatewayFrame::InboundAck {
            buffer_id: "b1".into(),
        };
        assert_eq!(
            parse(&ack.encode()),
            json!({"type": "inbound_ack", "bufferId": "b1"})
        );
        assert_eq!(
            GatewayFrame::GoingIdle.encode(),
            "{\"type\":\"going_idle\"}\n"
        );
    }

    #[test]
    fn outbound_envelope_omits_unknown_platform() {
        let frame = GatewayFrame::Outbound {
            request_id: RequestId::from_wire("r1".into()),
            action: Action::GetChatInfo {
                chat_id: "c".into(),
            },
            platform: None,
            bot_id: None,
        };
        assert_eq!(
            parse(&frame.encode()),
            json!({"type": "outbound", "requestId": "r1", "action": {"op": "get_chat_info", "chat_id": "c"}})
        );
        let with_platform = GatewayFrame::Outbound {
            request_id: RequestId::from_wire("r2".into()),
            action: Action::GetChatInfo {
                chat_id: "c".into(),
            },
            platform: Some("discord".into()),
            bot_id: Some("app".into()),
        };
        let v = parse(&with_platform.encode());
        assert_eq!(
            (v["platform"].as_str(), v["botId"].as_str()),
            (Some("discord"), Some("app"))
        );
    }

    #[test]
    fn unknown_type_is_a_variant_not_an_error() {
        let f = ConnectorFrame::decode_line(br#"{"type":"future_thing","x":1}"#);
        assert_eq!(
            f,
            Ok(ConnectorFrame::Unknown {
                frame_type: "future_thing".into()
            })
        );
    }

    #[test]
    fn structural_errors_have_their_own_kinds() {
        assert_eq!(
            ConnectorFrame::decode_line(b"\xff\xfe"),
            Err(DecodeError::InvalidUtf8)
        );
        assert!(matches!(
            ConnectorFrame::decode_line(b"{nope"),
            Err(DecodeError::InvalidJson { .. })
        ));
        assert_eq!(
            ConnectorFrame::decode_line(b"[1,2]"),
            Err(DecodeError::NotAnObject)
        );
        assert_eq!(
            ConnectorFrame::decode_line(b"{\"t\":1}"),
            Err(DecodeError::MissingType)
        );
        assert_eq!(
            ConnectorFrame::decode_line(b"{\"type\":5}"),
            Err(DecodeError::MissingType)
        );
    }

    #[test]
    fn mistyped_field_names_frame_and_field_and_keeps_buffer_id() {
        let err = ConnectorFrame::decode_line(
            br#"{"type":"inbound","bufferId":"b7","event":{"text":[]}}"#,
        );
        let Err(err) = err else {
            panic!("decoded a mistyped event")
        };
        assert_eq!(err.frame_type(), Some("inbound"));
        assert_eq!(err.buffer_id(), Some("b7"));
        assert!(
            matches!(&err, DecodeError::BadField { field, .. } if field == "event.text"),
            "{err:?}"
        );
    }

    #[test]
    fn invalid_body_keeps_buffer_id_for_the_ack() {
        let line = br#"{"type":"passthrough_forward","bufferId":"b9","forward":{"platform":"discord","bodyB64":"!!"}}"#;
        let err = ConnectorFrame::decode_line(line);
        assert_eq!(
            err,
            Err(DecodeError::InvalidBodyEncoding {
                buffer_id: Some("b9".into())
            })
        );
    }

    #[test]
    fn an_oversized_body_is_payload_too_large_and_keeps_buffer_id() {
        let line = br#"{"type":"passthrough_forward","bufferId":"b10","forward":{"platform":"discord","bodyB64":"AAAAAAAA"}}"#;
        let limits = DecodeLimits { max_body_bytes: 5 };
        let err = ConnectorFrame::decode_line_with(line, &limits);
        assert_eq!(
            err,
            Err(DecodeError::PayloadTooLarge {
                buffer_id: Some("b10".into()),
                size: 6,
                limit: 5
            })
        );
        let err = err.err();
        assert_eq!(
            err.as_ref().map(DecodeError::kind),
            Some("payload_too_large")
        );
        assert_eq!(err.as_ref().and_then(DecodeError::buffer_id), Some("b10"));
        let roomy = DecodeLimits { max_body_bytes: 6 };
        assert!(ConnectorFrame::decode_line_with(line, &roomy).is_ok());
    }

    #[test]
    fn descriptor_errors_are_typed() {
        let err =
            ConnectorFrame::decode_line(br#"{"type":"descriptor","descriptor":{"platform":"x"}}"#);
        assert_eq!(
            err,
            Err(DecodeError::BadDescriptor(DescriptorError::MissingKey(
                "contract_version"
            )))
        );
        // A missing or non-object descriptor fails the same typed way, so a
        // bad first descriptor ends the handshake at once.
        assert_eq!(
            ConnectorFrame::decode_line(br#"{"type":"descriptor"}"#),
            Err(DecodeError::BadDescriptor(DescriptorError::MissingKey(
                "descriptor"
            )))
        );
        assert_eq!(
            ConnectorFrame::decode_line(br#"{"type":"descriptor","descriptor":[1]}"#),
            Err(DecodeError::BadDescriptor(DescriptorError::NotAnObject))
        );
    }

    #[test]
    fn outbound_result_and_interrupt_inbound_decode() {
        let f = ConnectorFrame::decode_line(
            br#"{"type":"outbound_result","requestId":"r","result":{"success":true,"message_id":"m"}}"#,
        );
        assert_eq!(
            f,
            Ok(ConnectorFrame::OutboundResult {
                request_id: RequestId::from_wire("r".into()),
                result: ActionResult::ok(Some("m".into())),
            })
        );
        let f = ConnectorFrame::decode_line(
            br#"{"type":"interrupt_inbound","session_key":"k","chat_id":"c"}"#,
        );
        assert_eq!(
            f,
            Ok(ConnectorFrame::InterruptInbound {
                session_key: "k".into(),
                chat_id: "c".into()
            })
        );
    }

    #[test]
    fn encoded_frames_are_one_line() {
        let f = ConnectorFrame::Inbound {
            event: MessageEvent {
                text: "line1\nline2".into(),
                ..MessageEvent::default()
            },
            buffer_id: None,
        };
        let line = f.encode();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert_eq!(ConnectorFrame::decode_line(line.as_bytes()), Ok(f));
    }

    #[test]
    fn hello_with_manifest_round_trips() {
        let f = GatewayFrame::Hello {
            platform: "discord".into(),
            bot_id: "app".into(),
            command_manifest: Some(vec![CommandSpec {
                name: "ask".into(),
                description: "Ask".into(),
                options: Some(json!([{"name": "q", "type": 3}])),
            }]),
        };
        assert_eq!(GatewayFrame::decode_line(f.encode().as_bytes()), Ok(f));
    }
}
