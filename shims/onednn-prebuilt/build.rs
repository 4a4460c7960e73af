//! Points the linker and ct2rs's CMake build at a prebuilt oneDNN.
//!
//! `ONEDNN_DIR` selects the prefix (default: where `scripts/install-onednn.sh`
//! installs it). The path is fixed on purpose: CTranslate2's CMake cache in a warm
//! target directory records it.
use std::env;
use std::path::PathBuf;

const DEFAULT_DIR: &str = "/opt/translation-worker/onednn-2023.2.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ONEDNN_DIR");
    let root = PathBuf::from(env::var("ONEDNN_DIR").unwrap_or_else(|_| DEFAULT_DIR.to_string()));
    let lib = root.join("lib");
    let include = root.join("include");
    if !lib.join("libdnnl.so.3").is_file() || !include.join("oneapi/dnnl/dnnl.h").is_file() {
        // A build failure with the fix in it beats a link error 10 minutes later.
        panic!(
            "prebuilt oneDNN not found in {} (expected lib/libdnnl.so.3 and \
             include/oneapi/dnnl/dnnl.h): run scripts/install-onednn.sh, set ONEDNN_DIR, \
             or build without the `dnnl` feature (e.g. --no-default-features --features ruy)",
            root.display()
        );
    }
    println!("cargo:rerun-if-changed={}", lib.join("libdnnl.so.3").display());
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=dnnl");
    println!("cargo:ROOT={}", root.display());
    println!("cargo:INCLUDE_PATH={}", include.display());
    println!("cargo:LIBRARY_PATH={}", lib.display());
}
