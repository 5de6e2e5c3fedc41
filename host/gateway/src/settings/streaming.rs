//! `[streaming]` of the config file.

use serde::Deserialize;

/// `[streaming]` of the config file: how a streaming agent's reply is shown
/// as it grows (see `docs/operations.md`). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingFile {
    /// `enabled` (default true, where the descriptor allows edits).
    pub enabled: Option<bool>,
    /// `disabled_platforms`: never streamed to.
    pub disabled_platforms: Option<Vec<String>>,
    /// `edit_interval_ms` (default 1000; at least 100).
    pub edit_interval_ms: Option<u64>,
    /// `first_chunk_chars` (default 40).
    pub first_chunk_chars: Option<usize>,
    /// `first_chunk_delay_ms` (default 700).
    pub first_chunk_delay_ms: Option<u64>,
    /// `interrupt_marker` (default `" …"`; `""` for none).
    pub interrupt_marker: Option<String>,
}

impl StreamingFile {
    /// The settings, defaults filled in. An edit interval under 100 ms
    /// would be an edit storm: it is raised to 100 ms.
    pub fn resolve(&self) -> hermes_gateway_core::StreamingConfig {
        let d = hermes_gateway_core::StreamingConfig::default();
        let ms = std::time::Duration::from_millis;
        hermes_gateway_core::StreamingConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            disabled_platforms: self.disabled_platforms.clone().unwrap_or_default(),
            edit_interval: self
                .edit_interval_ms
                .map_or(d.edit_interval, |v| ms(v.max(100))),
            first_chunk_chars: self.first_chunk_chars.unwrap_or(d.first_chunk_chars),
            first_chunk_delay: self.first_chunk_delay_ms.map_or(d.first_chunk_delay, ms),
            interrupt_marker: self.interrupt_marker.clone().unwrap_or(d.interrupt_marker),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::ConfigFile;

    #[test]
    fn streaming_settings_come_from_the_config_file() {
        let defaults = ConfigFile::default().streaming.resolve();
        assert_eq!(defaults, hermes_gateway_core::StreamingConfig::default());
        let text = "[streaming]\nenabled = false\ndisabled_platforms = [\"telegram\"]\nedit_interval_ms = 10\ninterrupt_marker = \"\"\n";
        let s = ConfigFile::parse(text, Path::new("c.toml"))
            .expect("parses")
            .streaming
            .resolve();
        assert!(!s.enabled);
        assert_eq!(s.disabled_platforms, ["telegram"]);
        assert_eq!(
            s.edit_interval,
            std::time::Duration::from_millis(100),
            "an edit storm is refused: at least 100 ms"
        );
        assert_eq!(s.interrupt_marker, "");
        assert_eq!(s.first_chunk_chars, defaults.first_chunk_chars);
        let e = ConfigFile::parse("[streaming]\nenable = true\n", Path::new("c.toml"));
        assert!(e.is_err(), "a misspelt key is an error");
    }
}
