//! Compiles `proto/trellis.proto` with protox (pure Rust: no system `protoc`) and generates
//! the prost messages and tonic client/server with tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/trellis.proto");
    let fds = protox::compile(["trellis.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
