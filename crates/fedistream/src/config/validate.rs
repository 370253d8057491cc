//! Checks of meaning, without network I/O: names that refer to each other exist,
//! account handles and URLs are well-formed, intervals make sense, tokens are
//! where the config says. Every problem is reported, not just the first.

use std::path::Path;

use fedistream_connectors::mastodon::source::{parse_acct, parse_base_url, StreamMode};

use super::{ChannelConfig, Config, ConfigError, SourceConfig};

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Everything, including that the tokens are where the config says.
pub fn validate(cfg: &Config, file: &Path) -> Result<(), Vec<ConfigError>> {
    validate_with(cfg, file, true)
}

/// `check_secrets = false` for commands that never use the tokens (`status`):
/// an operator may run them from a shell without the secrets.
pub fn validate_with(cfg: &Config, file: &Path, check_secrets: bool) -> Result<(), Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut err = |key: String, reason: String| errs.push(ConfigError { file: file.to_path_buf(), key, line_col: None, reason });

    for (key, why) in crate::features::refused(cfg, crate::features::Feature::built) {
        err(key, why);
    }
    if cfg.sources.is_empty() {
        err("sources".into(), "no sources: add a [sources.NAME] table".into());
    }
    match (cfg.log.backend, &cfg.log.kafka) {
        (super::LogBackend::Kafka, None) => {
            err("log.kafka".into(), "backend = \"kafka\" needs a [log.kafka] table with at least `brokers`".into())
        }
        (super::LogBackend::Sqlite, Some(_)) => {
            err("log.backend".into(), "[log.kafka] is set but the backend is sqlite: add backend = \"kafka\" to [log]".into())
        }
        (super::LogBackend::Kafka, Some(k)) => {
            for (key, why) in k.problems() {
                err(format!("log.kafka.{key}"), why);
            }
            if let Some(var) = &k.sasl_password_env {
                if check_secrets && std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                    err("log.kafka.sasl_password_env".into(), format!("the environment variable {var} is not set"));
                }
            }
        }
        _ => {}
    }
    if cfg.channels.is_empty() {
        err("channels".into(), "no channels: add a [channels.NAME] table".into());
    }
    for (name, c) in &cfg.connections.mastodon {
        let k = format!("connections.mastodon.{name}");
        if let Err(e) = parse_base_url(&c.instance) {
            err(format!("{k}.instance"), e);
        }
        match (&c.token_env, &c.token_file) {
            (Some(_), Some(_)) => err(k.clone(), "give either token_env or token_file, not both".into()),
            (None, None) => err(k.clone(), "no token: set token_env (the name of an environment variable) or token_file".into()),
            (Some(var), None) if check_secrets && std::env::var_os(var).is_none_or(|v| v.is_empty()) => {
                err(format!("{k}.token_env"), format!("the environment variable {var} is not set"));
            }
            (None, Some(path)) if check_secrets && !path.is_file() => {
                err(format!("{k}.token_file"), format!("{} is not a readable file", path.display()));
            }
            _ => {}
        }
    }
    for (name, s) in &cfg.sources {
        let k = format!("sources.{name}");
        if !valid_name(name) {
            err(k.clone(), "source names may use letters, digits, `_` and `-` only".into());
        }
        match s {
            SourceConfig::Mastodon(m) => {
                if m.accounts.is_empty() {
                    err(format!("{k}.accounts"), "no accounts to follow".into());
                }
                for (i, a) in m.accounts.iter().enumerate() {
                    if let Err(e) = parse_acct(a) {
                        err(format!("{k}.accounts[{i}]"), e);
                    }
                }
                if let Some(inst) = &m.instance {
                    if let Err(e) = parse_base_url(inst) {
                        err(format!("{k}.instance"), e);
                    }
                }
                match &m.connection {
                    Some(c) if !cfg.connections.mastodon.contains_key(c) => {
                        err(format!("{k}.connection"), format!("no connection named `{c}` in [connections.mastodon]"))
                    }
                    None if m.list.is_some() => err(format!("{k}.list"), "a list stream needs a connection with a reader token".into()),
                    None if matches!(m.stream, StreamMode::Websocket | StreamMode::Sse) => {
                        err(format!("{k}.stream"), "streaming needs a connection with a reader token (or set stream = \"off\")".into())
                    }
                    _ => {}
                }
                if m.poll_interval < std::time::Duration::from_secs(1) {
                    err(format!("{k}.poll_interval"), "must be at least 1s".into());
                }
                if m.max_poll_interval < m.poll_interval {
                    err(format!("{k}.max_poll_interval"), "must not be shorter than poll_interval".into());
                }
                if m.concurrency == 0 {
                    err(format!("{k}.concurrency"), "must be at least 1".into());
                }
                for (key, why) in m.problems() {
                    err(format!("{k}.{key}"), why);
                }
            }
            SourceConfig::MastodonTimeline(t) => {
                if let Some(c) = t.connection.as_ref().filter(|c| !cfg.connections.mastodon.contains_key(*c)) {
                    err(format!("{k}.connection"), format!("no connection named `{c}` in [connections.mastodon]"));
                }
                for (key, why) in t.problems() {
                    err(format!("{k}.{key}"), why);
                }
            }
            SourceConfig::Replay(r) => {
                if !r.path.is_file() {
                    err(format!("{k}.path"), format!("{} does not exist or is not a file", r.path.display()));
                }
                if r.rate.is_some_and(|x| !(x > 0.0 && x.is_finite())) {
                    err(format!("{k}.rate"), "must be a positive number of events per second".into());
                }
            }
        }
    }
    for (name, c) in &cfg.channels {
        let k = format!("channels.{name}");
        if !valid_name(name) {
            err(k.clone(), "channel names may use letters, digits, `_` and `-` only".into());
        }
        match c {
            ChannelConfig::File(f) => {
                if f.path.as_os_str().is_empty() || f.path.is_dir() {
                    err(format!("{k}.path"), "must name a file".into());
                }
            }
            ChannelConfig::Mastodon(m) => {
                if !cfg.connections.mastodon.contains_key(&m.connection) {
                    err(format!("{k}.connection"), format!("no connection named `{}` in [connections.mastodon]", m.connection));
                }
                if let Err(e) = m.validate() {
                    err(k.clone(), e);
                }
            }
            ChannelConfig::Kafka(kc) => {
                for p in kc.validate(check_secrets) {
                    err(if p.key.is_empty() { k.clone() } else { format!("{k}.{}", p.key) }, p.reason);
                }
            }
            ChannelConfig::Webhook(w) => {
                for p in w.validate(check_secrets) {
                    err(format!("{k}.{}", p.key), p.reason);
                }
            }
            ChannelConfig::Stdout(_) => {}
            ChannelConfig::Archive(a) => {
                for (key, why) in a.problems() {
                    err(format!("{k}.{key}"), why);
                }
                if check_secrets {
                    for (key, var) in [("access_key_id_env", &a.access_key_id_env), ("secret_access_key_env", &a.secret_access_key_env)] {
                        if let Some(var) = var.as_ref().filter(|v| std::env::var(v).is_err()) {
                            err(format!("{k}.{key}"), format!("the env var `{var}` is not set"));
                        }
                    }
                }
            }
        }
        if c.delivery().max_batch == 0 {
            err(format!("{k}.delivery.max_batch"), "must be at least 1".into());
        }
    }
    if let Some(h) = &cfg.http {
        match h.address() {
            Err(e) => err("http.listen".into(), e),
            Ok(Some(addr)) if !addr.ip().is_loopback() && h.token_env.is_none() && !h.allow_public => err(
                "http.listen".into(),
                format!("{addr} is reachable from other machines: set token_env (a bearer token) or allow_public = true"),
            ),
            _ => {}
        }
        if let Some(var) = &h.token_env {
            if check_secrets && std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                err("http.token_env".into(), format!("the environment variable {var} is not set"));
            }
        }
        if h.stuck_after.is_zero() {
            err("http.stuck_after".into(), "must be longer than 0s".into());
        }
    }
    for (name, p) in &cfg.processors {
        let k = format!("processors.{name}");
        match p {
            super::ProcessorConfig::AccountStats(s) => {
                for (key, why) in s.validate() {
                    err(format!("{k}.{key}"), why);
                }
            }
            #[cfg(feature = "test-util")]
            super::ProcessorConfig::TestCount(_) => {}
        }
        if !fedistream_core::log::valid_topic_name(name) || name == fedistream_core::log::EVENTS {
            err(k.clone(), "processor names may use lower-case letters, digits, `_` and `-` only, and not `events` (the processor's output topic is named after it)".into());
        }
        if cfg.sources.contains_key(name) {
            err(k.clone(), format!("a source is also named `{name}`: routes could not tell them apart"));
        }
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        let k = format!("routes[{i}]");
        for s in &r.from {
            if !cfg.sources.contains_key(s) && !cfg.processors.contains_key(s) {
                err(format!("{k}.from"), format!("no source or processor named `{s}`"));
            }
        }
        let from_processors: Vec<&String> = r.from.iter().filter(|f| cfg.processors.contains_key(*f)).collect();
        if !from_processors.is_empty() {
            if from_processors.len() != r.from.len() {
                err(format!("{k}.from"), "a route takes either sources (posts) or one processor's output, not both".into());
            } else if from_processors.len() > 1 {
                err(format!("{k}.from"), "a route takes one processor's output (a channel reads one topic)".into());
            }
            if r.filter != fedistream_process::filter::FilterConfig::default() {
                err(format!("{k}.filter"), "filters apply to posts; this route takes a processor's output".into());
            }
        }
        if r.to.is_empty() {
            err(format!("{k}.to"), "a route needs at least one channel".into());
        }
        for c in &r.to {
            if !cfg.channels.contains_key(c) {
                err(format!("{k}.to"), format!("no channel named `{c}`"));
            }
        }
        if let Err(e) = r.filter.validate() {
            err(format!("{k}.filter"), e);
        }
    }
    if !cfg.routes.is_empty() {
        for name in cfg.channels.keys() {
            if !cfg.routes.iter().any(|r| r.to.contains(name)) {
                err(format!("channels.{name}"), "no route leads to this channel".into());
            }
            // A channel reads one topic: posts, or one processor's output.
            let mut topics: Vec<String> = cfg
                .routes
                .iter()
                .filter(|r| r.to.contains(name))
                .flat_map(|r| if r.from.is_empty() { vec![fedistream_core::log::EVENTS.to_string()] } else { r.from.clone() })
                .map(|f| if cfg.processors.contains_key(&f) { f } else { fedistream_core::log::EVENTS.to_string() })
                .collect();
            topics.sort();
            topics.dedup();
            if topics.len() > 1 {
                err(
                    format!("channels.{name}"),
                    format!("routes bring it {} (a channel reads one of them: declare one channel each)", topics.join(" and ")),
                );
            } else if topics.first().is_some_and(|t| t != fedistream_core::log::EVENTS) {
                // Processor output is JSON records, not posts.
                let stats = matches!(cfg.processors.get(&topics[0]), Some(super::ProcessorConfig::AccountStats(_)));
                match &cfg.channels[name] {
                    ChannelConfig::Mastodon(m) if m.digest.is_none() || !stats => err(
                        format!("channels.{name}"),
                        format!(
                            "a mastodon channel publishes posts, or digests of an account_stats processor's records (a `digest` table); it cannot take the output of processor `{}`{}",
                            topics[0],
                            if stats { " without a `digest` table" } else { "" }
                        ),
                    ),
                    ChannelConfig::Kafka(kc)
                        if kc.format == fedistream_kafka::channel::Format::Avro && !stats =>
                    {
                        err(
                            format!("channels.{name}.format"),
                            format!("processor `{}` writes JSON records (no Avro schema): use format = \"json\"", topics[0]),
                        )
                    }
                    ChannelConfig::Mastodon(m) => {
                        if let (Some(d), Some(super::ProcessorConfig::AccountStats(p))) = (&m.digest, cfg.processors.get(&topics[0])) {
                            if !p.windows.iter().any(|w| w.as_str() == d.window) {
                                err(
                                    format!("channels.{name}.digest.window"),
                                    format!("processor `{}` keeps no `{}` windows (add it to its `windows`)", topics[0], d.window),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            } else if let ChannelConfig::Mastodon(m) = &cfg.channels[name] {
                if m.digest.is_some() {
                    err(
                        format!("channels.{name}.digest"),
                        "a digest channel takes an account_stats processor's output: route `from = [\"PROCESSOR\"]` to it".into(),
                    );
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests;
