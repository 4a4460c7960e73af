//! `Config` as a whole: loading from the file and the environment, secret and TLS
//! files, and validation as an operator meets it (errors naming their keys).

use std::path::{Path, PathBuf};

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tw_config_names_the_file_and_is_not_a_setting() {
    let c = Config::from_sources(
        "",
        None,
        env(&[("TW_CONFIG", "/etc/tw.toml"), ("TW_AMQP__PREFETCH", "64")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.amqp.prefetch, 64);
    // Any other TW_ variable without a section is still refused.
    assert!(Config::from_sources("", None, env(&[("TW_CONFIGG", "x")])).is_err());
}

#[test]
fn gateway_max_texts_above_the_workers_limit_is_refused() {
    let err = Config::from_sources("[gateway]\nmax_texts = 200\n", None, env(&[]))
        .expect_err("200 gateway texts against 128 worker texts")
        .to_string();
    assert!(
        err.contains("gateway.max_texts") && err.contains("limits.max_texts (128)"),
        "{err}"
    );
    let both = "[gateway]\nmax_texts = 200\n[limits]\nmax_texts = 200\n";
    let c = Config::from_sources(both, None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.gateway_max_texts(), 200);
    // Unset (0), it follows the workers' limit, so a worker-only file that lowers
    // limits.max_texts needs no gateway setting.
    let c = Config::from_sources("[limits]\nmax_texts = 16\n", None, env(&[]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.gateway.max_texts, 0);
    assert_eq!(c.gateway_max_texts(), 16);
}

#[test]
fn prefetch_below_the_batchers_need_is_a_warning_not_an_error() {
    let pinned = "[model]\nthreads = 2\nreplicas = 2\n";
    let c = Config::from_sources(pinned, None, env(&[("TW_AMQP__PREFETCH", "1")]))
        .unwrap_or_else(|e| panic!("prefetch 1 is allowed: {e}"));
    let advice = c.advisories();
    assert_eq!(advice.len(), 1, "{advice:?}");
    assert!(
        advice[0].contains("amqp.prefetch = 1") && advice[0].contains("= 256"),
        "{advice:?}"
    );
    // The defaults agree with each other on two replicas.
    let c = Config::from_sources(pinned, None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.advisories(), Vec::<String>::new());
    let c = Config::from_sources(pinned, None, env(&[("TW_AMQP__PREFETCH", "256")]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.advisories(), Vec::<String>::new());
}

#[test]
fn effective_toml_leaves_out_the_ignored_model_section() {
    let single = Config::from_sources("", None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
    assert!(single.effective_toml().unwrap().contains("[model]"));
    let many = Config::from_sources(
        "[[models]]\npath = \"tests/fixtures/copy-model\"\nsource = \"ko\"\ntarget = \"en\"\n",
        None,
        env(&[]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = many.effective_toml().unwrap();
    assert!(!shown.contains("[model]"), "{shown}");
    assert!(shown.contains("[[models]]"), "{shown}");
    let back: Config = toml::from_str(&shown).unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert_eq!(back.models, many.models);
}

#[test]
fn http_listen_and_device_are_validated() {
    let bad = Config::from_sources("[http]\nlisten = \"nowhere\"\n", None, env(&[]));
    assert!(bad.unwrap_err().to_string().contains("http.listen"));
    let off = Config::from_sources("", None, env(&[("TW_HTTP__LISTEN", "")])).unwrap();
    assert_eq!(off.http.listen, "");
    let cuda = Config::from_sources("", None, env(&[("TW_MODEL__DEVICE", "cuda")]));
    assert_eq!(cuda.is_ok(), cfg!(feature = "cuda"));
}

#[test]
fn defaults_are_valid() {
    let c = Config::from_sources("", None, env(&[])).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn shipped_default_file_is_valid_and_matches_code_defaults() {
    let text = include_str!("../../config/default.toml");
    let c = Config::from_sources(text, None, env(&[])).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn env_overrides_file_with_typed_values() {
    let c = Config::from_sources(
        "[amqp]\nprefetch = 8\n",
        None,
        env(&[
            ("TW_AMQP__PREFETCH", "16"),
            ("TW_AMQP__QUEUE", "q1"),
            ("TW_MODEL__SOURCE", "de"),
            ("TW_REDIS__ENABLED", "false"),
            ("TW_BATCH__MAX_WAIT_MS", "7"),
            ("OTHER", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.amqp.prefetch, 16);
    assert_eq!(c.amqp.queue, "q1");
    assert_eq!(c.model.source, "de");
    assert!(!c.redis.enabled);
    assert_eq!(c.batch.max_wait_ms, 7);
}

#[test]
fn errors_name_the_key() {
    let e = Config::from_sources("", None, env(&[("TW_AMQP__PREFETCH", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("TW_AMQP__PREFETCH"), "{e}");
    let e = Config::from_sources("", None, env(&[("TW_AMQP__NOPE", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("amqp.nope"), "{e}");
    let e = Config::from_sources("[batch]\nmax_batch_sise = 3\n", None, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch.max_batch_sise"), "{e}");
    let e = Config::from_sources("[batch]\nmax_batch_size = 0\n", None, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch.max_batch_size"), "{e}");
    let e = Config::from_sources("[amqp]\nprefetch = \"x\"\n", None, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("prefetch"), "{e}");
    let e = Config::from_sources("", None, env(&[("TW_MODEL__COMPUTE_TYPE", "int3")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.compute_type"), "{e}");
}

#[test]
fn lane_queue_names_cannot_collide() {
    // Another model's interactive lane, or the dead-letter queue doubling as a lane.
    let e = Config::from_sources("[amqp]\nqueue = \"jobs.interactive\"\n", None, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("amqp.queue") && e.contains(".interactive"),
        "{e}"
    );
    for dl in ["jobs", "jobs.interactive"] {
        let toml = format!("[amqp]\nqueue = \"jobs\"\ndead_letter = \"{dl}\"\n");
        let e = Config::from_sources(&toml, None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("amqp.dead_letter"), "{dl}: {e}");
    }
    let c = Config::from_sources(
        "[amqp]\nqueue = \"jobs.interactive-docs\"\n",
        None,
        env(&[]),
    );
    assert_eq!(c.unwrap().amqp.queue, "jobs.interactive-docs");
}

#[test]
fn queue_type_and_delivery_limit() {
    let c = Config::from_sources("", None, env(&[])).unwrap();
    assert_eq!(c.amqp.queue_type, QueueType::Classic);
    assert_eq!(c.amqp.delivery_limit, 5);
    let c = Config::from_sources(
        "[amqp]\nqueue_type = \"quorum\"\n",
        None,
        env(&[("TW_AMQP__DELIVERY_LIMIT", "3")]),
    )
    .unwrap();
    assert_eq!(c.amqp.queue_type, QueueType::Quorum);
    assert_eq!(c.amqp.delivery_limit, 3);
    let c = Config::from_sources("", None, env(&[("TW_AMQP__QUEUE_TYPE", "quorum")]));
    assert_eq!(c.unwrap().amqp.queue_type, QueueType::Quorum);
    let e = Config::from_sources("[amqp]\nqueue_type = \"stream\"\n", None, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("queue_type") || e.contains("stream"), "{e}");
    let e = Config::from_sources(
        "[amqp]\nqueue_type = \"quorum\"\ndelivery_limit = 0\n",
        None,
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("amqp.delivery_limit"), "{e}");
}

#[test]
fn redis_cluster_seeds_are_split_and_validated() {
    let c = Config::from_sources(
        "[redis]\nmode = \"cluster\"\nurl = \"redis://:pw@h1:7000, redis://:pw@h2:7001,\"\n",
        None,
        env(&[]),
    )
    .unwrap();
    assert_eq!(c.redis.mode, RedisMode::Cluster);
    assert_eq!(
        c.redis.urls(),
        vec!["redis://:pw@h1:7000", "redis://:pw@h2:7001"]
    );
    // Standalone: the URL is one URL, even with a comma in it.
    let s = RedisConfig {
        url: "redis://:a,b@h:6379".into(),
        ..RedisConfig::default()
    };
    assert_eq!(s.urls(), vec!["redis://:a,b@h:6379"]);
    for (bad, needle) in [
        ("", "at least one seed"),
        ("redis://h1:7000,unix:///tmp/r.sock", "seed 2"),
        ("redis://:secret@h1:7000,redis://:secret@:x", "seed 2"),
    ] {
        let e = Config::from_sources(
            "[redis]\nmode = \"cluster\"\n",
            None,
            env(&[("TW_REDIS__URL", bad)]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("redis.url") && e.contains(needle), "{e}");
        assert!(!e.contains("secret"), "password leaked: {e}");
    }
    let e = Config::from_sources("", None, env(&[("TW_REDIS__MODE", "sentinel")]));
    assert!(e.is_err());
}

/// A fresh directory for one test's files.
fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tw-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

#[test]
fn urls_come_from_files_trimmed() {
    let d = temp_dir();
    let amqp = d.join("amqp-url");
    let redis = d.join("redis-url");
    std::fs::write(&amqp, "  amqps://u:file-secret@mq:5671/%2f\n").unwrap();
    std::fs::write(&redis, "rediss://:file-secret@cache:6380\n").unwrap();
    let c = Config::from_sources(
        &format!("[redis]\nurl_file = {:?}\n", redis.display().to_string()),
        None,
        env(&[
            ("TW_AMQP__URL", "amqp://ignored:x@h/%2f"),
            ("TW_AMQP__URL_FILE", amqp.to_str().unwrap()),
        ]),
    )
    .unwrap();
    assert_eq!(c.amqp.url, "amqps://u:file-secret@mq:5671/%2f");
    assert_eq!(c.redis.url, "rediss://:file-secret@cache:6380");
    assert_eq!(c.amqp.url_file, amqp);
    // The file's URL is validated like any other.
    std::fs::write(&amqp, "http://u:file-secret@mq/\n").unwrap();
    let e = Config::from_sources(
        "",
        None,
        env(&[("TW_AMQP__URL_FILE", amqp.to_str().unwrap())]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("amqp.url"), "{e}");
    assert!(!e.contains("file-secret"), "{e}");
    // Missing and empty files are errors naming the key and the path.
    let missing = d.join("nope");
    let e = Config::from_sources(
        "",
        None,
        env(&[("TW_REDIS__URL_FILE", missing.to_str().unwrap())]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("redis.url_file") && e.contains("nope") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(&redis, " \n").unwrap();
    let e = Config::from_sources(
        "",
        None,
        env(&[("TW_REDIS__URL_FILE", redis.to_str().unwrap())]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("redis.url_file") && e.contains("empty"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn tls_files_need_a_tls_url_and_each_other() {
    let d = temp_dir();
    let ca = d.join("ca.pem");
    let cert = d.join("cert.pem");
    let key = d.join("key.pem");
    std::fs::write(&ca, PEM_CERT).unwrap();
    std::fs::write(&cert, PEM_CERT).unwrap();
    std::fs::write(&key, PEM_KEY).unwrap();
    let (ca_s, cert_s, key_s) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    // A CA file with a plain URL is a configuration error naming both keys.
    for (vars, needle) in [
        (vec![("TW_AMQP__TLS_CA_FILE", ca_s)], "amqp.tls_ca_file"),
        (vec![("TW_REDIS__TLS_CA_FILE", ca_s)], "redis.tls_ca_file"),
        (
            vec![
                ("TW_AMQP__URL", "amqps://u:p@h/%2f"),
                ("TW_AMQP__TLS_CERT_FILE", cert_s),
            ],
            "amqp.tls_key_file must be set together",
        ),
        (
            vec![
                ("TW_REDIS__URL", "rediss://h:1"),
                ("TW_REDIS__TLS_KEY_FILE", key_s),
            ],
            "redis.tls_cert_file",
        ),
        (
            vec![
                ("TW_REDIS__MODE", "cluster"),
                ("TW_REDIS__URL", "rediss://h1:1,redis://h2:2"),
                ("TW_REDIS__TLS_CA_FILE", ca_s),
            ],
            "redis.tls_ca_file",
        ),
    ] {
        let e = Config::from_sources("", None, env(&vars))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let e = Config::from_sources("", None, env(&[("TW_AMQP__TLS_CA_FILE", ca_s)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("amqps://"), "{e}");
    // With TLS URLs, everything is read.
    let c = Config::from_sources(
        "",
        None,
        env(&[
            ("TW_AMQP__URL", "amqps://u:p@h/%2f"),
            ("TW_AMQP__TLS_CA_FILE", ca_s),
            ("TW_AMQP__TLS_CERT_FILE", cert_s),
            ("TW_AMQP__TLS_KEY_FILE", key_s),
            ("TW_REDIS__MODE", "cluster"),
            ("TW_REDIS__URL", "rediss://h1:1,rediss://h2:2"),
            ("TW_REDIS__TLS_CA_FILE", ca_s),
        ]),
    )
    .unwrap();
    let pem = c.amqp.tls_files().read().unwrap();
    assert_eq!(pem.ca.as_deref(), Some(PEM_CERT));
    assert_eq!(pem.client_key.as_deref(), Some(PEM_KEY.as_bytes()));
    assert!(!format!("{pem:?}").contains("MIIE"), "{pem:?}");
    let pem = c.redis.tls_files().read().unwrap();
    assert!(pem.ca.is_some() && pem.client_cert.is_none());
    assert!(Config::default()
        .amqp
        .tls_files()
        .read()
        .unwrap()
        .is_empty());
    // Unreadable or non-PEM files stop the start-up with the key and path named.
    let e = Config::from_sources(
        "",
        None,
        env(&[
            ("TW_AMQP__URL", "amqps://h/%2f"),
            ("TW_AMQP__TLS_CA_FILE", "/no/such/ca.pem"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("amqp.tls_ca_file") && e.contains("/no/such/ca.pem"),
        "{e}"
    );
    let e = Config::from_sources(
        "",
        None,
        env(&[
            ("TW_REDIS__URL", "rediss://h:1"),
            ("TW_REDIS__TLS_CERT_FILE", key_s),
            ("TW_REDIS__TLS_KEY_FILE", cert_s),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("redis.tls_cert_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn syntax_errors_and_debug_output_hide_passwords() {
    let e = Config::from_sources(
        "[amqp]\nurl = \"amqp://u:toml-secret@h/%2f\" junk\n",
        Some(Path::new("w.toml")),
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("w.toml") && e.contains("line 2"), "{e}");
    assert!(!e.contains("toml-secret"), "{e}");
    let c = Config::from_sources(
        "",
        None,
        env(&[
            ("TW_AMQP__URL", "amqp://u:dbg-secret@h/%2f"),
            ("TW_REDIS__URL", "redis://:dbg-secret@h:1"),
        ]),
    )
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("dbg-secret"), "{dbg}");
    assert!(
        dbg.contains("amqp://u:***@h/%2f") && dbg.contains("redis://:***@h:1"),
        "{dbg}"
    );
}

#[test]
fn blocking_pool_is_the_largest_models_threads_plus_four() {
    let mut c = Config::default();
    c.model.threads = 3;
    assert_eq!((c.tokenize_threads(), c.blocking_threads()), (3, 7));
    // With a model list, `[model]` is ignored and the largest model counts.
    c.models = vec![
        ModelConfig {
            threads: 2,
            ..ModelConfig::default()
        },
        ModelConfig {
            threads: 5,
            ..ModelConfig::default()
        },
    ];
    assert_eq!((c.tokenize_threads(), c.blocking_threads()), (5, 9));
}

#[test]
fn more_replicas_than_threads_is_rejected() {
    let e = Config::from_sources(
        "",
        None,
        env(&[("TW_MODEL__THREADS", "2"), ("TW_MODEL__REPLICAS", "3")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("model.replicas"), "{e}");
}

#[test]
fn models_entry_with_a_device_this_build_lacks_is_refused() {
    // `[model]` was checked for a device this build cannot use; `[[models]]` entries
    // were not, so a CPU build started and failed later, loading the model.
    let gpu = "[[models]]\npath = \"tests/fixtures/copy-model\"\nid = \"cpu\"\n\
               [[models]]\npath = \"tests/fixtures/copy-model\"\nid = \"gpu\"\n\
               pairs = [\"en-ko\"]\ndevice = \"cuda\"\n";
    let result = Config::from_sources(gpu, None, env(&[]));
    assert_eq!(result.is_ok(), cfg!(feature = "cuda"), "{result:?}");
    if let Err(e) = result {
        let e = e.to_string();
        assert!(
            e.contains("models[1].device") && e.contains("\"gpu\"") && e.contains("`cuda` feature"),
            "{e}"
        );
    }
}

#[test]
fn models_entries_are_validated_with_their_index_and_id() {
    let bad = "[[models]]\npath = \"tests/fixtures/copy-model\"\nid = \"a\"\nbeam_size = 40\n";
    let e = Config::from_sources(bad, None, env(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid configuration: models[0].beam_size (model \"a\") must be in 1..=16"
    );
    let bad = "[[models]]\npath = \"tests/fixtures/copy-model\"\nid = \"a\"\n\
               language_tokens = \"nllb\"\npairs = [\"ko-xx\"]\n";
    let e = Config::from_sources(bad, None, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("models[0].language_codes") && e.contains("add it to models[0].language_codes"),
        "{e}"
    );
    // With a model list, `[model]` is ignored, and so are its values.
    let ignored = "[model]\nbeam_size = 40\n[[models]]\npath = \"tests/fixtures/copy-model\"\n";
    Config::from_sources(ignored, None, env(&[])).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn lanes_default_on_and_are_configurable() {
    let c = Config::from_sources("", None, env(&[])).unwrap();
    assert!(c.amqp.interactive_lane);
    assert_eq!(c.amqp.interactive_prefetch, 64);
    assert_eq!(c.gateway.lane, translation_client::Lane::Interactive);
    assert_eq!(c.batch.interactive_burst, 4);
    assert_eq!(c.batch.interactive_max_batch_tokens, 2048);
    let c = Config::from_sources(
        "[amqp]\ninteractive_lane = false\n[gateway]\nlane = \"bulk\"\n",
        None,
        env(&[
            ("TW_AMQP__INTERACTIVE_PREFETCH", "8"),
            ("TW_BATCH__INTERACTIVE_BURST", "2"),
            ("TW_BATCH__INTERACTIVE_MAX_BATCH_TOKENS", "512"),
        ]),
    )
    .unwrap();
    assert_eq!(c.batch.interactive_max_batch_tokens, 512);
    assert!(!c.amqp.interactive_lane);
    assert_eq!(c.amqp.interactive_prefetch, 8);
    assert_eq!(c.gateway.lane, translation_client::Lane::Bulk);
    assert_eq!(c.batch.interactive_burst, 2);
    for (toml, key) in [
        (
            "[amqp]\ninteractive_prefetch = 0\n",
            "amqp.interactive_prefetch",
        ),
        (
            "[batch]\ninteractive_burst = 0\n",
            "batch.interactive_burst",
        ),
        (
            "[batch]\ninteractive_max_batch_tokens = 0\n",
            "batch.interactive_max_batch_tokens",
        ),
        (
            "[batch]\nmax_batch_tokens = 1000\ninteractive_max_batch_tokens = 1001\n",
            "batch.interactive_max_batch_tokens",
        ),
        ("[gateway]\nlane = \"urgent\"\n", "lane"),
    ] {
        let e = Config::from_sources(toml, None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}
