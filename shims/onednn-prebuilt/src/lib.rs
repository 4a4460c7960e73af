//! Links the prebuilt oneDNN library; see `build.rs`. No Rust API.
