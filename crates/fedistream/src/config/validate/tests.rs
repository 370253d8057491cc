use std::path::Path;

use super::*;
use crate::config::load::parse;

fn file() -> &'static Path {
    Path::new("pipeline.toml")
}

fn errors(text: &str) -> Vec<String> {
    let cfg = parse(text, file()).unwrap_or_else(|e| panic!("parse failed: {e}"));
    validate(&cfg, file()).err().unwrap_or_default().iter().map(|e| e.to_string()).collect()
}

const MINIMAL: &str = r#"
[sources.a]
type = "mastodon"
accounts = ["@alice@example.org"]

[channels.out]
type = "stdout"
"#;

#[test]
fn a_minimal_config_is_valid() {
    assert!(errors(MINIMAL).is_empty(), "{:?}", errors(MINIMAL));
}

#[test]
fn unknown_keys_name_the_key_path_file_and_line() {
    let text = "[sources.a]\ntype = \"mastodon\"\naccounts = [\"@a@b.c\"]\npoll_intervall = \"5s\"\n\n[channels.out]\ntype = \"stdout\"\n";
    let e = parse(text, file()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("pipeline.toml:"), "{msg}");
    assert!(msg.contains("poll_intervall"), "{msg}");
    assert_eq!(e.key, "sources.a.poll_intervall", "{msg}");
    assert_eq!(e.line_col.map(|(l, _)| l), Some(4), "{msg}");
    assert!(msg.contains("expected one of"), "{msg}");
}

#[test]
fn wrong_types_and_units_are_reported_at_their_key() {
    let text = "[sources.a]\ntype = \"mastodon\"\naccounts = [\"@a@b.c\"]\npoll_interval = \"soon\"\n";
    let e = parse(text, file()).unwrap_err();
    assert_eq!(e.key, "sources.a.poll_interval", "{e}");
    assert!(e.reason.contains("not a duration"), "{e}");
    assert_eq!(e.line_col.map(|(l, _)| l), Some(4), "{e}");

    let text = "[channels.f]\ntype = \"file\"\npath = \"x.jsonl\"\nrotate_bytes = \"lots\"\n";
    let e = parse(text, file()).unwrap_err();
    assert_eq!(e.key, "channels.f.rotate_bytes", "{e}");

    let text = "[channels.f]\ntype = \"carrier-pigeon\"\n";
    let e = parse(text, file()).unwrap_err();
    assert!(e.reason.contains("carrier-pigeon"), "{e}");
}

#[test]
fn nested_unknown_keys_in_variants_are_refused() {
    let text = "[channels.f]\ntype = \"file\"\npath = \"x.jsonl\"\n[channels.f.delivery]\nmax_bach = 3\n";
    let e = parse(text, file()).unwrap_err();
    assert!(e.to_string().contains("max_bach"), "{e}");
}

#[test]
fn meaning_errors_are_all_reported_with_their_keys() {
    let text = r#"
[connections.mastodon.reader]
instance = "http://example.org"
token_env = "FEDISTREAM_TEST_SURELY_UNSET_VAR"

[sources.a]
type = "mastodon"
accounts = ["alice", "@bob@example.org"]
connection = "nope"
instance = "ftp://x"

[channels.out]
type = "stdout"

[[routes]]
from = ["ghost"]
to = ["void"]
"#;
    let errs = errors(text);
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(has("`connections.mastodon.reader.instance`: `http://example.org`: plain http is only allowed for loopback"), "{errs:#?}");
    assert!(
        has("`connections.mastodon.reader.token_env`: the environment variable FEDISTREAM_TEST_SURELY_UNSET_VAR is not set"),
        "{errs:#?}"
    );
    assert!(has("`sources.a.accounts[0]`: `alice` is not an account handle"), "{errs:#?}");
    assert!(has("`sources.a.connection`: no connection named `nope`"), "{errs:#?}");
    assert!(has("`sources.a.instance`"), "{errs:#?}");
    assert!(has("`routes[0].from`: no source or processor named `ghost`"), "{errs:#?}");
    assert!(has("`routes[0].to`: no channel named `void`"), "{errs:#?}");
    assert!(has("`channels.out`: no route leads to this channel"), "{errs:#?}");
    assert!(errs.iter().all(|e| e.starts_with("pipeline.toml: ")), "{errs:#?}");
}

