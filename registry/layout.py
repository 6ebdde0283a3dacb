"""The Redis key layout shared by server replicas, the trainer and operators' commands.

Keys follow Redis Cluster's rules: a deployment's own keys share the hash tag {P} (P is
the deployment's prefix), and each network's keys share the tag {P:net:N}, so a
network's reference cases, nodes and incidents live in one slot and networks spread
over a cluster's masters. No script touches two tags: what a network's script must
tell the whole deployment (a change event, an incident event) goes to the network's
outbox, and registry/outbox.py relays it to the deployment's stream.

The deployment's keys:
  {P}:networks                      set of networks that have held reference cases
  {P}:events                        stream of changes that every replica follows
  {P}:incidents                     stream of incident events (ONSET, ABATED, ACKNOWLEDGED) for
                                    policy engines and WatchIncidents
  {P}:incidents:onap                hash: the ONAP publisher's cursor, lease and dead-letter count
  {P}:incidents:onap:dead           stream of events the ONAP topic kept refusing
  {P}:outboxes                      set of networks whose outbox may hold events to relay
  {P}:outboxes:relayed              hash network -> the id of the newest outbox entry relayed
  {P}:model:{version}:artifact      the packed model artifact
  {P}:model:{version}:meta          hash: metadata JSON, sha256, signature and signing key id, publish
                                    time, rollout state and reason
  {P}:model:{version}:shadow        hash: shadow agreement counts of a candidate (see server/model/shadow.py)
  {P}:models                        sorted set of published versions by publish time
  {P}:model:serving                 the promoted (stable) version
  {P}:model:candidate               the candidate version that replicas run in shadow
  {P}:model:history                 list of versions that served before, newest first (for rollback)
  {P}:replicas                      hash replica id -> what it serves and shadows (JSON, with a heartbeat)
  {P}:eval_sets                     hash: the evaluation sets the publishing gate scores versions on
  {P}:store                         hash: the store's identity (id, created_unix_s); a Redis that
                                    lost its data has none, which replicas holding cases notice

A network N's keys:
  {P:net:N}:cases                   hash case id -> case metadata (JSON)
  {P:net:N}:windows                 hash case id -> example windows (packed float32, source of truth)
  {P:net:N}:traffic                 hash batch id -> unlabelled windows its baseline is learned from
  {P:net:N}:request:{id}            the case a CreateReferenceCase request id created (with a TTL)
  {P:net:N}:embedding_versions      set of the embedding spaces that hold its cases' embeddings
  {P:net:N}:emb:{space}             hash case id -> embeddings of the examples in one embedding space
  {P:net:N}:baseline:{version}      hash: the network's baseline as one model version reads it
  {P:net:N}:diag:{node}             a node's latest diagnosis and embedding: a serialized
                                    faultprint.v1.NodeDiagnosis (with a TTL)
  {P:net:N}:node:{node}:window      a streaming node's last hour: a ring of rows, each an int64 minute
                                    and its float32 statistics (server/monitoring/node_windows.py)
  {P:net:N}:node:{node}:condition   hash: the node's condition life cycle (minute, state JSON)
  {P:net:N}:node:{node}:incidents   list of the node's incidents, newest first (serialized Incident)
  {P:net:N}:incidents:open          hash incident id -> the open incident (serialized Incident)
  {P:net:N}:incidents:acks          hash incident id -> its acknowledgement (JSON: by, time, note)
  {P:net:N}:outbox                  stream of events for the deployment's streams, not yet relayed
  {P:net:N}:relay                   the lease of the replica relaying the outbox
"""

from __future__ import annotations

from dataclasses import dataclass

# Events kept in the change stream; a replica further behind reloads everything.
EVENTS_MAX_LEN = 10_000


class LayoutError(ValueError):
    """A prefix that cannot name a deployment's keys."""


