//! The one error type of the request path: what went wrong, which side caused it, and
//! whether the request may be sent again; [`ProxyError::response`] is the one place an
//! error becomes an answer.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Response, StatusCode,
    header::{self, HeaderValue},
};

use super::{ctx::ProxyBody, normalize};
use crate::upstream::client::{BoxError, ConnectError};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: its request, its body, its limits.
    Downstream,
    /// An upstream server: unreachable, broken, slow, or answering nonsense.
    Upstream,
    /// The proxy's own state or settings (no route, no server left, the total time).
    Internal,
}

/// What went wrong.
#[derive(Debug)]
pub enum ErrorKind {
    TargetTooLong,
    /// The request failed normalisation (one authority, one path, one framing).
    Invalid(normalize::Rejection),
    /// The client behind a trusted proxy is on the blocklist.
    ForwardedBlocked,
    /// A `[[ban]]` deny pattern matched.
    DenyPattern,
    BodyTooLarge,
    BodyTooSlow,
    BodyBroken,
    /// Over the request rate; seconds until a request is allowed again.
    RateLimited {
        retry_after: u64,
    },
    InFlightLimited,
    NoRoute,
    AddressDenied,
    /// Authentication required; the `WWW-Authenticate` challenge.
    Unauthorized(HeaderValue),
    /// Too many password checks at once.
    AuthBusy,
    /// The whole request took longer than `server.request_timeout`.
    RequestTimeout,
    /// No usable server in the pool (or the retries ran out before one answered).
    NoServer,
    ConnectFailed(ConnectError),
    /// The connection broke or the answer was not HTTP.
    UpstreamBroken(BoxError),
    UpstreamTimeout,
    /// A 101 nobody asked for, or to a protocol the route does not pass.
    UnaskedSwitch,
    /// `only-if-cached` and nothing stored can answer.
    OnlyIfCached,
}

/// An error of the request path, with its cause.
#[derive(Debug)]
pub struct ProxyError {
    pub kind: ErrorKind,
}