#[cfg(all(feature = "kafka", feature = "sql", feature = "webhook", feature = "http"))]
#[test]
fn the_shipped_examples_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    // Relative paths in the examples are relative to the repository root.
    std::env::set_current_dir(root).unwrap();
    for name in ["examples/demo.toml", "examples/follow.toml", "examples/mirror.toml", "examples/kafka.toml", "deploy/fedistream.toml"] {
        let cfg = crate::config::load(Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
        // The examples name token variables that CI does not set; the rest must be clean.
        let errs: Vec<String> = validate(&cfg, Path::new(name))
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .filter(|e| !e.contains("FEDISTREAM_READER_TOKEN is not set") && !e.contains("FEDISTREAM_PUBLISHER_TOKEN is not set"))
            // The archive channels' S3 credentials (`eval "$(scripts/s3 env)"`), likewise.
            .filter(|e| {
                !(e.contains("`FEDISTREAM_S3_ACCESS_KEY_ID` is not set") || e.contains("`FEDISTREAM_S3_SECRET_ACCESS_KEY` is not set"))
            })
            .collect();
        assert!(errs.is_empty(), "{name}: {errs:#?}");
    }
}

#[test]
fn empty_config_says_what_is_missing() {
    let errs = errors("");
    assert!(errs.iter().any(|e| e.contains("no sources")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("no channels")), "{errs:?}");
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_log_settings_are_checked_at_their_keys() {
    let missing = format!("[log]\nbackend = \"kafka\"\n{MINIMAL}");
    let errs = errors(&missing);
    assert!(errs.iter().any(|e| e.contains("log.kafka") && e.contains("brokers")), "{errs:?}");
    let bad = format!(
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"\"\npipeline = \"a b\"\ncompression = \"brotli\"\nsession_timeout = \"1s\"\n{MINIMAL}"
    );
    let errs = errors(&bad);
    for key in ["log.kafka.brokers", "log.kafka.pipeline", "log.kafka.compression", "log.kafka.session_timeout"] {
        assert!(errs.iter().any(|e| e.contains(key)), "{key} not reported: {errs:?}");
    }
    let forgot_backend = format!("[log.kafka]\nbrokers = \"127.0.0.1:9092\"\n{MINIMAL}");
    assert!(errors(&forgot_backend).iter().any(|e| e.contains("log.backend")));
    let unknown = format!("[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"x:1\"\nbroker = \"y\"\n{MINIMAL}");
    let err = parse(&unknown, file()).unwrap_err().to_string();
    assert!(err.contains("log.kafka") && err.contains("broker"), "{err}");
    let good = format!("[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"127.0.0.1:9092\"\npipeline = \"demo\"\n{MINIMAL}");
    assert!(errors(&good).is_empty(), "{:?}", errors(&good));
}

#[cfg(feature = "kafka")]
#[test]
fn kafka_channels_are_checked_offline() {
    // Neither the brokers nor the registry exist: validation does no I/O.
    let ok = r#"
[sources.a]
type = "mastodon"
accounts = ["@alice@example.org"]

[channels.k]
type = "kafka"
brokers = "kafka.invalid:9092,kafka2.invalid:9092"
topic = "fedistream.posts"
format = "avro"
schema_registry = "https://registry.invalid:8081"
tombstones = false
compression = "lz4"
properties = { "linger.ms" = "10", "security.protocol" = "SASL_SSL" }
[channels.k.delivery]
max_batch = 500
"#;
    assert!(errors(ok).is_empty(), "{:?}", errors(ok));
    let cfg = parse(ok, file()).unwrap();
    let ChannelConfig::Kafka(k) = &cfg.channels["k"] else { panic!("not a kafka channel") };
    assert!(!k.tombstones);
    assert_eq!(k.delivery.max_batch, 500);

    let bad = r#"
[sources.a]
type = "mastodon"
accounts = ["@alice@example.org"]

[channels.k]
type = "kafka"
brokers = ""
topic = "posts/all"
format = "avro"
schema_registry_user_env = "SR_USER"
properties = { "sasl.password" = "hunter2", "acks" = "1" }
properties_env = { "sasl.username" = "FEDISTREAM_TEST_SURELY_UNSET_VAR" }
"#;
    let errs = errors(bad);
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(has("`channels.k.brokers`: no brokers"), "{errs:#?}");
    assert!(has("`channels.k.topic`: `posts/all`: topic names may use letters, digits"), "{errs:#?}");
    assert!(has("`channels.k.schema_registry`: format = \"avro\" needs a schema_registry URL"), "{errs:#?}");
    assert!(has("`channels.k.schema_registry_user_env`: give both"), "{errs:#?}");
    assert!(has("`acks` is set by the channel"), "{errs:#?}");
    assert!(has("`sasl.password` is a secret: name an environment variable in properties_env instead"), "{errs:#?}");
    assert!(has("the environment variable FEDISTREAM_TEST_SURELY_UNSET_VAR is not set"), "{errs:#?}");
    assert!(!errs.iter().any(|e| e.contains("hunter2")), "{errs:#?}");

    let text = "[channels.k]\ntype = \"kafka\"\nbrokers = \"h:1\"\ntopic = \"t\"\nformat = \"protobuf\"\n";
    let e = parse(text, file()).unwrap_err();
    assert_eq!(e.key, "channels.k.format", "{e}");
    let text = "[channels.k]\ntype = \"kafka\"\nbrokers = \"h:1\"\ntopic = \"t\"\nschema_registry_password = \"x\"\n";
    let e = parse(text, file()).unwrap_err();
    assert!(e.to_string().contains("schema_registry_password"), "{e}");

    // create_topic: checked at its keys, in TOML as the README writes it.
    let with = |ct: &str| {
        format!("[sources.a]\ntype = \"mastodon\"\naccounts = [\"@a@example.org\"]\n[channels.k]\ntype = \"kafka\"\nbrokers = \"h:1\"\ntopic = \"t\"\ncreate_topic = {ct}\n")
    };
    let ok = with(r#"{ partitions = 6, replication = 3, config = { "retention.ms" = "604800000", "min.insync.replicas" = 2 } }"#);
    assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
    let errs = errors(&with(r#"{ partitions = 0, replication = 0, config = { "retention ms" = "1" } }"#));
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(has("`channels.k.create_topic.partitions`: must be at least 1"), "{errs:#?}");
    assert!(has("`channels.k.create_topic.replication`: must be at least 1"), "{errs:#?}");
    assert!(has("`channels.k.create_topic.config`: `retention ms` is not a topic setting name"), "{errs:#?}");
    let e = parse(&with("{ partitons = 6 }"), file()).unwrap_err();
    assert!(e.key.starts_with("channels.k.create_topic") && e.to_string().contains("partitons"), "{e}");
}

#[test]
fn reconciliation_settings_are_checked_with_their_key() {
    let ok = MINIMAL.replace(
        "accounts = [\"@alice@example.org\"]",
        "accounts = [\"@alice@example.org\"]\nreconcile_window = \"3d\"\nreconcile_min_posts = 50\nreconcile_within = \"30m\"",
    );
    assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
    let bad = MINIMAL.replace(
        "accounts = [\"@alice@example.org\"]",
        "accounts = [\"@alice@example.org\"]\nreconcile_min_posts = 5000\nreconcile_within = \"10s\"",
    );
    let e = errors(&bad);
    assert!(e.iter().any(|m| m.contains("sources.a.reconcile_min_posts") && m.contains("at most 2000")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("sources.a.reconcile_within") && m.contains("at least 1m")), "{e:?}");
}

#[cfg(feature = "webhook")]
#[test]
fn webhook_channels_are_checked_for_url_secrets_and_batching() {
    let ok = r#"
[sources.a]
type = "mastodon"
accounts = ["@alice@example.org"]

[channels.hook]
type = "webhook"
url = "https://hooks.example.org/fedistream"
format = "json"
batch = 20
timeout = "5s"
[channels.hook.delivery]
max_in_flight = 8
"#;
    assert!(errors(ok).is_empty(), "{:?}", errors(ok));
    let cfg = parse(ok, file()).unwrap();
    let ChannelConfig::Webhook(w) = &cfg.channels["hook"] else { panic!("not a webhook channel") };
    assert_eq!((w.batch, w.max_in_flight()), (Some(20), 8));

    let bad = r#"
[sources.a]
type = "mastodon"
accounts = ["@alice@example.org"]

[channels.h1]
type = "webhook"
url = "ftp://hooks.example.org/x"
secret_env = "FEDISTREAM_TEST_SURELY_UNSET_VAR"

[channels.h2]
type = "webhook"
url_env = "FEDISTREAM_TEST_SURELY_UNSET_URL"
format = "discord"
batch = 5

[channels.h3]
type = "webhook"
"#;
    let errs = errors(bad);
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(has("`channels.h1.url`: the scheme must be https or http, not `ftp`"), "{errs:#?}");
    assert!(has("`channels.h1.secret_env`: the environment variable FEDISTREAM_TEST_SURELY_UNSET_VAR is not set"), "{errs:#?}");
    assert!(has("`channels.h2.url_env`: the environment variable FEDISTREAM_TEST_SURELY_UNSET_URL is not set"), "{errs:#?}");
    assert!(has("`channels.h2.batch`: format = \"discord\" sends one message per post"), "{errs:#?}");
    assert!(has("`channels.h3.url`: no url"), "{errs:#?}");
}

#[cfg(feature = "http")]
#[test]
fn the_http_server_refuses_public_addresses_without_a_token() {
    let with = |http: &str| format!("{MINIMAL}\n[http]\n{http}\n");
    assert!(errors(&with("")).is_empty(), "[http] alone: 127.0.0.1:8080");
    assert!(errors(&with("listen = \"\"")).is_empty(), "off");
    assert!(errors(&with("listen = \"[::1]:9000\"")).is_empty(), "loopback v6");
    let errs = errors(&with("listen = \"0.0.0.0:8080\""));
    assert!(errs.iter().any(|e| e.contains("`http.listen`: 0.0.0.0:8080 is reachable from other machines: set token_env")), "{errs:#?}");
    assert!(errors(&with("listen = \"0.0.0.0:8080\"\nallow_public = true")).is_empty());
    let errs = errors(&with("listen = \"0.0.0.0:8080\"\ntoken_env = \"FEDISTREAM_TEST_SURELY_UNSET_VAR\""));
    assert!(
        errs.iter().any(|e| e.contains("`http.token_env`: the environment variable FEDISTREAM_TEST_SURELY_UNSET_VAR is not set")),
        "{errs:#?}"
    );
    assert_eq!(errs.len(), 1, "a token is configured: the address is fine: {errs:#?}");
    let errs = errors(&with("listen = \"localhost:8080\""));
    assert!(errs.iter().any(|e| e.contains("`http.listen`: `localhost:8080` is not an IP address and port")), "{errs:#?}");
}

#[cfg(feature = "kafka")]
#[test]
fn account_stats_settings_and_its_channels_are_checked_at_their_keys() {
    let good = format!(
        "{MINIMAL}
[processors.stats]
type = \"account_stats\"
windows = [\"hour\", \"day\", \"week\"]
zone = \"Europe/Berlin\"
allowed_lateness = \"30m\"
emit_open_every = \"10s\"

[channels.statsfile]
type = \"file\"
path = \"stats.jsonl\"

[[routes]]
from = [\"a\"]
to = [\"out\"]

[[routes]]
from = [\"stats\"]
to = [\"statsfile\"]
"
    );
    assert!(errors(&good).is_empty(), "{:?}", errors(&good));
    let bad = good.replace("Europe/Berlin", "Europe/Atlantis").replace("[\"hour\", \"day\", \"week\"]", "[]");
    let e = errors(&bad);
    assert!(e.iter().any(|m| m.contains("processors.stats.zone") && m.contains("Europe/Atlantis")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("processors.stats.windows")), "{e:?}");
    let e = parse(&good.replace("windows =", "window ="), file()).unwrap_err();
    assert!(e.key.starts_with("processors.stats") && e.reason.contains("unknown field `window`"), "{e}");
    let e = parse(&good.replace("[\"hour\", \"day\", \"week\"]", "[\"month\"]"), file()).unwrap_err();
    assert!(e.reason.contains("month"), "{e}");

    // Stats records have an Avro schema of their own; a mastodon channel cannot take them.
    let to_avro = good.replace(
        "[channels.statsfile]\ntype = \"file\"\npath = \"stats.jsonl\"",
        "[channels.statsfile]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"stats\"\nformat = \"avro\"\nschema_registry = \"http://127.0.0.1:8081\"",
    );
    assert!(to_avro.contains("format = \"avro\""));
    assert!(errors(&to_avro).is_empty(), "{:?}", errors(&to_avro));
    let to_mastodon = good.replace(
        "[channels.statsfile]\ntype = \"file\"\npath = \"stats.jsonl\"",
        "[connections.mastodon.bot]\ninstance = \"https://bots.example\"\ntoken_env = \"PATH\"\n\n[channels.statsfile]\ntype = \"mastodon\"\nconnection = \"bot\"",
    );
    let e = errors(&to_mastodon);
    assert!(e.iter().any(|m| m.contains("channels.statsfile") && m.contains("cannot take the output of processor `stats`")), "{e:?}");
    // With a digest table it posts digests of the records.
    let digest = to_mastodon.replace("connection = \"bot\"", "connection = \"bot\"\ndigest = { window = \"week\" }");
    assert!(errors(&digest).is_empty(), "{:?}", errors(&digest));
    let e = errors(&digest.replace("window = \"week\"", "template = \"{{ posts \""));
    assert!(e.iter().any(|m| m.contains("channels.statsfile") && m.contains("digest.template: line 1")), "{e:?}");
    let e = errors(&digest.replace("window = \"week\"", "window = \"hour\"").replace("[\"hour\", \"day\", \"week\"]", "[\"day\"]"));
    assert!(e.iter().any(|m| m.contains("channels.statsfile.digest.window") && m.contains("no `hour` windows")), "{e:?}");
    // A digest channel fed posts is a mistake.
    let e = errors(&digest.replace("from = [\"stats\"]", "from = [\"a\"]"));
    assert!(e.iter().any(|m| m.contains("channels.statsfile.digest") && m.contains("account_stats")), "{e:?}");
}

#[test]
fn timeline_sources_name_what_is_wrong() {
    let ok = "[sources.t]\ntype = \"mastodon_timeline\"\ninstance = \"https://example.org\"\ntimelines = [\"local\", \"hashtag:rust\"]\n\n[channels.out]\ntype = \"stdout\"\n";
    assert!(errors(ok).is_empty(), "{:?}", errors(ok));
    let bad = "[sources.t]\ntype = \"mastodon_timeline\"\ntimelines = [\"list:42\"]\nstream = \"sse\"\n\n[sources.u]\ntype = \"mastodon_timeline\"\nconnection = \"nope\"\ntimelines = [\"local\"]\n\n[channels.out]\ntype = \"stdout\"\n";
    let e = errors(bad);
    for want in [
        "`sources.t.connection`: which server?",
        "`sources.t.timelines`: `list:42` needs a `connection`",
        "`sources.t.stream`",
        "`sources.u.connection`: no connection named `nope`",
    ] {
        assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:#?}");
    }
    let unknown = "[sources.t]\ntype = \"mastodon_timeline\"\ninstance = \"https://example.org\"\ntimelines = [\"home\"]\n\n[channels.out]\ntype = \"stdout\"\n";
    let msg = parse(unknown, file()).unwrap_err().to_string();
    assert!(msg.contains("expected `local`, `federated`"), "{msg}");
}
