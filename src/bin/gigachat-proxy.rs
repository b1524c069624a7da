//! The local / self-hosted server: `cargo run --release` at the repo root.
//! Serves every route on one port; without `GIGACHAT_CREDENTIALS` it starts
//! the built-in GigaChat emulator and talks to that.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gigachat_proxy_server::main().await
}
