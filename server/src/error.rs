//! The one place internal errors become gRPC statuses, with etcd's exact codes
//! and messages (clients such as etcdctl and client-go match on the text).

use cairn_raft::ClusterError;
use cairn_storage::StorageError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("request is too large")]
    RequestTooLarge,
    #[error("server stopped")]
    Stopped,
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        let (code, msg) = match &e {
            ServerError::Storage(s) => match s {
                StorageError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
                StorageError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
                StorageError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
                StorageError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
                StorageError::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request"),
                StorageError::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request"),
                StorageError::InvalidSortOption => (Code::InvalidArgument, "etcdserver: invalid sort option"),
                StorageError::Compacted => (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
                StorageError::FutureRev => (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
                StorageError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
                StorageError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
                StorageError::Corruption(_) => (Code::DataLoss, "etcdserver: corrupt cluster"),
                StorageError::Engine(_) | StorageError::Internal(_) => (Code::Unavailable, "etcdserver: server stopped"),
            },
            ServerError::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
            ServerError::Stopped => (Code::Unavailable, "etcdserver: server stopped"),
            ServerError::NotSupportedForLearner => (Code::Unavailable, "etcdserver: rpc not supported for learner"),
            ServerError::Cluster(c) => match c {
                ClusterError::NoLeader => (Code::Unavailable, "etcdserver: no leader"),
                ClusterError::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
                ClusterError::NotLeader => (Code::FailedPrecondition, "etcdserver: not leader"),
                ClusterError::Stopped => (Code::Unavailable, "etcdserver: server stopped"),
                ClusterError::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
                ClusterError::IdExists => (Code::FailedPrecondition, "etcdserver: member ID already exist"),
                ClusterError::PeerUrlsExist => (Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
                ClusterError::NotLearner => (Code::FailedPrecondition, "etcdserver: can only promote a learner member"),
                ClusterError::LearnerNotReady => {
                    (Code::FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader")
                }
                ClusterError::TooManyLearners => (Code::FailedPrecondition, "etcdserver: too many learner members in cluster"),
                ClusterError::BadLeaderTransferee => (Code::FailedPrecondition, "etcdserver: bad leader transferee"),
                ClusterError::EmptyMembership => {
                    (Code::FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members")
                }
                ClusterError::Join(_) | ClusterError::Fatal(_) => (Code::Unavailable, "etcdserver: server stopped"),
            },
        };
        if let ServerError::Cluster(ClusterError::Join(m) | ClusterError::Fatal(m)) = &e {
            tracing::error!(error = %m, "request failed in the raft layer");
        }
        if matches!(&e, ServerError::Storage(s) if s.is_fatal()) {
            tracing::error!(error = %e, "request failed on a fatal storage error");
        }
        Status::new(code, msg)
    }
}

/// tonic rejects a message above the decoding limit with `OutOfRange`; etcd
/// (grpc-go) answers `ResourceExhausted` "grpc: received message larger than
/// max (N vs. M)". This layer rewrites tonic's answer into etcd's, so clients
/// that match on the code see what they would see from etcd.
#[derive(Clone)]
pub struct OversizeAsResourceExhausted<S>(pub S);

const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

fn etcd_oversize_message(tonic_message: &str) -> Option<String> {
    // "Error, decoded message length too large: found N bytes, the limit is: M bytes"
    let rest = tonic_message.strip_prefix(TONIC_TOO_LARGE)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(format!("grpc: received message larger than max ({found} vs. {limit})"))
}

impl<S, B> tower::Service<http::Request<B>> for OversizeAsResourceExhausted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(status) = Status::from_header_map(resp.headers()) {
                if status.code() == Code::OutOfRange {
                    if let Some(msg) = etcd_oversize_message(status.message()) {
                        let replacement = Status::resource_exhausted(msg);
                        let headers = resp.headers_mut();
                        headers.remove("grpc-status");
                        headers.remove("grpc-message");
                        if let Err(e) = replacement.add_header(headers) {
                            tracing::warn!(error = %e, "cannot rewrite oversize status");
                        }
                    }
                }
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_message_in_etcd_words() {
        assert_eq!(
            etcd_oversize_message("Error, decoded message length too large: found 2097166 bytes, the limit is: 1572864 bytes").as_deref(),
            Some("grpc: received message larger than max (2097166 vs. 1572864)")
        );
        assert_eq!(etcd_oversize_message("something else"), None);
    }
}
