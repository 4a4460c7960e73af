#!/usr/bin/env bash
# Binary size that language identification adds (docs/gateway.md, "Language
# detection"): builds three tiny release programs outside the workspace, one that only
# reads a text, one that detects it with whatlang (all its languages) and one with
# lingua built with the gateway's 20 languages (the features in Cargo.toml),
# preloaded, and prints their stripped sizes and lingua's resident memory.
# Usage: scripts/langid-size.sh (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/translation-worker/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
features="$(sed -n 's/^lingua = .*features = \[\(.*\)\].*/\1/p' Cargo.toml)"
[ -n "$features" ] || { echo "no lingua features in Cargo.toml" >&2; exit 1; }
make_crate() { # name, dependency line, main body
  mkdir -p "$work/$1/src"
  printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[dependencies]\n%s\n[profile.release]\nstrip = true\n' \
    "$1" "$2" >"$work/$1/Cargo.toml"
  printf '%s\n' "$3" >"$work/$1/src/main.rs"
}
make_crate tw-langid-none '' 'fn main() { let t = std::env::args().nth(1).unwrap_or_default(); println!("{}", t.len()); }'
make_crate tw-langid-whatlang 'whatlang = "=0.18.0"' 'fn main() { let t = std::env::args().nth(1).unwrap_or_default(); println!("{:?}", whatlang::detect_lang(&t)); }'
make_crate tw-langid-lingua "lingua = { version = \"=1.8.0\", default-features = false, features = [$features] }" '
use lingua::{Language, LanguageDetectorBuilder};
fn rss_kib() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap_or_default().lines()
        .find(|l| l.starts_with("VmRSS")).unwrap_or("").to_string()
}
fn main() {
    let t = std::env::args().nth(1).unwrap_or_default();
    let all: Vec<Language> = Language::all().into_iter().collect();
    let start = std::time::Instant::now();
    let d = LanguageDetectorBuilder::from_languages(&all).with_preloaded_language_models().build();
    let loaded = start.elapsed();
    println!("{:?} ({} languages, loaded in {:.2?}, {})", d.detect_language_of(t), all.len(), loaded, rss_kib());
}'
for name in tw-langid-none tw-langid-whatlang tw-langid-lingua; do
  cargo build --quiet --release --manifest-path "$work/$name/Cargo.toml"
  bin="$CARGO_TARGET_DIR/release/$name"
  printf '%-20s %10d bytes  ' "$name" "$(stat -c %s "$bin")"
  "$bin" "Die Besprechung beginnt um zehn Uhr."
done