@dataclass(frozen=True)
class RedisLayout:
    prefix: str = "faultprint"

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise LayoutError(f"Redis prefix {self.prefix!r} must be non-empty and hold no '{{' or '}}'")

    @property
    def _deployment(self) -> str:
        return f"{{{self.prefix}}}"

    def _network(self, network: str) -> str:
        return f"{{{self.prefix}:net:{network}}}"

    def patterns(self) -> tuple[str, str]:
        """SCAN patterns that match every key of the deployment (for tests and tools that clear it)."""
        return f"{self._deployment}:*", f"{{{self.prefix}:net:*"

    @property
    def networks(self) -> str:
        return f"{self._deployment}:networks"

    @property
    def events(self) -> str:
        return f"{self._deployment}:events"

    @property
    def models(self) -> str:
        return f"{self._deployment}:models"

    @property
    def serving_version(self) -> str:
        return f"{self._deployment}:model:serving"

    @property
    def candidate_version(self) -> str:
        return f"{self._deployment}:model:candidate"

    @property
    def history(self) -> str:
        return f"{self._deployment}:model:history"

    @property
    def replicas(self) -> str:
        return f"{self._deployment}:replicas"

    @property
    def eval_sets(self) -> str:
        """The evaluation sets the publishing gate scores every new version on."""
        return f"{self._deployment}:eval_sets"

    @property
    def store(self) -> str:
        return f"{self._deployment}:store"

    @property
    def outboxes(self) -> str:
        """Networks whose outbox may hold events not yet relayed."""
        return f"{self._deployment}:outboxes"

    @property
    def incidents(self) -> str:
        return f"{self._deployment}:incidents"

    @property
    def onap_publisher(self) -> str:
        return f"{self._deployment}:incidents:onap"

    @property
    def onap_dead_letters(self) -> str:
        return f"{self._deployment}:incidents:onap:dead"

    @property
    def relayed(self) -> str:
        """Per network, the newest outbox entry copied to the deployment's streams."""
        return f"{self._deployment}:outboxes:relayed"

    def model_artifact(self, version: str) -> str:
        return f"{self._deployment}:model:{version}:artifact"

    def model_meta(self, version: str) -> str:
        return f"{self._deployment}:model:{version}:meta"

    def model_shadow(self, version: str) -> str:
        return f"{self._deployment}:model:{version}:shadow"

    def request(self, network: str, request_id: str) -> str:
        return f"{self._network(network)}:request:{request_id}"

    def cases(self, network: str) -> str:
        return f"{self._network(network)}:cases"

    def windows(self, network: str) -> str:
        return f"{self._network(network)}:windows"

    def traffic(self, network: str) -> str:
        """Unlabelled windows of a network's traffic its baseline is learned from, by batch."""
        return f"{self._network(network)}:traffic"

    def embedding_versions(self, network: str) -> str:
        return f"{self._network(network)}:embedding_versions"

    def embeddings(self, version: str, network: str) -> str:
        return f"{self._network(network)}:emb:{version}"

    def baseline(self, version: str, network: str) -> str:
        """A network's baseline as the model version reads it (traffic/baseline.py)."""
        return f"{self._network(network)}:baseline:{version}"

    def node(self, network: str, node: str) -> str:
        return f"{self._network(network)}:diag:{node}"

    def node_window(self, network: str, node: str) -> str:
        return f"{self._network(network)}:node:{node}:window"

    def node_condition(self, network: str, node: str) -> str:
        return f"{self._network(network)}:node:{node}:condition"

    def node_incidents(self, network: str, node: str) -> str:
        return f"{self._network(network)}:node:{node}:incidents"

    def open_incidents(self, network: str) -> str:
        return f"{self._network(network)}:incidents:open"

    def incident_acks(self, network: str) -> str:
        return f"{self._network(network)}:incidents:acks"

    def outbox(self, network: str) -> str:
        """Events of the network's scripts for the deployment's streams, not yet relayed."""
        return f"{self._network(network)}:outbox"

    def relay_lease(self, network: str) -> str:
        return f"{self._network(network)}:relay"
