/*
 * The DPDK headers that the bindings are generated from, plus the shim's
 * prototypes. rte_config.h comes first through pkg-config's
 * `-include rte_config.h`, so the RTE_* build options are visible here.
 */
#ifndef SPIKE_DPDK_WRAPPER_H
#define SPIKE_DPDK_WRAPPER_H

#include <stdint.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

/*
 * Out-of-line copies of DPDK's static inline functions and macros, so Rust
 * can call them. They are defined in src/shim.c.
 */
uint16_t spike_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			    uint16_t nb_pkts);
uint16_t spike_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			    uint16_t nb_pkts);

struct rte_mbuf *spike_pktmbuf_alloc(struct rte_mempool *mp);
void spike_pktmbuf_free(struct rte_mbuf *m);
/* Copies the whole packet, every segment, into buf (len bytes); returns 0 when the
 * packet is not exactly len bytes long. */
int spike_pktmbuf_copy_all(const struct rte_mbuf *m, uint8_t *buf, uint32_t len);
uint16_t spike_pktmbuf_tailroom(const struct rte_mbuf *m);
uint8_t *spike_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int spike_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
void spike_pktmbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags, uint64_t l2_len,
				  uint64_t l3_len, uint64_t l4_len);

/* The mbuf forms of rte_ring_mp_enqueue_burst and rte_ring_sc_dequeue_burst: they
 * return how many of the n pointers moved, with no count of free or remaining slots. */
unsigned int spike_ring_mp_enqueue_burst(struct rte_ring *r, struct rte_mbuf **mbufs,
					 unsigned int n);
unsigned int spike_ring_sc_dequeue_burst(struct rte_ring *r, struct rte_mbuf **mbufs,
					 unsigned int n);

int spike_errno(void);
unsigned int spike_lcore_id(void);
void spike_pause(void);
uint64_t spike_rdtsc(void);

#endif
