/* The lease of this node's registration, shared by worker 0 (which keeps it alive) and the main thread (which
 * revokes it on a stop signal). One atomic word: no lock, no allocation. */
#include "server/lease.h"

#include <stdatomic.h>

static _Atomic int64_t lease;

void sl_node_lease_set(int64_t id)
{
    int64_t cur = atomic_load(&lease);
    /* once leaving, a registration finishing late must not bring the node back */
    while (cur != -1 && !atomic_compare_exchange_weak(&lease, &cur, id))
        ;
}

int64_t sl_node_lease_get(void)
{
    return atomic_load(&lease);
}

int64_t sl_node_lease_take(void)
{
    int64_t id = atomic_exchange(&lease, -1);
    return id > 0 ? id : 0;
}
