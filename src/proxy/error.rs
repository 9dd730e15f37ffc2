//! Every way a request can fail, where the failure came from, and the status it maps to.
//! This is the one place that turns a cause into an HTTP status.

use http::StatusCode;

/// A failure of either upstream client (hyper's, or `upstream::h1`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who caused a failure: decides the status class and whether a retry elsewhere may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Backend,
    Sluice,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request target too long")]
    UriTooLong,
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("request body larger than the listener allows")]
    BodyTooLarge,
    #[error("no route matches this host and path")]
    NoRoute,
    /// HTTPS: the request names a host whose certificate is not the one the connection's SNI
    /// chose (`tls::Session::serves`).
    #[error("the request's host is not served on this TLS connection")]
    Misdirected,
    /// Not a failure: `redirect_https` answers plain HTTP with 308 to this location.
    #[error("plain HTTP is redirected to https")]
    HttpsRedirect(http::HeaderValue),
    #[error("no backend of the pool can take traffic")]
    NoBackend,
    #[error("every backend of the pool is at its connection limit")]
    Overloaded,
    #[error("connecting to the backend failed: {0}")]
    Connect(#[source] BoxError),
    #[error("the backend failed: {0}")]
    Upstream(#[source] BoxError),
    #[error("the backend did not answer in time")]
    Timeout,
    #[error("the listener was removed by a reload and is draining")]
    ListenerGone,
    #[error("the backend switched to a protocol other than the one asked for")]
    BadSwitch,
    #[error("the request body stopped arriving")]
    BodyTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::HttpsRedirect(_) => StatusCode::PERMANENT_REDIRECT,
            ProxyError::NoBackend | ProxyError::Overloaded | ProxyError::ListenerGone => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect(_) | ProxyError::Upstream(_) | ProxyError::BadSwitch => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge
            | ProxyError::BodyTimeout => Origin::Client,
            ProxyError::NoRoute
            | ProxyError::Misdirected
            | ProxyError::HttpsRedirect(_)
            | ProxyError::NoBackend
            | ProxyError::Overloaded
            | ProxyError::ListenerGone => Origin::Sluice,
            ProxyError::Connect(_)
            | ProxyError::Upstream(_)
            | ProxyError::Timeout
            | ProxyError::BadSwitch => Origin::Backend,
        }
    }

    /// The connection must close after the answer: the request's framing cannot be trusted, so
    /// whatever follows it on the connection cannot be either.
    pub fn closes_connection(&self) -> bool {
        self.origin() == Origin::Client || matches!(self, ProxyError::ListenerGone)
    }

    /// The short plain-text body of the local answer: the status line's reason and the cause.
    /// Static text: a local answer never reflects request bytes back.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::UriTooLong => "request target too long\n",
            ProxyError::HeadersTooLarge => "request header fields too large\n",
            ProxyError::BodyTooLarge => "request body too large\n",
            ProxyError::BodyTimeout => "request body not received in time\n",
            ProxyError::NoRoute => "no route matches this host and path\n",
            ProxyError::HttpsRedirect(_) => "use https\n",
            ProxyError::Misdirected => {
                "misdirected request: this connection's certificate is not for this host\n"
            }
            ProxyError::NoBackend => "no backend available\n",
            ProxyError::Overloaded => "overloaded: every backend is at its connection limit\n",
            ProxyError::Connect(_) => "bad gateway: could not connect to the backend\n",
            ProxyError::Upstream(_) => "bad gateway: the backend failed\n",
            ProxyError::Timeout => "gateway timeout: the backend did not answer in time\n",
            ProxyError::ListenerGone => "this listener was removed; connect again\n",
            ProxyError::BadSwitch => "bad gateway: the backend switched to another protocol\n",
        }
    }
}

impl From<crate::framing::Reject> for ProxyError {
    fn from(reject: crate::framing::Reject) -> ProxyError {
        use crate::framing::Reject;
        match reject {
            Reject::Ambiguous(why) => ProxyError::BadRequest(why),
            Reject::HeadTooLarge => ProxyError::HeadersTooLarge,
            Reject::UriTooLong => ProxyError::UriTooLong,
        }
    }
}
