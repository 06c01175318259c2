"""Kafka protocol primitives and per-API tables (kafka.apache.org/protocol): a bounded reader
for the classic and flexible (KIP-482 compact, tagged fields) encodings. Raises `Short` when a
field runs past the bytes we have (a truncated copy); callers keep what they read before."""
from __future__ import annotations

import struct

API_NAMES = (
    "Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr", "StopReplica", "UpdateMetadata",
    "ControlledShutdown", "OffsetCommit", "OffsetFetch", "FindCoordinator", "JoinGroup", "Heartbeat",
    "LeaveGroup", "SyncGroup", "DescribeGroups", "ListGroups", "SaslHandshake", "ApiVersions",
    "CreateTopics", "DeleteTopics", "DeleteRecords", "InitProducerId", "OffsetForLeaderEpoch",
    "AddPartitionsToTxn", "AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit",
    "DescribeAcls", "CreateAcls", "DeleteAcls", "DescribeConfigs", "AlterConfigs",
    "AlterReplicaLogDirs", "DescribeLogDirs", "SaslAuthenticate", "CreatePartitions",
    "CreateDelegationToken", "RenewDelegationToken", "ExpireDelegationToken", "DescribeDelegationToken",
    "DeleteGroups", "ElectLeaders", "IncrementalAlterConfigs", "AlterPartitionReassignments",
    "ListPartitionReassignments", "OffsetDelete", "DescribeClientQuotas", "AlterClientQuotas",
    "DescribeUserScramCredentials", "AlterUserScramCredentials", "Vote", "BeginQuorumEpoch",
    "EndQuorumEpoch", "DescribeQuorum", "AlterPartition", "UpdateFeatures", "Envelope", "FetchSnapshot",
    "DescribeCluster", "DescribeProducers", "BrokerRegistration", "BrokerHeartbeat", "UnregisterBroker",
    "DescribeTransactions", "ListTransactions", "AllocateProducerIds", "ConsumerGroupHeartbeat",
    "ConsumerGroupDescribe", "ControllerRegistration", "GetTelemetrySubscriptions", "PushTelemetry",
    "AssignReplicasToDirs", "ListClientMetricsResources", "DescribeTopicPartitions",
)
MAX_API_VERSION = 20
NEVER = 1 << 16
# First flexible version per API key (request header v2, response header v1); keys from 48 on are
# flexible from v0. SaslHandshake and OffsetDelete never are.
_FLEXIBLE = {0: 9, 1: 12, 2: 6, 3: 9, 4: 4, 5: 2, 6: 6, 7: 3, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4, 13: 4,
             14: 4, 15: 5, 16: 3, 17: NEVER, 18: 3, 19: 5, 20: 4, 21: 2, 22: 2, 23: 4, 24: 3, 25: 3,
             26: 3, 27: 1, 28: 3, 29: 2, 30: 2, 31: 2, 32: 4, 33: 2, 34: 2, 35: 2, 36: 2, 37: 2,
             38: 2, 39: 2, 40: 2, 41: 2, 42: 2, 43: 2, 44: 1, 45: 0, 46: 0, 47: NEVER}
# APIs whose response starts with error_code (before `version`) or throttle_time_ms then error_code.
_ERROR_FIRST_BEFORE = {18: NEVER, 17: NEVER, 36: NEVER, 11: 2, 12: 1, 13: 1, 14: 1, 16: 1, 10: 1,
                       22: 0, 25: 0, 26: 0, 60: 0, 68: 0}
