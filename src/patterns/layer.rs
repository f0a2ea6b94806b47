//! [`RateLimitLayer`]: a tower layer (for axum routers) that checks every request against a
//! [`RateLimiter`] before the inner service sees it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::Response;

use super::ratelimit::{Decision, RateLimiter};

/// Answers 429 Too Many Requests for requests the limiter denies, and adds the rate-limit
/// headers to every response it checked:
///
/// | header | value |
/// |---|---|
/// | `RateLimit-Limit` | the burst (capacity) |
/// | `RateLimit-Remaining` | [`Decision::remaining`] |
/// | `RateLimit-Reset` | [`Decision::reset_after`] in whole seconds, rounded up |
/// | `Retry-After` (429 only) | [`Decision::retry_after`] in whole seconds, rounded up (absent when it never passes) |
///
/// `key_fn` picks the client key from the request: a header, an authenticated user, or the
/// peer address through axum's `ConnectInfo` (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`). When it returns `None` the request
/// is **not limited**: it passes to the inner service unchecked and without headers (return a
/// shared key such as `Some("anonymous".into())` to limit such requests together instead).
/// When the check fails (Redis unavailable under [`OnUnavailable::Deny`](super::ratelimit::OnUnavailable::Deny),
/// or a server error) the answer is 503 Service Unavailable with `RateLimit-Limit`; under
/// `OnUnavailable::Allow` the request passes with the fail-open decision's headers.
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
/// use axum::routing::get;
/// use redis_supervisor::ratelimit::{Rate, RateLimitLayer, RateLimiter};
///
/// # async fn run(handle: redis_supervisor::RedisHandle) -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::builder(handle).rate(Rate::per_second(10)).build()?;
/// let app = axum::Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(RateLimitLayer::new(limiter, |req: &axum::extract::Request| {
///         let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?;
///         Some(peer.0.ip().to_string())
///     }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer<F> {
    limiter: RateLimiter,
    key_fn: F,
}

impl<F> RateLimitLayer<F> {
    /// A layer checking each request under the key `key_fn` returns.
    pub fn new(limiter: RateLimiter, key_fn: F) -> Self {
        RateLimitLayer { limiter, key_fn }
    }
}

impl<F> std::fmt::Debug for RateLimitLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone> tower_layer::Layer<S> for RateLimitLayer<F> {
    type Service = RateLimitService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimitService<S, F> {
    inner: S,
    limiter: RateLimiter,
    key_fn: F,
}

impl<S, F> std::fmt::Debug for RateLimitService<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, F, B> tower_service::Service<Request<B>> for RateLimitService<S, F>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn(&Request<B>) -> Option<String>,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone waits for its own readiness; the ready one serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(key) = (self.key_fn)(&req) else {
            return Box::pin(inner.call(req));
        };
        let limiter = self.limiter.clone();
        Box::pin(async move {
            let limit = limiter.burst();
            match limiter.check(&key).await {
                Ok(d) if d.allowed => {
                    let mut response = inner.call(req).await?;
                    headers(response.headers_mut(), limit, &d);
                    Ok(response)
                }
                Ok(d) => Ok(refusal(StatusCode::TOO_MANY_REQUESTS, limit, Some(&d))),
                Err(_) => Ok(refusal(StatusCode::SERVICE_UNAVAILABLE, limit, None)),
            }
        })
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

fn headers(h: &mut HeaderMap, limit: u64, d: &Decision) {
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert(
        "ratelimit-reset",
        HeaderValue::from(ceil_secs(d.reset_after)),
    );
}

/// A 429 (with the decision's headers and `Retry-After`) or a 503 (with `RateLimit-Limit`).
fn refusal(status: StatusCode, limit: u64, d: Option<&Decision>) -> Response {
    let body = match d {
        Some(_) => "rate limit exceeded\n",
        None => "rate limiter unavailable\n",
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    match d {
        Some(d) => {
            headers(h, limit, d);
            if let Some(after) = d.retry_after {
                h.insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from(ceil_secs(after)),
                );
            }
        }
        None => {
            h.insert("ratelimit-limit", HeaderValue::from(limit));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_micros(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }
}
