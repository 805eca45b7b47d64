//! Requests to the processes under test, through reqwest's blocking client: one answer's status,
//! headers and body.
//!
//! Each request has a connection of its own, as the hand-written client these replace did: no
//! idle connection is kept, because servers are restarted on the same port and close idle
//! connections after their header timeout, and a reused dead one would fail a test by chance.
//! There is no timeout either: a test bounds its own waits. Proxy variables are ignored.

use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use std::sync::OnceLock;

/// The client every test of the binary shares.
pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(None)
            .no_proxy()
            .build()
            .expect("an HTTP client")
    })
}

/// One answer, read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body, decoded as UTF-8 (lossily).
    pub text: String,
}

impl Reply {
    /// The body as JSON; `null` when it is none.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A header's value (the first, if repeated); `""` when there is none.
    pub fn header(&self, name: &str) -> &str {
        header(&self.headers, name)
    }
}

/// A header's value in `headers` (the first, if repeated); `""` when there is none.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `method url` with `headers` and `body`, read to its end; the error when no answer comes.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> reqwest::Result<Reply> {
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut req = client().request(method, url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.body(body.as_ref().to_vec()).send()?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes()?;
    Ok(Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// [`try_request`]; no answer fails the test.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Reply {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `GET url` with no headers.
pub fn get(url: &str) -> Reply {
    request("GET", url, &[], "")
}

/// Whether `GET url` answers 200 (false while nothing listens there).
pub fn answers(url: &str) -> bool {
    try_request("GET", url, &[], "").is_ok_and(|r| r.status == 200)
}
