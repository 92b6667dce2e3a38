// Package groups is the coordinator of Kafka's classic consumer-group protocol
// (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the membership checks of
// OffsetCommit), run by the metastore's Raft leader so that every group has exactly
// one coordinator.
//
// # State and where it lives
//
// Liveness is in memory: which members are waiting in a join phase or for their
// assignment, and when each member's session ends. Everything a new coordinator
// needs is saved through Store (a Raft command) before any member can act on it:
//
//   - at the end of every join phase, the new generation with its members, leader
//     and protocol (no assignments yet), before any JoinGroup is answered;
//   - when the leader's SyncGroup hands out assignments, before any SyncGroup is
//     answered;
//   - when a static member is replaced by a new instance, and when the group
//     becomes empty.
//
// A new leader loads a group on its first request for it and gives every saved
// member a fresh session. A group saved with its assignments is Stable: members
// keep heartbeating and notice nothing. A group saved between a join phase and its
// assignment starts a new join phase: its members' SyncGroup gets
// REBALANCE_IN_PROGRESS and they rejoin into the next generation. Generations only
// grow (the state machine refuses an older record), so no generation is handed out
// twice, and two members can never hold the same partition in one generation.
//
// # Differences from Kafka
//
//   - Offsets are checked here but written by the caller after the check, outside
//     the group's lock: a commit that passed the check can land just after a
//     rebalance began, as with Kafka's asynchronous log append.
//   - Members' protocol metadata and assignments are bounded in total per group
//     (maxGroupBytes); a join beyond it is GROUP_MAX_SIZE_REACHED.
//   - A dynamic member that joined but never comes back is removed after its
//     session timeout (Kafka's 5-minute new-member timeout is not separate).
//
// # KIP-848 consumer groups
//
// consumer.go serves ConsumerGroupHeartbeat in the same coordinator: the group id
// space is shared (a group is classic or consumer; an empty one may change kind).
// The whole consumer group (epochs, members with subscriptions, current, revoking
// and target assignments) is saved on every change before the heartbeat is
// answered, so a new leader resumes reconciliation where the old one stopped.
//
// # More differences from Kafka
//
//   - KIP-848 groups are saved whole on every change (Kafka writes one record per
//     member), so a change costs O(group size) through Raft.
//
// Time comes from an injected clock and deadlines are checked by Tick, so tests
// drive every timeout without sleeping.
package groups
