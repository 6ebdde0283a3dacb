"""The Redis key layout shared by server replicas, the trainer and operators' commands.

Keys expose faultprint's resources, each under the deployment's prefix:
  {p}:networks                      set of networks with reference cases
  {p}:net:{network}:cases           hash case id -> case metadata (JSON)
  {p}:net:{network}:windows         hash case id -> example windows (packed float32, source of truth)
  {p}:net:{network}:request:{id}    the case a CreateReferenceCase request id created (with a TTL)
  {p}:emb:{version}:{network}       hash case id -> embeddings of the examples under one model version
  {p}:diag:{network}:{node}         a node's latest diagnosis and embedding: a serialized
                                    faultprint.v1.NodeDiagnosis (with a TTL)
  {p}:node:{network}:{node}:window  a streaming node's last hour: a ring of rows, each an int64 minute
                                    and its float32 statistics (server/monitoring/node_windows.py)
  {p}:node:{network}:{node}:condition  hash: the node's condition life cycle (minute, state JSON)
  {p}:node:{network}:{node}:incidents  list of the node's incidents, newest first (serialized Incident)
  {p}:net:{network}:incidents:open  hash incident id -> the open incident (serialized Incident)
  {p}:net:{network}:incidents:acks  hash incident id -> its acknowledgement (JSON: by, time, note)
  {p}:incidents                     stream of incident events (ONSET, ABATED, ACKNOWLEDGED) for
                                    policy engines and WatchIncidents
  {p}:incidents:onap                hash: the ONAP publisher's cursor, lease and dead-letter count
  {p}:incidents:onap:dead           stream of events the ONAP topic kept refusing
  {p}:model:{version}:artifact      the packed model artifact
  {p}:model:{version}:meta          hash: metadata JSON, sha256, signature and signing key id, publish
                                    time, rollout state and reason
  {p}:model:{version}:shadow        hash: shadow agreement counts of a candidate (see server/model/shadow.py)
  {p}:models                        sorted set of published versions by publish time
  {p}:model:serving                 the promoted (stable) version
  {p}:model:candidate               the candidate version that replicas run in shadow
  {p}:model:history                 list of versions that served before, newest first (for rollback)
  {p}:replicas                      hash replica id -> what it serves and shadows (JSON, with a heartbeat)
  {p}:events                        stream of changes that every replica follows
  {p}:store                         hash: the store's identity (id, created_unix_s); a Redis that
                                    lost its data has none, which replicas holding cases notice
"""

from __future__ import annotations

from dataclasses import dataclass

# Events kept in the change stream; a replica further behind reloads everything.
EVENTS_MAX_LEN = 10_000


@dataclass(frozen=True)
class RedisLayout:
    prefix: str = "faultprint"

    @property
    def networks(self) -> str:
        return f"{self.prefix}:networks"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    @property
    def serving_version(self) -> str:
        return f"{self.prefix}:model:serving"

    @property
    def candidate_version(self) -> str:
        return f"{self.prefix}:model:candidate"

    @property
    def history(self) -> str:
        return f"{self.prefix}:model:history"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}:replicas"

    @property
    def eval_sets(self) -> str:
        """The evaluation sets the publishing gate scores every new version on."""
        return f"{self.prefix}:eval_sets"

    @property
    def store(self) -> str:
        return f"{self.prefix}:store"

    def request(self, network: str, request_id: str) -> str:
        return f"{self.prefix}:net:{network}:request:{request_id}"

    def cases(self, network: str) -> str:
        return f"{self.prefix}:net:{network}:cases"

    def windows(self, network: str) -> str:
        return f"{self.prefix}:net:{network}:windows"

    def traffic(self, network: str) -> str:
        """Unlabelled windows of a network's traffic its baseline is learned from, by batch."""
        return f"{self.prefix}:net:{network}:traffic"

    def embeddings(self, version: str, network: str) -> str:
        return f"{self.prefix}:emb:{version}:{network}"

    def baseline(self, version: str, network: str) -> str:
        """A network's baseline as the model version reads it (traffic/baseline.py)."""
        return f"{self.prefix}:baseline:{version}:{network}"

    def node(self, network: str, node: str) -> str:
        return f"{self.prefix}:diag:{network}:{node}"

    def node_window(self, network: str, node: str) -> str:
        return f"{self.prefix}:node:{network}:{node}:window"

    def node_condition(self, network: str, node: str) -> str:
        return f"{self.prefix}:node:{network}:{node}:condition"

    def node_incidents(self, network: str, node: str) -> str:
        return f"{self.prefix}:node:{network}:{node}:incidents"

    def open_incidents(self, network: str) -> str:
        return f"{self.prefix}:net:{network}:incidents:open"

    def incident_acks(self, network: str) -> str:
        return f"{self.prefix}:net:{network}:incidents:acks"

    @property
    def incidents(self) -> str:
        return f"{self.prefix}:incidents"

    @property
    def onap_publisher(self) -> str:
        return f"{self.prefix}:incidents:onap"

    @property
    def onap_dead_letters(self) -> str:
        return f"{self.prefix}:incidents:onap:dead"

    def model_artifact(self, version: str) -> str:
        return f"{self.prefix}:model:{version}:artifact"

    def model_meta(self, version: str) -> str:
        return f"{self.prefix}:model:{version}:meta"

    def model_shadow(self, version: str) -> str:
        return f"{self.prefix}:model:{version}:shadow"
