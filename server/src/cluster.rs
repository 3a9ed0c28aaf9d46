//! etcd's Cluster service: membership through Raft.

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_api::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use cairn_raft::MemberInfo;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::config::ListenUrl;
use crate::error::ServerError;
use crate::ids;

pub struct ClusterService {
    backend: Backend,
}

impl ClusterService {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.backend.header(0))
    }
}

pub fn to_pb(m: &MemberInfo) -> Member {
    Member {
        id: m.id,
        name: m.member.name.clone(),
        peer_ur_ls: m.member.peer_urls.clone(),
        client_ur_ls: m.member.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

fn to_pb_all(ms: &[MemberInfo]) -> Vec<Member> {
    ms.iter().map(to_pb).collect()
}

/// etcd rejects peer URLs it cannot parse as `scheme://host:port`.
fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument("etcdserver: member peer URLs are empty"));
    }
    for u in urls {
        ListenUrl::parse(u).map_err(|_| Status::invalid_argument(format!("etcdserver: invalid peer URL {u}")))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        self.backend.refuse_learner()?;
        let req = request.into_inner();
        check_peer_urls(&req.peer_ur_ls)?;
        // etcd: sha1(peer URLs, empty cluster name, the time in seconds).
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = ids::member_id(&req.peer_ur_ls, &now.to_string());
        let members = self
            .backend
            .node()
            .add_member(id, req.peer_ur_ls, req.is_learner)
            .await
            .map_err(ServerError::from)?;
        let member = members.iter().find(|m| m.id == id).map(to_pb);
        Ok(Response::new(MemberAddResponse { header: self.header(), member, members: to_pb_all(&members) }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.backend.refuse_learner()?;
        let id = request.into_inner().id;
        let members = self.backend.node().remove_member(id).await.map_err(ServerError::from)?;
        Ok(Response::new(MemberRemoveResponse { header: self.header(), members: to_pb_all(&members) }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.backend.refuse_learner()?;
        let req = request.into_inner();
        check_peer_urls(&req.peer_ur_ls)?;
        let members = self.backend.node().update_member(req.id, req.peer_ur_ls).await.map_err(ServerError::from)?;
        Ok(Response::new(MemberUpdateResponse { header: self.header(), members: to_pb_all(&members) }))
    }

    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        self.backend.refuse_learner()?;
        if request.into_inner().linearizable {
            self.backend.node().read_barrier().await.map_err(ServerError::from)?;
        }
        let members = self.backend.node().members();
        Ok(Response::new(MemberListResponse { header: self.header(), members: to_pb_all(&members) }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.backend.refuse_learner()?;
        let id = request.into_inner().id;
        let members = self.backend.node().promote_member(id).await.map_err(ServerError::from)?;
        Ok(Response::new(MemberPromoteResponse { header: self.header(), members: to_pb_all(&members) }))
    }
}
