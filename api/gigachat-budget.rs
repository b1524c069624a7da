//! The function behind `/api/gigachat-budget` on Vercel (on AWS Lambda the
//! one `gigachat-api` function serves every route). The platform is detected
//! at start-up; all logic lives in the core, which routes on the path.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), gigachat_proxy_core::BoxError> {
    gigachat_proxy_platform::run().await
}
