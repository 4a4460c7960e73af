//! Files end to end, against the real broker and Redis: every fixture of
//! tests/fixtures/files (office files made by python-docx, python-pptx and odfpy;
//! see scripts/make_office_fixtures.py) taken apart, its texts sent as jobs in the
//! file's format through a worker with the copy model (translation = input), and
//! rebuilt. The result must be the input: byte for byte for text kinds, every zip
//! entry's name, compression and contents for office kinds. Then the same through
//! the CLI (`translate --file F --out G`).

mod common;

use std::collections::BTreeSet;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use translation_client::{Client, ClientOptions, TranslateRequest};
use translation_worker::documents::{self, FileKind};

use common::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/files")
}

/// The fixtures, sorted by name.
fn fixtures() -> Vec<(String, FileKind, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let kind = FileKind::from_name(&name)
                .unwrap_or_else(|| panic!("fixture {name} has no supported extension"));
            let bytes = std::fs::read(fixture_dir().join(&name)).expect("fixture reads");
            (name, kind, bytes)
        })
        .collect()
}

/// Every zip entry: name, compression, contents.
fn entries(zip: &[u8]) -> Vec<(String, zip::CompressionMethod, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).expect("a zip archive");
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).expect("entry reads");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("entry inflates");
            (
                f.name().expect("entry name").into_owned(),
                f.compression(),
                data,
            )
        })
        .collect()
}

/// The translated file equals its input (office kinds: entry for entry).
fn assert_same(name: &str, kind: FileKind, input: &[u8], output: &[u8]) {
    match kind {
        FileKind::Txt | FileKind::Html | FileKind::Markdown => assert!(
            input == output,
            "{name} changed:\n{}",
            String::from_utf8_lossy(output)
        ),
        FileKind::Docx | FileKind::Pptx | FileKind::Odt => {
            let (a, b) = (entries(input), entries(output));
            assert_eq!(a.len(), b.len(), "{name}: entry count");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((&x.0, x.1), (&y.0, y.1), "{name}: entry name or method");
                assert!(x.2 == y.2, "{name}: {} changed", x.0);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_file_comes_back_as_it_was_through_the_copy_model() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let client = Client::connect(
        AMQP_URL,
        ClientOptions {
            exchange: config.amqp.exchange.clone(),
            timeout: Duration::from_secs(60),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("client connects");

    let mut kinds = BTreeSet::new();
    for (name, kind, bytes) in fixtures() {
        kinds.insert(format!("{kind:?}"));
        let extracted = documents::extract(kind, &bytes, documents::MAX_EXPANDED_BYTES)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!extracted.texts().is_empty(), "{name} has texts");
        let jobs = AtomicUsize::new(0);
        let out = documents::translate_document(
            &extracted,
            config.limits.max_texts,
            4,
            |texts, format| {
                jobs.fetch_add(1, Ordering::Relaxed);
                assert!(texts.len() <= config.limits.max_texts);
                let client = client.clone();
                async move {
                    let request = TranslateRequest::new("ko", "en", texts).with_format(format);
                    let reply = client.translate(request).await?;
                    anyhow::ensure!(
                        reply.errors.iter().all(Option::is_none),
                        "text errors: {:?}",
                        reply.errors
                    );
                    Ok(reply.translations)
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            jobs.load(Ordering::Relaxed),
            extracted.chunks(config.limits.max_texts).len()
        );
        assert_same(&name, kind, &bytes, &out);
        if kind == FileKind::Html {
            // The page is longer than one text may be: it went as several.
            assert!(extracted.texts().len() > 1, "{name}");
        }
    }
    let all: BTreeSet<String> = FileKind::ALL.iter().map(|k| format!("{k:?}")).collect();
    assert_eq!(kinds, all, "a fixture of every kind");

    client.close().await;
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_translates_a_file_into_another() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let out_dir = std::env::temp_dir().join(format!("tw-files-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&out_dir).expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_translation-worker"))
            .arg("translate")
            .args(args)
            .args(["--amqp-url", AMQP_URL, "--exchange", &config.amqp.exchange])
            .env_remove("RUST_LOG")
            .env_remove("TW_AMQP__URL")
            .output()
            .expect("the binary runs")
    };
    for name in ["report.docx", "guide.md", "page.html"] {
        let input = fixture_dir().join(name);
        let output = out_dir.join(name);
        let out = run(&[
            "--source",
            "ko",
            "--target",
            "en",
            "--file",
            input.to_str().expect("UTF-8 path"),
            "--out",
            output.to_str().expect("UTF-8 path"),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kind = FileKind::from_name(name).expect("a supported kind");
        let bytes = std::fs::read(&input).expect("fixture reads");
        assert_same(
            name,
            kind,
            &bytes,
            &std::fs::read(&output).expect("output written"),
        );
    }
    // An unsupported kind is refused before anything is sent.
    let pdf = out_dir.join("x.pdf");
    std::fs::write(&pdf, b"%PDF-1.4").expect("temp file");
    let out = run(&[
        "--file",
        pdf.to_str().expect("UTF-8 path"),
        "--out",
        out_dir.join("y.pdf").to_str().expect("UTF-8 path"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported file type"));

    let _ = std::fs::remove_dir_all(&out_dir);
    w.stop().await;
    cleanup(&config).await;
}
