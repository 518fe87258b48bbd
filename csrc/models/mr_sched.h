/* Micro-batch scheduler: cuts a packed batch into steps of at most max_tokens tokens.
 *
 * Sequences are taken in order and a step is filled to max_tokens, so a sequence longer than
 * the room left is split; its later parts continue in the next steps. At most one sequence
 * crosses each step boundary, so one carried conv/scan state per layer is enough. */
#ifndef MR_SCHED_H
#define MR_SCHED_H

#include <stdint.h>

#include "base/mr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t seq;    /* sequence index in the batch */
    int64_t start;  /* first position of the part within the sequence */
    int64_t len;    /* tokens in the part (>= 1) */
    int64_t row;    /* first row of the part within the step */
    int first;      /* the part starts its sequence: state starts from zeros */
    int last;       /* the part ends its sequence: it is pooled, its state is dropped */
} mr_segment;

typedef struct {
    const int64_t *offsets;
    int64_t n_seqs;
    int64_t max_tokens;
    int64_t seq; /* cursor: next sequence and position within it */
    int64_t pos;
} mr_scheduler;

/* Checks a packed batch: offsets[0] == 0, non-decreasing, offsets[n_seqs] == n_tokens, and
 * token ids in [0, vocab_size) (tokens may be NULL to skip that check). With
 * require_nonempty, an empty sequence is an error: it has no last token to pool. */
mr_status mr_batch_check(const int32_t *tokens, int64_t n_tokens, const int64_t *offsets, int64_t n_seqs,
                         int64_t vocab_size, int require_nonempty, mr_error *err);

void mr_sched_init(mr_scheduler *s, const int64_t *offsets, int64_t n_seqs, int64_t max_tokens);

/* Fills the next step's parts into segs (room for max_tokens entries) and its token count into
 * *step_tokens; returns the number of parts, 0 when every sequence is done. Empty sequences
 * are skipped. */
int64_t mr_sched_next(mr_scheduler *s, mr_segment *segs, int64_t *step_tokens);

#ifdef __cplusplus
}
#endif
#endif
