//! lingua vs whatlang on the held-out set in `tests/fixtures/langid/` (see its
//! README): accuracy on short and long texts per language, and the cost of a call.
//! The gateway uses lingua (`src/gateway/detect.rs`); this is the evidence behind that
//! choice, printed as the table in `docs/gateway.md`. Not run by default (it measures
//! time and prints a table):
//!
//! ```text
//! cargo test --release --test langid -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lingua::{IsoCode639_1, Language, LanguageDetectorBuilder};

/// The languages of the held-out set.
const EVALUATED: &[&str] = &["ko", "en", "ja", "zh", "de", "fr", "es", "ru"];

/// Every language built into the gateway (lingua's cargo features in Cargo.toml): the
/// candidates when a gateway serves them all, the hardest case.
const CANDIDATES: &[&str] = &[
    "ar", "de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "nl", "pl", "pt", "ru", "sv", "th",
    "tr", "uk", "vi", "zh",
];

/// whatlang's ISO 639-3 code for a client code.
fn whatlang_code(code: &str) -> &'static str {
    match code {
        "ar" => "ara",
        "de" => "deu",
        "en" => "eng",
        "es" => "spa",
        "fr" => "fra",
        "hi" => "hin",
        "id" => "ind",
        "it" => "ita",
        "ja" => "jpn",
        "ko" => "kor",
        "nl" => "nld",
        "pl" => "pol",
        "pt" => "por",
        "ru" => "rus",
        "sv" => "swe",
        "th" => "tha",
        "tr" => "tur",
        "uk" => "ukr",
        "vi" => "vie",
        "zh" => "cmn",
        other => panic!("no whatlang code for {other}"),
    }
}

/// (language, texts) of one part (`short` or `long`) of the held-out set.
fn held_out(part: &str) -> Vec<(&'static str, Vec<String>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/langid");
    EVALUATED
        .iter()
        .map(|lang| {
            let path = dir.join(format!("{lang}.{part}.txt"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let lines = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect();
            (*lang, lines)
        })
        .collect()
}

/// A detector under test: client code in, client code (or None) out.
type Detect<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

struct Score {
    right: usize,
    total: usize,
    time: Duration,
    misses: Vec<String>,
}

/// The process's resident memory, KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn score(
    detect: &Detect<'_>,
    part: &[(&'static str, Vec<String>)],
) -> BTreeMap<&'static str, Score> {
    let mut out = BTreeMap::new();
    for (lang, texts) in part {
        let mut s = Score {
            right: 0,
            total: 0,
            time: Duration::ZERO,
            misses: Vec::new(),
        };
        for text in texts {
            let t = Instant::now();
            let got = detect(text);
            s.time += t.elapsed();
            s.total += 1;
            if got.as_deref() == Some(*lang) {
                s.right += 1;
            } else {
                s.misses.push(format!(
                    "{lang}→{}: {text}",
                    got.as_deref().unwrap_or("none")
                ));
            }
        }
        out.insert(*lang, s);
    }
    out
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (docs/gateway.md)"]
fn compare_lingua_and_whatlang() {
    let short = held_out("short");
    let long = held_out("long");
    for (lang, texts) in short.iter().chain(&long) {
        assert!(texts.len() >= 10, "{lang}: {} texts", texts.len());
    }
    let lingua_languages: Vec<Language> = CANDIDATES
        .iter()
        .map(|c| Language::from_iso_code_639_1(&c.parse::<IsoCode639_1>().expect("built in")))
        .collect();

    let rss_start = rss_kib();
    let t = Instant::now();
    let high = LanguageDetectorBuilder::from_languages(&lingua_languages)
        .with_preloaded_language_models()
        .build();
    let high_load = t.elapsed();
    let t = Instant::now();
    let low = LanguageDetectorBuilder::from_languages(&lingua_languages)
        .with_low_accuracy_mode()
        .with_preloaded_language_models()
        .build();
    let low_load = t.elapsed();
    let t = Instant::now();
    let allow = CANDIDATES
        .iter()
        .map(|c| whatlang::Lang::from_code(whatlang_code(c)).expect("whatlang knows it"))
        .collect();
    let what = whatlang::Detector::with_allowlist(allow);
    let what_load = t.elapsed();

    let lingua_code = |l: Language| l.iso_code_639_1().to_string().to_lowercase();
    let detectors: Vec<(&str, Duration, Detect<'_>)> = vec![
        (
            "lingua 1.8 (high accuracy)",
            high_load,
            Box::new(|t: &str| high.detect_language_of(t).map(lingua_code)),
        ),
        (
            "lingua 1.8 (low accuracy mode)",
            low_load,
            Box::new(|t: &str| low.detect_language_of(t).map(lingua_code)),
        ),
        (
            "whatlang 0.18",
            what_load,
            Box::new(|t: &str| {
                let lang = what.detect_lang(t)?;
                CANDIDATES
                    .iter()
                    .find(|c| whatlang_code(c) == lang.code())
                    .map(|c| c.to_string())
            }),
        ),
    ];

    println!(
        "\nHeld-out set: {} short and {} long texts in {}; candidates: {} languages; build: {}\n",
        short.iter().map(|(_, t)| t.len()).sum::<usize>(),
        long.iter().map(|(_, t)| t.len()).sum::<usize>(),
        EVALUATED.join(", "),
        CANDIDATES.len(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    let mut header = "| detector | part |".to_owned();
    let mut rule = "| --- | --- |".to_owned();
    for lang in EVALUATED {
        header += &format!(" {lang} |");
        rule += " ---: |";
    }
    header += " all | µs per call | model load | RSS after (MiB) |";
    rule += " ---: | ---: | ---: | ---: |";
    println!("{header}\n{rule}");
    let mut misses = Vec::new();
    for (name, load, detect) in &detectors {
        // One untimed pass so that lazily loaded state does not count as a call.
        let _ = score(detect, &short);
        for (part_name, part) in [("short", &short), ("long", &long)] {
            let scores = score(detect, part);
            let mut row = format!("| {name} | {part_name} |");
            let (mut right, mut total, mut time) = (0, 0, Duration::ZERO);
            for lang in EVALUATED {
                let s = &scores[lang];
                row += &format!(" {}/{} |", s.right, s.total);
                right += s.right;
                total += s.total;
                time += s.time;
                misses.extend(s.misses.iter().map(|m| format!("{name}: {m}")));
            }
            // Memory grows as lazily loaded models are first used; cumulative over
            // the detectors, in the order of the table.
            row += &format!(
                " {:.1}% | {:.0} | {} | {:.0} |",
                100.0 * right as f64 / total as f64,
                time.as_secs_f64() * 1e6 / total as f64,
                if part_name == "short" {
                    format!("{:.2} s", load.as_secs_f64())
                } else {
                    String::new()
                },
                rss_kib().saturating_sub(rss_start) as f64 / 1024.0,
            );
            println!("{row}");
        }
    }
    println!("\nMisses:");
    for m in &misses {
        println!("- {m}");
    }
}
