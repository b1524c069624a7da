//! The step every route that spends the caller's budget takes first: who
//! is calling (an API key, a JWT, a session or only a client address), and
//! whether their limits let this request in. The API route and the OAuth
//! route differ only in which credentials may identify the caller.

use http::Request;

use crate::Ready;
use crate::access::{ClientAddr, Identity};
use crate::error::Error;
use crate::limits::Admission;
use crate::observe::RequestLog;

/// What the caller is about to do, which decides the credentials accepted.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    /// A GigaChat call: any credential, a proxy session included.
    Call,
    /// Minting a session: not with a session, so one cannot renew itself
    /// forever (see `Access::identify_for_minting`).
    Mint,
}

/// A caller the limits let in.
pub(crate) struct Admitted {
    pub identity: Identity,
    /// What the limits said, for the answer's `RateLimit-*` headers.
    pub limits: Admission,
}

/// Identifies the caller and checks their limits; both go into the log
/// line as they are known, so a refusal still names who was refused.
pub(crate) async fn admit<B>(
    ready: &Ready,
    request: &Request<B>,
    purpose: Purpose,
    log: &mut RequestLog,
) -> Result<Admitted, Error> {
    let client_ip = ready.access.client_ip(
        ready.config.platform,
        request.headers(),
        request.extensions().get::<ClientAddr>(),
    );
    let identity = match purpose {
        Purpose::Call => {
            ready
                .access
                .identify(request.headers(), client_ip, &ready.sessions)
                .await?
        }
        Purpose::Mint => {
            ready
                .access
                .identify_for_minting(request.headers(), client_ip)
                .await?
        }
    };
    log.set_identity(&identity.key);
    let limits = ready
        .limiter
        .admit(&identity.key, identity.anonymous)
        .await?;
    log.rate_limit = limits.outcome();
    Ok(Admitted { identity, limits })
}