ERRORS = {
    -1: "UNKNOWN_SERVER_ERROR", 1: "OFFSET_OUT_OF_RANGE", 2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION", 4: "INVALID_FETCH_SIZE", 5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 8: "BROKER_NOT_AVAILABLE",
    9: "REPLICA_NOT_AVAILABLE", 10: "MESSAGE_TOO_LARGE", 13: "NETWORK_EXCEPTION",
    14: "COORDINATOR_LOAD_IN_PROGRESS", 15: "COORDINATOR_NOT_AVAILABLE", 16: "NOT_COORDINATOR",
    17: "INVALID_TOPIC_EXCEPTION", 18: "RECORD_LIST_TOO_LARGE", 19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND", 21: "INVALID_REQUIRED_ACKS", 22: "ILLEGAL_GENERATION",
    25: "UNKNOWN_MEMBER_ID", 27: "REBALANCE_IN_PROGRESS", 29: "TOPIC_AUTHORIZATION_FAILED",
    30: "GROUP_AUTHORIZATION_FAILED", 31: "CLUSTER_AUTHORIZATION_FAILED", 35: "UNSUPPORTED_VERSION",
    36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 38: "INVALID_REPLICATION_FACTOR",
    40: "INVALID_CONFIG", 41: "NOT_CONTROLLER", 42: "INVALID_REQUEST", 47: "INVALID_PRODUCER_EPOCH",
    48: "INVALID_TXN_STATE", 56: "KAFKA_STORAGE_ERROR", 58: "SASL_AUTHENTICATION_FAILED",
    59: "UNKNOWN_PRODUCER_ID", 69: "GROUP_ID_NOT_FOUND", 79: "MEMBER_ID_REQUIRED",
    87: "INVALID_RECORD", 100: "UNKNOWN_TOPIC_ID",
}


def api_name(key: int) -> str:
    return API_NAMES[key] if 0 <= key < len(API_NAMES) else f"api_{key}"


def flexible(key: int, version: int) -> bool:
    return version >= _FLEXIBLE.get(key, 0 if key >= 48 else NEVER)


def error_first(key: int, version: int) -> int | None:
    """Offset of the top-level error_code in a response body, or None when it is not at the start."""
    before = _ERROR_FIRST_BEFORE.get(key)
    if before is None or (key == 10 and version >= 4):
        return None
    return 0 if version < before else 4


class Short(Exception):
    """A field runs past the available bytes."""


class Reader:
    __slots__ = ("b", "pos", "flex")

    def __init__(self, b: bytes, pos: int = 0, flex: bool = False) -> None:
        self.b, self.pos, self.flex = b, pos, flex

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.b):
            raise Short
        v = self.b[self.pos:self.pos + n]
        self.pos += n
        return v

    def int8(self) -> int:
        return struct.unpack(">b", self._take(1))[0]

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def uvarint(self) -> int:
        v = shift = 0
        while True:
            c = self._take(1)[0]
            v |= (c & 0x7F) << shift
            if not c & 0x80:
                return v
            shift += 7
            if shift > 35:
                raise Short

    def skip(self, n: int) -> None:
        self._take(n)

    def string(self) -> str | None:
        """STRING / NULLABLE_STRING, or their COMPACT forms in flexible versions."""
        n = self.uvarint() - 1 if self.flex else self.int16()
        return None if n < 0 else self._take(n).decode("utf-8", "replace")

    def legacy_string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self._take(n).decode("utf-8", "replace")

    def bytes_(self) -> bytes | None:
        n = self.uvarint() - 1 if self.flex else self.int32()
        return None if n < 0 else self._take(n)

    def array_len(self) -> int:
        n = self.uvarint() - 1 if self.flex else self.int32()
        return max(n, 0)

    def tags(self) -> None:
        if self.flex:
            for _ in range(self.uvarint()):
                self.uvarint()
                self.skip(self.uvarint())


def record_count(records: bytes | None) -> int:
    """Records in a RecordBatch set (magic 2): recordsCount is at offset 57 of each batch."""
    n, pos = 0, 0
    while records and pos + 61 <= len(records):
        batch_len = struct.unpack_from(">i", records, pos + 8)[0]
        if records[pos + 16] != 2 or batch_len < 49:
            break
        n += struct.unpack_from(">i", records, pos + 57)[0]
        pos += 12 + batch_len
    return n
