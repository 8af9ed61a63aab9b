//! Compiles `rsup/v1/*.proto` with a vendored protoc and writes a file
//! descriptor set for server reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["rsup/v1/containers.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("rsup_descriptor.bin"))
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
