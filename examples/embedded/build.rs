//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and links with `link.x`.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    // cortex-m-rt's linker script (vector table, sections). Passed here and
    // not as `rustflags` in .cargo/config.toml: a RUSTFLAGS variable in the
    // environment, even an empty one (CI exports one), replaces config
    // rustflags, and the program would link without a vector table.
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
