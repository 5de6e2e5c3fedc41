//! The plugin ABI, every released version of it: one bindings module per
//! version of `wit/` (`v0_1` for `wit/0.1.0`, `v0_2` for `wit/0.2.0`), each
//! mapping its own types into the host's one model ([`ConvertedEvent`],
//! [`GuestOutcome`], [`Info`]). The rest of the host sees only that model
//! and the two enums here that dispatch by version: [`PluginPre`] and
//! [`Plugin`].
//!
//! The version a component was built against is read from the component
//! itself — the `@version` of its `hermes:converter/…` imports and exports
//! ([`version_of`]) — since the component model treats each 0.x minor as a
//! package of its own: a 0.1 plugin can only run on 0.1 bindings.
//!
//! Output is checked against the caps once, on the model ([`check_events`]),
//! whatever the version; the measure is the one `hermes-converter-abi`
//! defines for host and SDK alike.

pub(crate) mod v0_1;
pub(crate) mod v0_2;

use std::sync::OnceLock;

use hermes_converter_abi::caps::{MAX_MEDIA, MAX_METADATA_PAIRS};
use hermes_converter_abi::{OutputSize, VERSIONS};
use hermes_protocol::forward::PassthroughForward;
use wasmtime::component::{Component, Linker};
use wasmtime::{AsContextMut, Engine};

use crate::limits::Limits;
use crate::outcome::{ConvertedEvent, RejectKind};
use crate::sandbox::StoreState;

/// The WIT package this host implements.
pub(crate) const PACKAGE: &str = hermes_converter_abi::PACKAGE;

/// Every implemented version, for messages (`0.1.0, 0.2.0`).
pub(crate) fn implemented() -> String {
    VERSIONS.join(", ")
}

/// The version of [`PACKAGE`] a component names in its imports and
/// exports: `Ok(None)` when it names none (not a converter), `Err` with
/// the versions when it names several.
pub(crate) fn version_of(engine: &Engine, component: &Component) -> Result<Option<String>, String> {
    let ty = component.component_type();
    let mut versions: Vec<String> = ty
        .exports(engine)
        .map(|(n, _)| n.to_owned())
        .chain(ty.imports(engine).map(|(n, _)| n.to_owned()))
        .filter_map(|name| {
            let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
            Some(rest.split_once('@').map_or("", |(_, v)| v).to_owned())
        })
        .collect();
    versions.sort();
    versions.dedup();
    match versions.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(many.join(", ")),
    }
}

/// Adds every implemented version's host imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v0_1::ConverterPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    v0_2::ConverterPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)?;
    Ok(())
}

/// A type-checked, pre-instantiated plugin of one ABI version.
#[derive(Clone)]
pub(crate) enum PluginPre {
    /// Built against `hermes:converter@0.1.x`.
    V0_1(v0_1::ConverterPluginPre<StoreState>),
    /// Built against `hermes:converter@0.2.x`.
    V0_2(v0_2::ConverterPluginPre<StoreState>),
}

impl PluginPre {
    /// Type-checks `pre` against the bindings of `version` (one that
    /// [`hermes_converter_abi::implemented_version`] accepted).
    pub(crate) fn new(
        version: &str,
        pre: wasmtime::component::InstancePre<StoreState>,
    ) -> wasmtime::Result<Self> {
        match version {
            "0.1.0" => Ok(Self::V0_1(v0_1::ConverterPluginPre::new(pre)?)),
            "0.2.0" => Ok(Self::V0_2(v0_2::ConverterPluginPre::new(pre)?)),
            other => Err(wasmtime::format_err!("no bindings for version {other}")),
        }
    }

