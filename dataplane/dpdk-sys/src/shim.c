/*
 * Real, linkable functions for the parts of DPDK's fast path that exist only
 * as static inline functions, macros or thread-local variables in the
 * headers. Each one forwards unchanged, so DPDK's own documentation applies.
 */
#include <string.h>
#include "../wrapper.h"

uint16_t spike_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			    uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t spike_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			    uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *spike_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

void spike_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

int spike_pktmbuf_copy_all(const struct rte_mbuf *m, uint8_t *buf, uint32_t len)
{
	if (rte_pktmbuf_pkt_len(m) != len)
		return 0;
	/* rte_pktmbuf_read copies into buf when the data spans segments and returns a
	 * pointer into the mbuf otherwise, so copy in that case too. */
	const void *data = rte_pktmbuf_read(m, 0, len, buf);
	if (data == NULL)
		return 0;
	if (data != buf)
		memcpy(buf, data, len);
	return 1;
}

uint16_t spike_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

uint8_t *spike_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return (uint8_t *)rte_pktmbuf_append(m, len);
}

int spike_pktmbuf_trim(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_trim(m, len);
}

/*
 * Checksum offload needs both the request flags and the header lengths;
 * l2_len, l3_len and l4_len are bit-fields, which Rust cannot address.
 */
void spike_pktmbuf_set_tx_offload(struct rte_mbuf *m, uint64_t ol_flags, uint64_t l2_len,
				  uint64_t l3_len, uint64_t l4_len)
{
	m->ol_flags |= ol_flags;
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->l4_len = l4_len;
}

/* rte_errno is a per-lcore (thread-local) variable behind a macro. */
int spike_errno(void)
{
	return rte_errno;
}

unsigned int spike_lcore_id(void)
{
	return rte_lcore_id();
}

void spike_pause(void)
{
	rte_pause();
}

uint64_t spike_rdtsc(void)
{
	return rte_rdtsc();
}

unsigned int spike_ring_mp_enqueue_burst(struct rte_ring *r, struct rte_mbuf **mbufs,
					 unsigned int n)
{
	return rte_ring_mp_enqueue_burst(r, (void *const *)mbufs, n, NULL);
}

unsigned int spike_ring_sc_dequeue_burst(struct rte_ring *r, struct rte_mbuf **mbufs,
					 unsigned int n)
{
	return rte_ring_sc_dequeue_burst(r, (void **)mbufs, n, NULL);
}
