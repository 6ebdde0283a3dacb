"""The Redis key layout shared by server replicas, the trainer and operators' commands.

Keys expose faultprint's resources, each under the deployment's prefix:
  {p}:networks                      set of networks with reference cases
  {p}:net:{network}:cases           hash case id -> case metadata (JSON)
  {p}:net:{network}:windows         hash case id -> example windows (packed float32, source of truth)
  {p}:net:{network}:request:{id}    the case a CreateReferenceCase request id created (with a TTL)
  {p}:emb:{version}:{network}       hash case id -> embeddings of the examples under one model version
  {p}:diag:{network}:{node}         a node's latest diagnosis and embedding: a serialized
                                    faultprint.v1.NodeDiagnosis (with a TTL)
  {p}:model:{version}:artifact      the packed model artifact
  {p}:model:{version}:meta          hash: metadata JSON, sha256, publish time, rollout state and reason
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

    def model_artifact(self, version: str) -> str:
        return f"{self.prefix}:model:{version}:artifact"

    def model_meta(self, version: str) -> str:
        return f"{self.prefix}:model:{version}:meta"

    def model_shadow(self, version: str) -> str:
        return f"{self.prefix}:model:{version}:shadow"
