/* The etcd lease this node's registration in the config center is attached to (lua/sluice/config/nodes.lua,
 * docs/cluster.md "Nodes"): worker 0 keeps the lease alive and records it here; the main thread reads it when
 * a stop signal comes and revokes it, so the node leaves the cluster's list at once instead of when it
 * expires. */
#ifndef SL_LEASE_H
#define SL_LEASE_H

#include <stdint.h>

/** Records the lease of this node's registration (0: none; -1: the node is leaving, register no more). */
void sl_node_lease_set(int64_t id);

/** The lease recorded last (0 when none was, -1 once the node is leaving). Any thread. */
int64_t sl_node_lease_get(void);

/** Takes the recorded lease for revoking and marks the node as leaving (-1): the lease, or 0 when there was
 * none. */
int64_t sl_node_lease_take(void);

#endif
