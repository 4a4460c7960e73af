//! Embeds the run-time search path of the prebuilt oneDNN (feature `dnnl`) into every
//! binary, test and example, so they run without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_DNNL_LIBRARY_PATH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
