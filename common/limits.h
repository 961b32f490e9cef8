/* limits: bounds the wire protocol puts on what a peer may claim, shared by every tier that
 * checks a peer's message (the server, the relay, the site registry), so that each checks the
 * same number. */
#ifndef FEDNAS_COMMON_LIMITS_H
#define FEDNAS_COMMON_LIMITS_H

/* The most training (or held-out) samples a site may claim in a hello, an update or an
 * evaluation answer: far above any real site, low enough that a weight times a loss, summed
 * over many sites, stays exact in a double. */
#define FN_MAX_SAMPLES 1000000000LL

#endif
