//! Records the compiler version, so `env.json` names the rustc that built
//! the binary even where no rustc is installed at run time.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=SERVERLAB_RUSTC={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
