//! A converter built against `hermes:converter@0.3.0` (a copy of the 0.2.0
//! WIT in this crate's `wit/` with a newer minor version than any host of
//! this release implements). The host must refuse it at load, naming its
//! version and the ones it implements. Natively the crate is empty.

#[cfg(target_arch = "wasm32")]
mod incompatible {
    wit_bindgen::generate!({
        world: "converter-plugin",
        path: "wit",
    });

    use exports::hermes::converter::converter::{Guest, Outcome, PluginInfo, Request};

    struct Incompatible;

    impl Guest for Incompatible {
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "incompatible".to_owned(),
                version: "0.3.0".to_owned(),
                platforms: vec!["incompatible".to_owned()],
            }
        }

        fn tenant_of(_req: Request) -> Option<String> {
            None
        }

        fn convert(_req: Request) -> Outcome {
            Outcome::Ignored("incompatible".to_owned())
        }
    }

    export!(Incompatible);
}
