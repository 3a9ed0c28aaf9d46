//! Connections: one tonic `Channel` per `--conns`, i.e. exactly one HTTP/2
//! connection each, spread round-robin over `--endpoints`; clients are then
//! spread round-robin over the connections, as etcd's `benchmark` does.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Responses larger than this are refused by the client. Generous, because a
/// `range` over a large key space legitimately returns big responses (etcd's
/// Go client accepts up to 2 GiB), but bounded so a misbehaving server cannot
/// make the tool allocate without limit.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Why the tool could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("endpoint {0:?}: TLS (https) is not supported; use an http:// endpoint")]
    Tls(String),
    #[error("endpoint {0:?}: unsupported scheme (use http://host:port or host:port)")]
    Scheme(String),
    #[error("endpoint {endpoint:?}: {source}")]
    Invalid { endpoint: String, source: tonic::transport::Error },
    #[error("cannot connect to {endpoint} within {timeout:?}: {detail}")]
    Connect { endpoint: String, timeout: Duration, detail: String },
}

/// Turns an `--endpoints` entry into a URL: `host:port` gets `http://`, as
/// etcd's tools accept both spellings.
pub fn normalize_endpoint(raw: &str) -> Result<String, ConnError> {
    let e = raw.trim().trim_end_matches('/');
    if e.starts_with("https://") {
        return Err(ConnError::Tls(raw.to_string()));
    }
    if e.starts_with("http://") {
        return Ok(e.to_string());
    }
    if e.contains("://") {
        return Err(ConnError::Scheme(raw.to_string()));
    }
    Ok(format!("http://{e}"))
}

/// Normalizes a whole `--endpoints` list, dropping empty entries.
pub fn normalize_endpoints(raw: &[String]) -> Result<Vec<String>, ConnError> {
    let eps: Vec<String> =
        raw.iter().filter(|e| !e.trim().is_empty()).map(|e| normalize_endpoint(e)).collect::<Result<_, _>>()?;
    if eps.is_empty() {
        return Err(ConnError::NoEndpoints);
    }
    Ok(eps)
}

/// The endpoint index of each of `conns` connections (round-robin).
pub fn spread(n: usize, over: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| i % over)
}

/// Opens `conns` connections, connection `i` to endpoint `i % endpoints`.
/// They connect eagerly, so an unreachable endpoint fails here rather than
/// as thousands of per-request errors.
pub async fn connect(endpoints: &[String], conns: usize, dial_timeout: Duration) -> Result<Vec<Channel>, ConnError> {
    let mut pending = tokio::task::JoinSet::new();
    for (i, ep) in spread(conns, endpoints.len()).enumerate() {
        let url = endpoints[ep].clone();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| ConnError::Invalid { endpoint: url.clone(), source })?
            .connect_timeout(dial_timeout)
            .tcp_nodelay(true);
        pending.spawn(async move {
            let res = tokio::time::timeout(dial_timeout, endpoint.connect()).await;
            let detail = match res {
                Ok(Ok(ch)) => return Ok((i, ch)),
                Ok(Err(e)) => error_chain(&e),
                Err(_) => "timed out".to_string(),
            };
            Err(ConnError::Connect { endpoint: url, timeout: dial_timeout, detail })
        });
    }
    let mut channels: Vec<Option<Channel>> = vec![None; conns];
    while let Some(joined) = pending.join_next().await {
        let (i, ch) = joined.expect("connect task panicked")?;
        channels[i] = Some(ch);
    }
    Ok(channels.into_iter().map(|c| c.expect("every connection joined")).collect())
}

/// `err` with its causes, since tonic's transport error alone says only
/// "transport error".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(normalize_endpoint("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(normalize_endpoint(" http://localhost:2379/ ").unwrap(), "http://localhost:2379");
        assert!(matches!(normalize_endpoint("https://h:1"), Err(ConnError::Tls(_))));
        assert!(matches!(normalize_endpoint("unix://sock"), Err(ConnError::Scheme(_))));
    }

    #[test]
    fn endpoint_lists_drop_blanks_but_not_to_nothing() {
        let raw = vec!["a:1".to_string(), " ".to_string(), "http://b:2".to_string()];
        assert_eq!(normalize_endpoints(&raw).unwrap(), ["http://a:1", "http://b:2"]);
        assert!(matches!(normalize_endpoints(&[String::new()]), Err(ConnError::NoEndpoints)));
    }

    #[test]
    fn spread_is_round_robin() {
        assert_eq!(spread(5, 2).collect::<Vec<_>>(), [0, 1, 0, 1, 0]);
        assert_eq!(spread(2, 3).collect::<Vec<_>>(), [0, 1]);
    }
}