impl From<ErrorKind> for ProxyError {
    fn from(kind: ErrorKind) -> Self {
        Self { kind }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())?;
        match &self.kind {
            ErrorKind::ConnectFailed(e) => write!(f, " ({e})"),
            ErrorKind::UpstreamBroken(e) => write!(f, " ({e})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Invalid(e) => Some(e),
            ErrorKind::ConnectFailed(e) => Some(e),
            ErrorKind::UpstreamBroken(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl ProxyError {
    /// A failed request body: the client's fault when the body is what failed.
    #[must_use]
    pub fn from_body(e: &BoxError) -> Option<Self> {
        let kind = if e.is::<http_body_util::LengthLimitError>() {
            ErrorKind::BodyTooLarge
        } else if e.is::<crate::upstream::client::BodyPaceError>() {
            ErrorKind::BodyTooSlow
        } else {
            return None;
        };
        Some(kind.into())
    }

    #[must_use]
    pub fn side(&self) -> Side {
        use ErrorKind as K;
        match self.kind {
            K::TargetTooLong
            | K::Invalid(_)
            | K::ForwardedBlocked
            | K::DenyPattern
            | K::BodyTooLarge
            | K::BodyTooSlow
            | K::BodyBroken
            | K::RateLimited { .. }
            | K::InFlightLimited
            | K::AddressDenied
            | K::Unauthorized(_)
            | K::OnlyIfCached => Side::Downstream,
            K::ConnectFailed(_) | K::UpstreamBroken(_) | K::UpstreamTimeout | K::UnaskedSwitch => {
                Side::Upstream
            }
            K::NoRoute | K::AuthBusy | K::RequestTimeout | K::NoServer => Side::Internal,
        }
    }

    /// Whether sending the request again (to another server) is safe as far as this error
    /// goes: nothing reached a server (connect failed). Whether the request itself may be
    /// replayed is the retry decision's other half (`forward::next_step`).
    #[must_use]
    pub fn retry_safe(&self) -> bool {
        matches!(self.kind, ErrorKind::ConnectFailed(_))
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        use ErrorKind as K;
        match self.kind {
            K::TargetTooLong => StatusCode::URI_TOO_LONG,
            K::Invalid(normalize::Rejection::Connect) => StatusCode::METHOD_NOT_ALLOWED,
            K::Invalid(_) | K::BodyBroken => StatusCode::BAD_REQUEST,
            K::ForwardedBlocked | K::DenyPattern | K::AddressDenied => StatusCode::FORBIDDEN,
            K::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            K::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            K::RateLimited { .. } | K::InFlightLimited => StatusCode::TOO_MANY_REQUESTS,
            K::NoRoute => StatusCode::NOT_FOUND,
            K::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            K::AuthBusy | K::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            K::RequestTimeout | K::UpstreamTimeout | K::OnlyIfCached => StatusCode::GATEWAY_TIMEOUT,
            K::ConnectFailed(_) | K::UpstreamBroken(_) | K::UnaskedSwitch => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// The text the client sees: it never names an upstream address.
    #[must_use]
    pub fn detail(&self) -> std::borrow::Cow<'static, str> {
        use ErrorKind as K;
        let text = match &self.kind {
            K::TargetTooLong => "the request target is too long",
            K::Invalid(why) => return why.to_string().into(),
            K::ForwardedBlocked | K::AddressDenied => "access denied for this client address",
            K::DenyPattern => "request refused",
            K::BodyTooLarge => "the request body is too large",
            K::BodyTooSlow => "the request body arrived too slowly",
            K::BodyBroken => "the request body was cut off or malformed",
            K::RateLimited { .. } => "too many requests from this client",
            K::InFlightLimited => "too many requests in flight from this client",
            K::NoRoute => "no route for this host and path",
            K::Unauthorized(_) => "authentication required",
            K::AuthBusy => "too many password checks at once; try again",
            K::RequestTimeout => "the request took longer than the proxy allows",
            K::NoServer => "no healthy upstream server is available",
            K::ConnectFailed(_) => "the upstream server could not be reached",
            K::UpstreamBroken(_) => {
                "the upstream server closed the connection or sent an invalid response"
            }
            K::UpstreamTimeout => "the upstream server did not answer in time",
            K::UnaskedSwitch => "the upstream server switched protocols without being asked to",
            K::OnlyIfCached => "only-if-cached: no stored response can be used",
        };
        text.into()
    }

    /// The answer: a short plain-text page, with the headers the error calls for
    /// (`Retry-After`, `WWW-Authenticate`) and the request id.
    #[must_use]
    pub fn response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let mut resp = error_page(self.status(), &self.detail(), request_id);
        let headers = resp.headers_mut();
        match &self.kind {
            ErrorKind::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ErrorKind::AuthBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorKind::Unauthorized(challenge) => {
                headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
            _ => {}
        }
        resp
    }
}

/// A short plain-text error page.
#[must_use]
pub fn error_page(
    status: StatusCode,
    detail: &str,
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let body = format!(
        "{} {}: {detail}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_a_side_a_status_and_headers() {
        let id = HeaderValue::from_static("r1");
        let e = ProxyError::from(ErrorKind::RateLimited { retry_after: 3 });
        assert_eq!(e.side(), Side::Downstream);
        let resp = e.response(&id);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        assert_eq!(resp.headers()["x-request-id"], "r1");
        let e = ProxyError::from(ErrorKind::UpstreamTimeout);
        assert_eq!(
            (e.side(), e.status()),
            (Side::Upstream, StatusCode::GATEWAY_TIMEOUT)
        );
        assert!(!e.retry_safe());
        let e = ProxyError::from(ErrorKind::ConnectFailed(ConnectError::Timeout));
        assert!(e.retry_safe());
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.to_string().contains("connecting timed out"));
        let e = ProxyError::from(ErrorKind::Invalid(normalize::Rejection::Connect));
        assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED);
        let e = ProxyError::from(ErrorKind::Unauthorized(HeaderValue::from_static("Basic")));
        assert_eq!(e.response(&id).headers()[header::WWW_AUTHENTICATE], "Basic");
        assert_eq!(ProxyError::from(ErrorKind::NoRoute).side(), Side::Internal);
    }
}