    /// The implemented version serving it.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Self::V0_1(_) => "0.1.0",
            Self::V0_2(_) => "0.2.0",
        }
    }

    pub(crate) async fn instantiate_async(
        &self,
        store: impl AsContextMut<Data = StoreState>,
    ) -> wasmtime::Result<Plugin> {
        Ok(match self {
            Self::V0_1(pre) => Plugin::V0_1(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => Plugin::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

/// An instance of a plugin, of its ABI version.
pub(crate) enum Plugin {
    V0_1(v0_1::ConverterPlugin),
    V0_2(v0_2::ConverterPlugin),
}

impl Plugin {
    pub(crate) async fn describe(
        &self,
        store: impl AsContextMut<Data = StoreState>,
    ) -> wasmtime::Result<Info> {
        Ok(match self {
            Self::V0_1(p) => v0_1::info(p.hermes_converter_converter().call_describe(store).await?),
            Self::V0_2(p) => v0_2::info(p.hermes_converter_converter().call_describe(store).await?),
        })
    }

    pub(crate) async fn tenant_of(
        &self,
        store: impl AsContextMut<Data = StoreState>,
        req: &Request,
    ) -> wasmtime::Result<Option<String>> {
        match self {
            Self::V0_1(p) => {
                let req = req.v0_1();
                p.hermes_converter_converter()
                    .call_tenant_of(store, req)
                    .await
            }
            Self::V0_2(p) => {
                p.hermes_converter_converter()
                    .call_tenant_of(store, &req.current)
                    .await
            }
        }
    }

    pub(crate) async fn convert(
        &self,
        store: impl AsContextMut<Data = StoreState>,
        req: &Request,
    ) -> wasmtime::Result<RawOutcome> {
        Ok(match self {
            Self::V0_1(p) => RawOutcome::V0_1(
                p.hermes_converter_converter()
                    .call_convert(store, req.v0_1())
                    .await?,
            ),
            Self::V0_2(p) => RawOutcome::V0_2(
                p.hermes_converter_converter()
                    .call_convert(store, &req.current)
                    .await?,
            ),
        })
    }
}

/// A plugin's answer as its version's bindings lifted it, before any check.
pub(crate) enum RawOutcome {
    V0_1(v0_1::Outcome),
    V0_2(v0_2::Outcome),
}

/// A plugin's answer in the host's model, checked against the caps and the
/// values the ABI allows (not yet against the trust boundary).
#[derive(Debug)]
pub(crate) enum GuestOutcome {
    Events(Vec<ConvertedEvent>),
    Ignored(String),
    Rejected { kind: RejectKind, message: String },
}

impl RawOutcome {
    /// The model of this answer, or why it is malformed output.
    pub(crate) fn check(self, limits: &Limits) -> Result<GuestOutcome, String> {
        let outcome = match self {
            Self::V0_1(o) => v0_1::outcome(o)?,
            Self::V0_2(o) => v0_2::outcome(o)?,
        };
        if let GuestOutcome::Events(events) = &outcome {
            check_events(events, limits)?;
        }
        Ok(outcome)
    }
}

/// Who a plugin says it is; `api_version` is the version its `describe`
/// reports (0.1) or, from 0.2 on, the one it was built against.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) platforms: Vec<String>,
    pub(crate) api_version: Option<String>,
}

/// One forward, as the request every version's `tenant-of` and `convert`
/// take. Built once per conversion in the current version's form; a 0.1
/// plugin gets its own copy, made the first time one is called.
pub(crate) struct Request {
    current: v0_2::Request,
    legacy: OnceLock<v0_1::Request>,
}

impl Request {
    pub(crate) fn new(forward: &PassthroughForward) -> Self {
        Self {
            current: v0_2::Request {
                platform: forward.platform.clone(),
                bot_id: forward.bot_id.clone(),
                method: forward.method.clone(),
                path: forward.path.clone(),
                headers: forward.headers.clone(),
                body: forward.body.clone(),
                profile: forward.profile.clone(),
            },
            legacy: OnceLock::new(),
        }
    }

    pub(crate) fn body(&self) -> &[u8] {
        &self.current.body
    }

    pub(crate) fn body_len(&self) -> usize {
        self.current.body.len()
    }

    pub(crate) fn platform(&self) -> &str {
        &self.current.platform
    }

    pub(crate) fn profile(&self) -> Option<&str> {
        self.current.profile.as_deref()
    }

    fn v0_1(&self) -> &v0_1::Request {
        self.legacy.get_or_init(|| {
            let r = &self.current;
            v0_1::Request {
                platform: r.platform.clone(),
                bot_id: r.bot_id.clone(),
                method: r.method.clone(),
                path: r.path.clone(),
                headers: r.headers.clone(),
                body: r.body.clone(),
                profile: r.profile.clone(),
            }
        })
    }
}

/// The most wasmtime may copy out of a guest in one call, in its own units
/// (string bytes plus `size_of` of each lifted list element): room for the
/// largest output the caps admit in any version, and no more. Anything a
/// well-behaved guest returns fits; a list bomb fails while being lifted,
/// before the host allocates it.
pub(crate) fn hostcall_fuel(limits: &Limits) -> usize {
    let per_event = v0_1::event_fuel().max(v0_2::event_fuel());
    limits
        .max_output_bytes
        .max(limits.max_body_bytes / 16)
        .saturating_add(limits.max_events.saturating_mul(per_event))
}

/// Checks events against the output caps. Any violation rejects the whole
/// output: a partial event list is never delivered.
pub(crate) fn check_events(events: &[ConvertedEvent], limits: &Limits) -> Result<(), String> {
    if events.len() > limits.max_events {
        return Err(format!(
            "{} events, at most {} allowed",
            events.len(),
            limits.max_events
        ));
    }
    let mut total = 0usize;
    for (i, e) in events.iter().enumerate() {
        if e.event.text.len() > limits.max_event_text_bytes {
            return Err(format!(
                "event {i}: text of {} bytes, at most {} allowed",
                e.event.text.len(),
                limits.max_event_text_bytes
            ));
        }
        if e.event.media_urls.len() > MAX_MEDIA {
            return Err(format!(
                "event {i}: {} media items, at most {MAX_MEDIA} allowed",
                e.event.media_urls.len()
            ));
        }
        if e.metadata.len() > MAX_METADATA_PAIRS {
            return Err(format!(
                "event {i}: {} metadata pairs, at most {MAX_METADATA_PAIRS} allowed",
                e.metadata.len()
            ));
        }
        total = total.saturating_add(event_size(e));
        if total > limits.max_output_bytes {
            return Err(format!(
                "output larger than {} bytes",
                limits.max_output_bytes
            ));
        }
    }
    Ok(())
}

/// An event's size as the caps measure it ([`OutputSize`], the SDK's
/// `output_size`): media items count with their content types, and a 0.1
/// plugin's metadata pairs count too.
pub(crate) fn event_size(c: &ConvertedEvent) -> usize {
    let mut size = OutputSize::default();
    let e = &c.event;
    let s = &e.source;
    size.element();
    size.string(&e.text);
    for (i, url) in e.media_urls.iter().enumerate() {
        size.element();
        size.string(url);
        size.optional(c.media_types.get(i).and_then(Option::as_deref));
    }
    for (k, v) in &c.metadata {
        size.element();
        size.string(k);
        size.string(v);
    }
    size.string(&s.platform);
    size.string(&s.chat_id);
    for field in [
        &s.chat_name,
        &s.user_id,
        &s.user_name,
        &s.thread_id,
        &s.chat_topic,
        &s.user_id_alt,
        &s.chat_id_alt,
        &s.scope_id,
        &s.parent_chat_id,
        &s.message_id,
        &s.profile,
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
    if let crate::outcome::ReplyRoute::FollowUp { kind } = &c.reply_route {
        size.string(kind);
    }
    size.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK turns over-cap output into a rejection before it reaches the
    /// host; that only works while both measure alike (the caps themselves
    /// are one set of constants, `hermes-converter-abi`).
    #[test]
    fn the_host_and_the_sdk_measure_output_alike() {
        use hermes_converter_sdk as sdk;
        let mut e = sdk::MessageEvent::new(
            "hello",
            sdk::Source::new("p", "chat", sdk::ChatType::Dm),
            sdk::ReplyRoute::FollowUp("k".to_owned()),
        );
        e.media.push(sdk::Media::url("https://m"));
        e.media.push(sdk::Media {
            url: "https://n".to_owned(),
            content_type: Some("image/png".to_owned()),
        });
        e.source.user_id = Some("u1".to_owned());
        e.message_id = Some("m1".to_owned());
        let wit = v0_2::Outcome::Events(vec![v0_2_event(&e)]);
        let GuestOutcome::Events(events) = RawOutcome::V0_2(wit)
            .check(&Limits::default())
            .expect("well-formed")
        else {
            panic!("events");
        };
        assert_eq!(
            event_size(&events[0]),
            sdk::output_size(std::slice::from_ref(&e))
        );
    }

    /// An SDK event as the 0.2 guest glue lowers it.
    fn v0_2_event(
        e: &hermes_converter_sdk::MessageEvent,
    ) -> v0_2::hermes::converter::types::MessageEvent {
        use v0_2::hermes::converter::types as wit;
        let s = &e.source;
        wit::MessageEvent {
            text: e.text.clone(),
            message_type: e.message_type.as_str().to_owned(),
            source: wit::Source {
                platform: s.platform.clone(),
                chat_id: s.chat_id.clone(),
                chat_type: s.chat_type.as_str().to_owned(),
                chat_name: None,
                user_id: s.user_id.clone(),
                user_name: None,
                thread_id: None,
                chat_topic: None,
                user_id_alt: None,
                chat_id_alt: None,
                scope_id: None,
                parent_chat_id: None,
                message_id: None,
                profile: None,
                is_bot: false,
                message_is_edit: false,
            },
            message_id: e.message_id.clone(),
            reply_to_message_id: None,
            media: e
                .media
                .iter()
                .map(|m| wit::Media {
                    url: m.url.clone(),
                    content_type: m.content_type.clone(),
                })
                .collect(),
            prompt_response: None,
            reply_route: wit::ReplyRoute::FollowUp("k".to_owned()),
        }
    }

    /// 0.2's open strings: a value the host does not know is malformed
    /// output, never passed on; a platform-defined chat type is fine.
    #[test]
    fn open_values_are_checked() {
        use hermes_converter_sdk as sdk;
        let base = || {
            v0_2_event(&sdk::MessageEvent::new(
                "t",
                sdk::Source::new("p", "c", sdk::ChatType::Dm),
                sdk::ReplyRoute::Send,
            ))
        };
        let check = |o: v0_2::Outcome| RawOutcome::V0_2(o).check(&Limits::default());
        let mut poll = base();
        poll.message_type = "poll".to_owned();
        let err = check(v0_2::Outcome::Events(vec![poll])).expect_err("unknown type");
        assert!(err.contains("unknown message type \"poll\""), "{err}");
        let mut shouting = base();
        shouting.source.chat_type = "DM".to_owned();
        assert!(check(v0_2::Outcome::Events(vec![shouting])).is_err());
        let mut space = base();
        space.source.chat_type = "space".to_owned();
        let GuestOutcome::Events(events) =
            check(v0_2::Outcome::Events(vec![space])).expect("a new shape")
        else {
            panic!("events");
        };
        assert_eq!(events[0].event.source.chat_type, "space");
        let rejected = v0_2::Outcome::Error(v0_2::hermes::converter::types::ConvertError {
            kind: "invalid_json".to_owned(),
            message: "m".to_owned(),
        });
        assert!(matches!(
            check(rejected),
            Ok(GuestOutcome::Rejected {
                kind: RejectKind::InvalidJson,
                ..
            })
        ));
        let unknown = v0_2::Outcome::Error(v0_2::hermes::converter::types::ConvertError {
            kind: "too_spicy".to_owned(),
            message: "m".to_owned(),
        });
        assert!(check(unknown).is_err());
    }
}
