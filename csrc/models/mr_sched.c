#include "models/mr_sched.h"

mr_status mr_batch_check(const int32_t *tokens, int64_t n_tokens, const int64_t *offsets, int64_t n_seqs,
                         int64_t vocab_size, int require_nonempty, mr_error *err) {
    if (n_seqs < 0 || n_tokens < 0) return mr_fail(err, MR_ERR_VALUE, "negative batch size");
    if (offsets[0] != 0) return mr_fail(err, MR_ERR_VALUE, "offsets must start at 0");
    for (int64_t i = 0; i < n_seqs; i++) {
        if (offsets[i + 1] < offsets[i])
            return mr_fail(err, MR_ERR_VALUE, "offsets must be non-decreasing (at %lld)", (long long)i);
        if (offsets[i + 1] == offsets[i] && require_nonempty)
            return mr_fail(err, MR_ERR_VALUE, "sequence %lld is empty: it has no last token to pool", (long long)i);
    }
    if (offsets[n_seqs] != n_tokens)
        return mr_fail(err, MR_ERR_VALUE, "offsets end at %lld but there are %lld tokens", (long long)offsets[n_seqs],
                       (long long)n_tokens);
    if (tokens)
        for (int64_t t = 0; t < n_tokens; t++)
            if (tokens[t] < 0 || tokens[t] >= vocab_size)
                return mr_fail(err, MR_ERR_VALUE, "token id %d at position %lld is outside the vocabulary [0, %lld)",
                               (int)tokens[t], (long long)t, (long long)vocab_size);
    return MR_OK;
}

void mr_sched_init(mr_scheduler *s, const int64_t *offsets, int64_t n_seqs, int64_t max_tokens) {
    s->offsets = offsets;
    s->n_seqs = n_seqs;
    s->max_tokens = max_tokens;
    s->seq = 0;
    s->pos = 0;
}

int64_t mr_sched_next(mr_scheduler *s, mr_segment *segs, int64_t *step_tokens) {
    int64_t n = 0, room = s->max_tokens, row = 0;
    while (room > 0 && s->seq < s->n_seqs) {
        int64_t length = s->offsets[s->seq + 1] - s->offsets[s->seq];
        int64_t left = length - s->pos;
        if (left <= 0) { /* empty sequence, or finished */
            s->seq++;
            s->pos = 0;
            continue;
        }
        int64_t take = left < room ? left : room;
        mr_segment *g = &segs[n++];
        g->seq = s->seq;
        g->start = s->pos;
        g->len = take;
        g->row = row;
        g->first = s->pos == 0;
        g->last = take == left;
        row += take;
        room -= take;
        s->pos += take;
        if (g->last) {
            s->seq++;
            s->pos = 0;
        }
    }
    *step_tokens = row;
    return n;
}
