//! The cargo features a config or a command can need, and what fedistream
//! says when this build lacks one. Every feature is on by default; a build
//! with `--no-default-features` leaves the heavy connectors out, reads and
//! validates any config all the same, and refuses one naming a part it lacks
//! at start — naming the file, the key and the feature ([`refused`]), never
//! ignoring it.

use crate::config::{ChannelConfig, Config, LogBackend};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// The Kafka log, roles and channel (librdkafka).
    Kafka,
    /// `fedistream sql` (Apache DataFusion). No config part needs it: only
    /// a build without it names it.
    #[cfg_attr(feature = "sql", allow(dead_code))]
    Sql,
    /// The archive channel, `archive compact`, `schema parquet` (object_store, Parquet, Arrow).
    Archive,
    /// The webhook channel.
    Webhook,
    /// The HTTP server of `fedistream run` (`[http]`).
    Http,
}

impl Feature {
    /// The cargo feature's name.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Kafka => "kafka",
            Feature::Sql => "sql",
            Feature::Archive => "archive",
            Feature::Webhook => "webhook",
            Feature::Http => "http",
        }
    }

    /// Whether this binary was built with it.
    pub fn built(self) -> bool {
        match self {
            Feature::Kafka => cfg!(feature = "kafka"),
            Feature::Sql => cfg!(feature = "sql"),
            Feature::Archive => cfg!(feature = "archive"),
            Feature::Webhook => cfg!(feature = "webhook"),
            Feature::Http => cfg!(feature = "http"),
        }
    }

    /// Why something needing it cannot run on a build without it.
    pub fn missing(self) -> String {
        let what = match self {
            Feature::Kafka => "Kafka support",
            Feature::Sql => "SQL",
            Feature::Archive => "the archive channel",
            Feature::Webhook => "the webhook channel",
            Feature::Http => "the HTTP server",
        };
        let name = self.name();
        format!("this fedistream was built without {what} (the `{name}` cargo feature, on by default): build it with `--features {name}`")
    }
}

/// The parts of `cfg` a build without a feature cannot run, as (key, reason),
/// when `built` says which features there are ([`Feature::built`] at start).
pub fn refused(cfg: &Config, built: impl Fn(Feature) -> bool) -> Vec<(String, String)> {
    let mut needs = Vec::new();
    if cfg.log.backend == LogBackend::Kafka && cfg.log.kafka.is_some() {
        needs.push(("log.backend".to_string(), Feature::Kafka));
    }
    for (name, c) in &cfg.channels {
        let feature = match c {
            ChannelConfig::Kafka(_) => Feature::Kafka,
            ChannelConfig::Archive(_) => Feature::Archive,
            ChannelConfig::Webhook(_) => Feature::Webhook,
            ChannelConfig::File(_) | ChannelConfig::Stdout(_) | ChannelConfig::Mastodon(_) => continue,
        };
        needs.push((format!("channels.{name}.type"), feature));
    }
    // `listen = ""` turns the server off: nothing to refuse.
    if cfg.http.as_ref().is_some_and(|h| !h.listen.trim().is_empty()) {
        needs.push(("http.listen".to_string(), Feature::Http));
    }
    needs.into_iter().filter(|(_, f)| !built(*f)).map(|(key, f)| (key, f.missing())).collect()
}

/// These run in every build: `cargo test -p fedistream --no-default-features
/// --bin fedistream features::` (in `.ci/run`) checks that a lean build refuses.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load::parse;

    fn file() -> &'static Path {
        Path::new("pipeline.toml")
    }

    const MINIMAL: &str = "[sources.a]\ntype = \"mastodon\"\naccounts = [\"@alice@example.org\"]\n[channels.out]\ntype = \"stdout\"\n";

    /// One part needing each connector feature, otherwise valid.
    const EVERY_CONNECTOR: &str = r#"
[log]
backend = "kafka"
[log.kafka]
brokers = "127.0.0.1:9092"

[sources.a]
type = "mastodon"
accounts = ["@alice@example.org"]

[channels.k]
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "posts"

[channels.arch]
type = "archive"
path = "archive"

[channels.hook]
type = "webhook"
url = "https://hooks.example.org/in"

[http]
listen = "127.0.0.1:8080"
"#;

    #[test]
    fn a_build_without_a_connector_refuses_the_parts_of_a_config_naming_it() {
        let cfg = parse(EVERY_CONNECTOR, file()).unwrap();
        assert_eq!(
            refused(&cfg, |_| false),
            vec![
                ("log.backend".to_string(), Feature::Kafka.missing()),
                ("channels.arch.type".to_string(), Feature::Archive.missing()),
                ("channels.hook.type".to_string(), Feature::Webhook.missing()),
                ("channels.k.type".to_string(), Feature::Kafka.missing()),
                ("http.listen".to_string(), Feature::Http.missing()),
            ]
        );
        assert_eq!(
            Feature::Archive.missing(),
            "this fedistream was built without the archive channel (the `archive` cargo feature, on by default): build it with `--features archive`"
        );
        // Only what the build lacks.
        let keys = |r: Vec<(String, String)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(refused(&cfg, |f| f != Feature::Webhook)), vec!["channels.hook.type"]);
        assert_eq!(keys(refused(&cfg, |f| f != Feature::Http)), vec!["http.listen"]);
        assert!(refused(&cfg, |_| true).is_empty());
        // No [http] table, or one turning the server off, asks for no server.
        for http in ["", "[http]\nlisten = \"\"\n"] {
            let cfg = parse(&format!("{MINIMAL}{http}"), file()).unwrap();
            assert!(refused(&cfg, |_| false).is_empty(), "{http:?}");
        }
        // The default address is a server asked for.
        let cfg = parse(&format!("{MINIMAL}[http]\ntoken_env = \"T\"\n"), file()).unwrap();
        assert_eq!(keys(refused(&cfg, |_| false)), vec!["http.listen"]);
    }

    /// This build (whatever its features): `validate` refuses, at start, exactly
    /// the parts naming a feature it was built without — with the file, the key
    /// and the feature — and accepts the rest.
    #[test]
    fn this_build_refuses_at_start_what_it_was_built_without() {
        let cfg = parse(EVERY_CONNECTOR, file()).unwrap();
        let errs: Vec<String> =
            crate::config::validate::validate(&cfg, file()).err().unwrap_or_default().iter().map(|e| e.to_string()).collect();
        for (key, feature) in [
            ("log.backend", Feature::Kafka),
            ("channels.k.type", Feature::Kafka),
            ("channels.arch.type", Feature::Archive),
            ("channels.hook.type", Feature::Webhook),
            ("http.listen", Feature::Http),
        ] {
            let want = format!("pipeline.toml: `{key}`: {}", feature.missing());
            assert_eq!(errs.contains(&want), !feature.built(), "{key}: {errs:?}");
        }
        if Feature::Kafka.built() && Feature::Archive.built() && Feature::Webhook.built() && Feature::Http.built() {
            assert!(errs.is_empty(), "{errs:?}");
        }
    }
}
